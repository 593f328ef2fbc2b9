"""Baidu's ERNIE 4.5 mixtures of experts (ERNIE-4.5-21B-A3B, ERNIE-4.5-300B-A47B; model_type "ernie4_5_moe") in
plain torch.nn.

ERNIE 4.5's attention (ernie4_5.py: interleaved pairs turned in float32, biases with `use_bias`). The layers
`Ernie4_5_MoeConfig.is_sparse` names (every `moe_layer_interval`-th from `moe_layer_start_index` to
`moe_layer_end_index`) have a `Ernie4_5_MoeSparseMoeBlock` under `mlp`: the router `mlp.gate` (logits computed in
float32, as the reference computes them), the correction biases `mlp.moe_statics.e_score_correction_bias` (1, E) (both
kept in float32 whatever dtype the model loads in: `always_float32`, the reference's strict float32 modules), the SwiGLU
experts `mlp.experts.{e}.gate_proj/up_proj/down_proj` (mixtral.py's SparseMoeBlock runs only the chosen ones) and
`mlp.shared_experts`, one SwiGLU MLP of moe_num_shared_experts * moe_intermediate_size (with biases under use_bias) that
every token runs, added to the routed experts' sum. A token's experts are its `moe_k` best by softmax probability plus
correction bias; their weights are the probabilities alone, divided by their sum clamped below at `moe_norm_min`, then
rounded to the model's dtype. The other layers have a SwiGLU MLP of `intermediate_size`. With output_router_logits the
heads return each sparse layer's router logits and the causal LM adds the load-balancing loss (Mixtral's, as the
reference). Unlike the dense family's, the language-model head has a bias under use_bias. The reference's heads: the
base model and the causal LM. A checkpoint's multi-token prediction weights (`model.mtp_*`) are left out when read, as
the reference leaves them.

GGUF files of llama.cpp's "ernie4_5-moe" architecture are read here: ERNIE 4.5's metadata and names, the expert
count, how many a token uses, the experts' size, the leading dense layers and the sparse layers' interval, the shared
experts' count; each layer's experts stacked into one tensor per projection, the shared experts as `ffn_*_shexp`, the
correction biases as `exp_probs_b.bias`. The CPU decoding kernel's step runs these layers (kernels/llama.py): the
choice by probability plus correction with moe_norm_min's floor, the chosen experts, and the shared experts as the
step's dense MLP.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Ernie4_5_MoeConfig
from ..weights import rename
from .deepseek_v3 import FloatRouter
from .ernie4_5 import Ernie4_5Attention
from .llama import GGUF_RENAMES, gguf_config_values
from .mixtral import MixtralDecoderLayer, MixtralModel, MoeCausalLM, SparseMoeBlock, split_gguf_experts
from .qwen3_moe import Qwen3MoeMLP, Qwen3MoePreTrainedModel


def config_from_gguf(gguf, **overrides) -> Ernie4_5_MoeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "ernie4_5-moe" architecture."""
    arch = gguf.get("general.architecture")
    values = gguf_config_values(gguf)
    experts = gguf.get(f"{arch}.expert_count")
    if not experts:
        raise ValueError(f"{gguf.path} lacks {arch}.expert_count, the number of experts a {arch} model needs.")
    values.update(
        architectures=["Ernie4_5_MoeForCausalLM"],
        moe_num_experts=experts,
        moe_k=gguf.get(f"{arch}.expert_used_count", 6),
        moe_intermediate_size=gguf.get(f"{arch}.expert_feed_forward_length", values["intermediate_size"]),
        moe_layer_start_index=gguf.get(f"{arch}.leading_dense_block_count", 0),
        moe_layer_interval=gguf.get(f"{arch}.interleave_moe_layer_step", 1),
        moe_num_shared_experts=gguf.get(f"{arch}.expert_shared_count", 0),
    )
    return Ernie4_5_MoeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["ernie4_5-moe"] = config_from_gguf

