"""TrainingArguments: the reference's common fields, defaults and checks, as one dataclass.

Unknown keyword arguments raise a TypeError (the dataclass does that); values that contradict each
other raise a ValueError naming both fields. `evaluation_strategy`, removed from the reference, is
accepted as an alias of `eval_strategy` with a deprecation warning, so older scripts run unchanged.
"""

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field

import torch

INTERVAL_STRATEGIES = ("no", "steps", "epoch")
SAVE_STRATEGIES = ("no", "steps", "epoch", "best")
SCHEDULER_TYPES = ("linear", "cosine", "constant", "constant_with_warmup", "polynomial")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")
REPORT_TARGETS = ("tensorboard",)


@dataclass
class TrainingArguments:
    output_dir: str | None = None
    eval_strategy: str = "no"
    eval_steps: float | None = None
    eval_delay: float = 0
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    logging_strategy: str = "steps"
    logging_steps: float = 500
    logging_first_step: bool = False
    logging_dir: str | None = None
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 3.0
    max_steps: int = -1
    # The reference's default: one fused kernel for the whole update (5x faster on a CPU) where torch has it.
    optim: str = field(default_factory=lambda: "adamw_torch_fused" if _torch_at_least(2, 8) else "adamw_torch")
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict = field(default_factory=dict)
    warmup_steps: float = 0
    warmup_ratio: float | None = None
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    gradient_checkpointing_kwargs: dict | None = None  # options for torch.utils.checkpoint (use_reentrant...)
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    report_to: str | list[str] | None = "none"
    seed: int = 42
    data_seed: int | None = None
    remove_unused_columns: bool = True
    label_names: list[str] | None = None
    dataloader_num_workers: int = 0
    dataloader_drop_last: bool = False
    use_cpu: bool = False
    torch_compile: bool = False
    disable_tqdm: bool = False
    prediction_loss_only: bool = False
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    run_name: str | None = None
    # Deprecated alias of eval_strategy; read once in __post_init__, then mirrors eval_strategy.
    evaluation_strategy: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = "trainer_output"
        self.output_dir = os.path.expanduser(str(self.output_dir))
        if self.evaluation_strategy is not None:
            if self.eval_strategy != "no" and self.eval_strategy != self.evaluation_strategy:
                raise ValueError(
                    f"Got eval_strategy={self.eval_strategy!r} and evaluation_strategy={self.evaluation_strategy!r}; "
                    "pass only eval_strategy."
                )
            warnings.warn(
                "`evaluation_strategy` is deprecated (the reference removed it); use `eval_strategy` instead.",
                FutureWarning,
                stacklevel=3,
            )
            self.eval_strategy = self.evaluation_strategy
        self.evaluation_strategy = None
        self._check_choices()
        self._check_numbers()
        self._derive_defaults()
        self._check_best_model()
        if self.bf16 and self.fp16:
            raise ValueError("bf16=True and fp16=True contradict each other: pick one mixed-precision type.")

    def _check_choices(self):
        for name, choices in (
            ("eval_strategy", INTERVAL_STRATEGIES),
            ("logging_strategy", INTERVAL_STRATEGIES),
            ("save_strategy", SAVE_STRATEGIES),
            ("lr_scheduler_type", SCHEDULER_TYPES),
            ("optim", OPTIMIZERS),
        ):
            value = getattr(self, name)
            value = getattr(value, "value", value)  # enum members from scripts written for the reference
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
            setattr(self, name, value)
        targets = self.report_to
        if targets is None or targets == "none" or targets == ["none"]:
            targets = []
        elif targets == "all" or targets == ["all"]:
            targets = [t for t in REPORT_TARGETS if _tensorboard_available()]
        elif isinstance(targets, str):
            targets = [targets]
        unknown = [t for t in targets if t not in REPORT_TARGETS]
        if unknown:
            raise ValueError(
                f"report_to got {unknown}; openformers reports to {', '.join(REPORT_TARGETS)}, 'all' or 'none'."
            )
        self.report_to = list(targets)

    def _check_numbers(self):
        positive = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        if self.learning_rate < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError(
                "learning_rate, weight_decay and max_grad_norm must not be negative; got "
                f"{self.learning_rate}, {self.weight_decay}, {self.max_grad_norm}."
            )
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError(
                f"Nothing to train: num_train_epochs={self.num_train_epochs} and max_steps={self.max_steps}. "
                "Set num_train_epochs > 0 or max_steps > 0."
            )
        if self.warmup_ratio is not None:
            if self.warmup_steps:
                raise ValueError("Pass warmup_steps or warmup_ratio, not both.")
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"warmup_ratio must be in [0, 1); got {self.warmup_ratio}.")
            warnings.warn(
                "`warmup_ratio` is deprecated in the reference; pass the fraction as warmup_steps (a value below 1).",
                FutureWarning,
                stacklevel=4,
            )
            self.warmup_steps, self.warmup_ratio = self.warmup_ratio, None
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must not be negative; got {self.warmup_steps}.")
        if self.dataloader_num_workers < 0:
            raise ValueError(f"dataloader_num_workers must not be negative; got {self.dataloader_num_workers}.")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be None or at least 1; got {self.save_total_limit}.")

    def _derive_defaults(self):
        if self.eval_strategy == "steps" and not self.eval_steps:
            if not self.logging_steps:
                raise ValueError('eval_strategy="steps" needs eval_steps > 0 (or logging_steps > 0 to copy).')
            self.eval_steps = self.logging_steps
        for name, strategy in (("logging_steps", self.logging_strategy), ("save_steps", self.save_strategy),
                               ("eval_steps", self.eval_strategy)):
            if strategy == "steps" and not getattr(self, name) > 0:
                raise ValueError(f'{name.split("_")[0]}_strategy="steps" needs {name} > 0; got {getattr(self, name)}.')
        if self.eval_strategy != "no":
            self.do_eval = True
        if (self.load_best_model_at_end or self.save_strategy == "best") and self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")

    def _check_best_model(self):
        if not self.load_best_model_at_end or self.save_strategy == "best":
            return
        if self.eval_strategy != self.save_strategy:
            raise ValueError(
                "load_best_model_at_end=True needs the save and eval strategies to match (or save_strategy='best'); "
                f"got eval_strategy={self.eval_strategy!r} and save_strategy={self.save_strategy!r}."
            )
        if self.eval_strategy == "no":
            raise ValueError("load_best_model_at_end=True needs evaluation: set eval_strategy to 'steps' or 'epoch'.")
        if self.eval_strategy == "steps" and not _is_multiple(self.save_steps, self.eval_steps):
            raise ValueError(
                "load_best_model_at_end=True needs save_steps to be a multiple of eval_steps, so every checkpoint "
                f"has an evaluation; got save_steps={self.save_steps} and eval_steps={self.eval_steps}."
            )

    # -- derived values the Trainer reads ------------------------------------------------------------------

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """warmup_steps of 1 or more are steps; below 1 they are a fraction of the training steps."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_steps)

    def interval(self, name: str, max_steps: int) -> int:
        """logging/eval/save steps as a step count: below 1 they are a fraction of max_steps (rounded up)."""
        value = getattr(self, name)
        return int(value) if value >= 1 else max(math.ceil(max_steps * value), 1)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values.pop("evaluation_strategy")
        return values


def _is_multiple(save_steps: float, eval_steps: float) -> bool:
    if save_steps >= 1 and eval_steps >= 1:
        return save_steps % eval_steps == 0
    return round(save_steps / eval_steps, 6).is_integer()


def _torch_at_least(major: int, minor: int) -> bool:
    return tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (major, minor)


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True
