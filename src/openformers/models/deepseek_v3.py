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
model_type deepseek_v3 (kernels/llama.py), and generation runs these layers.

GGUF files of llama.cpp's "deepseek2" architecture, which its converter writes for DeepSeek-V2 and V3 alike, are read
here (`config_from_gguf`, `convert_gguf_state_dict`): a file whose router's gating function is the sigmoid
(`deepseek2.expert_gating_func` 2) is V3's, any other V2's (deepseek_v2.py). Their rows are the checkpoint's: llama.cpp
rotates the pairs in place, as the reference's models do. Files converted before April 2025 store `attn_kv_b` as the
checkpoint's kv_b_proj; newer ones split it per head into `attn_k_b` (each head's key rows transposed) and `attn_v_b`,
which are put back together here. The experts' group counts are read when the file has them (files converted before
llama.cpp wrote them route among all experts, as llama.cpp then did); YaRN's mscale and mscale_all_dim are both the
file's yarn_log_multiplier / 0.1, as llama.cpp takes them.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, DeepseekV2Config, DeepseekV3Config
from ..weights import rename
from .gpt_neox import gguf_required
from .heads import SequenceClassification, TokenClassification
from .layers import RMSNorm, apply_rope, decoder_attention, yarn_mscale
from .llama import GGUF_RENAMES as LLAMA_GGUF_RENAMES
from .llama import gguf_rope_scaling
from .mixtral import MixtralDecoderLayer, MixtralModel, MoeCausalLM, Router, SparseMoeBlock, split_gguf_experts
from .qwen3_moe import Qwen3MoeMLP, Qwen3MoePreTrainedModel

# llama.cpp's expert_gating_func values (LLAMA_EXPERT_GATING_FUNC_TYPE_*); a "deepseek2" file without one is V2's.
GGUF_SOFTMAX, GGUF_SIGMOID = 1, 2


def config_from_gguf(gguf, **overrides) -> DeepseekV3Config | DeepseekV2Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "deepseek2" architecture: DeepSeek-V3's when the
    router's gating function is the sigmoid, else DeepSeek-V2's (see the module docstring)."""

    def get(key: str, default=None):
        value = gguf.get(f"deepseek2.{key}")
        return default if value is None else value

    def required(key: str):
        return gguf_required(gguf, f"deepseek2.{key}")

    heads, rope_dim = required("attention.head_count"), required("rope.dimension_count")
    # A head's key and value sizes: key_length_mla and value_length_mla in files that split kv_b (their key_length
    # and value_length are llama.cpp's compressed cache's), key_length and value_length in older ones.
    key_length = get("attention.key_length_mla") or required("attention.key_length")
    value_length = get("attention.value_length_mla") or required("attention.value_length")
    gating = get("expert_gating_func", GGUF_SOFTMAX)
    if gating not in (GGUF_SOFTMAX, GGUF_SIGMOID):
        raise ValueError(f"{gguf.path} gates its experts with function {gating} (deepseek2.expert_gating_func); "
                         f"openformers reads DeepSeek's softmax ({GGUF_SOFTMAX}, V2) and sigmoid ({GGUF_SIGMOID}, V3).")
    names = gguf.tensor_names
    values = {
        "vocab_size": get("vocab_size") or gguf.array_length("tokenizer.ggml.tokens"),
        "hidden_size": required("embedding_length"),
        "intermediate_size": required("feed_forward_length"),
        "num_hidden_layers": required("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": heads,  # the file's head_count_kv (1) is llama.cpp's view of the compressed cache
        "max_position_embeddings": get("context_length", 4096),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": get("rope.freq_base", 10000.0),
        "rope_scaling": _gguf_rope_scaling(gguf, rope_dim),
        "q_lora_rank": get("attention.q_lora_rank"),  # none: the queries are projected directly (V2-Lite)
        "kv_lora_rank": required("attention.kv_lora_rank"),
        "qk_rope_head_dim": rope_dim,
        "qk_nope_head_dim": key_length - rope_dim,
        "v_head_dim": value_length,
        "attention_bias": "blk.0.attn_kv_a_mqa.bias" in names,
        "n_routed_experts": required("expert_count"),
        "num_experts_per_tok": required("expert_used_count"),
        "moe_intermediate_size": required("expert_feed_forward_length"),
        "n_shared_experts": required("expert_shared_count"),
        "first_k_dense_replace": get("leading_dense_block_count", 0),
        "routed_scaling_factor": get("expert_weights_scale", 1.0),
        "norm_topk_prob": bool(get("expert_weights_norm", False)),
        "n_group": get("expert_group_count", 1),
        "topk_group": get("expert_group_used_count", 1),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": gguf.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": gguf.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": gguf.get("tokenizer.ggml.padding_token_id"),
    }
    if gating == GGUF_SIGMOID:
        values.update(architectures=["DeepseekV3ForCausalLM"], num_nextn_predict_layers=0)  # the converter drops them
        return DeepseekV3Config.from_dict(values, **overrides)
    if values["norm_topk_prob"]:
        raise ValueError(f"{gguf.path} renormalizes the chosen experts' softmax weights (deepseek2.expert_weights_norm),"
                         " which DeepSeek-V2's models never do; openformers reads softmax-gated files without it.")
    values.update(
        architectures=["DeepseekV2ForCausalLM"],
        topk_method="group_limited_greedy" if values["n_group"] > 1 else "greedy",
        mlp_bias=any(name.endswith(("ffn_up_shexp.bias", "ffn_up.bias")) for name in names),
    )
    return DeepseekV2Config.from_dict(values, **overrides)


def _gguf_rope_scaling(gguf, rope_dim: int) -> dict | None:
    """The file's rope scaling; under YaRN, DeepSeek's mscale and mscale_all_dim both from yarn_log_multiplier, which
    llama.cpp's converter writes as 0.1 * mscale_all_dim and llama.cpp reads as both (DeepSeek's configs give them
    equal); rounded to 6 digits, the float32 value's own precision."""
    scaling = gguf_rope_scaling(gguf, "deepseek2", rope_dim)
    multiplier = gguf.get("deepseek2.rope.scaling.yarn_log_multiplier")
    if scaling is not None and scaling["rope_type"] == "yarn" and multiplier:
        mscale = round(multiplier / 0.1, 6)
        scaling.update(mscale=mscale, mscale_all_dim=mscale)
    return scaling


