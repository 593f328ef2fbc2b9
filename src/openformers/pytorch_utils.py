"""Two building blocks of the reference's model code that custom models import: Conv1D (GPT-2's linear layer with
its weight stored (in, out)) and apply_chunking_to_forward (a feed-forward run chunk by chunk to save memory).

openformers' own GPT-2 keeps nn.Linear and transposes the checkpoint's Conv1D weights when loading; Conv1D here
is for code written against the reference."""

import torch
from torch import nn


class Conv1D(nn.Module):
    """A linear layer whose weight is (nx, nf) = (in, out), the transpose of nn.Linear's: y = x @ weight + bias.

    Initialized as the reference's: weight from N(0, 0.02), bias zero."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, self.nx), self.weight).reshape(*x.shape[:-1], self.nf)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"


def apply_chunking_to_forward(forward_fn, chunk_size: int, chunk_dim: int, *input_tensors) -> torch.Tensor:
    """forward_fn(*input_tensors), computed in chunks of `chunk_size` along `chunk_dim` and concatenated there
    (chunk_size 0: in one piece). The tensors must have the same size along `chunk_dim`, a multiple of chunk_size."""
    if not input_tensors:
        raise ValueError("apply_chunking_to_forward needs at least one input tensor.")
    if chunk_size == 0:
        return forward_fn(*input_tensors)
    size = input_tensors[0].shape[chunk_dim]
    if any(t.shape[chunk_dim] != size for t in input_tensors):
        raise ValueError(f"apply_chunking_to_forward: the input tensors differ in size along dimension {chunk_dim}: "
                         f"{[tuple(t.shape) for t in input_tensors]}.")
    if size % chunk_size:
        raise ValueError(f"apply_chunking_to_forward: dimension {chunk_dim} has size {size}, which is not a multiple "
                         f"of chunk_size={chunk_size}.")
    pieces = zip(*(t.chunk(size // chunk_size, dim=chunk_dim) for t in input_tensors))
    return torch.cat([forward_fn(*piece) for piece in pieces], dim=chunk_dim)
