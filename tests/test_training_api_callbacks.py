"""TrainerState, TrainerControl, ExportableState, CallbackHandler and EarlyStoppingCallback against the reference's,
including the callback states a checkpoint keeps and a resume restores."""

import dataclasses
import json

import pytest
import torch
import transformers

import openformers
import openformers.training
from tests.test_training_api_trainer import TinyDropoutModel, _args, _rows


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def test_trainer_state_has_the_reference_fields_and_defaults():
    ours = {f.name: f for f in dataclasses.fields(openformers.TrainerState)}
    for field in dataclasses.fields(transformers.TrainerState):
        assert field.name in ours and _default(ours[field.name]) == _default(field), field.name
    assert dataclasses.asdict(openformers.TrainerState()) == dataclasses.asdict(transformers.TrainerState())


@pytest.mark.parametrize("steps", [dict(logging_steps=0.1, eval_steps=0.25, save_steps=0.5),
                                   dict(logging_steps=3, eval_steps=None, save_steps=7)])
def test_compute_steps_turns_fractions_into_counts(steps):
    ours, reference = openformers.TrainerState(), transformers.TrainerState()
    arguments = type("Args", (), steps)
    ours.compute_steps(arguments, 37)
    reference.compute_steps(arguments, 37)
    assert (ours.logging_steps, ours.eval_steps, ours.save_steps) == \
        (reference.logging_steps, reference.eval_steps, reference.save_steps)


def test_control_and_exportable_states_are_the_references():
    assert openformers.TrainerControl(should_save=True).state() == transformers.TrainerControl(should_save=True).state()
    callbacks = {library: [library.EarlyStoppingCallback(3, 0.01), library.EarlyStoppingCallback(2),
                           library.TrainerControl(should_log=True)] for library in (openformers, transformers)}
    for library in callbacks:
        callbacks[library][0].early_stopping_patience_counter = 2
    ours = openformers.TrainerState(stateful_callbacks=callbacks[openformers]).stateful_callbacks
    reference = transformers.TrainerState(stateful_callbacks=callbacks[transformers]).stateful_callbacks
    assert ours == reference
    restored = openformers.EarlyStoppingCallback.from_state(ours["EarlyStoppingCallback"][0])
    assert (restored.early_stopping_patience, restored.early_stopping_patience_counter) == (3, 2)
    with pytest.raises(TypeError, match="ExportableState"):
        openformers.TrainerState(stateful_callbacks=[openformers.PrinterCallback()])

    class Counter(openformers.TrainerCallback, openformers.ExportableState):
        def __init__(self, start=0):
            self.start, self.count = start, 0

        def state(self):
            return {"args": {"start": self.start}, "attributes": {"count": self.count}}

    counter = Counter.from_state({"args": {"start": 5}, "attributes": {"count": 9}})
    assert (counter.start, counter.count) == (5, 9)
    with pytest.raises(TypeError, match="state"):
        type("NoState", (openformers.ExportableState,), {})().state()


def test_state_json_round_trips_between_the_libraries(tmp_path):
    ours = openformers.TrainerState(global_step=7, epoch=1.5, best_metric=0.25, log_history=[{"loss": 1.0, "step": 1}],
                                    stateful_callbacks=[openformers.EarlyStoppingCallback(2)])
    ours.save_to_json(tmp_path / "ours.json")
    reference = transformers.TrainerState.load_from_json(tmp_path / "ours.json")
    assert dataclasses.asdict(reference) == dataclasses.asdict(ours)
    reference.save_to_json(tmp_path / "reference.json")
    assert (tmp_path / "reference.json").read_text() == (tmp_path / "ours.json").read_text()
    assert openformers.TrainerState.load_from_json(tmp_path / "reference.json") == ours


def test_callback_list_names_the_same_callbacks(tmp_path):
    lists = []
    for library in (transformers, openformers):
        trainer = library.Trainer(model=TinyDropoutModel(), args=_args(library, tmp_path),
                                  callbacks=[library.EarlyStoppingCallback])
        lists.append(trainer.callback_handler.callback_list)
        popped = trainer.pop_callback(library.EarlyStoppingCallback)
        assert isinstance(popped, library.EarlyStoppingCallback)
    assert lists[0] == lists[1]
    handler = openformers.CallbackHandler([openformers.DefaultFlowCallback], None, None, None, None)
    with pytest.warns(UserWarning, match="already has a DefaultFlowCallback"):
        handler.add_callback(openformers.DefaultFlowCallback())


def _early_stopping_run(library, folder, **overrides):
    torch.manual_seed(0)
    options = dict(eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1, max_steps=6,
                   metric_for_best_model="loss", load_best_model_at_end=True, learning_rate=0.5)
    arguments = _args(library, folder, **{**options, **overrides})
    rows = _rows()
    trainer = library.Trainer(model=TinyDropoutModel(), args=arguments, train_dataset=rows, eval_dataset=rows[:4],
                              callbacks=[library.EarlyStoppingCallback(early_stopping_patience=4)])
    return trainer


def test_early_stopping_state_is_saved_in_checkpoints_as_the_references(tmp_path):
    for library in (transformers, openformers):
        _early_stopping_run(library, tmp_path / library.__name__).train()
    for step in (1, 3, 5):
        saved = [json.loads((tmp_path / name / f"checkpoint-{step}" / "trainer_state.json").read_text())
                 for name in ("transformers", "openformers")]
        assert saved[1]["stateful_callbacks"] == saved[0]["stateful_callbacks"], step
        assert saved[1]["best_global_step"] == saved[0]["best_global_step"]


def test_early_stopping_state_is_restored_on_resume(tmp_path):
    first = _early_stopping_run(openformers, tmp_path)
    first.train()
    saved = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())
    counter = saved["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"]
    assert counter > 0  # the run had evaluations without improvement to remember
    for restore, expected in ((True, counter), (False, 0)):
        resumed = _early_stopping_run(openformers, tmp_path, max_steps=5,
                                      restore_callback_states_from_checkpoint=restore)
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-5"))
        stopper = next(c for c in resumed.callback_handler.callbacks
                       if isinstance(c, openformers.EarlyStoppingCallback))
        assert stopper.early_stopping_patience_counter == expected


def test_get_last_checkpoint_as_the_reference(tmp_path):
    from transformers.trainer_utils import get_last_checkpoint

    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-x", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-99").write_text("a file, not a checkpoint")
    assert openformers.training.get_last_checkpoint(str(tmp_path)) == get_last_checkpoint(str(tmp_path))
    assert openformers.training.get_last_checkpoint(str(tmp_path / "other")) is None


def test_early_stopping_without_its_metric_warns_and_carries_on():
    stopper = openformers.EarlyStoppingCallback(early_stopping_patience=1)
    args = openformers.TrainingArguments(eval_strategy="epoch", metric_for_best_model="accuracy")
    control = openformers.TrainerControl()
    with pytest.warns(UserWarning, match="eval_accuracy"):
        stopper.on_evaluate(args, openformers.TrainerState(), control, metrics={"eval_loss": 1.0})
    assert not control.should_training_stop and stopper.early_stopping_patience_counter == 0
