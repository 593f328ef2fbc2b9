"""Hyperparameter search for the Trainer (Trainer.hyperparameter_search), with optuna.

    def hp_space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
                "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 3)}

    trainer = Trainer(model_init=lambda: AutoModelForSequenceClassification.from_pretrained(path), args=args,
                      train_dataset=train, eval_dataset=validation)
    best = trainer.hyperparameter_search(hp_space=hp_space, n_trials=10, direction="minimize")

Each trial trains a fresh model from model_init on a copy of the TrainingArguments with the trial's values set (its
checkpoints in output_dir/run-{trial number}). Every evaluation during training reports the objective to optuna,
which may prune the trial there; a trial's objective is its last evaluation's, or an evaluate() after training when
none ran during it. optuna is not a dependency of openformers: it is imported when a search starts.
"""

from typing import Any, NamedTuple

from .arguments import _StrEnum

_OPTIMIZE_KWARGS = ("timeout", "n_jobs", "gc_after_trial", "catch")  # the rest of **kwargs goes to create_study


class HPSearchBackend(_StrEnum):
    """The reference's backends; openformers searches with optuna only."""
    OPTUNA = "optuna"
    RAY = "ray"
    WANDB = "wandb"


class BestRun(NamedTuple):
    """The best trial of a search: its number (run_id, as a string), its objective and its hyperparameters."""
    run_id: str
    objective: float | list[float]
    hyperparameters: dict[str, Any]
    run_summary: Any | None = None


def default_compute_objective(metrics: dict[str, float]) -> float:
    """The evaluation loss when compute_metrics adds no metric, else the sum of the metrics (speeds and epoch left out)."""
    others = [value for name, value in metrics.items() if name not in ("eval_loss", "epoch")
              and not name.endswith(("_runtime", "_per_second"))]
    return sum(others) if others else metrics.get("eval_loss")


def default_hp_space_optuna(trial) -> dict[str, float]:
    """The reference's default search space: learning rate, epochs, seed and batch size."""
    import_optuna()
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 5),
        "seed": trial.suggest_int("seed", 1, 40),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [4, 8, 16, 32, 64]),
    }


def import_optuna():
    try:
        import optuna
    except ImportError as error:
        raise ImportError(
            "Trainer.hyperparameter_search needs optuna, which openformers does not install: pip install optuna"
        ) from error
    return optuna


def check_search(backend, direction) -> None:
    """Refuses a backend other than optuna and a direction other than "minimize", "maximize" or a list of them."""
    if backend is not None and str(backend) != HPSearchBackend.OPTUNA:
        raise ValueError(
            f"backend={str(backend)!r}: openformers' hyperparameter search has one backend, 'optuna' "
            "(HPSearchBackend.OPTUNA, the default); the reference's ray, sigopt and wandb backends are not there."
        )
    directions = direction if isinstance(direction, list) else [direction]
    if not directions or any(d not in ("minimize", "maximize") for d in directions):
        raise ValueError(
            f"direction={direction!r}: expected 'minimize' or 'maximize', or a list of them, one per objective "
            "that compute_objective returns."
        )


def trial_params(trial) -> dict | None:
    """What TrainerState.trial_params records: an optuna trial's params, or a dict of hyperparameters as given."""
    if trial is None or isinstance(trial, dict):
        return trial
    return dict(getattr(trial, "params", {}))


def should_prune(trial, objective: float, step: int) -> bool:
    """Reports one evaluation's objective to the trial; True where optuna's pruner stops the trial there. A study
    with several objectives is never pruned (optuna cannot prune those)."""
    study = getattr(trial, "study", None)  # a FixedTrial has none
    if study is None or len(study.directions) > 1:
        return False
    trial.report(objective, step)
    return trial.should_prune()


def run_optuna(trainer, n_trials: int, direction: str | list[str], **kwargs) -> BestRun | list[BestRun]:
    """One optuna study of n_trials trainer.train() runs; the best trial, or the best trials of several objectives."""
    optuna = import_optuna()
    optimize_kwargs = {name: kwargs.pop(name) for name in _OPTIMIZE_KWARGS if name in kwargs}
    if optimize_kwargs.get("n_jobs", 1) != 1:
        raise ValueError(
            f"n_jobs={optimize_kwargs['n_jobs']!r}: the trials share one Trainer (its model and arguments), so "
            "they run one after another; leave n_jobs out, or run several searches in separate processes."
        )
    several = isinstance(direction, list)
    study = optuna.create_study(**({"directions": direction} if several else {"direction": direction}), **kwargs)

    def objective(trial):
        trainer.objective = None
        trainer.train(trial=trial)
        if trainer.objective is None:  # no evaluation during training
            trainer.objective = trainer.compute_objective(trainer.evaluate())
        return trainer.objective

    study.optimize(objective, n_trials=n_trials, **optimize_kwargs)
    if several:
        return [BestRun(str(best.number), best.values, best.params) for best in study.best_trials]
    best = study.best_trial
    return BestRun(str(best.number), best.value, best.params)
