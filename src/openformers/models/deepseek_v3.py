"""DeepSeek-V3 decoders (DeepSeek-V3 and R1, Kimi K2, Moonlight-16B-A3B) in plain torch.nn: multi-head latent
attention and a mixture of routed and shared experts, chosen by group.

Multi-head latent attention (`LatentAttention`): each head's query is `q_proj(x)`, or with q_lora_rank
`q_b_proj(q_a_layernorm(q_a_proj(x)))`; `kv_a_proj_with_mqa(x)` gives a compressed vector of kv_lora_rank, normed by
`kv_a_layernorm`, and one key of qk_rope_head_dim that every head shares. The cache holds those two per position,
as the reference's does (B, 1, S, kv_lora_rank) and (B, 1, S, qk_rope_head_dim); `kv_b_proj` expands the compressed
vectors of every cached position into each head's qk_nope_head_dim key and v_head_dim value dimensions. A head's
query and key are their unrotated part then their rotated part; the rotated part's pairs are interleaved (x0, x1),
(x2, x3)... with `rope_interleave`, which the reference gathers into halves (evens, then odds) before rotating them
as Llama's halves, as here. The softmax's scale is qk_head_dim ** -0.5, times YaRN's mscale(factor, mscale_all_dim)
squared when the rope scaling is YaRN.

The first `first_k_dense_replace` layers have a SwiGLU MLP (`mlp.gate_proj/up_proj/down_proj`); the others a
`DeepseekV3MoE`: the router `mlp.gate` (its weight and the `e_score_correction_bias` buffer, kept in float32 as the
reference keeps them), the experts `mlp.experts.{e}.gate_proj/up_proj/down_proj` (mixtral.py's SparseMoeBlock runs
only the chosen ones), and `mlp.shared_experts`, one SwiGLU MLP every token runs, added to the routed experts' sum.
The router scores each expert by the sigmoid of its logit; a token keeps the `topk_group` groups (of `n_group`)
whose two best scores plus correction biases sum highest, and picks among their experts the `num_experts_per_tok`
best by score plus bias; their weights are the scores alone, renormalized with norm_topk_prob, times
routed_scaling_factor. With output_router_logits the heads return each sparse layer's router logits; the reference
computes no load-balancing loss for this family, and neither does this file.

Heads: causal LM, sequence and token classification (the reference's). Checkpoints' multi-token prediction layers
(`model.layers.{num_hidden_layers}...`, num_nextn_predict_layers of them) are not part of the model: they are
dropped when read, as the reference drops them. The CPU decoding kernel's step has no latent attention: it refuses
model_type deepseek_v3 (kernels/llama.py), and generation runs these layers. llama.cpp's "deepseek2" GGUF files are
not read.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import DeepseekV3Config
from .heads import SequenceClassification, TokenClassification
from .layers import RMSNorm, apply_rope, decoder_attention, yarn_mscale
from .mixtral import MixtralDecoderLayer, MixtralModel, MoeCausalLM, Router, SparseMoeBlock
from .qwen3_moe import Qwen3MoeMLP, Qwen3MoePreTrainedModel


def apply_rope_to_interleaved_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3's rotation of x (..., hs) whose pairs are (x[2i], x[2i + 1]): gathered into halves (the evens,
    then the odds) and rotated as `apply_rope` rotates halves, so the result (and the cached keys) are in halves, as
    the reference's."""
    return apply_rope(torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1), cos, sin)


def softmax_scale(config) -> float:
    """The attention's factor: qk_head_dim ** -0.5, times mscale(factor, mscale_all_dim) squared under YaRN rope
    scaling with mscale_all_dim (the reference's rule for latent attention)."""
    scale = config.qk_head_dim ** -0.5
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type", "default") != "default" and scaling.get("mscale_all_dim"):
        scale *= yarn_mscale(scaling["factor"], scaling["mscale_all_dim"]) ** 2
    return scale


class LatentAttention(nn.Module):
    """Multi-head latent attention (DeepSeek-V2 and V3): see the module docstring."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.num_attention_heads
        self.nope_dim, self.rope_dim, self.v_dim = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.rank = config.kv_lora_rank
        qk_dim, bias = self.nope_dim + self.rope_dim, config.attention_bias
        if config.q_lora_rank is None:
            self.q_proj = nn.Linear(config.hidden_size, self.n_head * qk_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(config.hidden_size, config.q_lora_rank, bias=bias)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, 1e-6)  # the reference's eps, not rms_norm_eps
            self.q_b_proj = nn.Linear(config.q_lora_rank, self.n_head * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(config.hidden_size, self.rank + self.rope_dim, bias=bias)
        self.kv_a_layernorm = RMSNorm(self.rank, 1e-6)
        self.kv_b_proj = nn.Linear(self.rank, self.n_head * (self.nope_dim + self.v_dim), bias=False)
        self.o_proj = nn.Linear(self.n_head * self.v_dim, config.hidden_size, bias=bias)
        self.dropout = config.attention_dropout
        self.scale = softmax_scale(config)
        self.rope = self.rotation(config)

    @staticmethod
    def rotation(config):
        """How the queries' and the shared key's rotated parts turn: V3's pairs interleaved or in halves."""
        return apply_rope_to_interleaved_pairs if config.rope_interleave else apply_rope

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "q_proj"):
            return self.q_proj(x)
        return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, _ = x.shape
        q = self.queries(x).view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, qk)
        q_nope, q_rot = q.split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_rot = self.kv_a_proj_with_mqa(x).split([self.rank, self.rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent)[:, None]  # (B, 1, T, rank)
        q_rot, k_rot = self.rope(q_rot, cos, sin), self.rope(k_rot[:, None], cos, sin)  # k_rot (B, 1, T, rope)
        if cache is not None:
            latent, k_rot = cache.update(self.layer_idx, latent, k_rot)  # every cached position's, (B, 1, S, ...)
        S = latent.shape[2]
        kv = self.kv_b_proj(latent[:, 0]).view(B, S, self.n_head, -1).transpose(1, 2)  # (B, nh, S, nope + v)
        k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)
        k = torch.cat([k_nope, k_rot.expand(-1, self.n_head, -1, -1)], dim=-1)  # (B, nh, S, qk)
        q = torch.cat([q_nope, q_rot], dim=-1)
        y, weights = decoder_attention(q, k, v, mask, None, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path, self.scale)
        return self.o_proj(y), weights


