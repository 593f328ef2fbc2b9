"""Falcon-Mamba decoders (tiiuae/falcon-mamba-7b; model_type "falcon_mamba") in plain torch.nn.

Mamba's network (mamba.py) whose mixer RMS-normalizes the time step (over its time_step_rank dimensions), B and C
(over their state_size) before the scan, without weights, with epsilon `mixer_rms_eps`, as the reference does. The
reference has a base model and a causal LM, and so does this file; checkpoint names are Mamba's. llama.cpp writes
Falcon-Mamba's GGUF files as its "mamba" architecture with `mamba.ssm.dt_b_c_rms` set, which mamba.py reads into a
FalconMambaConfig.
"""

import torch

from ..configs import FalconMambaConfig
from .mamba import MambaBlock, MambaForCausalLM, MambaMixer, MambaModel, MambaPreTrainedModel


def rms_normalized(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x divided by its root mean square over the last dimension, computed in float32, in x's dtype."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class FalconMambaMixer(MambaMixer):
    """Mamba's mixer with its time step, B and C RMS-normalized."""

    def __init__(self, config: FalconMambaConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.rms_eps = config.mixer_rms_eps

    def normalized(self, dt, b, c):
        return tuple(rms_normalized(t, self.rms_eps) for t in (dt, b, c))


class FalconMambaBlock(MambaBlock):
    mixer_class = FalconMambaMixer


class FalconMambaPreTrainedModel(MambaPreTrainedModel):
    config_class = FalconMambaConfig
    block_class = FalconMambaBlock

    def new_base_model(self, config: FalconMambaConfig) -> "FalconMambaModel":
        return FalconMambaModel(config)


class FalconMambaModel(FalconMambaPreTrainedModel, MambaModel):
    """The layer stack without a head: returns the last hidden state."""


class FalconMambaForCausalLM(FalconMambaPreTrainedModel, MambaForCausalLM):
    """The layer stack with its language-model head (tied to the embeddings), and the loss when labels are given."""
