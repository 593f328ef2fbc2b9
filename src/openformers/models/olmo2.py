"""OLMo 2 decoders in plain torch.nn (model_type "olmo2"): Llama's network with its norms moved.

Each branch is normed after it runs, before the residual add (`x + norm(attn(x))`, `x + norm(mlp(x))`), and the
layer input is not normed at all; the queries and keys are normed right after their projections, over all heads
at once (`q_norm` has num_attention_heads * head_dim weights, not head_dim as Qwen3's). OLMo 2's RMSNorm scales by
its weight before casting back to the input's dtype, and the rotation runs in float32 by float32 tables and rounds
once, as the reference's (both only change the numbers in half precision). Rotary positions, grouped-query attention,
the SwiGLU MLP, the cache and the heads (causal LM and sequence classification, those the reference has) are
llama.py's.

GGUF files of llama.cpp's "olmo2" architecture load too: llama.py's metadata reader gives the config, and the rows
need no un-permuting (llama.cpp rotates OLMo 2 the way Hugging Face does). On the CPU, kernels/llama.py runs the
decoding step of these layers as one compiled call (without an attention bias, which it refuses).
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Olmo2Config
from ..weights import rename
from .layers import RMSNorm, apply_rope_in_float32
from .llama import (
    GGUF_RENAMES,
    LlamaAttention,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaMLP,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)


def config_from_gguf(gguf, **overrides) -> Olmo2Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "olmo2" architecture."""
    return Olmo2Config.from_dict({"architectures": ["Olmo2ForCausalLM"], **gguf_config_values(gguf)}, **overrides)


GGUF_CONFIG_READERS["olmo2"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, and the norms after each branch and over q and k.
OLMO2_GGUF_RENAMES = {
    **GGUF_RENAMES,
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Olmo2Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the rows are in the reference's order already)."""
    return rename(state_dict, OLMO2_GGUF_RENAMES)


class Olmo2RMSNorm(RMSNorm):
    """RMSNorm that scales by its weight in float32 and then casts to the input's dtype (Llama's casts first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        dtype = x.dtype
        x = x.float()
        return (self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))).to(dtype)


class Olmo2Attention(LlamaAttention):
    norm_class = Olmo2RMSNorm  # OLMoE norms its queries and keys as Llama's RMSNorm does (olmoe.py)
    rope = staticmethod(apply_rope_in_float32)  # by the float32 tables of Olmo2Model.float32_rotation_tables

    def __init__(self, config: Olmo2Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.q_norm = self.norm_class(self.n_head * self.head_dim, config.rms_norm_eps)
        self.k_norm = self.norm_class(self.n_kv_head * self.head_dim, config.rms_norm_eps)

    def project(self, x):
        """Llama's projections, the queries and the keys RMS-normed over all heads at once."""
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x)).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_norm(self.k_proj(x)).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        return q, k, v


class Olmo2DecoderLayer(nn.Module):
    attention_class = Olmo2Attention  # EXAONE 4.0's layers have Qwen3's per-head q/k norms instead
    norm_class = Olmo2RMSNorm  # and Llama's RMSNorm

    def __init__(self, config: Olmo2Config, layer_idx: int):
        super().__init__()
        self.self_attn = self.attention_class(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.post_attention_layernorm = self.norm_class(config.hidden_size, config.rms_norm_eps)
        self.post_feedforward_layernorm = self.norm_class(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.self_attn(x, cos, sin, mask, cache, attention_path)
        x = x + self.post_attention_layernorm(h)
        return x + self.post_feedforward_layernorm(self.mlp(x)), weights


class Olmo2PreTrainedModel(LlamaPreTrainedModel):
    config_class = Olmo2Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Olmo2Config) -> "Olmo2Model":
        return Olmo2Model(config)


class Olmo2Model(Olmo2PreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Olmo2DecoderLayer
    # The reference rotates in float32 by unrounded tables and rounds once (OLMo 3's too).
    float32_rotation_tables = True

    def new_norm(self, config: Olmo2Config) -> nn.Module:
        return Olmo2RMSNorm(config.hidden_size, config.rms_norm_eps)


class Olmo2ForCausalLM(Olmo2PreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class Olmo2ForSequenceClassification(Olmo2PreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""
