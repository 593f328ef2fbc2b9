"""Trainer.hyperparameter_search with optuna: trials on fresh models with their hyperparameters, objectives reported
at each evaluation (pruning), BestRun, the default space and objective, and the errors; the same search as the
reference's gives its trials and objectives."""

import sys
import warnings

import optuna
import pytest
import torch
import transformers

import openformers
from openformers.training import hpsearch

TINY_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0, tie_word_embeddings=False)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hpsearch") / "model"
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA)).save_pretrained(path)
    return path


def _rows(count=8, length=8):
    generator = torch.Generator().manual_seed(3)
    ids = [torch.randint(1, 64, (length,), generator=generator).tolist() for _ in range(count)]
    return [{"input_ids": row, "labels": row} for row in ids]


def _space(trial):
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True),
            "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 3)}


class Seen(openformers.TrainerCallback):
    """What each trial's run was given: its arguments and state at the start, its last step at the end."""

    def __init__(self):
        self.runs = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs.append({"learning_rate": args.learning_rate, "num_train_epochs": args.num_train_epochs,
                          "output_dir": args.output_dir, "trial_params": state.trial_params,
                          "trial_name": state.trial_name, "model": kwargs["model"]})

    def on_train_end(self, args, state, control, **kwargs):
        self.runs[-1]["steps"], self.runs[-1]["epoch"] = state.global_step, state.epoch


def _trainer(library, folder, out, model_init=True, callbacks=(), **overrides):
    options = dict(output_dir=str(out), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                   learning_rate=5e-5, num_train_epochs=1.0, eval_strategy="epoch", save_strategy="no", use_cpu=True,
                   disable_tqdm=True, report_to="none", logging_strategy="no")
    args = library.TrainingArguments(**{**options, **overrides})
    load = lambda: library.AutoModelForCausalLM.from_pretrained(folder)  # noqa: E731
    rows = _rows()
    if model_init:
        return library.Trainer(model_init=load, args=args, train_dataset=rows, eval_dataset=rows[:4],
                               callbacks=list(callbacks))
    return library.Trainer(model=load(), args=args, train_dataset=rows, eval_dataset=rows[:4])


def _study():
    storage = optuna.storages.InMemoryStorage()
    return storage, dict(storage=storage, study_name="search", sampler=optuna.samplers.RandomSampler(seed=4))


def test_three_trials_train_fresh_models_with_their_hyperparameters(folder, tmp_path):
    seen = Seen()
    trainer = _trainer(openformers, folder, tmp_path, callbacks=[seen], save_strategy="epoch")
    storage, study_kwargs = _study()
    best = trainer.hyperparameter_search(hp_space=_space, n_trials=3, **study_kwargs)
    trials = optuna.load_study(study_name="search", storage=storage).trials

    assert isinstance(best, openformers.training.BestRun) and best.run_summary is None
    assert best.run_id in {"0", "1", "2"} and isinstance(best.run_id, str)
    assert best.objective == min(trial.value for trial in trials)
    assert best.hyperparameters == trials[int(best.run_id)].params
    assert set(best.hyperparameters) == {"learning_rate", "num_train_epochs"}
    assert len({id(run["model"]) for run in seen.runs}) == 3  # a fresh model from model_init for each trial
    for trial, run in zip(trials, seen.runs):
        assert run["learning_rate"] == trial.params["learning_rate"]
        assert run["num_train_epochs"] == trial.params["num_train_epochs"]
        assert isinstance(run["num_train_epochs"], float)  # cast to the field's type, as the reference does
        assert run["epoch"] == trial.params["num_train_epochs"] and run["steps"] == 2 * run["epoch"]
        assert run["trial_params"] == trial.params and run["trial_name"] is None
        assert run["output_dir"] == str(tmp_path / f"run-{trial.number}")
        assert (tmp_path / f"run-{trial.number}" / f"checkpoint-{run['steps']}").is_dir()
        # one objective reported per evaluation (each epoch), the trial's value the last one's
        epochs = int(trial.params["num_train_epochs"])
        assert sorted(trial.intermediate_values) == [2 * (epoch + 1) for epoch in range(epochs)]
        assert trial.value == trial.intermediate_values[2 * epochs]
    # the search leaves the Trainer's own arguments as they were
    assert trainer.args.learning_rate == 5e-5 and trainer.args.output_dir == str(tmp_path)
    assert trainer.hp_search_backend is None


def test_the_search_is_the_references(folder, tmp_path):
    """The same sampler and search in both: the same trials, with the reference's objectives."""
    results = []
    for library in (transformers, openformers):
        storage, study_kwargs = _study()
        trainer = _trainer(library, folder, tmp_path / library.__name__)
        best = trainer.hyperparameter_search(hp_space=_space, n_trials=3, **study_kwargs)
        results.append((best, optuna.load_study(study_name="search", storage=storage).trials))
    (reference_best, reference_trials), (best, trials) = results
    assert [trial.params for trial in trials] == [trial.params for trial in reference_trials]
    for trial, reference_trial in zip(trials, reference_trials):
        assert trial.intermediate_values == pytest.approx(reference_trial.intermediate_values, rel=1e-4)
    assert best.run_id == reference_best.run_id and best.hyperparameters == reference_best.hyperparameters
    assert best.objective == pytest.approx(reference_best.objective, rel=1e-4)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_direction_picks_the_lowest_or_the_highest_objective(folder, tmp_path, direction):
    # No evaluation during training: each trial's objective comes from an evaluate() after it.
    trainer = _trainer(openformers, folder, tmp_path, eval_strategy="no")
    storage, study_kwargs = _study()
    best = trainer.hyperparameter_search(hp_space=_space, n_trials=3, direction=direction, **study_kwargs)
    values = [trial.value for trial in optuna.load_study(study_name="search", storage=storage).trials]
    assert len(set(values)) == 3
    assert best.objective == (min(values) if direction == "minimize" else max(values))
    assert int(best.run_id) == values.index(best.objective)


