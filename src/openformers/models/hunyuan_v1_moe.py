"""Tencent's Hunyuan mixture-of-experts decoders (Hunyuan-A13B-Pretrain and -Instruct; model_type "hunyuan_v1_moe") in
plain torch.nn: the Hunyuan dense decoder with a mixture of experts and a shared MLP in place of its MLP.

The attention is hunyuan_v1_dense.py's (queries and keys RMS-normed head by head after the rotation,
`self_attn.query_layernorm` and `key_layernorm`), with its rope ("dynamic" with a fixed alpha: a stretched base).
Each layer's `mlp` holds the router `gate.wg` (kept in float32 and fed the hidden states in float32, as the
reference's), `num_experts` SwiGLU experts of `intermediate_size` (`experts.{e}.gate_proj/up_proj/down_proj`; the
reference fuses them in memory and splits them on saving), of which each token runs its `moe_topk` best by the softmax
of the router's scores, renormalized over the chosen ones (mixtral.py's SparseMoeBlock runs only those), and
`shared_mlp`, one SwiGLU MLP of `intermediate_size` that every token runs, added to the experts' sum. With
output_router_logits the heads return the router logits; the reference computes no load-balancing loss, and neither
does this file. Heads: causal LM and sequence classification (the reference's).

GGUF files of llama.cpp's "hunyuan-moe" architecture load too: Hunyuan dense's reading (the stretched base as
rope.freq_base, the rows in the reference's order), the experts stacked per projection, the router as `ffn_gate_inp`
and the shared MLP as `ffn_*_shexp`; the converter writes one expert count and size for all layers, and a file whose
experts' size (`expert_feed_forward_length`) is not its shared MLP's is refused, as the reference's experts have the
shared MLP's size. The CPU decoding kernel's step runs these layers (kernels/llama.py: Hunyuan dense's step, the
chosen experts and the shared MLP as its dense MLP), but for a moe_topk that differs between layers.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, HunYuanMoEV1Config
from ..weights import rename
from .deepseek_v3 import FloatRouter
from .heads import SequenceClassification
from .hunyuan_v1_dense import HUNYUAN_GGUF_RENAMES, HunYuanDenseV1Attention
from .hunyuan_v1_dense import config_from_gguf as dense_config_from_gguf
from .mixtral import MixtralDecoderLayer, MixtralModel, MoeCausalLM, SparseMoeBlock, split_gguf_experts
from .qwen3_moe import Qwen3MoeMLP, Qwen3MoePreTrainedModel


def config_from_gguf(gguf, **overrides) -> HunYuanMoEV1Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "hunyuan-moe" architecture: Hunyuan dense's values
    and the mixture's (`hunyuan-moe.expert_count` and `expert_used_count`)."""
    arch = "hunyuan-moe"
    dense = dense_config_from_gguf(gguf).to_dict()
    size, shared_size = gguf.get(f"{arch}.expert_feed_forward_length"), dense["intermediate_size"]
    if size is not None and size != shared_size:
        raise ValueError(f"{gguf.path} has experts of {size} ({arch}.expert_feed_forward_length) beside a shared MLP "
                         f"of {shared_size}; Hunyuan-MoE's experts have the shared MLP's size (intermediate_size).")
    experts = gguf.get(f"{arch}.expert_count")
    if not experts:
        raise ValueError(f"{gguf.path} lacks {arch}.expert_count, the number of experts a {arch} model needs.")
    values = {**dense, "architectures": ["HunYuanMoEV1ForCausalLM"], "num_experts": experts,
              "moe_topk": gguf.get(f"{arch}.expert_used_count", 1)}
    return HunYuanMoEV1Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["hunyuan-moe"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Hunyuan dense's, the router and the shared MLP (the stacked experts
# are split by convert_gguf_state_dict).
HUNYUAN_MOE_GGUF_RENAMES = {
    **HUNYUAN_GGUF_RENAMES,
    "ffn_gate_inp": "mlp.gate.wg",
    "ffn_gate_shexp": "mlp.shared_mlp.gate_proj",
    "ffn_up_shexp": "mlp.shared_mlp.up_proj",
    "ffn_down_shexp": "mlp.shared_mlp.down_proj",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """The experts split out, then the renames (the rows are in the reference's order already)."""
    state_dict = split_gguf_experts(state_dict, "mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})
    return rename(state_dict, HUNYUAN_MOE_GGUF_RENAMES)


class HunYuanMoEV1Gate(nn.Module):
    """The router under the checkpoints' name, `gate.wg`: its logits in float32."""

    def __init__(self, hidden_size: int, num_experts: int):
        super().__init__()
        self.wg = FloatRouter(hidden_size, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wg(x)


class HunYuanMoEV1Moe(SparseMoeBlock):
    """The experts (each token's moe_topk best by the router's softmax, renormalized) plus the shared MLP."""

    def __init__(self, config: HunYuanMoEV1Config, layer_idx: int):
        size = config.intermediate_size
        experts = [Qwen3MoeMLP(config.hidden_size, size) for _ in range(config.num_experts)]
        super().__init__(config.hidden_size, experts, config.top_k(layer_idx), normalize=True)
        self.gate = HunYuanMoEV1Gate(config.hidden_size, config.num_experts)
        self.shared_mlp = Qwen3MoeMLP(config.hidden_size, size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> the experts' and the shared MLP's sum (B, T, C), and the router's logits (B * T, E)."""
        y, router_logits = super().forward(x)
        return y + self.shared_mlp(x), router_logits


class HunYuanMoEV1DecoderLayer(MixtralDecoderLayer):
    attention_class = HunYuanDenseV1Attention
    feed_forward_name = "mlp"

    def new_feed_forward(self, config: HunYuanMoEV1Config, layer_idx: int) -> nn.Module:
        return HunYuanMoEV1Moe(config, layer_idx)


class HunYuanMoEV1PreTrainedModel(Qwen3MoePreTrainedModel):  # its checkpoints' expert layouts are Qwen3-MoE's
    config_class = HunYuanMoEV1Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)
    # The router stays float32 in a bfloat16 or float16 model, as the reference builds it.
    always_float32 = ("gate.wg.weight",)

    def new_base_model(self, config: HunYuanMoEV1Config) -> "HunYuanMoEV1Model":
        return HunYuanMoEV1Model(config)


class HunYuanMoEV1Model(HunYuanMoEV1PreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every layer's router
    logits."""

    layer_class = HunYuanMoEV1DecoderLayer


class HunYuanMoEV1ForCausalLM(HunYuanMoEV1PreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and with
    output_router_logits the router logits (no load-balancing loss, as in the reference)."""

    load_balancing = False


class HunYuanMoEV1ForSequenceClassification(HunYuanMoEV1PreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""
