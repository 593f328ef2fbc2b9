"""Learning-rate schedules: each a function step -> multiplier of the initial rate, run by torch's LambdaLR.

The formulas are the reference's, so a run here and there follows the same rates: a warmup from 0,
then the named decay over the remaining steps. `get_scheduler(name, ...)` builds any of them from the
names of `SchedulerType`; the two that follow a metric instead of the step count (`reduce_lr_on_plateau`
and `greedy`) are stepped by the Trainer after each evaluation.
"""

import math
import warnings
from enum import Enum
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


class SchedulerType(str, Enum):
    """The names `lr_scheduler_type` takes (the reference's values)."""

    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"
    INVERSE_SQRT = "inverse_sqrt"
    REDUCE_ON_PLATEAU = "reduce_lr_on_plateau"
    COSINE_WITH_MIN_LR = "cosine_with_min_lr"
    COSINE_WARMUP_WITH_MIN_LR = "cosine_warmup_with_min_lr"
    WARMUP_STABLE_DECAY = "warmup_stable_decay"
    GREEDY = "greedy"

    def __str__(self):
        return self.value


# -- the multipliers ---------------------------------------------------------------------------------------------


def _warmup(step: int, warmup_steps: int) -> float:
    return float(step) / float(max(1, warmup_steps))


def _decay_progress(step: int, warmup_steps: int, total_steps: int) -> float:
    return float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))


def _constant(step: int) -> float:
    return 1.0


def _constant_with_warmup(step: int, warmup_steps: int) -> float:
    return _warmup(step, warmup_steps) if step < warmup_steps else 1.0


def _linear(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))


def _cosine(step: int, warmup_steps: int, total_steps: int, num_cycles: float, min_lr_rate: float = 0.0) -> float:
    """Half a cosine wave per cycle from 1 down to min_lr_rate."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = _decay_progress(step, warmup_steps, total_steps)
    wave = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return max(0.0, wave * (1 - min_lr_rate) + min_lr_rate)


def _cosine_with_restarts(step: int, warmup_steps: int, total_steps: int, num_cycles: int) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = _decay_progress(step, warmup_steps, total_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def _polynomial(step: int, warmup_steps: int, total_steps: int, lr_init: float, lr_end: float, power: float) -> float:
    """Decay from lr_init to lr_end as (1 - progress) ** power; the multiplier is relative to lr_init."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    if step > total_steps:
        return lr_end / lr_init
    remaining = 1 - (step - warmup_steps) / (total_steps - warmup_steps)
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init


def _inverse_sqrt(step: int, warmup_steps: int, timescale: int) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return 1.0 / math.sqrt((step + timescale - warmup_steps) / timescale)


def _cosine_warmup_with_min_lr(step, warmup_steps, total_steps, num_cycles, min_lr_rate, warmup_lr_rate) -> float:
    """The variant whose warmup starts above 0 and whose decay is one step ahead of `_cosine`'s."""
    step, warmup_steps, total_steps = float(step), float(warmup_steps), float(total_steps)
    if step < warmup_steps:
        if warmup_lr_rate is None:
            return (step + 1.0) / max(1.0, warmup_steps)
        return float(warmup_lr_rate) + (1.0 - float(warmup_lr_rate)) * step / max(1, warmup_steps - 1)
    progress = (step - warmup_steps + 1.0) / max(1.0, total_steps - warmup_steps)
    wave = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0, wave * (1 - min_lr_rate) + min_lr_rate)


