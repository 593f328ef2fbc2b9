"""Qwen3-MoE decoders in plain torch.nn: Qwen3's attention with Mixtral's sparse mixture of experts.

The attention is qwen3.py's (an RMSNorm over each head's queries and keys); the feed-forward part of a layer, `mlp`,
is mixtral.py's SparseMoeBlock over `num_experts` SwiGLU experts (`mlp.experts.{e}.gate_proj/up_proj/down_proj`,
router `mlp.gate`) in the layers the config makes sparse (`Qwen3MoeConfig.is_sparse`: every `decoder_sparse_step`-th
layer not in `mlp_only_layers`), a dense SwiGLU MLP of `intermediate_size` in the others. Unlike Mixtral, the chosen
experts' weights are renormalized only with `norm_topk_prob`, and are rounded to the model's dtype before weighting.
The router scores, the load-balancing loss and the heads are Mixtral's.

GGUF files of llama.cpp's "qwen3moe" architecture are read here: Qwen3's metadata and names, the expert count and
size (`qwen3moe.expert_count`, `expert_used_count`, `expert_feed_forward_length`), each layer's experts stacked into
one tensor per projection. llama.cpp always renormalizes the chosen weights of this architecture, so such a file
reads as norm_topk_prob=True; a layer without a router tensor (`ffn_gate_inp`) reads as dense (mlp_only_layers).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Qwen3MoeConfig
from ..weights import rename
from .heads import QuestionAnswering, SequenceClassification, TokenClassification
from .llama import gguf_config_values
from .mixtral import (
    ExpertLinear,
    MixtralDecoderLayer,
    MixtralModel,
    MixtralPreTrainedModel,
    MoeCausalLM,
    SparseMoeBlock,
    split_fused_experts,
    split_gguf_experts,
)
from .qwen3 import QWEN3_GGUF_RENAMES, Qwen3Attention


def mixture_config_values(gguf, experts_per_token: int) -> dict:
    """The config values of an opened `weights.GGUFFile` of a Qwen mixture of experts (llama.cpp's "qwen3moe",
    "qwen2moe"): Qwen's decoder values, the expert count (`<arch>.expert_count`, required), how many a token uses
    (`expert_used_count`, else `experts_per_token`), an expert's size (`expert_feed_forward_length`), and as dense
    (mlp_only_layers) each layer without a router tensor (`ffn_gate_inp`)."""
    arch = gguf.get("general.architecture")
    values = gguf_config_values(gguf)
    experts = gguf.get(f"{arch}.expert_count")
    if not experts:
        raise ValueError(f"{gguf.path} lacks {arch}.expert_count, the number of experts a {arch} model needs.")
    layers = values["num_hidden_layers"]
    values.update(
        num_experts=experts,
        num_experts_per_tok=gguf.get(f"{arch}.expert_used_count", experts_per_token),
        moe_intermediate_size=gguf.get(f"{arch}.expert_feed_forward_length", values["intermediate_size"]),
        mlp_only_layers=[i for i in range(layers) if f"blk.{i}.ffn_gate_inp.weight" not in gguf.tensor_names],
    )
    return values


def config_from_gguf(gguf, **overrides) -> Qwen3MoeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "qwen3moe" architecture."""
    values = {**mixture_config_values(gguf, 8), "architectures": ["Qwen3MoeForCausalLM"], "norm_topk_prob": True}
    return Qwen3MoeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["qwen3moe"] = config_from_gguf


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Qwen3MoeConfig) -> dict[str, torch.Tensor]:
    """The experts split out, then Qwen3's renames (the rows are in the reference's order already) and the router's."""
    state_dict = split_gguf_experts(state_dict, "mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})
    return rename(state_dict, {**QWEN3_GGUF_RENAMES, "ffn_gate_inp": "mlp.gate"})


class Qwen3MoeMLP(nn.Module):
    """A SwiGLU MLP: one expert (of `moe_intermediate_size`), or a dense layer's MLP (of `intermediate_size`); with
    `bias`, biases on its projections (DeepSeek-V2's mlp_bias)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = ExpertLinear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = ExpertLinear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = ExpertLinear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen3MoeSparseMoeBlock(SparseMoeBlock):
    def __init__(self, config: Qwen3MoeConfig):
        experts = [Qwen3MoeMLP(config.hidden_size, config.moe_intermediate_size) for _ in range(config.num_experts)]
        super().__init__(config.hidden_size, experts, config.num_experts_per_tok, normalize=config.norm_topk_prob,
                         weights_in_model_dtype=True)


class Qwen3MoeDecoderLayer(MixtralDecoderLayer):
    attention_class = Qwen3Attention
    feed_forward_name = "mlp"

    def new_feed_forward(self, config: Qwen3MoeConfig, layer_idx: int) -> nn.Module:
        if config.is_sparse(layer_idx):
            return Qwen3MoeSparseMoeBlock(config)
        return Qwen3MoeMLP(config.hidden_size, config.intermediate_size)


class Qwen3MoePreTrainedModel(MixtralPreTrainedModel):
    config_class = Qwen3MoeConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    @staticmethod
    def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return split_fused_experts(state_dict, "mlp", ("gate_proj", "up_proj", "down_proj"))

    def new_base_model(self, config: Qwen3MoeConfig) -> "Qwen3MoeModel":
        return Qwen3MoeModel(config)


class Qwen3MoeModel(Qwen3MoePreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router scores."""

    layer_class = Qwen3MoeDecoderLayer


class Qwen3MoeForCausalLM(Qwen3MoePreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and the
    load-balancing loss with output_router_logits."""


class Qwen3MoeForSequenceClassification(Qwen3MoePreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Qwen3MoeForTokenClassification(Qwen3MoePreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""


class Qwen3MoeForQuestionAnswering(Qwen3MoePreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

    base_model_prefix = "transformer"  # the reference's name in Qwen3-MoE QA checkpoints
