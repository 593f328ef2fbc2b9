"""gpt-oss (gpt-oss-20b, gpt-oss-120b) in plain torch.nn: Llama's decoder with attention sinks, alternating sliding
and full attention, YaRN rope scaling and a sparse mixture of experts in every layer.

The attention is llama.py's with biases on q, k, v and o and a learned sink per head (`self_attn.sinks`): one more
score in each query's softmax whose share attends to nothing (layers.with_sinks). Layers marked "sliding_attention"
in `layer_types` see the last `sliding_window` positions, the others all of them (`GptOssModel.layer_inputs`). The
feed-forward part, `mlp`, is a router with a bias (`mlp.router`, mixtral.Router) whose `num_experts_per_tok` best
scores are softmaxed into the chosen experts' weights, and the experts as the reference holds them, 3D tensors with
biases (`mlp.experts.gate_up_proj` (E, C, 2I), gate and up interleaved column by column, `gate_up_proj_bias`,
`down_proj` (E, I, C), `down_proj_bias`), each a clamped SwiGLU: (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha
* g) with g = min(gate, limit). Only the chosen experts run, on their tokens (mixtral.mix_experts); the router
scores, the load-balancing loss and the heads are Mixtral's. The RMSNorms scale by their weights in float32 and round
once (OLMo 2's, the reference's), and in float16 their weights stay float32, as the reference keeps them.

The released checkpoints store the experts' matrices in MXFP4 (`*_blocks` and `*_scales`, quantization_config
quant_method "mxfp4"); loading dequantizes them to the model's dtype (`dequantize_mxfp4`), and the model saves
floats, as the reference saves a dequantized model. GGUF files of llama.cpp's "gpt-oss" architecture are read here
too: their MXFP4 expert tensors dequantize in weights.py (the gguf package's quants), and `convert_gguf_state_dict`
renames the tensors and regroups the experts' gate and up rows into the interleaved 3D layout.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, GptOssConfig
from ..weights import fp4_values, rename
from . import llama
from .heads import SequenceClassification, TokenClassification
from .layers import positions_and_mask
from .mixtral import (
    MixtralDecoderLayer,
    MixtralModel,
    MixtralPreTrainedModel,
    MixtureOfExperts,
    MoeCausalLM,
    Router,
    mix_experts,
    softmax_of_best,
)
from .olmo2 import Olmo2RMSNorm

def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An MXFP4 matrix stack as floats of `dtype`, transposed as the experts hold it: blocks (E, rows, G, 16) uint8,
    two FP4 codes a byte (the low nibble first), and scales (E, rows, G) uint8, an E8M0 exponent per block of 32
    values (2 ** (s - 127)), give (E, G * 32, rows). Computed in float32 an expert at a time, then cast (each value
    is exact in float32), so the peak is one expert's float32 matrix."""
    experts = []
    for b, s in zip(blocks, scales):
        b = b.to(torch.uint8)
        codes = torch.stack([b & 0x0F, b >> 4], dim=-1).flatten(-2)  # (rows, G, 32)
        values = fp4_values(codes, s.to(torch.int32)[..., None] - 127)
        experts.append(values.flatten(-2).T.to(dtype))  # (G * 32, rows)
    return torch.stack(experts)


