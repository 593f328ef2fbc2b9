"""Microsoft's BitNet b1.58 (bitnet-b1.58-2B-4T and its -bf16 variant; model_type "bitnet") in plain torch.nn.

Llama's decoder with two more RMSNorms, `self_attn.attn_sub_norm` on the heads' output before o_proj and
`mlp.ffn_sub_norm` before down_proj, and a gated MLP of the config's activation (a squared ReLU, `relu2`, in the
released checkpoints) without biases. The reference has the base model and the causal LM.

With a `quantization_config` (quant_method "bitnet") every linear map of the layers is a `BitLinear` (the head stays
float, as the reference leaves it): each token's inputs rounded to 8-bit steps of their largest magnitude (absmax),
times ternary weights (-1, 0, 1), as the reference's classes compute it:
- linear_class "autobitlinear", quantization_mode "offline" (the released bitnet-b1.58-2B-4T): the stored ternary
  weights, the product times `weight_scale`;
- "autobitlinear", "online" (the -bf16 variant's master weights): the float weights rounded to ternary steps of their
  mean magnitude at every call, with the straight-through gradient of the reference's training;
- "bitlinear" (the reference's default class): the integer steps times the ternary weights, divided by
  `weight_scale` times the inputs' scale, the bias added after.
Checkpoints store the ternary weights of the offline classes packed four to a byte (`pack_ternary`): loading unpacks
them (`unpack_ternary`) and saving packs them again. Without a quantization_config the layers are float linear maps,
as the reference builds them. The CPU decoding kernel refuses model_type bitnet, so generation runs these layers;
quantization="int8"/"int4" packs the float linear maps (the head; every map of a model without quantization_config)
and leaves the BitLinear maps as they are.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import BitNetConfig
from .layers import ACTIVATIONS, RMSNorm
from .llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel

VALUES_PER_BYTE = 4  # ternary values packed in a byte, two bits each


def unpack_ternary(packed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The ternary matrix (4R, ...) of a packed checkpoint tensor (R, ...) of uint8: bits 2i and 2i + 1 of packed row
    r hold row i * R + r, stored plus one (0, 1, 2 for -1, 0, 1), as the reference packs them."""
    return torch.cat([(packed >> (2 * i)) & 3 for i in range(VALUES_PER_BYTE)]).to(dtype) - 1


