"""Adafactor (Shazeer and Stern, 2018): Adam-like updates with factored second moments, so a matrix's state
costs one row and one column instead of a full copy.

With relative_step=True (the default) the optimizer picks its own step size, min(1e-2, 1/sqrt(t)) (or
1e-6 * t during a warmup_init start); scale_parameter=True multiplies it by the parameter's RMS. To drive it
with an outside schedule, pass lr= with relative_step=False and scale_parameter=False.
"""

import math

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _rms(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.norm(2) / (tensor.numel() ** 0.5)


class Adafactor(Optimizer):
    def __init__(self, params, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                 weight_decay=0.0, scale_parameter=True, relative_step=True, warmup_init=False):
        if lr is not None and relative_step:
            raise ValueError(
                "Adafactor: lr= is an outside learning rate; pass relative_step=False with it (or drop lr)."
            )
        if warmup_init and not relative_step:
            raise ValueError("Adafactor: warmup_init=True only applies with relative_step=True.")
        defaults = dict(lr=lr, eps=eps, clip_threshold=clip_threshold, decay_rate=decay_rate, beta1=beta1,
                        weight_decay=weight_decay, scale_parameter=scale_parameter, relative_step=relative_step,
                        warmup_init=warmup_init)
        super().__init__(params, defaults)

    @staticmethod
    def _get_lr(group: dict, state: dict) -> float:
        """The step size of this update: relative to the step count and/or scaled by the parameter's RMS."""
        step_size = group["lr"]
        if group["relative_step"]:
            ceiling = 1e-6 * state["step"] if group["warmup_init"] else 1e-2
            step_size = min(ceiling, 1.0 / math.sqrt(state["step"]))
        scale = max(group["eps"][1], state["RMS"]) if group["scale_parameter"] else 1.0
        return scale * step_size

    @staticmethod
    def _new_state(grad: torch.Tensor, factored: bool, first_moment: bool) -> dict:
        state = {"step": 0, "RMS": 0}
        if first_moment:
            state["exp_avg"] = torch.zeros_like(grad)
        if factored:  # one running mean per row and per column of the last two axes
            state["exp_avg_sq_row"] = torch.zeros(grad.shape[:-1]).to(grad)
            state["exp_avg_sq_col"] = torch.zeros(grad.shape[:-2] + grad.shape[-1:]).to(grad)
        else:
            state["exp_avg_sq"] = torch.zeros_like(grad)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        grad = param.grad.float() if param.grad.dtype in (torch.float16, torch.bfloat16) else param.grad
        if grad.is_sparse:
            raise RuntimeError("Adafactor does not take sparse gradients; use a dense embedding.")
        factored, first_moment = grad.dim() >= 2, group["beta1"] is not None
        state = self.state[param]
        if not state:
            state.update(self._new_state(grad, factored, first_moment))
        else:  # a state loaded from a checkpoint may sit on another device or dtype
            for key in ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq"):
                if key in state:
                    state[key] = state[key].to(grad)
        low_precision = param.dtype in (torch.float16, torch.bfloat16)
        weights = param.float() if low_precision else param

        state["step"] += 1
        state["RMS"] = _rms(weights)
        lr = self._get_lr(group, state)
        beta2 = 1.0 - math.pow(state["step"], group["decay_rate"])
        squared = grad**2 + group["eps"][0]
        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(beta2).add_(squared.mean(dim=-1), alpha=1.0 - beta2)
            col.mul_(beta2).add_(squared.mean(dim=-2), alpha=1.0 - beta2)
            # The outer product of row and column means, normalized by the mean row, approximates the full matrix.
            row_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
            update = torch.mul(row_factor, col.unsqueeze(-2).rsqrt()).mul_(grad)
        else:
            state["exp_avg_sq"].mul_(beta2).add_(squared, alpha=1.0 - beta2)
            update = state["exp_avg_sq"].rsqrt().mul_(grad)
        update.div_((_rms(update) / group["clip_threshold"]).clamp_(min=1.0))
        update.mul_(lr)
        if first_moment:
            update = state["exp_avg"].mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
        if group["weight_decay"] != 0:
            weights.add_(weights, alpha=-group["weight_decay"] * lr)
        weights.add_(-update)
        if low_precision:
            param.copy_(weights)


class AdafactorSchedule(LambdaLR):
    """A stand-in schedule for Adafactor's own step sizes, so the Trainer can log the rate it uses."""

    def __init__(self, optimizer: Adafactor, initial_lr: float = 0.0):
        for group in optimizer.param_groups:
            group["initial_lr"] = initial_lr
        super().__init__(optimizer, lambda _: initial_lr)
        for group in optimizer.param_groups:
            del group["initial_lr"]

    def get_lr(self):
        optimizer = self.optimizer
        rates = [optimizer._get_lr(group, optimizer.state[group["params"][0]])
                 for group in optimizer.param_groups if group["params"][0].grad is not None]
        return rates or self.base_lrs


def get_adafactor_schedule(optimizer: Adafactor, initial_lr: float = 0.0) -> AdafactorSchedule:
    return AdafactorSchedule(optimizer, initial_lr)
