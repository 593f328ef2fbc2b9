"""GPT-NeoX and Pythia decoders in plain torch.nn (model_type "gpt_neox").

Each layer normalizes its input twice, with LayerNorms that have biases: one for attention, one for the GELU MLP.
With `use_parallel_residual` (GPT-NeoX-20B, Pythia) both branches read the layer's input and are added to it
together; without it the MLP reads the residual after attention, as in GPT-2. Attention has one fused
`query_key_value` projection whose rows hold, head after head, that head's query, key and value; rotary embeddings
turn the first `partial_rotary_factor` (config.json's `rotary_pct`) of each head's dimensions. The output projection
is the model's own (`tie_word_embeddings` is off in every released checkpoint): `lm_head` here, as in the reference,
and `embed_out` in the files, as the reference reads and writes them.

GGUF files of llama.cpp's "gptneox" architecture are read here too: llama.cpp's converter regroups the fused rows as
all queries, then all keys, then all values, which `convert_gguf_state_dict` puts back head by head; the metadata it
states as Falcon's files do is read by `gguf_layer_norm_decoder_values`, which falcon.py uses too. The CPU decoding
kernel's step runs these layers (kernels/llama.py: the fused rows read head by head where they are, both kinds of
residual, GELU's exact form).
"""

import re

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, GPTNeoXConfig
from ..weights import rename
from .base import PreTrainedModel, embedded
from .decoder import DecoderModel
from .heads import CausalLM, QuestionAnswering, SequenceClassification, TokenClassification
from .layers import ACTIVATIONS, RotaryEmbedding, decoder_attention
from .phi3 import apply_partial_rope


def gguf_required(gguf, key: str):
    """The value of metadata `key` (`<arch>.<name>`) in an opened `weights.GGUFFile`, which must have it."""
    value = gguf.get(key)
    if value is None:
        arch = key.partition(".")[0]
        raise ValueError(f"{gguf.path} lacks the GGUF metadata key {key}, which a {arch} model needs.")
    return value


def gguf_layer_norm_decoder_values(gguf, arch: str, epsilon_name: str) -> dict:
    """The config values that llama.cpp's files of decoders with LayerNorms (its "gptneox" and "falcon") state alike:
    sizes, the norms' epsilon (under the family's field `epsilon_name`), rope base and context from `<arch>.*`;
    tied embeddings when there is no output.weight; special tokens from `tokenizer.ggml.*`."""
    return {
        "vocab_size": gguf.get(f"{arch}.vocab_size") or gguf.array_length("tokenizer.ggml.tokens"),
        "hidden_size": gguf_required(gguf, f"{arch}.embedding_length"),
        "num_hidden_layers": gguf_required(gguf, f"{arch}.block_count"),
        "num_attention_heads": gguf_required(gguf, f"{arch}.attention.head_count"),
        epsilon_name: gguf.get(f"{arch}.attention.layer_norm_epsilon", 1e-5),
        "rope_theta": gguf.get(f"{arch}.rope.freq_base", 10000.0),
        "max_position_embeddings": gguf.get(f"{arch}.context_length", 2048),
        "tie_word_embeddings": "output.weight" not in gguf.tensor_names,
        "bos_token_id": gguf.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": gguf.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": gguf.get("tokenizer.ggml.padding_token_id"),
    }


def config_from_gguf(gguf, **overrides) -> GPTNeoXConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "gptneox" architecture."""
    values = gguf_layer_norm_decoder_values(gguf, "gptneox", "layer_norm_eps")
    head_dim = values["hidden_size"] // values["num_attention_heads"]
    values.update(
        architectures=["GPTNeoXForCausalLM"],
        intermediate_size=gguf_required(gguf, "gptneox.feed_forward_length"),
        partial_rotary_factor=gguf.get("gptneox.rope.dimension_count", head_dim) / head_dim,
        use_parallel_residual=bool(gguf.get("gptneox.use_parallel_residual", True)),
    )
    return GPTNeoXConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["gptneox"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part.
GGUF_RENAMES = {
    "token_embd": "gpt_neox.embed_in",
    "blk": "gpt_neox.layers",
    "attn_norm": "input_layernorm",
    "attn_qkv": "attention.query_key_value",
    "attn_output": "attention.dense",
    "ffn_norm": "post_attention_layernorm",
    "ffn_up": "mlp.dense_h_to_4h",
    "ffn_down": "mlp.dense_4h_to_h",
    "output_norm": "gpt_neox.final_layer_norm",
    "output": "lm_head",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: GPTNeoXConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names and put the fused q/k/v rows back head by head."""
    state_dict = rename(state_dict, GGUF_RENAMES)
    for name, tensor in state_dict.items():
        if ".attention.query_key_value." in name:
            state_dict[name] = qkv_head_by_head(tensor, config.num_attention_heads)
    return state_dict