def pack_ternary(weight: torch.Tensor, name: str) -> torch.Tensor:
    """The reverse of `unpack_ternary`: a ternary matrix of 4R rows as R rows of uint8."""
    rows = weight.shape[0]
    if rows % VALUES_PER_BYTE or not torch.isin(weight, weight.new_tensor([-1, 0, 1])).all():
        raise ValueError(f"{name} ({rows} rows) cannot be saved packed: the reference's files hold ternary weights "
                         f"(-1, 0, 1) of a multiple of {VALUES_PER_BYTE} rows, four to a byte.")
    codes = (weight + 1).to(torch.uint8).reshape(VALUES_PER_BYTE, rows // VALUES_PER_BYTE, *weight.shape[1:])
    return codes[0] | codes[1] << 2 | codes[2] << 4 | codes[3] << 6


def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's packed weights (uint8) as ternary matrices in their weight_scale's dtype; the rest unchanged."""
    out = dict(state_dict)
    for key, t in state_dict.items():
        if key.endswith(".weight") and t.dtype == torch.uint8:
            scale = state_dict.get(key + "_scale")
            out[key] = unpack_ternary(t, torch.float32 if scale is None else scale.dtype)
    return out


def to_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ternary weights of the offline maps (those with a weight_scale) packed, as the reference's files hold them."""
    return {key: pack_ternary(t, key) if key.endswith(".weight") and key + "_scale" in state_dict else t
            for key, t in state_dict.items()}


def straight_through(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """`rounded` (exactly: adding x - x is adding zero), with the gradient of x itself: the reference's
    straight-through estimator."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return rounded
    return rounded.detach() + (x - x.detach())


def quantized_activations(x: torch.Tensor) -> torch.Tensor:
    """Each token's inputs rounded, in float32, to the 8-bit steps of their largest magnitude / 127, in x's dtype."""
    q = x.float()
    scale = 127 / q.abs().amax(-1, keepdim=True).clamp(min=1e-5)
    return straight_through(x, ((q * scale).round().clamp(-128, 127) / scale).to(x.dtype))


def quantized_weights(w: torch.Tensor) -> torch.Tensor:
    """The matrix rounded, in float32, to -1, 0 or 1 times its mean magnitude, in w's dtype."""
    q = w.float()
    scale = 1.0 / q.abs().mean().clamp(min=1e-5)
    return straight_through(w, ((q * scale).round().clamp(-1, 1) / scale).to(w.dtype))


class BitLinear(nn.Module):
    """A BitNet linear map (its kind from the config's quantization_config, see the module's docstring). Not an
    nn.Linear: int8/int4 quantization leaves it as it is."""

    def __init__(self, in_features: int, out_features: int, bias: bool, settings: dict):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.packed = settings["linear_class"] == "bitlinear"
        self.online = not self.packed and settings["quantization_mode"] == "online"
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        if not self.online:
            self.weight_scale = nn.Buffer(torch.ones(1))
        # An RMSNorm of the inputs (use_rms_norm), as the reference's Llama norm.
        self.rms_norm = RMSNorm(in_features, settings["rms_norm_eps"]) if settings["use_rms_norm"] else None
        self.requires_grad_(self.online)  # the stored ternary weights are frozen, as the reference's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rms_norm is not None:
            x = self.rms_norm(x)
        if self.packed:  # integer steps in x's dtype, the scales divided out after the product
            scale = 127 / x.abs().amax(-1, keepdim=True).clamp(min=1e-5)
            steps = (x * scale).round().clamp(-128, 127)
            y = F.linear(steps.to(self.weight.dtype), self.weight) / (self.weight_scale * scale)
            return y if self.bias is None else y + self.bias
        w = quantized_weights(self.weight) if self.online else self.weight
        y = F.linear(quantized_activations(x), w, self.bias)
        return y if self.online else y * self.weight_scale

    def extra_repr(self) -> str:
        kind = "bitlinear" if self.packed else "online" if self.online else "offline"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}"


def with_bit_linears(module: nn.Module, config: BitNetConfig) -> nn.Module:
    """`module` with each nn.Linear child made a BitLinear of its shape where the config quantizes, else as it is."""
    settings = config.bit_linear_settings()
    if settings is not None:
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, BitLinear(child.in_features, child.out_features, child.bias is not None,
                                                settings))
    return module


class BitNetAttention(LlamaAttention):
    """Llama's attention with the heads' output RMS-normed before o_proj."""

    def __init__(self, config: BitNetConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.attn_sub_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        with_bit_linears(self, config)

    def output(self, y):
        return self.o_proj(self.attn_sub_norm(y))


class BitNetMLP(nn.Module):
    """down_proj(ffn_sub_norm(act(gate_proj(x)) * up_proj(x))), without biases."""

    def __init__(self, config: BitNetConfig):
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)
        self.ffn_sub_norm = RMSNorm(inner, config.rms_norm_eps)
        self.act = ACTIVATIONS[config.hidden_act]
        with_bit_linears(self, config)

    def forward(self, x):
        return self.down_proj(self.ffn_sub_norm(self.act(self.gate_proj(x)) * self.up_proj(x)))


class BitNetDecoderLayer(LlamaDecoderLayer):
    attention_class = BitNetAttention
    mlp_class = BitNetMLP


class BitNetPreTrainedModel(LlamaPreTrainedModel):
    config_class = BitNetConfig
    from_checkpoint_layout = staticmethod(from_checkpoint_layout)
    to_checkpoint_layout = staticmethod(to_checkpoint_layout)

    def _init_weights(self, module: nn.Module) -> None:
        """Normal weights; an offline map's rounded to ternary steps of their mean magnitude, that scale its
        weight_scale (its inverse for the reference's BitLinear, which divides by it), so that it saves packed."""
        super()._init_weights(module)
        if isinstance(module, BitLinear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            if not module.online:
                with torch.no_grad():
                    scale = module.weight.abs().mean()
                    module.weight.copy_((module.weight / scale).round().clamp(-1, 1))
                    module.weight_scale.fill_(1 / scale if module.packed else scale)

    def new_base_model(self, config: BitNetConfig) -> "BitNetModel":
        return BitNetModel(config)


class BitNetModel(BitNetPreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = BitNetDecoderLayer


class BitNetForCausalLM(BitNetPreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head (float): next-token logits, and the loss when labels are given."""
