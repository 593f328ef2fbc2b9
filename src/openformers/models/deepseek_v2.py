"""DeepSeek-V2 decoders (DeepSeek-V2, V2-Lite, DeepSeek-Coder-V2 and its Lite models) in plain torch.nn: DeepSeek-V3's
multi-head latent attention and mixture of routed and shared experts (deepseek_v3.py), with V2's rotation and
routing.

The attention's rotated parts are pairs (x[2i], x[2i + 1]) rotated in place, as the reference's complex products
rotate them (so the cached shared keys keep that order), in float32 by float32 tables, rounded once, as the
reference's complex products are. The router scores the experts by a softmax of its
logits (computed in float32) and a token runs the `num_experts_per_tok` best of all experts (`topk_method`
"greedy"), or of the experts in its `topk_group` best groups, a group scored by its best expert
("group_limited_greedy"); their weights are the softmax's, not renormalized (the reference never reads
norm_topk_prob here), times routed_scaling_factor. There is no correction bias. With `mlp_bias` the dense layers'
MLPs and the shared experts have biases. Heads: causal LM and sequence classification (the reference's).

The CPU decoding kernel's step has no latent attention: it refuses model_type deepseek_v2 (kernels/llama.py), and
generation runs these layers. llama.cpp's "deepseek2" GGUF files whose router's gating function is the softmax (or
unstated, as in files converted before llama.cpp wrote it) read as this family (deepseek_v3.config_from_gguf): a
file with expert groups (`deepseek2.expert_group_count` above 1, DeepSeek-V2's) as group_limited_greedy, else greedy.
"""

import torch
import torch.nn.functional as F

from ..configs import DeepseekV2Config
from .deepseek_v3 import (
    DeepseekV3DecoderLayer,
    DeepseekV3ForCausalLM,
    DeepseekV3MoE,
    DeepseekV3PreTrainedModel,
    FloatRouter,
    LatentAttention,
    group_mask,
)
from .heads import SequenceClassification
from .layers import apply_interleaved_rope_in_float32
from .mixtral import MixtralModel, Router


class DeepseekV2Attention(LatentAttention):
    @staticmethod
    def rotation(config):
        # In float32 by DeepseekV2Model's float32 tables, rounded once: the reference's complex products in float32.
        return apply_interleaved_rope_in_float32


class DeepseekV2Moe(DeepseekV3MoE):
    """The routed experts (chosen by softmax, greedily or by group) plus the shared experts every token runs."""

    def __init__(self, config: DeepseekV2Config):
        super().__init__(config)
        self.topk_method = config.topk_method

    def new_router(self, config) -> Router:
        return FloatRouter(config.hidden_size, config.n_routed_experts)

    @staticmethod
    def mlp_bias(config) -> bool:
        return config.mlp_bias

    def choose(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = F.softmax(router_logits, dim=-1, dtype=torch.float32)  # (N, E)
        if self.topk_method == "group_limited_greedy":
            allowed = group_mask(scores, self.n_group, self.topk_group, lambda s: s.max(dim=-1).values)
            scores = scores.masked_fill(~allowed, 0.0)
        weights, chosen = scores.topk(self.top_k, dim=-1)
        return weights * self.scaling_factor, chosen


class DeepseekV2DecoderLayer(DeepseekV3DecoderLayer):
    attention_class = DeepseekV2Attention
    moe_class = DeepseekV2Moe


class DeepseekV2PreTrainedModel(DeepseekV3PreTrainedModel):
    config_class = DeepseekV2Config

    def new_base_model(self, config: DeepseekV2Config) -> "DeepseekV2Model":
        return DeepseekV2Model(config)


class DeepseekV2Model(DeepseekV2PreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router logits."""

    layer_class = DeepseekV2DecoderLayer
    float32_rotation_tables = True  # see DeepseekV2Attention.rotation


class DeepseekV2ForCausalLM(DeepseekV2PreTrainedModel, DeepseekV3ForCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and with
    output_router_logits the router logits (no load-balancing loss, as in the reference)."""


class DeepseekV2ForSequenceClassification(DeepseekV2PreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""
