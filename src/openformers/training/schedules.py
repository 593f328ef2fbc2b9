"""Learning-rate schedules: each a function step -> multiplier of the initial rate, run by torch's LambdaLR.

The formulas are the reference's, so a run here and there follows the same rates: a linear warmup from
0, then the named decay over the remaining steps.
"""

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup_steps: int) -> float:
    return step / max(1, warmup_steps)


def linear(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def cosine(step: int, warmup_steps: int, total_steps: int, num_cycles: float = 0.5) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


def constant(step: int, warmup_steps: int, total_steps: int) -> float:
    return 1.0


def constant_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    return _warmup(step, warmup_steps) if step < warmup_steps else 1.0


def polynomial(
    step: int, warmup_steps: int, total_steps: int, lr_init: float, lr_end: float = 1e-7, power: float = 1.0
) -> float:
    """Decay from lr_init to lr_end as (1 - progress) ** power; the multiplier is relative to lr_init."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    if step > total_steps:
        return lr_end / lr_init
    remaining = 1 - (step - warmup_steps) / (total_steps - warmup_steps)
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init


SCHEDULES = {
    "linear": linear,
    "cosine": cosine,
    "constant": constant,
    "constant_with_warmup": constant_with_warmup,
    "polynomial": polynomial,
}


def get_scheduler(
    name: str, optimizer: Optimizer, num_warmup_steps: int = 0, num_training_steps: int = 0, scheduler_specific_kwargs=None
) -> LambdaLR:
    """A LambdaLR running the named schedule; extra options (num_cycles, lr_end, power) go in scheduler_specific_kwargs."""
    if name not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type must be one of {', '.join(SCHEDULES)}; got {name!r}.")
    options = dict(scheduler_specific_kwargs or {})
    if name == "polynomial":
        lr_init = optimizer.defaults["lr"]
        if lr_init <= options.get("lr_end", 1e-7):
            raise ValueError(f"polynomial decay needs lr_end ({options.get('lr_end', 1e-7)}) below the learning rate ({lr_init}).")
        options["lr_init"] = lr_init
    schedule = partial(SCHEDULES[name], warmup_steps=num_warmup_steps, total_steps=num_training_steps, **options)
    return LambdaLR(optimizer, schedule)
