"""IBM Granite MoE decoders (Granite 3.0 and 3.1 1B-A400M and 3B-A800M, PowerMoE; model_type "granitemoe") and Granite
MoE with a shared expert (model_type "granitemoeshared") in plain torch.nn.

Granite's network and four scalars (granite.py: the embeddings times embedding_multiplier, the attention scores times
attention_multiplier, each branch's output times residual_multiplier before its residual add, the logits divided by
logits_scaling) with a sparse mixture of experts in place of the MLP, `block_sparse_moe`:
- the router `block_sparse_moe.router.layer` scores the `num_local_experts` experts; its scores are float32 (the
  reference's, whatever the model's dtype), each token goes to its `num_experts_per_tok` best-scored experts, whose
  weights are the softmax of those scores alone, rounded to the model's dtype;
- the experts are SwiGLU MLPs of `intermediate_size` stored stacked, as the checkpoints hold them:
  `block_sparse_moe.input_linear.weight` (E, 2I, C), each expert's gate rows then its up rows, and
  `block_sparse_moe.output_linear.weight` (E, C, I). Only the chosen experts run, on their tokens (mixtral.mix_experts).
  Quantized (int8, int4), each stack holds every expert's matrix packed alone (kernels.PackedExperts).
Granite MoE with a shared expert adds `shared_mlp`, a SwiGLU MLP of `shared_intermediate_size` (`input_linear`,
gate and up rows together, and `output_linear`) that every token runs, its output added to the routed experts' before
the residual multiplier (none when the size is 0). The router scores, the load-balancing loss and the causal LM are
Mixtral's; the reference has a base model and a causal LM for each family, and so does this file. A checkpoint in the
reference's in-memory layout (`experts.gate_up_proj`, `experts.down_proj`, `router.weight`) loads too.

GGUF files of llama.cpp's "granitemoe" architecture (which holds both families: llama.cpp has no other) are Granite's
files (granite.py) with the experts' count and use under `granitemoe.expert_count` and `expert_used_count`, the
experts' gate and up halves apart (`ffn_gate_exps`, `ffn_up_exps`, fused here), `ffn_down_exps`, the router
`ffn_gate_inp`, and in a file with a shared expert `granitemoe.expert_shared_feed_forward_length` and its
`ffn_gate_shexp`, `ffn_up_shexp` (fused here) and `ffn_down_shexp`. The CPU decoding kernel's step runs both
(kernels/llama.py): the router's picks, the chosen experts read as views of their rows of the stacks (float, or packed
by quantization), and the shared expert as the step's dense MLP.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, GraniteMoeConfig, GraniteMoeSharedConfig
from ..weights import rename
from . import llama
from .granite import GraniteAttention, ScaledEmbeddings, ScaledLogits, gguf_granite_values, refuse_unrotated
from .mixtral import MixtralDecoderLayer, MixtralModel, MixtralPreTrainedModel, MixtureOfExperts, MoeCausalLM, Router
from .mixtral import expert_product, mix_experts, softmax_of_best


def config_from_gguf(gguf, **overrides) -> GraniteMoeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "granitemoe" architecture: Granite MoE's, or Granite
    MoE with a shared expert's when the file gives the shared expert's size."""
    refuse_unrotated(gguf)
    values = gguf_granite_values(gguf)
    experts = gguf.get("granitemoe.expert_count")
    if not experts:
        raise ValueError(f"{gguf.path} lacks granitemoe.expert_count, the number of experts a granitemoe model needs.")
    values.update(num_local_experts=experts, num_experts_per_tok=gguf.get("granitemoe.expert_used_count", 2))
    shared = gguf.get("granitemoe.expert_shared_feed_forward_length")
    if shared:
        values.update(architectures=["GraniteMoeSharedForCausalLM"], shared_intermediate_size=shared)
        return GraniteMoeSharedConfig.from_dict(values, **overrides)
    values.update(architectures=["GraniteMoeForCausalLM"])
    return GraniteMoeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["granitemoe"] = config_from_gguf

# llama.cpp's names -> the checkpoints' (after Llama's), and the halves it stores apart -> the fused matrix.
GGUF_RENAMES = {
    "ffn_gate_inp": "block_sparse_moe.router.layer",
    "ffn_down_exps": "block_sparse_moe.output_linear",
    "ffn_down_shexp": "shared_mlp.output_linear",
}
GGUF_HALVES = {
    ("ffn_gate_exps", "ffn_up_exps"): "block_sparse_moe.input_linear",
    ("ffn_gate_shexp", "ffn_up_shexp"): "shared_mlp.input_linear",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: GraniteMoeConfig) -> dict[str, torch.Tensor]:
    """Each gate and up half joined into the fused matrix (gate rows first), then the renames and Llama's q/k row
    order (llama.py)."""
    state_dict = dict(state_dict)
    for key in list(state_dict):
        layer, _, part = key.rpartition(".weight")[0].rpartition(".")
        for (gate, up), fused in GGUF_HALVES.items():
            if part != gate:
                continue
            up_key = f"{layer}.{up}.weight"
            if up_key not in state_dict:  # a matrix read alone: a quantized load (weights.GGUFLayerReader)
                raise ValueError(
                    f"{key} is half of Granite MoE's fused {fused} and cannot be read alone, as quantizing a GGUF file "
                    "reads its matrices: load the file without quantization=, then quantize the model "
                    "(openformers.kernels.quantize)."
                )
            state_dict[f"{layer}.{fused}.weight"] = torch.cat([state_dict.pop(key), state_dict.pop(up_key)], dim=-2)
    return llama.convert_gguf_state_dict(rename(state_dict, GGUF_RENAMES), config)


