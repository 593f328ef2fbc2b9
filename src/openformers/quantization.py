"""Weight-only quantization for inference: `from_pretrained(..., quantization="int8" or "int4")`.

int8: each linear layer's weight becomes int8 with one float32 scale per output row (symmetric: the row's
largest magnitude maps to 127), a quarter of the float32 bytes. int4: groups of 32 weights along a row
keep a scale and a minimum each (weight = scale * q + minimum, q in 0..15, llama.cpp's Q4_1), 3/16 of the
float32 bytes (a model whose layer inputs are not multiples of 32 is refused); the language-model head stays
int8. On a Q4_1 GGUF file (the default model's) int4 finds the file's own grid again: no weight changes.
Decoding reads every weight once per token, so it runs up to four times faster where memory bandwidth is the
limit: kernels/decode.cpp reads the int8 and int4 rows directly, in the decoding step and for any input of up
to KERNEL_ROWS rows (a batch decoding a token per sequence); longer inputs widen the rows to the activations'
dtype for one matmul. Activations stay in the model's dtype. The cost in quality is measured by
benchmarks/quality.py and recorded in benchmarks/RESULTS.md.

A quantized model is for inference: its weights are buffers, not parameters, so nothing trains them, and a
tied language-model head gets an int8 copy of its own.
"""

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

QUANTIZATIONS = ("int8", "int4")
GROUP = 32  # int4 weights per (scale, minimum) pair
# Up to this many rows (a batch decoding one token per sequence) the compiled kernel reads the quantized rows
# directly; more rows (a prompt) make widening the weights once for a float matmul the cheaper way.
KERNEL_ROWS = 16


class _QuantizedLinear(nn.Module):
    """The buffers every quantized layer holds: its packed `weight`, the `scale` to unpack it, and a float bias."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, in_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, weight.shape[0]
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    def float_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weights as a `dtype` matrix for a product of many rows: one pass of the compiled kernel on the
        CPU (each layout's plain `dequantized` takes several passes, each making a new tensor)."""
        if self.weight.device.type == "cpu" and kernels.available():
            return torch.ops.openformers.dequantize(self.weight, self.scale.float()).to(dtype)
        return self.dequantized(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if kernels.few_rows(flat, KERNEL_ROWS):
            return kernels.product(x, self.weight, self.scale.float(), self.bias)
        # Widening the rows for one float matmul beats torch._weight_int8pack_mm on the CPU by 40x at 512 rows
        # and 6x at 8 (torch 2.13, AVX-512).
        return F.linear(x, self.float_weight(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(_QuantizedLinear):
    """y = x W^T + b with W stored as int8 rows times a float32 scale per row."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__(weight, scale, bias, in_features=weight.shape[1])

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        quantized = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        return cls(quantized.contiguous(), scale, bias)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight.to(dtype) * self.scale.to(dtype)[:, None]


class Int4Linear(_QuantizedLinear):
    """y = x W^T + b with W in groups of 32 along each row, stored as 4-bit steps above the group's minimum.

    `weight` (out, in / 2) uint8: byte j of a group's 16 holds step j in its low nibble and step j + 16 in its
    high one; `scale` (out, in / 32, 2) float32: each group's (scale, minimum). The layout is llama.cpp's
    Q4_1, which the compiled decoding kernel reads directly.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__(weight, scale, bias, in_features=weight.shape[1] * 2)  # two weights per byte

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int4Linear":
        out_features, in_features = linear.weight.shape
        groups = linear.weight.detach().float().reshape(out_features, in_features // GROUP, GROUP)
        minimum, maximum = groups.amin(-1), groups.amax(-1)
        scale = ((maximum - minimum) / 15).clamp(min=1e-12)
        steps = ((groups - minimum[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8)
        packed = steps[..., :16] | (steps[..., 16:] << 4)  # (out, groups, 16)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        return cls(packed.reshape(out_features, -1).contiguous(), torch.stack([scale, minimum], -1), bias)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        packed = self.weight.reshape(self.out_features, -1, 16)
        steps = torch.cat([packed & 15, packed >> 4], dim=-1).to(dtype)  # (out, groups, 32)
        scale, minimum = self.scale.to(dtype).unbind(-1)
        return (steps * scale[..., None] + minimum[..., None]).reshape(self.out_features, self.in_features)


def check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization={quantization!r} is not supported; use one of {', '.join(map(repr, QUANTIZATIONS))} "
            "(weight-only: int8 with one scale per output row, int4 in groups of 32), or leave it unset for the "
            "checkpoint's weights."
        )


def quantize(model: nn.Module, quantization: str) -> nn.Module:
    """Replace every nn.Linear of `model` by its quantized form, in place; returns the model."""
    check_quantization(quantization)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if quantization == "int4" and child.in_features % GROUP:
                raise ValueError(
                    f"quantization='int4' groups each row's weights by {GROUP}, but layer {name!r} has "
                    f"{child.in_features} inputs; use quantization='int8' for this model."
                )
            # The language-model head stays int8 under int4, as llama.cpp keeps it at 8 bits or more: its
            # errors land on every logit directly.
            to_int8 = quantization == "int8" or child is getattr(model, "lm_head", None)
            setattr(parent, name, (Int8Linear if to_int8 else Int4Linear).from_linear(child))
    model.quantization = quantization
    return model
