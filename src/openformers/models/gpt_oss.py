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
floats, as the reference saves a dequantized model. With quantization="int8" or "int4" each stack is packed as it is
read instead (`expert_stacks_to_pack`, kernels.PackedExperts), an expert's matrix dequantized at a time, so the
loading never holds the bfloat16 model (gpt-oss-20b: 42 GB). int8 holds MXFP4 exactly (9 bits a weight against
4.25): every MXFP4 value times 2 is an integer from -12 to 12 times its block's power of two, a grid int8's
quantizing finds. int4 (Q4_1: 16 even steps from each group's least weight to its largest, 5 bits) cannot hold the
e2m1 grid (0, 0.5, 1, 1.5, 2, 3, 4, 6: uneven steps): a group spanning -6 to 6 gets steps of 0.8, and the experts'
weights move by 8% of their size, root mean square, for evenly drawn codes, enough to change the routers' choices
and the logits of random models as much as their own size (benchmarks/gpt_oss_quantized.py, RESULTS.md). GGUF files of llama.cpp's "gpt-oss" architecture are read here
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
    expert_product,
    mix_experts,
    softmax_of_best,
)
from .olmo2 import Olmo2RMSNorm

def mxfp4_matrix(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """One expert's MXFP4 matrix as float32 (rows, G * 32), the layout of a linear layer's weight (out, in): blocks
    (rows, G, 16) uint8, two FP4 codes a byte (the low nibble first), and scales (rows, G) uint8, an E8M0 exponent
    per block of 32 values (2 ** (s - 127)). Each value is exact in float32 (and in bfloat16: two significant
    bits)."""
    b = blocks.to(torch.uint8)
    codes = torch.stack([b & 0x0F, b >> 4], dim=-1).flatten(-2)  # (rows, G, 32)
    return fp4_values(codes, scales.to(torch.int32)[..., None] - 127).flatten(-2)


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An MXFP4 matrix stack as floats of `dtype`, transposed as the experts hold it: blocks (E, rows, G, 16) and
    scales (E, rows, G) give (E, G * 32, rows). Computed in float32 an expert at a time, then cast, so the peak is
    one expert's float32 matrix."""
    return torch.stack([mxfp4_matrix(b, s).T.to(dtype) for b, s in zip(blocks, scales)])


def _mxfp4_stacks(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.dtype]]:
    """The state dict without its MXFP4 pairs (`X.gate_up_proj_blocks`, `X.gate_up_proj_scales`), and each pair's
    parameter name `X.gate_up_proj` -> the dtype its bias `X.gate_up_proj_bias` is stored in (float32 without one)."""
    rest, stacks = {}, {}
    for key, t in state_dict.items():
        if key.endswith("_scales") and key.removesuffix("_scales") + "_blocks" in state_dict:
            continue
        if key.endswith("_blocks"):
            name = key.removesuffix("_blocks")
            if name + "_scales" not in state_dict:
                raise ValueError(f"The checkpoint has {key} but not {name}_scales: an MXFP4 matrix needs both.")
            bias = state_dict.get(name + "_bias")
            stacks[name] = torch.float32 if bias is None else bias.dtype
        else:
            rest[key] = t
    return rest, stacks


def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's experts as parameters: each MXFP4 pair (`X.gate_up_proj_blocks`, `X.gate_up_proj_scales`)
    dequantized to `X.gate_up_proj` in the dtype its bias `X.gate_up_proj_bias` is stored in; the rest unchanged."""
    out, stacks = _mxfp4_stacks(state_dict)
    for name, dtype in stacks.items():
        out[name] = dequantize_mxfp4(state_dict[name + "_blocks"], state_dict[name + "_scales"], dtype)
    return out


def expert_stacks_to_pack(state_dict: dict[str, torch.Tensor], read) -> tuple[dict, dict]:
    """For a quantized load (PreTrainedModel.expert_stacks_to_pack): each MXFP4 pair as a placeholder of its
    parameter and a function that reads its blocks and scales (one stack's, 4.25 bits a weight) and gives expert
    e's matrix dequantized alone, already (out, in), the layout kernels.PackedExperts packs. int8 holds it exactly:
    each block of 32 values is a power of two times halves from -12 to 12, whose largest magnitude is at most 12 of
    that step, which int8 quantizing takes as the block's grid (kernels.linear._int8_blocks)."""
    out, stacks = _mxfp4_stacks(state_dict)
    sources = {}
    for name, dtype in stacks.items():
        experts, rows, groups, _ = state_dict[name + "_blocks"].shape
        out[name] = torch.empty(experts, groups * 32, rows, dtype=dtype, device="meta")

        def source(name=name):
            blocks, scales = read(name + "_blocks"), read(name + "_scales")
            return len(blocks), lambda e: mxfp4_matrix(blocks[e], scales[e])

        sources[name] = source
    return out, sources


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
    """The experts' weights as 3D tensors under the reference's names; `run(e, rows)` is expert e on its rows.
    Quantized (int8, int4), each stack becomes a kernels.PackedExperts of its experts' matrices, (out, in) each,
    packed alone; the biases stay floats."""

    expert_stacks = {"gate_up_proj": True, "down_proj": True}  # stored (experts, in, out)

    def __init__(self, config: GptOssConfig):
        super().__init__()
        E, C, I = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.num_experts = E
        self.gate_up_proj = nn.Parameter(torch.empty(E, C, 2 * I))
        self.gate_up_proj_bias = nn.Parameter(torch.empty(E, 2 * I))
        self.down_proj = nn.Parameter(torch.empty(E, I, C))
        self.down_proj_bias = nn.Parameter(torch.empty(E, C))
        self.alpha, self.limit = config.swiglu_alpha, config.swiglu_limit

    def run(self, e: int, x: torch.Tensor) -> torch.Tensor:
        gate_up = expert_product(self.gate_up_proj, e, x, transposed=True) + self.gate_up_proj_bias[e]  # (n, 2I)
        gate = gate_up[:, 0::2].clamp(max=self.limit)
        up = gate_up[:, 1::2].clamp(-self.limit, self.limit)
        h = (up + 1) * gate * torch.sigmoid(gate * self.alpha)  # the clamped SwiGLU
        return expert_product(self.down_proj, e, h, transposed=True) + self.down_proj_bias[e]


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
        return mix_experts(x, weights, chosen, self.experts.run, self.experts.num_experts)


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
    expert_stacks_to_pack = staticmethod(expert_stacks_to_pack)
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
