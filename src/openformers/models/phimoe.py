"""PhiMoE (Phi-3.5-MoE, model_type "phimoe") in plain torch.nn: Mixtral's decoder (mixtral.py) with LayerNorms, biases
and its own routing.

Differences from Mixtral: LayerNorms with a bias (eps `rms_norm_eps`) before attention, before the experts and at the
end; biases on q, k, v and o with `attention_bias` and on the language-model head with `lm_head_bias`; longrope
scaling whose cos and sin are scaled by the config's `short_mscale`, or `long_mscale` for a call reaching past
original_max_position_embeddings; and the sparsemixer routing (`sparsemixer`, Liu et al. 2024, "GRIN: GRadient-INformed
MoE"): each token takes two experts, the first its best-scored, the second the best of the others, each weighted by
the softmax over the scores within a relative distance 2 * router_jitter_noise of its own. While training, each
choice is instead drawn (Gumbel sampling among those near scores), its weight multiplied by 1 or about 1/3
(a midpoint rule of Heun's third-order method), and the router's gradient is the method's estimate, not the
softmax's (`_RoutingGradient`); input_jitter_noise scales the experts' input by noise twice, as the reference's
block and router each do. The reference's random draws are made in its order, so a seed gives its training forward.

Checkpoints hold Mixtral's names (block_sparse_moe.gate, experts.{e}.w1/w3/w2); the reference's in-memory layout
(mlp.router, mlp.experts.gate_up_proj/down_proj) loads too. GGUF files of llama.cpp's "phimoe" architecture are read
(`config_from_gguf`, `convert_gguf_state_dict`): Phi-3's metadata (`phimoe.*`, the window 0 for none) with the
expert counts, Llama's tensor names with each layer's experts stacked (Mixtral's), the rows in the reference's order,
the biases where the checkpoint has them, and longrope as Phi-3's factor tensors with one
`phimoe.rope.scaling.attn_factor`, read as both mscales. That factor is the one llama.cpp's converter computes from
the context lengths (as Phi-3's reference does), not the config's own short_mscale and long_mscale: Phi-3.5-MoE's
1.243 becomes 1.190 there, and its GGUF files run with that, here as in llama.cpp. No key holds the sparsemixer's
router_jitter_noise (llama.cpp routes by the softmax's top two): a GGUF file's is the default, Phi-3.5-MoE's 0.01.

One difference from the reference: past original_max_position_embeddings, positions turn with longrope's long
factors (and long_mscale), as Phi-3's do here and in the reference, as Microsoft's own PhiMoE code and llama.cpp do;
the reference's PhiMoE turns them with the short factors at every length and switches only the mscale. The two agree
on any sequence within original_max_position_embeddings (4096 tokens for Phi-3.5-MoE).
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, PhimoeConfig
from ..weights import rename
from . import llama, mixtral
from .gpt_neox import gguf_required
from .heads import SequenceClassification
from .phi3 import GGUF_LONGROPE_TENSORS, gguf_longrope_factors


def config_from_gguf(gguf, **overrides) -> PhimoeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "phimoe" architecture: Llama's metadata, the expert
    counts, the window (0 for none), biases where the file has their tensors, and longrope from the factor tensors
    with the file's attention factor as both mscales (llama.cpp's default 1 without it)."""
    values = llama.gguf_config_values(gguf)
    if "rope_factors_long.weight" in gguf.tensor_names:
        attention_factor = gguf.get("phimoe.rope.scaling.attn_factor", 1.0)
        values["rope_scaling"] = {
            "rope_type": "longrope", **gguf_longrope_factors(gguf),
            "original_max_position_embeddings": gguf.get("phimoe.rope.scaling.original_context_length",
                                                         values["max_position_embeddings"]),
            "short_mscale": attention_factor, "long_mscale": attention_factor,
        }
    values.update(
        architectures=["PhimoeForCausalLM"],
        num_local_experts=gguf_required(gguf, "phimoe.expert_count"),
        num_experts_per_tok=gguf.get("phimoe.expert_used_count", 2),
        sliding_window=gguf.get("phimoe.attention.sliding_window") or None,
        attention_bias="blk.0.attn_q.bias" in gguf.tensor_names,
        lm_head_bias="output.bias" in gguf.tensor_names,
    )
    return PhimoeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["phimoe"] = config_from_gguf


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: PhimoeConfig) -> dict[str, torch.Tensor]:
    """The experts split out (Mixtral's), then Llama's names with the router's; the rows are in the reference's order
    (llama.cpp rotates PhiMoE's as Hugging Face does), the longrope factors in the config already."""
    state_dict = {name: t for name, t in state_dict.items() if name not in GGUF_LONGROPE_TENSORS}
    state_dict = mixtral.split_gguf_experts(state_dict, "block_sparse_moe", {"gate": "w1", "up": "w3", "down": "w2"})
    return rename(state_dict, {**llama.GGUF_RENAMES, "ffn_gate_inp": "block_sparse_moe.gate"})


