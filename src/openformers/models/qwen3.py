"""Qwen3 decoders in plain torch.nn: Llama's network with an RMSNorm over each head's queries and keys.

The norm runs on every head's `head_dim` values before the rotation, with one weight shared by the heads
(`self_attn.q_norm`, `self_attn.k_norm`); everything else (rotary positions, grouped-query attention, SwiGLU,
the heads, the cache) is llama.py's. Parameter names are those of Hugging Face checkpoints; GGUF files
(llama.cpp's "qwen3" architecture) are read with llama.py's metadata reader and rename table, plus the q/k norms'
names, and need no row permutation (llama.cpp rotates Qwen3 the way Hugging Face does). The CPU decoding kernel
runs Qwen3's step as Llama's, with the q/k norms (kernels/llama.py; a bias on o_proj, attention_bias, it refuses).
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Qwen3Config
from ..weights import rename
from .layers import RMSNorm
from .llama import (
    GGUF_RENAMES,
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)


def config_from_gguf(gguf, **overrides) -> Qwen3Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "qwen3" architecture."""
    return Qwen3Config.from_dict({"architectures": ["Qwen3ForCausalLM"], **gguf_config_values(gguf)}, **overrides)


GGUF_CONFIG_READERS["qwen3"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, and the per-head norms of the queries and keys.
QWEN3_GGUF_RENAMES = {**GGUF_RENAMES, "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Qwen3Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the rows are in the reference's order already)."""
    return rename(state_dict, QWEN3_GGUF_RENAMES)


class Qwen3Attention(LlamaAttention):
    def __init__(self, config: Qwen3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def project(self, x):
        return normed_heads(self, x, self.q_norm, self.k_norm)


def normed_heads(attention: LlamaAttention, x: torch.Tensor, q_norm: nn.Module, k_norm: nn.Module):
    """A Llama-style attention's projections of x, each head's queries and keys normed by `q_norm` and `k_norm`
    before the rotation (Qwen3's; LFM2's under its names)."""
    B, T, _ = x.shape
    q = q_norm(attention.q_proj(x).view(B, T, attention.n_head, attention.head_dim)).transpose(1, 2)  # (B, nh, T, hs)
    k = k_norm(attention.k_proj(x).view(B, T, attention.n_kv_head, attention.head_dim)).transpose(1, 2)
    v = attention.v_proj(x).view(B, T, attention.n_kv_head, attention.head_dim).transpose(1, 2)  # (B, n_kv, T, hs)
    return q, k, v


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_class = Qwen3Attention


class Qwen3PreTrainedModel(LlamaPreTrainedModel):
    config_class = Qwen3Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Qwen3Config) -> "Qwen3Model":
        return Qwen3Model(config)


class Qwen3Model(Qwen3PreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Qwen3DecoderLayer

    def __init__(self, config: Qwen3Config):
        super().__init__(config)
        self.sliding_window = config.attention_window  # layer_types decide whether the window applies


class Qwen3ForCausalLM(Qwen3PreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class Qwen3ForSequenceClassification(Qwen3PreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Qwen3ForTokenClassification(Qwen3PreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""


class Qwen3ForQuestionAnswering(Qwen3PreTrainedModel, LlamaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
