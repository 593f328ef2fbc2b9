"""GPT-BigCode decoders in plain torch.nn (model_type "gpt_bigcode": StarCoder, StarCoderBase, SantaCoder,
tiny_starcoder, WizardCoder, OctoCoder).

GPT-2's layout under GPT-2's names (`transformer.wte`, `wpe`, `h.N.ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`,
`mlp.c_fc`, `mlp.c_proj`, `ln_f`, an `lm_head` tied to `wte`): learned positions added to the token embeddings,
pre-LayerNorm blocks (gpt2.GPT2Block, with this attention) and GPT-2's MLP (gpt2.GPT2MLP, its `activation_function`
one of the GELUs). The projections are stored as `nn.Linear` weights, not GPT-2's transposed Conv1D ones. With
`multi_query` (every released checkpoint) attention has one key/value head shared by all query heads, and `c_attn`'s
rows are every query head, then the key, then the value; without it each head's query, key and value follow one
another, head after head. `scale_attn_weights=False` leaves the scores unscaled. Positions are
counted from the cache as in the reference (no position_ids: the first token of a left-padded row is at its
padding's length); token_type_ids, as in the reference, add their rows of the token table to the embeddings.

GGUF files of llama.cpp's "starcoder" architecture are read here too: its converter stores the tensors as they are
(`attn_qkv` in the multi-query order above) and writes one key/value head; a file stating as many key/value heads as
query heads holds, as llama.cpp reads it, all queries, then all keys, then all values, which `convert_gguf_state_dict`
puts back head by head. Multi-query models take the CPU kernel's decoding step (kernels/llama.py); the step does not
read the head-by-head layout, which generate runs through the layers.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, GPTBigCodeConfig
from ..weights import rename
from .base import PreTrainedModel
from .decoder import GPT2NamedDecoder, check_learned_positions
from .gpt2 import GPT2Block
from .gpt_neox import gguf_layer_norm_decoder_values, gguf_required, qkv_head_by_head
from .heads import CausalLM, SequenceClassification, TokenClassification
from .layers import decoder_attention


def config_from_gguf(gguf, **overrides) -> GPTBigCodeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "starcoder" architecture: one key/value head is
    multi-query attention, as many as the query heads one per head."""
    values = gguf_layer_norm_decoder_values(gguf, "starcoder", "layer_norm_epsilon")
    values.pop("rope_theta")  # learned positions: no rotation
    heads = values["num_attention_heads"]
    kv_heads = gguf.get("starcoder.attention.head_count_kv", 1)
    if kv_heads not in (1, heads):
        raise ValueError(
            f"{gguf.path}: starcoder.attention.head_count_kv={kv_heads!r}; GPT-BigCode has 1 key/value head "
            f"(multi-query) or one per query head ({heads})."
        )
    values.update(
        architectures=["GPTBigCodeForCausalLM"],
        max_position_embeddings=gguf_required(gguf, "starcoder.context_length"),  # the position table's rows
        n_inner=gguf_required(gguf, "starcoder.feed_forward_length"),
        multi_query=kv_heads == 1,
    )
    return GPTBigCodeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["starcoder"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part.
GGUF_RENAMES = {
    "token_embd": "transformer.wte",
    "position_embd": "transformer.wpe",
    "blk": "transformer.h",
    "attn_norm": "ln_1",
    "attn_qkv": "attn.c_attn",
    "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2",
    "ffn_up": "mlp.c_fc",
    "ffn_down": "mlp.c_proj",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: GPTBigCodeConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names; without multi_query, put the fused q/k/v rows back head by
    head (the multi-query order is llama.cpp's own)."""
    state_dict = rename(state_dict, GGUF_RENAMES)
    if not config.multi_query:
        for name, tensor in state_dict.items():
            if ".attn.c_attn." in name:
                state_dict[name] = qkv_head_by_head(tensor, config.n_head)
    return state_dict


class GPTBigCodeAttention(nn.Module):
    def __init__(self, config: GPTBigCodeConfig, layer_idx: int):
        super().__init__()
        self.layer_idx, self.multi_query = layer_idx, config.multi_query
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.scale = None if config.scale_attn_weights else 1.0  # None: 1/sqrt(head_dim)
        C, kv = config.n_embd, config.num_key_value_heads * config.head_dim
        self.c_attn = nn.Linear(C, C + 2 * kv)
        self.c_proj = nn.Linear(C, C)
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, C = x.shape
        qkv = self.c_attn(x)
        if self.multi_query:  # every query head, then the one key and value head
            q, k, v = qkv.split([C, self.head_dim, self.head_dim], dim=-1)
            q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
            k, v = k[:, None], v[:, None]  # (B, 1, T, hs)
        else:  # each head's query, key and value in turn
            q, k, v = qkv.view(B, T, self.n_head, 3 * self.head_dim).transpose(1, 2).split(self.head_dim, dim=-1)
        dropout = self.attn_dropout if self.training else 0.0
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, dropout, attention_path, scale=self.scale)
        return self.resid_dropout(self.c_proj(y)), weights


class GPTBigCodeBlock(GPT2Block):
    """GPT-2's block (ln_1, attention, ln_2, MLP, each branch added to the residual) with multi-query attention."""

    attention_class = GPTBigCodeAttention


class GPTBigCodePreTrainedModel(PreTrainedModel):
    config_class = GPTBigCodeConfig
    base_model_prefix = "transformer"
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: GPTBigCodeConfig) -> "GPTBigCodeModel":
        return GPTBigCodeModel(config)


class GPTBigCodeModel(GPTBigCodePreTrainedModel, GPT2NamedDecoder):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: GPTBigCodeConfig):
        super().__init__(config)
        C = config.n_embd
        # Explicit weights skip nn.Embedding's random init (see base.token_embeddings); no padding row, as the
        # reference's tables have none.
        self.wte = nn.Embedding(config.vocab_size, C, _weight=torch.empty(config.vocab_size, C))
        self.wpe = nn.Embedding(config.n_positions, C, _weight=torch.empty(config.n_positions, C))
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPTBigCodeBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(C, eps=config.layer_norm_epsilon)

    def add_position_embeddings(self, x: torch.Tensor, position_ids: torch.Tensor, end: int) -> torch.Tensor:
        check_learned_positions(position_ids, end, self.config.n_positions, "GPT-BigCode", "n_positions")
        return self.drop(x + self.wpe(position_ids))

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        return lambda layer: (None, None, mask)  # no rotation: positions were added to the embeddings


class GPTBigCodeForCausalLM(GPTBigCodePreTrainedModel, CausalLM):
    """The decoder with its language-model head (tied to the token embeddings): next-token logits, and the loss when
    labels are given."""

    tied_weights = {"lm_head.weight": "transformer.wte.weight"}


class GPTBigCodeForSequenceClassification(GPTBigCodePreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class GPTBigCodeForTokenClassification(GPTBigCodePreTrainedModel, TokenClassification):
    """One label per token."""

    projection_name = "classifier"  # the reference's name (Llama-style decoders say "score")