class _RoutingGradient(torch.autograd.Function):
    """A drawn expert's weight in the forward (its softmax weight times the midpoint factor), and in the backward
    sparsemixer's estimate of the gradient of the router's scores: the upstream gradient times the weight, taken
    from every score by its softmax share and given back to the drawn expert's score."""

    @staticmethod
    def forward(ctx, scores, weight, chosen, probs, midpoint):
        ctx.save_for_backward(weight, chosen, probs)
        return weight * midpoint

    @staticmethod
    def backward(ctx, grad):
        weight, chosen, probs = ctx.saved_tensors
        grad = grad * weight
        return (probs * grad.mul(-1)).scatter_add(-1, chosen, grad), None, None, None, None


def _pick(scores: torch.Tensor, candidates: torch.Tensor, eps: float, training: bool, second: bool):
    """One expert per token (N, 1) among `candidates` (the scores, with those already taken at -inf) and its weight:
    the softmax over the candidates whose score is within a relative 2 * eps of the best one's."""
    with torch.no_grad():
        best, best_expert = candidates.max(dim=-1, keepdim=True)
        too_far = (best - scores) / scores.abs().clamp(min=best) > 2 * eps
    gates = candidates.masked_fill(too_far, float("-inf"))
    chosen = best_expert
    if training:  # Gumbel sampling among the near scores
        chosen = (gates - torch.empty_like(gates).exponential_().log()).max(dim=-1)[1].unsqueeze(-1)
    probs = torch.softmax(gates, dim=-1)
    weight = probs.gather(dim=-1, index=chosen)
    if not training:
        return weight, chosen
    # Heun's midpoint: weight 1 when the draw is the best or with probability 1/4, else about 1/3. The second pick
    # draws its uniform numbers twice, as the reference does (rand_like then uniform_), so a seed gives its draws.
    draw = torch.rand_like(weight)
    if second:
        draw = draw.uniform_()
    midpoint = torch.add(0.3333, (chosen == probs.argmax(dim=-1, keepdim=True)) | (draw > 0.75), alpha=0.6667)
    return _RoutingGradient.apply(scores, weight, chosen, probs, midpoint.type_as(probs)), chosen


def sparsemixer(scores: torch.Tensor, eps: float, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's two experts (N, 2) and their weights, in the scores' dtype, from the router's scores (N, E)."""
    first_weight, first = _pick(scores, scores, eps, training, second=False)
    others = torch.scatter(scores, -1, first, float("-inf"))
    second_weight, second = _pick(scores, others, eps, training, second=True)
    return torch.cat([first_weight, second_weight], dim=-1), torch.cat([first, second], dim=-1)


class PhimoeSparseMoeBlock(mixtral.SparseMoeBlock):
    """Mixtral's router and SwiGLU experts, routed by `sparsemixer`."""

    jitter_draws = 2  # the reference's block and router each scale the input by input_jitter_noise

    def __init__(self, config: PhimoeConfig):
        experts = [mixtral.MixtralExpert(config.hidden_size, config.intermediate_size)
                   for _ in range(config.num_local_experts)]
        super().__init__(config.hidden_size, experts, config.num_experts_per_tok, normalize=False,
                         jitter_noise=config.input_jitter_noise)
        self.router_jitter_noise = config.router_jitter_noise

    def choose(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sparsemixer(router_logits, self.router_jitter_noise, self.training)


class PhimoeDecoderLayer(mixtral.MixtralDecoderLayer):
    norm_class = nn.LayerNorm

    def new_feed_forward(self, config: PhimoeConfig, layer_idx: int) -> nn.Module:
        return PhimoeSparseMoeBlock(config)


class PhimoePreTrainedModel(mixtral.MixtralPreTrainedModel):
    config_class = PhimoeConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    @staticmethod
    def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mixtral's names, from the reference's in-memory layout too (whose router is `mlp.router`)."""
        state_dict = {key.replace(".mlp.router.", ".mlp.gate."): t for key, t in state_dict.items()}
        return mixtral.MixtralPreTrainedModel.from_checkpoint_layout(state_dict)

    def new_base_model(self, config: PhimoeConfig) -> "PhimoeModel":
        return PhimoeModel(config)


class PhimoeModel(PhimoePreTrainedModel, mixtral.MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every layer's router
    scores."""

    layer_class = PhimoeDecoderLayer

    def new_norm(self, config: PhimoeConfig) -> nn.Module:
        return nn.LayerNorm(config.hidden_size, config.rms_norm_eps)

    def new_rotary(self, config: PhimoeConfig, scaling: dict | None = None) -> nn.Module:
        return super().new_rotary(config, config.model_rope_scaling())


class PhimoeForCausalLM(PhimoePreTrainedModel, mixtral.MoeCausalLM):
    """The decoder with its language-model head (with a bias when lm_head_bias): next-token logits, the loss when
    labels are given, and the load-balancing loss with output_router_logits."""

    lm_head_bias = property(lambda self: bool(self.config.lm_head_bias))


class PhimoeForSequenceClassification(PhimoePreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""
