"""Trainer state, control flags and callbacks, with the reference's events and names.

The Trainer calls `handler.on_<event>(args, state, control, ...)` at each point of the loop; a callback
reads the state and may set control flags (`should_log`, `should_evaluate`, `should_save`,
`should_training_stop`, `should_epoch_stop`). `DefaultFlowCallback` sets them from the arguments'
strategies, so the loop itself only obeys the flags.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field

from ..logging import tqdm  # tqdm.auto's bar, silent after openformers.logging.disable_progress_bar()

EVENTS = (
    "on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
    "on_pre_optimizer_step", "on_optimizer_step", "on_substep_end", "on_step_end", "on_evaluate", "on_predict",
    "on_save", "on_log", "on_prediction_step",
)


@dataclass
class TrainerState:
    """Where training stands; saved as trainer_state.json in each checkpoint."""

    epoch: float | None = None
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True

    def save_to_json(self, path) -> None:
        text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)

    @classmethod
    def load_from_json(cls, path) -> "TrainerState":
        with open(path, encoding="utf-8") as file:
            values = json.load(file)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class TrainerControl:
    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False


class TrainerCallback:
    """Subclass and override the events you need; each gets (args, state, control, **kwargs)."""


for _event in EVENTS:
    setattr(TrainerCallback, _event, lambda self, args, state, control, **kwargs: None)


class CallbackHandler:
    """Runs every callback for an event; a callback that returns a TrainerControl replaces the flags."""

    def __init__(self, callbacks, model, processing_class, optimizer, lr_scheduler):
        self.callbacks = []
        for callback in callbacks:
            self.add_callback(callback)
        self.model, self.processing_class = model, processing_class
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.train_dataloader = self.eval_dataloader = None

    def add_callback(self, callback) -> None:
        callback = callback() if isinstance(callback, type) else callback
        if not isinstance(callback, TrainerCallback):
            raise TypeError(f"callbacks must be TrainerCallback instances or classes; got {type(callback).__name__}.")
        self.callbacks.append(callback)

    def pop_callback(self, callback):
        for existing in self.callbacks:
            if existing is callback or type(existing) is callback:
                self.callbacks.remove(existing)
                return existing
        return None

    def remove_callback(self, callback) -> None:
        self.pop_callback(callback)

    def call_event(self, event: str, args, state, control, **kwargs) -> TrainerControl:
        for callback in self.callbacks:
            result = getattr(callback, event)(
                args, state, control, model=self.model, processing_class=self.processing_class,
                optimizer=self.optimizer, lr_scheduler=self.lr_scheduler, train_dataloader=self.train_dataloader,
                eval_dataloader=self.eval_dataloader, **kwargs,
            )
            if result is not None:
                control = result
        return control

    def __getattr__(self, name):
        if name in EVENTS:
            return lambda args, state, control, **kwargs: self.call_event(name, args, state, control, **kwargs)
        raise AttributeError(name)


class DefaultFlowCallback(TrainerCallback):
    """Turns the logging, evaluation and saving strategies into control flags."""

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step == 1 and args.logging_first_step:
            control.should_log = True
        if args.logging_strategy == "steps" and step % state.logging_steps == 0:
            control.should_log = True
        if args.eval_strategy == "steps" and step % state.eval_steps == 0 and args.eval_delay <= step:
            control.should_evaluate = True
        if args.save_strategy == "steps" and step % state.save_steps == 0:
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            if args.save_strategy == "steps":
                control.should_save = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if args.logging_strategy == "epoch":
            control.should_log = True
        if args.eval_strategy == "epoch" and args.eval_delay <= state.epoch:
            control.should_evaluate = True
        if args.save_strategy == "epoch":
            control.should_save = True
        return control


class ProgressCallback(TrainerCallback):
    """A tqdm bar over the optimizer steps with the last loss; one line of metrics per log."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        line = {k: _short(v) for k, v in (logs or {}).items() if k != "total_flos"}
        if self.bar is not None:
            if "loss" in line:
                self.bar.set_postfix(loss=line["loss"], refresh=False)
            self.bar.write(str(line))
        else:
            print(line)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PrinterCallback(TrainerCallback):
    """Print each log line (used instead of the progress bar when disable_tqdm=True)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            print({k: _short(v) for k, v in (logs or {}).items() if k != "total_flos"})


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value


class EarlyStoppingCallback(TrainerCallback):
    """Stop when metric_for_best_model has not improved by more than the threshold for `patience` evaluations."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0):
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.patience_counter = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if args.metric_for_best_model is None:
            raise ValueError("EarlyStoppingCallback needs metric_for_best_model (or load_best_model_at_end=True).")
        if args.eval_strategy == "no":
            raise ValueError("EarlyStoppingCallback needs evaluation: set eval_strategy to 'steps' or 'epoch'.")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        name = name if name.startswith("eval_") else f"eval_{name}"
        value = (metrics or {}).get(name)
        if value is None:
            raise ValueError(f"EarlyStoppingCallback: metric {name!r} is not among the evaluation metrics {sorted(metrics or {})}.")
        best = state.best_metric
        improved = best is None or (
            (value > best if args.greater_is_better else value < best)
            and abs(value - best) > self.early_stopping_threshold
        )
        self.patience_counter = 0 if improved else self.patience_counter + 1
        if self.patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True


class TensorBoardCallback(TrainerCallback):
    """Write logged scalars to TensorBoard (report_to="tensorboard"; needs the tensorboard package)."""

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "report_to='tensorboard' needs the tensorboard package: pip install tensorboard, or set "
                "report_to='none'."
            ) from error
        self.writer_class, self.writer = SummaryWriter, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.writer is None:
            self.writer = self.writer_class(log_dir=args.logging_dir or f"{args.output_dir}/runs")
        for name, value in (logs or {}).items():
            if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(_tensorboard_tag(name), value, state.global_step)
        self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tensorboard_tag(name: str) -> str:
    for prefix in ("eval_", "test_"):
        if name.startswith(prefix):
            return f"{prefix[:-1]}/{name[len(prefix):]}"
    return f"train/{name}"
