"""Trainer state, control flags and callbacks, with the reference's events and names.

The Trainer calls `handler.on_<event>(args, state, control, ...)` at each point of the loop; a callback
reads the state and may set control flags (`should_log`, `should_evaluate`, `should_save`,
`should_training_stop`, `should_epoch_stop`). `DefaultFlowCallback` sets them from the arguments'
strategies, so the loop itself only obeys the flags.
"""

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass

from ..logging import tqdm  # tqdm.auto's bar, silent after openformers.logging.disable_progress_bar()

EVENTS = (
    "on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
    "on_pre_optimizer_step", "on_optimizer_step", "on_substep_end", "on_step_end", "on_evaluate", "on_predict",
    "on_save", "on_log", "on_prediction_step", "on_push_begin",
)


class ExportableState:
    """A callback whose settings and counters are saved in each checkpoint's trainer_state.json.

    `state()` returns {"args": the constructor's arguments, "attributes": the counters}; `from_state`
    rebuilds the object from that. The Trainer restores them on resume when
    restore_callback_states_from_checkpoint=True.
    """

    def state(self) -> dict:
        raise TypeError(
            f"{type(self).__name__} inherits ExportableState but has no state() method: return "
            '{"args": {...constructor arguments...}, "attributes": {...counters...}} from it.'
        )

    @classmethod
    def from_state(cls, state: dict):
        instance = cls(**state["args"])
        for name, value in state["attributes"].items():
            setattr(instance, name, value)
        return instance


@dataclass
class TrainerState:
    """Where training stands; saved as trainer_state.json in each checkpoint."""

    epoch: float = 0
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list[dict] = None
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict | None = None
    # Given as a list of ExportableState objects, kept as {class name: state (or a list of states)}.
    stateful_callbacks: dict | list | None = None

    def __post_init__(self):
        if self.log_history is None:
            self.log_history = []
        if self.stateful_callbacks is None:
            self.stateful_callbacks = {}
        elif not isinstance(self.stateful_callbacks, dict):
            self.stateful_callbacks = _states_by_name(self.stateful_callbacks)

    def compute_steps(self, args, max_steps: int) -> None:
        """logging/eval/save steps as counts: values below 1 are fractions of max_steps, rounded up."""
        for kind in ("logging", "eval", "save"):
            steps = getattr(args, f"{kind}_steps")
            if steps is not None:
                setattr(self, f"{kind}_steps", math.ceil(max_steps * steps) if steps < 1 else steps)

    def save_to_json(self, json_path) -> None:
        text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
        with open(json_path, "w", encoding="utf-8") as file:
            file.write(text)

    @classmethod
    def load_from_json(cls, json_path) -> "TrainerState":
        with open(json_path, encoding="utf-8") as file:
            values = json.load(file)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _states_by_name(callbacks) -> dict:
    """{class name: state()}, with a list of states where several callbacks share a class."""
    states = {}
    for callback in callbacks:
        if not isinstance(callback, ExportableState):
            raise TypeError(
                f"stateful_callbacks takes ExportableState objects; got {type(callback).__name__}."
            )
        name, state = type(callback).__name__, callback.state()
        if name not in states:
            states[name] = state
        elif isinstance(states[name], list):
            states[name].append(state)
        else:
            states[name] = [states[name], state]
    return states


@dataclass
class TrainerControl(ExportableState):
    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self):
        self.should_training_stop = False

    def _new_epoch(self):
        self.should_epoch_stop = False

    def _new_step(self):
        self.should_save = self.should_evaluate = self.should_log = False

    def state(self) -> dict:
        return {"args": dataclasses.asdict(self), "attributes": {}}


class TrainerCallback:
    """Subclass and override the events you need; each gets (args, state, control, **kwargs)."""


for _event in EVENTS:
    setattr(TrainerCallback, _event, lambda self, args, state, control, **kwargs: None)


class CallbackHandler(TrainerCallback):
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
        if any(type(existing) is type(callback) for existing in self.callbacks):
            warnings.warn(
                f"The Trainer already has a {type(callback).__name__}; adding another. Callbacks now:\n"
                f"{self.callback_list}", stacklevel=3,
            )
        self.callbacks.append(callback)

    def pop_callback(self, callback):
        """Remove and return the callback given (an instance, or the first of a class)."""
        for existing in self.callbacks:
            if existing is callback or (isinstance(callback, type) and isinstance(existing, callback)):
                self.callbacks.remove(existing)
                return existing
        return None

    def remove_callback(self, callback) -> None:
        self.pop_callback(callback)

    @property
    def callback_list(self) -> str:
        """The callbacks' class names, one a line."""
        return "\n".join(type(callback).__name__ for callback in self.callbacks)

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

    def on_train_begin(self, args, state, control, **kwargs):
        control._new_training()
        return self.call_event("on_train_begin", args, state, control, **kwargs)

    def on_epoch_begin(self, args, state, control, **kwargs):
        control._new_epoch()
        return self.call_event("on_epoch_begin", args, state, control, **kwargs)

    def on_step_begin(self, args, state, control, **kwargs):
        control._new_step()
        return self.call_event("on_step_begin", args, state, control, **kwargs)


def _event_caller(event: str):
    def call(self, args, state, control, **kwargs):
        return self.call_event(event, args, state, control, **kwargs)

    call.__name__ = event
    return call


for _event in EVENTS:
    if _event not in ("on_train_begin", "on_epoch_begin", "on_step_begin"):
        setattr(CallbackHandler, _event, _event_caller(_event))


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
        if logs is not None:
            logs.pop("total_flos", None)  # taken out of the logs themselves, as the reference's printer does
        if state.is_world_process_zero:
            print({k: _short(v) for k, v in (logs or {}).items()})


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value


class EarlyStoppingCallback(TrainerCallback, ExportableState):
    """Stop when metric_for_best_model has not improved by more than the threshold for `patience` evaluations.

    Its counter is saved in checkpoints (trainer_state.json) and restored on resume with
    restore_callback_states_from_checkpoint=True.
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0):
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.early_stopping_patience_counter = 0  # evaluations in a row without an improvement

    def state(self) -> dict:
        return {
            "args": {"early_stopping_patience": self.early_stopping_patience,
                     "early_stopping_threshold": self.early_stopping_threshold},
            "attributes": {"early_stopping_patience_counter": self.early_stopping_patience_counter},
        }

    def on_train_begin(self, args, state, control, **kwargs):
        if args.metric_for_best_model is None:
            raise ValueError("EarlyStoppingCallback needs metric_for_best_model (or load_best_model_at_end=True).")
        if args.eval_strategy == "no":
            raise ValueError("EarlyStoppingCallback needs evaluation: set eval_strategy to 'steps' or 'epoch'.")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        name = name if name.startswith("eval_") else f"eval_{name}"
        value = (metrics or {}).get(name)
        if value is None:  # the reference skips early stopping for this evaluation, and says so
            warnings.warn(f"EarlyStoppingCallback: metric {name!r} is not among the evaluation metrics "
                          f"{sorted(metrics or {})}; early stopping is skipped.", stacklevel=2)
            return
        best = state.best_metric
        improved = best is None or (
            (value > best if args.greater_is_better else value < best)
            and abs(value - best) > (self.early_stopping_threshold or 0.0)
        )
        self.early_stopping_patience_counter = 0 if improved else self.early_stopping_patience_counter + 1
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
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
