"""OLMo decoders in plain torch.nn (model_type "olmo": OLMo-1B-hf, OLMo-7B-0424-hf...): Llama's network with
LayerNorms that have no parameters.

Each norm (before attention, before the MLP and after the last layer) is a LayerNorm without weight or bias, taken in
float32 with epsilon 1e-5 and cast back, so a checkpoint holds no norm tensors at all. With `clip_qkv` set, the
queries, keys and values are clamped to +-clip_qkv after their projections (`ClippedQKV`, which OLMoE's attention
takes too). Rotary positions (rotated in float32 by float32 tables and rounded once in half precision, as the
reference rotates them), grouped-query attention, the SwiGLU MLP, the cache and the heads (causal LM and sequence
classification, those the reference has) are llama.py's.

GGUF files of llama.cpp's "olmo" architecture load too: llama.py's metadata reader gives the config (with
`olmo.attention.clamp_kqv` as clip_qkv), and llama.py's converter undoes the query and key rows' permutation, which
llama.cpp's converter applies to OLMo as to Llama. The CPU decoding kernel's step (kernels/llama.py) runs these layers,
the norms as LayerNorms of unit weights and zero biases and the clamp as StepWeights.set_clip_qkv.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, OlmoConfig
from .layers import apply_rope_in_float32
from .llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    convert_gguf_state_dict,
    gguf_config_values,
)


def config_from_gguf(gguf, **overrides) -> OlmoConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "olmo" architecture."""
    values = {"architectures": ["OlmoForCausalLM"], **gguf_config_values(gguf),
              "clip_qkv": gguf.get("olmo.attention.clamp_kqv")}
    return OlmoConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["olmo"] = config_from_gguf


class OlmoLayerNorm(nn.Module):
    """A LayerNorm without weight or bias (epsilon 1e-5), taken in float32 whatever the input's dtype."""

    eps = 1e-5

    def __init__(self, hidden_size: int):
        super().__init__()
        self.normalized_shape = (hidden_size,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, eps=self.eps).to(x.dtype)


class ClippedQKV:
    """An attention class's queries, keys and values clamped to +-config.clip_qkv after its projections (and the norms
    its `project` applies), when clip_qkv is set: OLMo's and OLMoE's attention."""

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.clip_qkv = config.clip_qkv

    def project(self, x):
        q, k, v = super().project(x)
        if self.clip_qkv is None:
            return q, k, v
        c = self.clip_qkv
        return q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)


class OlmoAttention(ClippedQKV, LlamaAttention):
    rope = staticmethod(apply_rope_in_float32)  # by the float32 tables of OlmoModel.float32_rotation_tables


class OlmoDecoderLayer(LlamaDecoderLayer):
    attention_class = OlmoAttention

    def __init__(self, config: OlmoConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.input_layernorm = OlmoLayerNorm(config.hidden_size)
        self.post_attention_layernorm = OlmoLayerNorm(config.hidden_size)


class OlmoPreTrainedModel(LlamaPreTrainedModel):
    config_class = OlmoConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)  # Llama's: renames and un-permuted q/k rows

    def new_base_model(self, config: OlmoConfig) -> "OlmoModel":
        return OlmoModel(config)


class OlmoModel(OlmoPreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = OlmoDecoderLayer
    # The reference rotates in float32 by unrounded tables and rounds once (in bfloat16 Llama's way differs).
    float32_rotation_tables = True

    def new_norm(self, config: OlmoConfig) -> nn.Module:
        return OlmoLayerNorm(config.hidden_size)


class OlmoForCausalLM(OlmoPreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class OlmoForSequenceClassification(OlmoPreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""