_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def _wsd(step, warmup_steps, stable_steps, decay_steps, warmup_type, decay_type, min_lr_ratio, num_cycles) -> float:
    """Warmup from min_lr_ratio, a stable stretch at 1, then a decay back to min_lr_ratio."""
    if step < warmup_steps:
        progress = float(step) / float(max(1, warmup_steps))
        rise = {"linear": progress, "cosine": 0.5 * (1.0 - math.cos(math.pi * progress)),
                "1-sqrt": 1.0 - math.sqrt(1.0 - progress)}[warmup_type]
        return max(0.0, rise * (1.0 - min_lr_ratio) + min_lr_ratio)
    if step < warmup_steps + stable_steps:
        return 1.0
    if step < warmup_steps + stable_steps + decay_steps:
        progress = float(step - warmup_steps - stable_steps) / float(max(1, decay_steps))
        if decay_type == "linear":
            fall = 1.0 - progress
        elif decay_type == "cosine":
            fall = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        else:
            fall = 1.0 - math.sqrt(progress)
        return max(0.0, fall * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


# -- the public constructors (the reference's names and arguments) ---------------------------------------------


def get_constant_schedule(optimizer: Optimizer, last_epoch: int = -1) -> LambdaLR:
    return LambdaLR(optimizer, _constant, last_epoch=last_epoch)


def get_constant_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1) -> LambdaLR:
    return LambdaLR(optimizer, partial(_constant_with_warmup, warmup_steps=num_warmup_steps), last_epoch=last_epoch)


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1) -> LambdaLR:
    schedule = partial(_linear, warmup_steps=num_warmup_steps, total_steps=num_training_steps)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_cosine_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int,
                                    num_cycles: float = 0.5, last_epoch: int = -1) -> LambdaLR:
    schedule = partial(_cosine, warmup_steps=num_warmup_steps, total_steps=num_training_steps, num_cycles=num_cycles)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_cosine_with_hard_restarts_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int,
                                                       num_training_steps: int, num_cycles: int = 1,
                                                       last_epoch: int = -1) -> LambdaLR:
    schedule = partial(_cosine_with_restarts, warmup_steps=num_warmup_steps, total_steps=num_training_steps,
                       num_cycles=num_cycles)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_polynomial_decay_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, lr_end=1e-7,
                                              power=1.0, last_epoch=-1) -> LambdaLR:
    lr_init = optimizer.defaults["lr"]
    if not lr_init > lr_end:
        raise ValueError(f"lr_end ({lr_end}) must be below the optimizer's learning rate ({lr_init}) for a decay.")
    schedule = partial(_polynomial, warmup_steps=num_warmup_steps, total_steps=num_training_steps, lr_init=lr_init,
                       lr_end=lr_end, power=power)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_inverse_sqrt_schedule(optimizer: Optimizer, num_warmup_steps: int, timescale: int | None = None,
                              last_epoch: int = -1) -> LambdaLR:
    """Decay as 1/sqrt(step) after the warmup; the timescale defaults to the warmup (or 10000 without one)."""
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    schedule = partial(_inverse_sqrt, warmup_steps=num_warmup_steps, timescale=timescale)
    return LambdaLR(optimizer, schedule, last_epoch=last_epoch)


def _min_lr_rate(optimizer: Optimizer, min_lr: float | None, min_lr_rate: float | None) -> float:
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError("Pass min_lr or min_lr_rate, not both (lr_scheduler_kwargs).")
    if min_lr is not None:
        return min_lr / optimizer.defaults["lr"]
    if min_lr_rate is None:
        raise ValueError("The cosine schedule with a minimum needs min_lr or min_lr_rate (in lr_scheduler_kwargs).")
    return min_lr_rate


