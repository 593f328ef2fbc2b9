"""Qwen2-MoE decoders (Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B) in plain torch.nn: Qwen2's attention with Qwen's sparse
mixture of experts and a shared expert.

The attention is Llama's with biases on the query, key and value projections (`qkv_bias`). The feed-forward part of
a sparse layer, `mlp`, is Qwen3-MoE's block (the router `mlp.gate`, the SwiGLU experts `mlp.experts.{e}.gate_proj/
up_proj/down_proj`, their weights renormalized only with `norm_topk_prob` and rounded to the model's dtype) plus a
shared expert that every token runs: a SwiGLU MLP `mlp.shared_expert` of `shared_expert_intermediate_size`, whose
output is scaled by the sigmoid of `mlp.shared_expert_gate` (a linear layer of one output) and added to the routed
experts'. A dense layer (`Qwen2MoeConfig.is_sparse`) has a SwiGLU MLP of `intermediate_size`. The router scores,
the load-balancing loss and the heads are Mixtral's.

GGUF files of llama.cpp's "qwen2moe" architecture are read here: Qwen2's metadata and names, the expert count and
sizes (`qwen2moe.expert_count`, `expert_used_count`, `expert_feed_forward_length`,
`expert_shared_feed_forward_length`), each layer's experts stacked into one tensor per projection, the shared expert's
`ffn_gate_shexp`/`ffn_up_shexp`/`ffn_down_shexp` and its gate `ffn_gate_inp_shexp`. llama.cpp never renormalizes the
chosen weights of this architecture, so such a file reads as norm_topk_prob=False.

The CPU decoding kernel's step runs these layers (kernels/llama.py): the router's picks and the chosen experts as
Qwen3-MoE's, and the shared expert as a dense MLP whose output is scaled by its gate's sigmoid.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Qwen2MoeConfig
from ..weights import rename
from .heads import QuestionAnswering, SequenceClassification, TokenClassification
from .llama import GGUF_RENAMES
from .mixtral import MixtralDecoderLayer, MixtralModel, MoeCausalLM, Router, split_gguf_experts
from .qwen3_moe import Qwen3MoeMLP, Qwen3MoePreTrainedModel, Qwen3MoeSparseMoeBlock, mixture_config_values


def config_from_gguf(gguf, **overrides) -> Qwen2MoeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "qwen2moe" architecture."""
    values = mixture_config_values(gguf, 4)
    values.update(
        architectures=["Qwen2MoeForCausalLM"],
        shared_expert_intermediate_size=gguf.get("qwen2moe.expert_shared_feed_forward_length",
                                                 values["intermediate_size"]),
        norm_topk_prob=False,
    )
    return Qwen2MoeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["qwen2moe"] = config_from_gguf

GGUF_SHARED_EXPERT_RENAMES = {
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_inp_shexp": "mlp.shared_expert_gate",
    "ffn_gate_shexp": "mlp.shared_expert.gate_proj",
    "ffn_up_shexp": "mlp.shared_expert.up_proj",
    "ffn_down_shexp": "mlp.shared_expert.down_proj",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Qwen2MoeConfig) -> dict[str, torch.Tensor]:
    """The experts split out, then Qwen2's renames (the rows are in the reference's order already), the router's
    and the shared expert's. The shared expert's gate is one row, which llama.cpp may store as a vector."""
    state_dict = split_gguf_experts(state_dict, "mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})
    state_dict = rename(state_dict, {**GGUF_RENAMES, **GGUF_SHARED_EXPERT_RENAMES})
    return {name: t.reshape(1, -1) if name.endswith("shared_expert_gate.weight") else t
            for name, t in state_dict.items()}


class Qwen2MoeSparseMoeBlock(Qwen3MoeSparseMoeBlock):
    """Qwen3-MoE's router and experts, plus the shared expert every token runs, scaled by its sigmoid gate."""

    def __init__(self, config: Qwen2MoeConfig):
        super().__init__(config)
        self.shared_expert = Qwen3MoeMLP(config.hidden_size, config.shared_expert_intermediate_size)
        # A Router (a linear layer that quantization leaves in floating point), as llama.cpp keeps ffn_gate_inp_shexp.
        self.shared_expert_gate = Router(config.hidden_size, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> the routed and shared experts' sum (B, T, C), and the router's scores (B * T, E)."""
        y, router_logits = super().forward(x)
        return y + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x), router_logits


class Qwen2MoeDecoderLayer(MixtralDecoderLayer):
    feed_forward_name = "mlp"

    def new_feed_forward(self, config: Qwen2MoeConfig, layer_idx: int) -> nn.Module:
        if config.is_sparse(layer_idx):
            return Qwen2MoeSparseMoeBlock(config)
        return Qwen3MoeMLP(config.hidden_size, config.intermediate_size)


class Qwen2MoePreTrainedModel(Qwen3MoePreTrainedModel):  # its checkpoints' expert layouts are Qwen3-MoE's
    config_class = Qwen2MoeConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Qwen2MoeConfig) -> "Qwen2MoeModel":
        return Qwen2MoeModel(config)


class Qwen2MoeModel(Qwen2MoePreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router scores."""

    layer_class = Qwen2MoeDecoderLayer

    def __init__(self, config: Qwen2MoeConfig):
        super().__init__(config)
        self.sliding_window = config.attention_window  # layer_types decide whether the window applies


class Qwen2MoeForCausalLM(Qwen2MoePreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and the
    load-balancing loss with output_router_logits."""


class Qwen2MoeForSequenceClassification(Qwen2MoePreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Qwen2MoeForTokenClassification(Qwen2MoePreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""


class Qwen2MoeForQuestionAnswering(Qwen2MoePreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