def qkv_head_by_head(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """A fused query_key_value weight or bias as llama.cpp stores it, all queries, then all keys, then all values
    (3, heads, hs, ...), back in the checkpoints' order, each head's query, key and value (heads, 3, hs, ...) (GPT-NeoX,
    BLOOM)."""
    return tensor.reshape(3, heads, -1, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)


def _from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The checkpoints name the output projection embed_out (transformers 4's name, which the reference writes back).
    return {re.sub(r"^embed_out\.", "lm_head.", name): t for name, t in state_dict.items()}


def _to_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state_dict = dict(state_dict)
    head = state_dict.pop("lm_head.weight", None)
    embeddings = state_dict.get("gpt_neox.embed_in.weight")
    if head is not None and not (embeddings is not None and head.data_ptr() == embeddings.data_ptr()):
        state_dict["embed_out.weight"] = head  # a projection tied to the embeddings is stored once, under theirs
    return state_dict


class GPTNeoXAttention(nn.Module):
    def __init__(self, config: GPTNeoXConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.head_dim = config.num_attention_heads, config.head_dim
        self.dropout = config.attention_dropout
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, _ = x.shape
        qkv = self.query_key_value(x).view(B, T, self.n_head, 3 * self.head_dim).transpose(1, 2)  # (B, nh, T, 3hs)
        q, k, v = qkv.chunk(3, dim=-1)  # each head's rows are its query, key and value
        q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path)
        return self.dense(y), weights


class GPTNeoXMLP(nn.Module):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(x)))


class GPTNeoXLayer(nn.Module):
    def __init__(self, config: GPTNeoXConfig, layer_idx: int):
        super().__init__()
        self.use_parallel_residual = config.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_dropout = nn.Dropout(config.hidden_dropout)
        self.post_mlp_dropout = nn.Dropout(config.hidden_dropout)
        self.attention = GPTNeoXAttention(config, layer_idx)
        self.mlp = GPTNeoXMLP(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.attention(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        h = self.post_attention_dropout(h)
        if self.use_parallel_residual:  # both branches read x; summed in the reference's order
            return self.post_mlp_dropout(self.mlp(self.post_attention_layernorm(x))) + h + x, weights
        x = h + x
        return self.post_mlp_dropout(self.mlp(self.post_attention_layernorm(x))) + x, weights


class GPTNeoXPreTrainedModel(PreTrainedModel):
    config_class = GPTNeoXConfig
    base_model_prefix = "gpt_neox"
    # The causal-mask buffers older checkpoints store ("layers.0.attention.bias", "...attention.masked_bias").
    ignored_checkpoint_keys = PreTrainedModel.ignored_checkpoint_keys + (r"(^|\.)attention\.(masked_)?bias$",)
    from_checkpoint_layout = staticmethod(_from_checkpoint_layout)
    to_checkpoint_layout = staticmethod(_to_checkpoint_layout)
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: GPTNeoXConfig) -> "GPTNeoXModel":
        return GPTNeoXModel(config)


class GPTNeoXModel(GPTNeoXPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: GPTNeoXConfig):
        super().__init__(config)
        # An explicit weight skips nn.Embedding's random init (see base.token_embeddings).
        self.embed_in = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.emb_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(GPTNeoXLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling,
                                          min(config.max_position_embeddings, 8192), config.max_position_embeddings)

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        return self.emb_dropout(embedded(self.embed_in, input_ids) if inputs_embeds is None else inputs_embeds)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer_norm(x)


class GPTNeoXForCausalLM(GPTNeoXPreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""

    tied_weights = {"lm_head.weight": "gpt_neox.embed_in.weight"}


class GPTNeoXForSequenceClassification(GPTNeoXPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class GPTNeoXForTokenClassification(GPTNeoXPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""

    projection_name = "classifier"


class GPTNeoXForQuestionAnswering(GPTNeoXPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