class FloatRouter(Router):
    """The router's logits computed in float32 from the input cast to float32, as DeepSeek's reference does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.weight.float())


class DeepseekV3Router(FloatRouter):
    """The router and the bias its choice adds to each expert's score (`e_score_correction_bias`, a buffer that
    checkpoints hold)."""

    def __init__(self, hidden_size: int, num_experts: int):
        super().__init__(hidden_size, num_experts)
        self.register_buffer("e_score_correction_bias", torch.zeros(num_experts))


def group_mask(scores: torch.Tensor, n_group: int, topk_group: int, group_score) -> torch.Tensor:
    """(N, E) booleans: the experts of each token's `topk_group` best groups, the E experts split into `n_group`
    groups in order, each group scored by `group_score` of its (N, n_group, E / n_group) scores."""
    N, E = scores.shape
    best = group_score(scores.view(N, n_group, E // n_group)).topk(topk_group, dim=-1).indices  # (N, topk_group)
    kept = torch.zeros(N, n_group, dtype=torch.bool, device=scores.device).scatter_(1, best, True)
    return kept[:, :, None].expand(N, n_group, E // n_group).reshape(N, E)


class DeepseekV3MoE(SparseMoeBlock):
    """The routed experts (chosen by group, see the module docstring) plus the shared experts every token runs."""

    def __init__(self, config: DeepseekV3Config):
        experts = [Qwen3MoeMLP(config.hidden_size, config.moe_intermediate_size)
                   for _ in range(config.n_routed_experts)]
        if config.num_experts_per_tok is None:
            raise ValueError("Invalid config: num_experts_per_tok=None; a model with experts needs a positive integer "
                             f"of at most n_routed_experts={config.n_routed_experts}.")
        super().__init__(config.hidden_size, experts, config.num_experts_per_tok, normalize=config.norm_topk_prob)
        self.gate = self.new_router(config)
        self.scaling_factor = config.routed_scaling_factor
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.shared_experts = Qwen3MoeMLP(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts,
                                          bias=self.mlp_bias(config))

    def new_router(self, config) -> Router:
        return DeepseekV3Router(config.hidden_size, config.n_routed_experts)

    @staticmethod
    def mlp_bias(config) -> bool:
        """Whether the shared experts and the dense layers' MLPs have biases: never here (DeepSeek-V2's mlp_bias)."""
        return False

    def choose(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = router_logits.sigmoid()  # (N, E) float32
        for_choice = scores + self.gate.e_score_correction_bias.float()
        allowed = group_mask(for_choice, self.n_group, self.topk_group, lambda s: s.topk(2, dim=-1).values.sum(-1))
        chosen = for_choice.masked_fill(~allowed, float("-inf")).topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, chosen)
        if self.normalize:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.scaling_factor, chosen

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> the routed and shared experts' sum (B, T, C), and the router's logits (B * T, E)."""
        y, router_logits = super().forward(x)
        return y + self.shared_experts(x), router_logits


class DeepseekV3DecoderLayer(MixtralDecoderLayer):
    attention_class = LatentAttention
    feed_forward_name = "mlp"
    moe_class = DeepseekV3MoE

    def new_feed_forward(self, config: DeepseekV3Config, layer_idx: int) -> nn.Module:
        if config.is_sparse(layer_idx):
            return self.moe_class(config)
        return Qwen3MoeMLP(config.hidden_size, config.intermediate_size, bias=self.moe_class.mlp_bias(config))


class DeepseekV3PreTrainedModel(Qwen3MoePreTrainedModel):  # its checkpoints' expert layouts are Qwen3-MoE's
    config_class = DeepseekV3Config

    @property
    def ignored_checkpoint_keys(self) -> tuple[str, ...]:
        """The multi-token prediction layers, numbered on from the last layer, are left out, as the reference leaves
        them."""
        config = self.config
        count = getattr(config, "num_nextn_predict_layers", 0)
        extra = "|".join(str(config.num_hidden_layers + i) for i in range(count))
        return super().ignored_checkpoint_keys + ((rf"(^|\.)layers\.({extra})\.",) if extra else ())

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DeepseekV3Router):
            nn.init.zeros_(module.e_score_correction_bias)

    def new_base_model(self, config: DeepseekV3Config) -> "DeepseekV3Model":
        return DeepseekV3Model(config)


class DeepseekV3Model(DeepseekV3PreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router logits."""

    layer_class = DeepseekV3DecoderLayer


class DeepseekV3ForCausalLM(DeepseekV3PreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and with
    output_router_logits the router logits (no load-balancing loss, as in the reference)."""

    load_balancing = False


class DeepseekV3ForSequenceClassification(DeepseekV3PreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class DeepseekV3ForTokenClassification(DeepseekV3PreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""