GGUF_MOE_RENAMES = {
    **GGUF_RENAMES,
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_shexp": "mlp.shared_experts.gate_proj",
    "ffn_up_shexp": "mlp.shared_experts.up_proj",
    "ffn_down_shexp": "mlp.shared_experts.down_proj",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Ernie4_5_MoeConfig) -> dict[str, torch.Tensor]:
    """The experts split out, then the renames (the query and key rows are in the reference's order already); the
    correction biases (`blk.N.exp_probs_b.bias`, stored as a vector or one row) as the checkpoint's (1, E)."""
    state_dict = split_gguf_experts(state_dict, "mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})
    out = {}
    for name, t in rename(state_dict, GGUF_MOE_RENAMES).items():
        if name.endswith(".exp_probs_b.bias"):
            name, t = name.replace(".exp_probs_b.bias", ".mlp.moe_statics.e_score_correction_bias"), t.reshape(1, -1)
        out[name] = t
    return out


class Ernie4_5_MoeStatics(nn.Module):
    """The correction bias added to each expert's probability when choosing (a (1, E) buffer checkpoints hold)."""

    def __init__(self, num_experts: int):
        super().__init__()
        self.register_buffer("e_score_correction_bias", torch.zeros(1, num_experts))


class Ernie4_5_MoeSparseMoeBlock(SparseMoeBlock):
    """The routed experts (chosen as the module docstring says) plus the shared experts every token runs."""

    def __init__(self, config: Ernie4_5_MoeConfig):
        experts = [Qwen3MoeMLP(config.hidden_size, config.moe_intermediate_size)
                   for _ in range(config.moe_num_experts)]
        super().__init__(config.hidden_size, experts, config.moe_k, normalize=True, weights_in_model_dtype=True)
        self.gate = FloatRouter(config.hidden_size, config.moe_num_experts)
        self.moe_statics = Ernie4_5_MoeStatics(config.moe_num_experts)
        self.norm_min = config.moe_norm_min
        shared = config.moe_num_shared_experts
        self.shared_experts = (Qwen3MoeMLP(config.hidden_size, config.moe_intermediate_size * shared,
                                           bias=bool(config.use_bias)) if shared else None)

    def choose(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)  # (N, E)
        chosen = (probs + self.moe_statics.e_score_correction_bias.float()).topk(self.top_k, dim=-1).indices
        weights = probs.gather(1, chosen)
        return weights / weights.sum(dim=-1, keepdim=True).clamp(min=self.norm_min), chosen

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> the routed and shared experts' sum (B, T, C), and the router's logits (B * T, E)."""
        y, router_logits = super().forward(x)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y, router_logits


class Ernie4_5_MoeDecoderLayer(MixtralDecoderLayer):
    attention_class = Ernie4_5Attention
    feed_forward_name = "mlp"

    def new_feed_forward(self, config: Ernie4_5_MoeConfig, layer_idx: int) -> nn.Module:
        if config.is_sparse(layer_idx):
            return Ernie4_5_MoeSparseMoeBlock(config)
        return Qwen3MoeMLP(config.hidden_size, config.intermediate_size, bias=bool(config.use_bias))


class Ernie4_5_MoePreTrainedModel(Qwen3MoePreTrainedModel):  # its checkpoints' expert layouts are Qwen3-MoE's
    config_class = Ernie4_5_MoeConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)
    # The multi-token prediction weights (model.mtp_block..., mtp_emb_norm, mtp_hidden_norm, mtp_linear_proj).
    ignored_checkpoint_keys = Qwen3MoePreTrainedModel.ignored_checkpoint_keys + (r"(^|\.)mtp_",)
    always_float32 = ("mlp.gate.weight", "e_score_correction_bias")  # as the reference keeps them

    @staticmethod
    def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Qwen3-MoE's layouts, and the correction biases where the reference keeps them in memory (under the
        router, `mlp.gate.moe_statics`)."""
        state_dict = Qwen3MoePreTrainedModel.from_checkpoint_layout(state_dict)
        return {name.replace(".mlp.gate.moe_statics.", ".mlp.moe_statics."): t for name, t in state_dict.items()}

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Ernie4_5_MoeStatics):
            nn.init.zeros_(module.e_score_correction_bias)

    def new_base_model(self, config: Ernie4_5_MoeConfig) -> "Ernie4_5_MoeModel":
        return Ernie4_5_MoeModel(config)


class Ernie4_5_MoeModel(Ernie4_5_MoePreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router logits."""

    layer_class = Ernie4_5_MoeDecoderLayer
    float32_rotation_tables = True


class Ernie4_5_MoeForCausalLM(Ernie4_5_MoePreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head (with a bias under use_bias): next-token logits, the loss when labels
    are given, and the load-balancing loss with output_router_logits."""

    lm_head_bias = property(lambda self: bool(self.config.use_bias))