def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint in the reference's in-memory layout (`X.experts.gate_up_proj`, `X.experts.down_proj`,
    `X.router.weight` under `block_sparse_moe`) under the names the reference saves and the Hub holds."""
    names = {"experts.gate_up_proj": "input_linear.weight", "experts.down_proj": "output_linear.weight",
             "router.weight": "router.layer.weight"}
    out = {}
    for key, t in state_dict.items():
        prefix, _, rest = key.partition(".block_sparse_moe.")
        out[f"{prefix}.block_sparse_moe.{names[rest]}" if rest in names else key] = t
    return out


class StackedExperts(nn.Module):
    """One projection of every expert, stacked: `weight` (num_experts, out_features, in_features), as Granite MoE's
    checkpoints hold `input_linear` and `output_linear`; `forward(e, rows)` is expert e's product. Quantized (int8,
    int4), `weight` becomes a kernels.PackedExperts of the experts' matrices, each packed alone."""

    expert_stacks = {"weight": False}  # stored (experts, out, in)

    def __init__(self, num_experts: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, out_features, in_features))

    def forward(self, e: int, rows: torch.Tensor) -> torch.Tensor:
        return expert_product(self.weight, e, rows)


class GraniteMoeRouter(nn.Module):
    """The router under its checkpoints' name (`router.layer`); its scores are float32, as the reference's."""

    def __init__(self, hidden_size: int, num_experts: int):
        super().__init__()
        self.layer = Router(hidden_size, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).float()


class GraniteMoeMoE(MixtureOfExperts):
    """The router and the stacked SwiGLU experts: each token goes through its top_k best-scored experts, weighted by
    the softmax of those scores alone, rounded to the model's dtype."""

    def __init__(self, config: GraniteMoeConfig):
        super().__init__(config.num_experts_per_tok, normalize=True, weights_in_model_dtype=True)
        E, C, I = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.router = GraniteMoeRouter(C, E)
        self.num_experts = E
        self.input_linear = StackedExperts(E, C, 2 * I)
        self.output_linear = StackedExperts(E, I, C)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.router(x)

    def choose(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return softmax_of_best(router_logits, self.top_k)

    def mix(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        return mix_experts(x, weights, chosen, self.run_expert, self.num_experts)

    def run_expert(self, e: int, rows: torch.Tensor) -> torch.Tensor:
        gate, up = self.input_linear(e, rows).chunk(2, dim=-1)
        return self.output_linear(e, F.silu(gate) * up)


class GraniteMoeSharedMLP(nn.Module):
    """The shared expert: a SwiGLU MLP whose gate and up rows are one matrix (`input_linear`)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.input_linear = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.output_linear = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.input_linear(x).chunk(2, dim=-1)
        return self.output_linear(F.silu(gate) * up)


class GraniteMoeDecoderLayer(MixtralDecoderLayer):
    """Mixtral's layer with Granite's attention, each branch's output times residual_multiplier before its residual
    add."""

    attention_class = GraniteAttention

    def __init__(self, config: GraniteMoeConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.residual_multiplier = config.residual_multiplier

    def new_feed_forward(self, config: GraniteMoeConfig, layer_idx: int) -> nn.Module:
        return GraniteMoeMoE(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa", router_logits=None):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + h * self.residual_multiplier
        h = self.feed_forward(self.post_attention_layernorm(x), router_logits)
        return x + h * self.residual_multiplier, weights


class GraniteMoeSharedDecoderLayer(GraniteMoeDecoderLayer):
    """Granite MoE's layer with the shared expert's output added to the routed experts' (when its size is not 0)."""

    def __init__(self, config: GraniteMoeSharedConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        size = config.shared_intermediate_size
        self.shared_mlp = GraniteMoeSharedMLP(config.hidden_size, size) if size else None

    def feed_forward(self, x: torch.Tensor, router_logits: list | None) -> torch.Tensor:
        h = super().feed_forward(x, router_logits)
        return h if self.shared_mlp is None else h + self.shared_mlp(x)


class GraniteMoePreTrainedModel(MixtralPreTrainedModel):
    config_class = GraniteMoeConfig
    from_checkpoint_layout = staticmethod(from_checkpoint_layout)
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, StackedExperts):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def new_base_model(self, config: GraniteMoeConfig) -> "GraniteMoeModel":
        return GraniteMoeModel(config)


class GraniteMoeModel(GraniteMoePreTrainedModel, ScaledEmbeddings, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every layer's router
    scores."""

    layer_class = GraniteMoeDecoderLayer


class GraniteMoeForCausalLM(GraniteMoePreTrainedModel, ScaledLogits, MoeCausalLM):
    """The decoder with its language-model head: next-token logits divided by logits_scaling, the loss when labels are
    given, and the load-balancing loss with output_router_logits."""


class GraniteMoeSharedPreTrainedModel(GraniteMoePreTrainedModel):
    config_class = GraniteMoeSharedConfig

    def new_base_model(self, config: GraniteMoeSharedConfig) -> "GraniteMoeSharedModel":
        return GraniteMoeSharedModel(config)


class GraniteMoeSharedModel(GraniteMoeSharedPreTrainedModel, ScaledEmbeddings, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every layer's router
    scores."""

    layer_class = GraniteMoeSharedDecoderLayer


class GraniteMoeSharedForCausalLM(GraniteMoeSharedPreTrainedModel, ScaledLogits, MoeCausalLM):
    """The decoder with its language-model head: next-token logits divided by logits_scaling, the loss when labels are
    given, and the load-balancing loss with output_router_logits."""