GGUF_CONFIG_READERS["deepseek2"] = config_from_gguf

GGUF_RENAMES = {
    **LLAMA_GGUF_RENAMES,
    "attn_q_a": "self_attn.q_a_proj",
    "attn_q_a_norm": "self_attn.q_a_layernorm",
    "attn_q_b": "self_attn.q_b_proj",
    "attn_kv_a_mqa": "self_attn.kv_a_proj_with_mqa",
    "attn_kv_a_norm": "self_attn.kv_a_layernorm",
    "attn_kv_b": "self_attn.kv_b_proj",
    "ffn_gate_inp": "mlp.gate",
    "exp_probs_b": "mlp.gate",  # its `bias`, the router's e_score_correction_bias (see convert_gguf_state_dict)
    "ffn_gate_shexp": "mlp.shared_experts.gate_proj",
    "ffn_up_shexp": "mlp.shared_experts.up_proj",
    "ffn_down_shexp": "mlp.shared_experts.down_proj",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """A "deepseek2" file's tensors under the checkpoint's names: kv_b_proj put back together from attn_k_b and
    attn_v_b where the file splits it, the experts split out, the correction biases named, the rest renamed."""
    state_dict = split_gguf_experts(joined_kv_b(state_dict, config), "mlp",
                                    {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})
    state_dict = {name.replace(".exp_probs_b.bias", ".exp_probs_b.e_score_correction_bias"): t
                  for name, t in state_dict.items()}
    return rename(state_dict, GGUF_RENAMES)


def joined_kv_b(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Each layer's `attn_k_b` (per head, the key rows transposed: (nh, kv_lora_rank, qk_nope_head_dim)) and `attn_v_b`
    ((nh, v_head_dim, kv_lora_rank)) as the checkpoint's kv_b_proj, `attn_kv_b` (nh * (nope + v), kv_lora_rank), each
    head's key rows then its value rows. A file that holds attn_kv_b as well keeps it; a half pair is left as it is."""
    out = dict(state_dict)
    nh, rank = config.num_attention_heads, config.kv_lora_rank
    for k_name in [name for name in state_dict if name.endswith(".attn_k_b.weight")]:
        v_name, kv_name = k_name.replace("attn_k_b", "attn_v_b"), k_name.replace("attn_k_b", "attn_kv_b")
        if v_name not in state_dict:
            continue
        k_b, v_b = out.pop(k_name), out.pop(v_name)
        if kv_name not in state_dict:
            k = k_b.reshape(nh, rank, config.qk_nope_head_dim).transpose(1, 2)  # (nh, nope, rank)
            out[kv_name] = torch.cat([k, v_b.reshape(nh, config.v_head_dim, rank)], dim=1).reshape(-1, rank)
    return out


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
        for name in ("n_routed_experts", "n_shared_experts", "num_experts_per_tok"):  # None passes the config alone
            if getattr(config, name) is None:
                raise ValueError(f"Invalid config: {name}=None; a model with experts needs a positive integer.")
        experts = [Qwen3MoeMLP(config.hidden_size, config.moe_intermediate_size)
                   for _ in range(config.n_routed_experts)]
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
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)
    # The router's weight and correction biases stay float32 in a bfloat16 or float16 model, as the reference keeps
    # them (_keep_in_fp32_modules_strict): rounded to bfloat16 they give scores that choose other experts.
    always_float32 = ("gate.weight", "gate.e_score_correction_bias")

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