def test_several_objectives_give_the_best_trade_offs(folder, tmp_path):
    trainer = _trainer(openformers, folder, tmp_path)
    best = trainer.hyperparameter_search(
        hp_space=_space, n_trials=3, direction=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(4),
        compute_objective=lambda metrics: [metrics["eval_loss"], metrics["epoch"]],
    )
    assert isinstance(best, list) and best
    for run in best:
        assert isinstance(run.objective, list) and len(run.objective) == 2
        assert run.objective[1] == run.hyperparameters["num_train_epochs"]


class PruneTrialOne(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number == 1


def test_a_pruned_trial_stops_at_its_first_evaluation(folder, tmp_path):
    seen = Seen()
    trainer = _trainer(openformers, folder, tmp_path, callbacks=[seen])
    storage, study_kwargs = _study()
    space = lambda trial: {"num_train_epochs": trial.suggest_int("num_train_epochs", 3, 3)}  # noqa: E731
    best = trainer.hyperparameter_search(hp_space=space, n_trials=3, pruner=PruneTrialOne(), **study_kwargs)
    trials = optuna.load_study(study_name="search", storage=storage).trials
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                                                 optuna.trial.TrialState.COMPLETE]
    assert list(trials[1].intermediate_values) == [2] and list(trials[0].intermediate_values) == [2, 4, 6]
    assert [run["steps"] for run in seen.runs] == [6, 2, 6]  # on_train_end is called for the pruned run
    assert best.run_id in {"0", "2"}


def test_the_default_space_and_objective_are_the_references(folder, tmp_path):
    for seed in range(3):
        ours = hpsearch.default_hp_space_optuna(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
                                                .ask())
        reference = transformers.trainer_utils.default_hp_space_optuna(
            optuna.create_study(sampler=optuna.samplers.RandomSampler(seed)).ask())
        assert ours == reference
    for metrics in ({"eval_loss": 1.5, "epoch": 2.0, "eval_runtime": 0.1, "eval_samples_per_second": 9.0},
                    {"eval_loss": 1.5, "eval_accuracy": 0.25, "eval_f1": 0.5, "epoch": 1.0}):
        assert hpsearch.default_compute_objective(metrics) == \
            transformers.trainer_utils.default_compute_objective(metrics)
    # hp_space left out: the default space, on rows few enough for one step per epoch at any of its batch sizes
    trainer = _trainer(openformers, folder, tmp_path, eval_strategy="no")
    best = trainer.hyperparameter_search(n_trials=1, sampler=optuna.samplers.RandomSampler(0))
    assert set(best.hyperparameters) == {"learning_rate", "num_train_epochs", "seed", "per_device_train_batch_size"}
    assert best.objective == pytest.approx(trainer.evaluate()["eval_loss"])  # the last trial's model is kept


def test_without_optuna_the_error_says_how_to_install_it(folder, tmp_path, monkeypatch):
    trainer = _trainer(openformers, folder, tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    with pytest.raises(ImportError, match="pip install optuna"):
        trainer.hyperparameter_search(hp_space=_space, n_trials=1)
    with pytest.raises(ImportError, match="pip install optuna"):
        hpsearch.default_hp_space_optuna(None)


def test_without_model_init_the_error_is_the_references(folder, tmp_path):
    messages = []
    for library in (transformers, openformers):
        with pytest.raises(RuntimeError) as error:
            _trainer(library, folder, tmp_path / library.__name__, model_init=False).hyperparameter_search(n_trials=1)
        messages.append(str(error.value))
    assert messages[1] == messages[0] and "model_init" in messages[1]


@pytest.mark.parametrize("backend", ["ray", "sigopt", "wandb", openformers.training.HPSearchBackend.RAY])
def test_other_backends_are_refused_naming_optuna(folder, tmp_path, backend):
    trainer = _trainer(openformers, folder, tmp_path)
    with pytest.raises(ValueError, match=f"backend='{backend}'.*'optuna'"):
        trainer.hyperparameter_search(hp_space=_space, n_trials=1, backend=backend)


def test_bad_search_arguments_are_named(folder, tmp_path):
    trainer = _trainer(openformers, folder, tmp_path)
    with pytest.raises(ValueError, match="direction='max'"):
        trainer.hyperparameter_search(hp_space=_space, n_trials=1, direction="max")
    with pytest.raises(ValueError, match="n_jobs=2"):
        trainer.hyperparameter_search(hp_space=_space, n_trials=1, n_jobs=2)
    # a key that is no TrainingArguments field is named in a warning and left out of the trial's arguments
    space = lambda trial: {"dropout": trial.suggest_float("dropout", 0.0, 0.1)}  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        best = trainer.hyperparameter_search(hp_space=space, n_trials=1, backend="optuna")
    assert any("'dropout'" in str(warning.message) for warning in caught)
    assert set(best.hyperparameters) == {"dropout"}