def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's experts as parameters: each MXFP4 pair (`X.gate_up_proj_blocks`, `X.gate_up_proj_scales`)
    dequantized to `X.gate_up_proj` in the dtype its bias `X.gate_up_proj_bias` loads as; the rest unchanged."""
    out = {}
    for key, t in state_dict.items():
        if key.endswith("_scales") and key.removesuffix("_scales") + "_blocks" in state_dict:
            continue
        if key.endswith("_blocks"):
            name = key.removesuffix("_blocks")
            if name + "_scales" not in state_dict:
                raise ValueError(f"The checkpoint has {key} but not {name}_scales: an MXFP4 matrix needs both.")
            dtype = state_dict[name + "_bias"].dtype if name + "_bias" in state_dict else torch.float32
            out[name] = dequantize_mxfp4(t, state_dict[name + "_scales"], dtype)
        else:
            out[key] = t
    return out


def config_from_gguf(gguf, **overrides) -> GptOssConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "gpt-oss" architecture: Llama's metadata (YaRN's
    factor and original context among them), the experts' count, use and size, and the window of every other layer
    (llama.cpp's pattern for gpt-oss: the even layers are windowed)."""
    arch = "gpt-oss"
    values = llama.gguf_config_values(gguf)
    if values["rope_scaling"] is not None and values["rope_scaling"]["rope_type"] == "yarn":
        values["rope_scaling"].update(beta_fast=32.0, beta_slow=1.0, truncate=False)  # gpt-oss's YaRN
    experts = gguf.get(f"{arch}.expert_count")
    if not experts:
        raise ValueError(f"{gguf.path} lacks {arch}.expert_count, the number of experts a gpt-oss model needs.")
    values.update(
        architectures=["GptOssForCausalLM"],
        intermediate_size=gguf.get(f"{arch}.expert_feed_forward_length", values["intermediate_size"]),
        num_local_experts=experts,
        num_experts_per_tok=gguf.get(f"{arch}.expert_used_count", 4),
        sliding_window=gguf.get(f"{arch}.attention.sliding_window", 128),
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                     for i in range(values["num_hidden_layers"])],
    )
    return GptOssConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["gpt-oss"] = config_from_gguf

# llama.cpp's names -> the reference's (the experts' are regrouped by convert_gguf_state_dict).
GGUF_RENAMES = {
    **llama.GGUF_RENAMES,
    "post_attention_norm": "post_attention_layernorm",
    "attn_sinks": "self_attn.sinks",
    "ffn_gate_inp": "mlp.router",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: GptOssConfig) -> dict[str, torch.Tensor]:
    """Renamed, the q/k rows as stored (llama.cpp rotates gpt-oss's heads by halves, as the reference does), and each
    layer's expert tensors, stored (E, out, in) with gate and up apart, as the reference's 3D parameters: gate_up_proj
    (E, C, 2I) with gate and up columns interleaved, down_proj (E, I, C), and their biases likewise."""
    out = {}
    for key, t in state_dict.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[2] in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            layer, kind, what = parts[1], parts[2], parts[3]
            experts = f"model.layers.{layer}.mlp.experts."
            if kind == "ffn_down_exps":
                out[experts + ("down_proj" if what == "weight" else "down_proj_bias")] = (
                    t.transpose(1, 2).contiguous() if what == "weight" else t)
                continue
            gate_or_up = 0 if kind == "ffn_gate_exps" else 1
            name = experts + ("gate_up_proj" if what == "weight" else "gate_up_proj_bias")
            out.setdefault(name, {})[gate_or_up] = t
            continue
        out[key.removesuffix(".weight") if parts[-2:-1] == ["attn_sinks"] else key] = t  # blk.N.attn_sinks.weight
    for name, halves in list(out.items()):
        if isinstance(halves, dict):  # gate and up (E, I, C) or (E, I) -> interleaved (E, C, 2I) or (E, 2I)
            fused = torch.stack([halves[0], halves[1]], dim=2).flatten(1, 2)  # (E, 2I, ...)
            out[name] = fused.transpose(1, 2).contiguous() if fused.dim() == 3 else fused
    return rename(out, GGUF_RENAMES)