def get_cosine_with_min_lr_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int,
                                                num_cycles: float = 0.5, last_epoch: int = -1,
                                                min_lr: float | None = None,
                                                min_lr_rate: float | None = None) -> LambdaLR:
    schedule = partial(_cosine, warmup_steps=num_warmup_steps, total_steps=num_training_steps, num_cycles=num_cycles,
                       min_lr_rate=_min_lr_rate(optimizer, min_lr, min_lr_rate))
    return LambdaLR(optimizer, schedule, last_epoch)


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(optimizer: Optimizer, num_warmup_steps: int,
                                                        num_training_steps: int, num_cycles: float = 0.5,
                                                        last_epoch: int = -1, min_lr: float | None = None,
                                                        min_lr_rate: float | None = None,
                                                        warmup_lr_rate: float | None = None) -> LambdaLR:
    schedule = partial(_cosine_warmup_with_min_lr, warmup_steps=num_warmup_steps, total_steps=num_training_steps,
                       num_cycles=num_cycles, min_lr_rate=_min_lr_rate(optimizer, min_lr, min_lr_rate),
                       warmup_lr_rate=warmup_lr_rate)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_wsd_schedule(optimizer: Optimizer, num_warmup_steps: int, num_decay_steps: int,
                     num_training_steps: int | None = None, num_stable_steps: int | None = None,
                     warmup_type: str = "linear", decay_type: str = "cosine", min_lr_ratio: float = 0,
                     num_cycles: float = 0.5, last_epoch: int = -1) -> LambdaLR:
    """Warmup-stable-decay; the stable stretch is what num_training_steps leaves, unless num_stable_steps is given."""
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError("get_wsd_schedule needs num_training_steps or num_stable_steps.")
    if num_training_steps is not None and num_stable_steps is not None:
        warnings.warn("Both num_training_steps and num_stable_steps given: num_stable_steps is used.", stacklevel=2)
    for name, value in (("warmup_type", warmup_type), ("decay_type", decay_type)):
        if value not in _WSD_SHAPES:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, _WSD_SHAPES))}; got {value!r}.")
    if num_stable_steps is None:
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
    schedule = partial(_wsd, warmup_steps=num_warmup_steps, stable_steps=num_stable_steps,
                       decay_steps=num_decay_steps, warmup_type=warmup_type, decay_type=decay_type,
                       min_lr_ratio=min_lr_ratio, num_cycles=num_cycles)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_reduce_on_plateau_schedule(optimizer: Optimizer, **kwargs) -> ReduceLROnPlateau:
    """torch's ReduceLROnPlateau; the Trainer steps it with metric_for_best_model after each evaluation."""
    return ReduceLROnPlateau(optimizer, **kwargs)


