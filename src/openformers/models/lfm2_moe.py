"""LFM2-MoE decoders (LiquidAI/LFM2-8B-A1B; model_type "lfm2_moe") in plain torch.nn.

LFM2's layers (lfm2.py: gated short convolutions and attention, the HybridCache, the tied head), whose feed-forward
part is, from layer `num_dense_layers` on, a sparse mixture (`feed_forward`: the router `gate`, the experts
`experts.{e}.w1/w3/w2`, and the `expert_bias` buffer); the first layers keep LFM2's SwiGLU MLP of intermediate_size.
The router's logits go through a sigmoid; each token's `num_experts_per_tok` experts are those whose scores plus
expert_bias are highest (with `use_expert_bias`, else the scores alone), weighted by their scores, renormalized to
sum to 1 (plus 1e-6) with `norm_topk_prob`, times `routed_scaling_factor`, as the reference routes them
(mixtral.MixtureOfExperts' flow, its `choose` here). With `output_router_logits` the base model returns every sparse
layer's router logits; the reference's head adds no load-balancing loss, nor does this one. The reference builds
expert_bias as a float32 buffer, which a bfloat16 model keeps in float32 here too (`always_float32`).
GGUF files of llama.cpp's "lfm2moe" architecture load (lfm2.py's metadata and renames, the experts stacked per
projection, `exp_probs_b.bias` the expert bias, `ffn_gate_inp` the router). The CPU decoding kernel refuses the
model type.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Lfm2MoeConfig
from ..weights import rename
from .gpt_neox import gguf_required
from .lfm2 import Lfm2DecoderLayer, Lfm2Model, Lfm2PreTrainedModel, gguf_config_values
from .lfm2 import convert_gguf_state_dict as convert_lfm2_gguf_state_dict
from .mixtral import MixtralExpert, MixtralModel, MoeCausalLM, Router, SparseMoeBlock, split_gguf_experts


def config_from_gguf(gguf, **overrides) -> Lfm2MoeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "lfm2moe" architecture."""
    values = {
        "architectures": ["Lfm2MoeForCausalLM"],
        **gguf_config_values(gguf),
        "intermediate_size": gguf_required(gguf, "lfm2moe.feed_forward_length"),
        "moe_intermediate_size": gguf_required(gguf, "lfm2moe.expert_feed_forward_length"),
        "num_experts": gguf_required(gguf, "lfm2moe.expert_count"),
        "num_experts_per_tok": gguf_required(gguf, "lfm2moe.expert_used_count"),
        "num_dense_layers": gguf.get("lfm2moe.leading_dense_block_count", 0),
        "use_expert_bias": any(name.endswith("exp_probs_b.bias") for name in gguf.tensor_names),
        "routed_scaling_factor": gguf.get("lfm2moe.expert_weights_scale", 1.0),
        "norm_topk_prob": gguf.get("lfm2moe.expert_weights_norm", True),
    }
    return Lfm2MoeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["lfm2moe"] = config_from_gguf


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Lfm2MoeConfig) -> dict[str, torch.Tensor]:
    """The experts split out per expert, the router and the expert bias named, then LFM2's renames."""
    state_dict = split_gguf_experts(state_dict, "feed_forward", {"gate": "w1", "up": "w3", "down": "w2"})
    state_dict = {name.replace("exp_probs_b.bias", "feed_forward.expert_bias"): t for name, t in state_dict.items()}
    return convert_lfm2_gguf_state_dict(rename(state_dict, {"ffn_gate_inp": "feed_forward.gate"}), config)


class Lfm2MoeSparseMoeBlock(SparseMoeBlock):
    """The router (`gate`), the experts and the expert bias, routed as the module docstring says."""

    def __init__(self, config: Lfm2MoeConfig):
        experts = [MixtralExpert(config.hidden_size, config.moe_intermediate_size) for _ in range(config.num_experts)]
        super().__init__(config.hidden_size, experts, config.num_experts_per_tok, normalize=config.norm_topk_prob,
                         weights_in_model_dtype=True)
        self.scaling_factor = config.routed_scaling_factor
        self.register_buffer("expert_bias", torch.zeros(config.num_experts) if config.use_expert_bias else None)

    def choose(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = router_logits.sigmoid()  # (N, E)
        for_choice = scores if self.expert_bias is None else scores + self.expert_bias
        chosen = for_choice.topk(self.top_k, dim=-1).indices  # (N, k)
        weights = scores.gather(1, chosen)
        if self.normalize:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)
        return weights * self.scaling_factor, chosen


class Lfm2MoeDecoderLayer(Lfm2DecoderLayer):
    """LFM2's layer whose feed-forward part is a sparse mixture from num_dense_layers on; its router logits are
    appended to `router_logits` when a list is given."""

    def new_feed_forward(self, config: Lfm2MoeConfig, layer_idx: int) -> nn.Module:
        if config.is_sparse(layer_idx):
            return Lfm2MoeSparseMoeBlock(config)
        return super().new_feed_forward(config, layer_idx)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa", router_logits=None):
        x, weights = self.attention_block(x, cos, sin, mask, cache, attention_path)
        h = self.feed_forward(self.ffn_norm(x))
        if isinstance(h, tuple):  # a sparse block's output and router logits
            h, scores = h
            if router_logits is not None:
                router_logits.append(scores)
        return x + h, weights


class Lfm2MoePreTrainedModel(Lfm2PreTrainedModel):
    config_class = Lfm2MoeConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)
    always_float32 = ("feed_forward.expert_bias",)  # built float32 by the reference, whatever the model's dtype

    def new_base_model(self, config: Lfm2MoeConfig) -> "Lfm2MoeModel":
        return Lfm2MoeModel(config)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Router):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, Lfm2MoeSparseMoeBlock) and module.expert_bias is not None:
            nn.init.zeros_(module.expert_bias)


class Lfm2MoeModel(Lfm2MoePreTrainedModel, Lfm2Model):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router logits."""

    layer_class = Lfm2MoeDecoderLayer
    forward = MixtralModel.forward  # the decoder's forward, collecting the router logits


class Lfm2MoeForCausalLM(Lfm2MoePreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and the router
    logits with output_router_logits (no load-balancing loss, as the reference's)."""

    load_balancing = False