class GptOssAttention(llama.LlamaAttention):
    """Llama's attention (its biases from attention_bias) with a learned sink per head."""

    def __init__(self, config: GptOssConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.sinks = nn.Parameter(torch.empty(config.num_attention_heads))


class GptOssExperts(nn.Module):
    """The experts' weights as 3D tensors under the reference's names; `run(e, rows)` is expert e on its rows."""

    def __init__(self, config: GptOssConfig):
        super().__init__()
        E, C, I = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, C, 2 * I))
        self.gate_up_proj_bias = nn.Parameter(torch.empty(E, 2 * I))
        self.down_proj = nn.Parameter(torch.empty(E, I, C))
        self.down_proj_bias = nn.Parameter(torch.empty(E, C))
        self.alpha, self.limit = config.swiglu_alpha, config.swiglu_limit

    def run(self, e: int, x: torch.Tensor) -> torch.Tensor:
        gate_up = x @ self.gate_up_proj[e] + self.gate_up_proj_bias[e]  # (n, 2I)
        gate = gate_up[:, 0::2].clamp(max=self.limit)
        up = gate_up[:, 1::2].clamp(-self.limit, self.limit)
        h = (up + 1) * gate * torch.sigmoid(gate * self.alpha)  # the clamped SwiGLU
        return h @ self.down_proj[e] + self.down_proj_bias[e]


class GptOssMLP(MixtureOfExperts):
    """The router and the experts: each token goes through its `num_experts_per_tok` best-scored experts, weighted
    by the softmax of those scores (mixtral.MixtureOfExperts's flow)."""

    def __init__(self, config: GptOssConfig):
        super().__init__(config.num_experts_per_tok, normalize=False)
        self.router = Router(config.hidden_size, config.num_local_experts, bias=True)
        self.experts = GptOssExperts(config)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.router(x)

    def choose(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return softmax_of_best(router_logits, self.top_k)

    def mix(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        return mix_experts(x, weights, chosen, self.experts.run, self.experts.gate_up_proj.shape[0])


class GptOssDecoderLayer(MixtralDecoderLayer):
    attention_class = GptOssAttention
    feed_forward_name = "mlp"
    # The reference scales by the norm's weight in float32 and rounds once after (Llama's rounds, then scales): in
    # bfloat16 the two differ in the last bit of many values, which moves the router's choices.
    norm_class = Olmo2RMSNorm

    def __init__(self, config: GptOssConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.is_sliding = config.layer_types[layer_idx] == "sliding_attention"

    def new_feed_forward(self, config: GptOssConfig, layer_idx: int) -> nn.Module:
        return GptOssMLP(config)


class GptOssPreTrainedModel(MixtralPreTrainedModel):
    config_class = GptOssConfig
    kept_in_float32 = ("input_layernorm", "post_attention_layernorm", "norm")  # in float16, as the reference's
    from_checkpoint_layout = staticmethod(from_checkpoint_layout)
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, Router):
            nn.init.normal_(module.bias, mean=0.0, std=std)
        elif isinstance(module, GptOssAttention):
            nn.init.normal_(module.sinks, mean=0.0, std=std)
        elif isinstance(module, GptOssExperts):
            nn.init.normal_(module.gate_up_proj, mean=0.0, std=std)
            nn.init.normal_(module.down_proj, mean=0.0, std=std)
            nn.init.zeros_(module.gate_up_proj_bias)
            nn.init.zeros_(module.down_proj_bias)

    def new_base_model(self, config: GptOssConfig) -> "GptOssModel":
        return GptOssModel(config)


class GptOssModel(GptOssPreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every layer's router
    scores."""

    layer_class = GptOssDecoderLayer

    def new_norm(self, config: GptOssConfig) -> nn.Module:
        return Olmo2RMSNorm(config.hidden_size, config.rms_norm_eps)

    def __init__(self, config: GptOssConfig):
        super().__init__(config)
        self.sliding_window = None  # the full layers' mask; the sliding ones get theirs in layer_inputs

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        inputs = super().layer_inputs(x, position_ids, mask, end, attention_mask, cache)
        _, window_mask, _ = positions_and_mask(cache, attention_mask, position_ids, x.shape[1], x.device,
                                               self.config.sliding_window)
        return lambda layer: (*inputs(layer)[:2], window_mask if layer.is_sliding else mask)


class GptOssForCausalLM(GptOssPreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and the
    load-balancing loss with output_router_logits."""


class GptOssForSequenceClassification(GptOssPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class GptOssForTokenClassification(GptOssPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""
