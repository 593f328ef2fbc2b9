"""`ACT2FN["gelu"]` and `get_activation("silu")`: the activation functions by their config names, as modules.

The functions are models/layers.py's ACTIVATIONS, which the model files use; each lookup wraps one in a small
nn.Module, as the reference's table gives modules (`self.act = ACT2FN[config.hidden_act]` in a custom layer)."""

from collections.abc import Mapping

import torch
from torch import nn

from .models.layers import ACTIVATIONS


class Activation(nn.Module):
    """One activation function of ACTIVATIONS, by its config name."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.function = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

    def extra_repr(self) -> str:
        return self.name


class _ActivationTable(Mapping):
    def __getitem__(self, name: str) -> Activation:
        if name not in ACTIVATIONS:
            raise KeyError(f"no activation function named {name!r}; openformers has {', '.join(sorted(ACTIVATIONS))}.")
        return Activation(name)

    def __iter__(self):
        return iter(ACTIVATIONS)

    def __len__(self) -> int:
        return len(ACTIVATIONS)


ACT2FN = _ActivationTable()


def get_activation(name: str) -> Activation:
    """ACT2FN[name]: a new module computing the activation `name`."""
    return ACT2FN[name]