class GreedyLR:
    """Follow a metric: divide the rate by `factor` after `patience` improvements in a row, multiply it after
    `patience` evaluations without one, within [min_lr, max_lr]; stepped with the metric like ReduceLROnPlateau.

    After `reset_start` reductions with every group already at its floor, it starts over from the initial rates.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.95, patience: int = 10,
                 threshold: float = 1e-6, threshold_mode: str = "abs", cooldown: int = 0, warmup: int = 0,
                 min_lr: float | list[float] = 1e-3, max_lr: float | list[float] = 1.0, eps: float = 1e-8,
                 verbose: bool = False, smooth: bool = False, window_size: int = 50, reset_start: int = 500):
        if factor >= 1.0:
            raise ValueError(f"GreedyLR's factor must be below 1.0; got {factor}.")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"GreedyLR needs a torch Optimizer; got {type(optimizer).__name__}.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}.")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs'; got {threshold_mode!r}.")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience, self.threshold, self.threshold_mode = (
            mode, factor, patience, threshold, threshold_mode)
        self.cooldown, self.warmup, self.eps, self.verbose = cooldown, warmup, eps, verbose
        self.smooth, self.window_size = smooth, window_size
        self.reset_start = self.reset_start_original = reset_start
        self.min_lrs = self._per_group(min_lr, "min_lr")
        self.max_lrs = self._per_group(max_lr, "max_lr")
        self._init_lrs = [group["lr"] for group in optimizer.param_groups]
        self._last_lr = list(self._init_lrs)
        self.last_epoch = 0
        self._window: list[float] = []
        self._start_over()

    def _per_group(self, value, name: str) -> list[float]:
        groups = len(self.optimizer.param_groups)
        if isinstance(value, (list, tuple)):
            if len(value) != groups:
                raise ValueError(f"{name} needs one value per parameter group ({groups}); got {len(value)}.")
            return list(value)
        return [value] * groups

    def _start_over(self) -> None:
        self.best = float("inf") if self.mode == "min" else float("-inf")
        self.num_bad_epochs = self.num_good_epochs = 0
        self.cooldown_counter = self.warmup_counter = 0
        self._window = []

    def is_better(self, current: float, best: float) -> bool:
        if self.mode == "min":
            return current < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return current > (best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def _smoothed(self, value: float) -> float:
        if not self.smooth:
            return value
        self._window = (self._window + [value])[-self.window_size:]
        return sum(self._window) / len(self._window)

    def step(self, metrics: float, epoch: int | None = None) -> None:
        current = self._smoothed(float(metrics))
        self.last_epoch = epoch if epoch is not None else self.last_epoch + 1
        if self.cooldown_counter > 0 or self.warmup_counter > 0:  # resting after a change: count nothing
            if self.cooldown_counter > 0:
                self.cooldown_counter -= 1
            else:
                self.warmup_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        else:
            if self.is_better(current, self.best):
                self.best, self.num_bad_epochs, self.num_good_epochs = current, 0, self.num_good_epochs + 1
            else:
                self.num_bad_epochs, self.num_good_epochs = self.num_bad_epochs + 1, 0
            if self.num_good_epochs > self.patience:
                self._scale(1 / self.factor)
                self.reset_start = self.reset_start_original
                self.warmup_counter, self.num_good_epochs = self.warmup, 0
            elif self.num_bad_epochs > self.patience:
                self._scale(self.factor)
                self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _scale(self, multiplier: float) -> None:
        at_floor = True
        for i, group in enumerate(self.optimizer.param_groups):
            old = float(group["lr"])
            new = max(old * multiplier, self.min_lrs[i]) if multiplier < 1 else min(old * multiplier, self.max_lrs[i])
            if abs(new - old) > self.eps:
                group["lr"] = new
                if self.verbose:
                    print(f"Epoch {self.last_epoch}: learning rate of group {i} set to {new:.4e}.")
            at_floor = at_floor and group["lr"] <= self.min_lrs[i]
        if multiplier < 1 and at_floor:
            self.reset_start -= 1
            if self.reset_start <= 0:
                for group, initial in zip(self.optimizer.param_groups, self._init_lrs):
                    group["lr"] = initial
                self._start_over()
                self.reset_start = self.reset_start_original

    def get_last_lr(self) -> list[float]:
        return self._last_lr

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


def get_greedy_schedule(optimizer: Optimizer, **kwargs) -> GreedyLR:
    return GreedyLR(optimizer, **kwargs)


METRIC_SCHEDULERS = (ReduceLROnPlateau, GreedyLR)  # stepped with a metric after evaluation, not per step


def get_scheduler(name: str | SchedulerType, optimizer: Optimizer, num_warmup_steps: int | None = None,
                  num_training_steps: int | None = None, scheduler_specific_kwargs: dict | None = None):
    """Any schedule by its SchedulerType name; extra options (num_cycles, lr_end, min_lr...) go in
    scheduler_specific_kwargs."""
    try:
        name = SchedulerType(name)
    except ValueError:
        names = ", ".join(repr(t.value) for t in SchedulerType)
        raise ValueError(f"lr_scheduler_type must be one of {names}; got {name!r}.") from None
    options = dict(scheduler_specific_kwargs or {})
    if name is SchedulerType.CONSTANT:
        return get_constant_schedule(optimizer)
    if name is SchedulerType.REDUCE_ON_PLATEAU:
        return get_reduce_on_plateau_schedule(optimizer, **options)
    if name is SchedulerType.GREEDY:
        return get_greedy_schedule(optimizer, **options)
    if num_warmup_steps is None:
        raise ValueError(f"The {name.value!r} schedule needs num_warmup_steps.")
    if name is SchedulerType.CONSTANT_WITH_WARMUP:
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=num_warmup_steps)
    if name is SchedulerType.INVERSE_SQRT:
        return get_inverse_sqrt_schedule(optimizer, num_warmup_steps=num_warmup_steps, **options)
    if name is SchedulerType.WARMUP_STABLE_DECAY:
        return get_wsd_schedule(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                                **options)
    if num_training_steps is None:
        raise ValueError(f"The {name.value!r} schedule needs num_training_steps.")
    build = {
        SchedulerType.LINEAR: get_linear_schedule_with_warmup,
        SchedulerType.COSINE: get_cosine_schedule_with_warmup,
        SchedulerType.COSINE_WITH_RESTARTS: get_cosine_with_hard_restarts_schedule_with_warmup,
        SchedulerType.POLYNOMIAL: get_polynomial_decay_schedule_with_warmup,
        SchedulerType.COSINE_WITH_MIN_LR: get_cosine_with_min_lr_schedule_with_warmup,
        SchedulerType.COSINE_WARMUP_WITH_MIN_LR: get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    }[name]
    return build(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **options)
