"""BLOOM and BLOOMZ decoders in plain torch.nn (model_type "bloom").

The embeddings go through a LayerNorm (`word_embeddings_layernorm`) before the first layer. Each layer normalizes its
input for attention (`input_layernorm`) and the residual after attention for the MLP (`post_attention_layernorm`);
with `apply_residual_connection_post_layernorm` each branch adds to its normalized input instead of to the residual.
Attention has one fused `query_key_value` projection whose rows hold, head after head, that head's query, key and
value. There are no position embeddings: ALiBi adds to each head's scaled scores its slope x the key's position,
counted over the real tokens of the attention mask (so a left-padded row is biased as the row alone); the reference
takes that product in float32, unlike Falcon's. The MLP is 4 x hidden_size wide with BLOOM's GELU (the tanh form,
written out as BLOOM's reference writes it). The checkpoints keep the base model under `transformer.` (the older
ones without a prefix, which loading moves under it), and the language-model head is tied to the embeddings.

GGUF files of llama.cpp's "bloom" architecture are read here too: its converter regroups the fused rows as all
queries, then all keys, then all values, which `convert_gguf_state_dict` puts back head by head, and stores the
embeddings a second time as `output`. The CPU decoding kernel's step runs these layers (kernels/llama.py: ALiBi's
biases and the embeddings' LayerNorm are options of decode.cpp's step), but for residuals after the norms and
slow_but_exact's sliced products, which it refuses.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, BloomConfig
from ..weights import rename
from .base import PreTrainedModel, embedded
from .decoder import DecoderModel
from .gpt_neox import gguf_layer_norm_decoder_values, qkv_head_by_head
from .heads import CausalLM, QuestionAnswering, SequenceClassification, TokenClassification
from .layers import alibi_mask, decoder_attention


def config_from_gguf(gguf, **overrides) -> BloomConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "bloom" architecture (whose files keep no
    apply_residual_connection_post_layernorm: off, as in every released BLOOM)."""
    values = gguf_layer_norm_decoder_values(gguf, "bloom", "layer_norm_epsilon")
    for name in ("rope_theta", "max_position_embeddings"):  # BLOOM has no rotary embeddings and no position table
        values.pop(name)
    values["architectures"] = ["BloomForCausalLM"]
    return BloomConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["bloom"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part.
GGUF_RENAMES = {
    "token_embd_norm": "transformer.word_embeddings_layernorm",
    "token_embd": "transformer.word_embeddings",
    "blk": "transformer.h",
    "attn_norm": "input_layernorm",
    "attn_qkv": "self_attention.query_key_value",
    "attn_output": "self_attention.dense",
    "ffn_norm": "post_attention_layernorm",
    "ffn_up": "mlp.dense_h_to_4h",
    "ffn_down": "mlp.dense_4h_to_h",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: BloomConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names and put the fused q/k/v rows back head by head."""
    state_dict = rename(state_dict, GGUF_RENAMES)
    for name, tensor in state_dict.items():
        if ".self_attention.query_key_value." in name:
            state_dict[name] = qkv_head_by_head(tensor, config.n_head)
    return state_dict


def bloom_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh form with BLOOM's constants, in its reference's order of operations."""
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def output_projection(linear: nn.Linear, x: torch.Tensor, slices: int) -> torch.Tensor:
    """`linear(x)`, or with `slices` > 1 (slow_but_exact) the sum of the products of `slices` slices of the inputs,
    as the tensor-parallel training summed them; the reference adds no bias to that sum, nor does this. A quantized
    layer (from_pretrained(..., quantization=...)) has no float weights to slice: its product is the same sum but for
    the rounding, which quantization changes anyway, and its bias is taken back off."""
    if slices == 1:
        return linear(x)
    if not linear.weight.is_floating_point():
        y = linear(x)
        return y if linear.bias is None else y - linear.bias
    width = x.shape[-1]
    bounds = [int(i * width / slices) for i in range(slices + 1)]  # the reference's slice edges
    y = torch.zeros(*x.shape[:-1], linear.out_features, dtype=x.dtype, device=x.device)
    for start, end in zip(bounds, bounds[1:]):
        y = y + F.linear(x[..., start:end], linear.weight[:, start:end])
    return y


class BloomAttention(nn.Module):
    def __init__(self, config: BloomConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.dropout = config.attention_dropout
        self.slices = config.pretraining_tp if config.slow_but_exact else 1
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None. `mask` is the
        float mask of ALiBi's biases (cos and sin are unused: no rotation)."""
        B, T, _ = x.shape
        q, k, v = self.query_key_value(x).view(B, T, self.n_head, 3, self.head_dim).unbind(3)  # (B, T, nh, hs) each
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path)
        return output_projection(self.dense, y, self.slices), weights


class BloomMLP(nn.Module):
    def __init__(self, config: BloomConfig):
        super().__init__()
        self.slices = config.pretraining_tp if config.slow_but_exact else 1
        self.dense_h_to_4h = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.dense_4h_to_h = nn.Linear(4 * config.hidden_size, config.hidden_size)

    def forward(self, x):
        return output_projection(self.dense_4h_to_h, bloom_gelu(self.dense_h_to_4h(x)), self.slices)


class BloomBlock(nn.Module):
    def __init__(self, config: BloomConfig, layer_idx: int):
        super().__init__()
        C, eps = config.hidden_size, config.layer_norm_epsilon
        self.input_layernorm = nn.LayerNorm(C, eps=eps)
        self.self_attention = BloomAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(C, eps=eps)
        self.mlp = BloomMLP(config)
        self.post_layernorm_residual = config.apply_residual_connection_post_layernorm
        self.hidden_dropout = config.hidden_dropout

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        normed = self.input_layernorm(x)
        h, weights = self.self_attention(normed, cos, sin, mask, cache, attention_path)
        x = (normed if self.post_layernorm_residual else x) + F.dropout(h, self.hidden_dropout, self.training)
        normed = self.post_attention_layernorm(x)
        y = F.dropout(self.mlp(normed), self.hidden_dropout, self.training)
        return (normed if self.post_layernorm_residual else x) + y, weights


class BloomPreTrainedModel(PreTrainedModel):
    config_class = BloomConfig
    base_model_prefix = "transformer"
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: BloomConfig) -> "BloomModel":
        return BloomModel(config)


class BloomModel(BloomPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: BloomConfig):
        super().__init__(config)
        # An explicit weight skips nn.Embedding's random init (see LlamaModel).
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.word_embeddings_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.h = nn.ModuleList(BloomBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers, under the checkpoints' name `h`."""
        return self.h

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        """The embeddings (given, or looked up) after their LayerNorm: the first hidden state, as the reference's."""
        x = embedded(self.word_embeddings, input_ids) if inputs_embeds is None else inputs_embeds
        return self.word_embeddings_layernorm(x)

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        # No rotation: the positions are ALiBi's biases, in the float mask attention adds to its scaled scores.
        alibi = alibi_mask(attention_mask, mask, self.config.n_head, x.shape[1], end, x)
        return lambda layer: (None, None, alibi)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_f(x)


class BloomForCausalLM(BloomPreTrainedModel, CausalLM):
    """The decoder with its language-model head (tied to the word embeddings by default): next-token logits, and the
    loss when labels are given."""

    tied_weights = {"lm_head.weight": "transformer.word_embeddings.weight"}


class BloomForSequenceClassification(BloomPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class BloomForTokenClassification(BloomPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""

    projection_name = "classifier"


class BloomForQuestionAnswering(BloomPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
