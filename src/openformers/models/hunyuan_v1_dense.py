"""Tencent's Hunyuan dense decoders (Hunyuan-0.5B, 1.8B, 4B and 7B, Instruct and Pretrain; model_type
"hunyuan_v1_dense") in plain torch.nn.

Llama's network (grouped-query attention, SwiGLU without biases, RMSNorm, rotary positions, attention_bias on q, k, v
and o) with an RMSNorm over each head's queries and keys, one weight shared by the heads (`self_attn.query_layernorm`,
`self_attn.key_layernorm`), run after the rotation where Qwen3's runs before it. The released configs' rope scaling,
"dynamic" with an `alpha`, stretches the rotary base once (layers.rope_inverse_frequencies). The heads are the
reference's: causal LM and sequence classification.

GGUF files of llama.cpp's "hunyuan-dense" architecture keep the rows in the reference's order and hold the stretched
base as their rope.freq_base (with no scaling), which is how they are read. The CPU decoding kernel's step runs these
layers, its q/k norms set to follow the rotation (kernels/llama.py).
"""

import torch

from ..configs import GGUF_CONFIG_READERS, HunYuanDenseV1Config
from ..weights import rename
from .layers import RMSNorm
from .llama import (
    GGUF_RENAMES,
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)


def config_from_gguf(gguf, **overrides) -> HunYuanDenseV1Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "hunyuan-dense" architecture: Llama's metadata (the
    stretched base as rope_theta), attention biases where the first layer's tensors have them."""
    values = gguf_config_values(gguf)
    values.update(architectures=["HunYuanDenseV1ForCausalLM"],
                  attention_bias="blk.0.attn_q.bias" in gguf.tensor_names)
    return HunYuanDenseV1Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["hunyuan-dense"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, and the per-head norms of the rotated queries and keys.
HUNYUAN_GGUF_RENAMES = {**GGUF_RENAMES, "attn_q_norm": "self_attn.query_layernorm",
                        "attn_k_norm": "self_attn.key_layernorm"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the rows are in the reference's order already)."""
    return rename(state_dict, HUNYUAN_GGUF_RENAMES)


class HunYuanDenseV1Attention(LlamaAttention):
    def __init__(self, config: HunYuanDenseV1Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.query_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.key_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def rotated(self, x, cos, sin):
        """Llama's rotated queries and keys, each head's then RMS-normed."""
        q, k, v = super().rotated(x, cos, sin)  # q (B, nh, T, hs), k and v (B, n_kv, T, hs)
        return self.query_layernorm(q), self.key_layernorm(k), v


class HunYuanDenseV1DecoderLayer(LlamaDecoderLayer):
    attention_class = HunYuanDenseV1Attention


class HunYuanDenseV1PreTrainedModel(LlamaPreTrainedModel):
    config_class = HunYuanDenseV1Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: HunYuanDenseV1Config) -> "HunYuanDenseV1Model":
        return HunYuanDenseV1Model(config)


class HunYuanDenseV1Model(HunYuanDenseV1PreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = HunYuanDenseV1DecoderLayer


class HunYuanDenseV1ForCausalLM(HunYuanDenseV1PreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class HunYuanDenseV1ForSequenceClassification(HunYuanDenseV1PreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""
