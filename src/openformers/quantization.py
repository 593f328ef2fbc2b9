"""Weight-only int8 quantization for inference: `from_pretrained(..., quantization="int8")`.

Each linear layer's weight becomes int8 with one float32 scale per output row (symmetric: the row's largest
magnitude maps to 127), a quarter of the float32 bytes. Decoding reads every weight once per token, so it
runs up to four times faster where memory bandwidth is the limit (kernels/decode.cpp reads int8 rows
directly); longer inputs widen the rows to the activations' dtype for one matmul. Activations stay in the
model's dtype. The cost in quality
is measured by benchmarks/quality.py and recorded in benchmarks/RESULTS.md.

A quantized model is for inference: its weights are buffers, not parameters, so nothing trains them, and a
tied language-model head gets an int8 copy of its own.
"""

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZATIONS = ("int8",)


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8 rows times a float32 scale per row."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        quantized = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        return cls(quantized.contiguous(), scale, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        # Widening the int8 rows for one float matmul beats torch._weight_int8pack_mm on the CPU by 40x at 512
        # rows and 6x at 8 (torch 2.13, AVX-512). int8 values are exact in every float dtype; the scale comes after.
        y = F.linear(flat, self.weight.to(flat.dtype)) * self.scale.to(flat.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization={quantization!r} is not supported; use one of {', '.join(map(repr, QUANTIZATIONS))} "
            "(weight-only int8 with one scale per output row), or leave it unset for the checkpoint's weights."
        )


def quantize(model: nn.Module, quantization: str) -> nn.Module:
    """Replace every nn.Linear of `model` by its quantized form, in place; returns the model."""
    check_quantization(quantization)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear.from_linear(child))
    model.quantization = quantization
    return model
