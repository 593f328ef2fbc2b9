"""TrainingArguments accepts every argument of the reference's, with the same defaults and resolved values."""

import dataclasses
import json

import pytest
import transformers

from openformers import IntervalStrategy, SchedulerType, TrainingArguments
from openformers.training.arguments import HubStrategy, SaveStrategy


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _plain(value):
    return getattr(value, "value", value)


def test_every_reference_field_is_accepted_with_the_same_default():
    ours = {field.name: field for field in dataclasses.fields(TrainingArguments)}
    for field in dataclasses.fields(transformers.TrainingArguments):
        assert field.name in ours, field.name
        assert _plain(_default(ours[field.name])) == _plain(_default(field)), field.name
    # In the same order, so positional use (TrainingArguments("out", ...)) means the same.
    reference_names = [f.name for f in dataclasses.fields(transformers.TrainingArguments)]
    assert [name for name in ours if name in reference_names] == reference_names


def test_resolved_values_match_the_reference():
    ours, reference = TrainingArguments(), transformers.TrainingArguments()
    skipped = {"accelerator_config"}  # the reference builds an accelerate object; we keep what was given
    for field in dataclasses.fields(transformers.TrainingArguments):
        if field.name not in skipped:
            assert _plain(getattr(ours, field.name)) == _plain(getattr(reference, field.name)), field.name


ARGUMENT_SETS = [
    {"eval_strategy": "steps", "eval_steps": 5, "save_steps": 10, "load_best_model_at_end": True},
    {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
     "metric_for_best_model": "accuracy"},
    {"save_strategy": "best", "eval_strategy": "epoch", "metric_for_best_model": "f1", "greater_is_better": False},
    {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "epoch"},
    {"lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": '{"min_lr": 1e-6}'},
    {"report_to": "none", "push_to_hub": False, "hub_model_id": "me/model", "hub_strategy": "checkpoint"},
    {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}},
    {"activation_checkpointing": True},
    {"include_num_input_tokens_seen": True, "debug": "underflow_overflow", "torch_compile_mode": "default",
     "use_cpu": True},
    {"optim": "adafactor", "optim_args": "momentum=0.9", "fp16_full_eval": False, "label_smoothing_factor": 0.1},
    {"optim": "sgd", "dataloader_num_workers": 2, "dataloader_prefetch_factor": 4,
     "dataloader_persistent_workers": True, "train_sampling_strategy": "sequential"},
    {"eval_strategy": IntervalStrategy.STEPS, "eval_steps": 0.25, "logging_steps": 0.1, "save_steps": 0.5,
     "lr_scheduler_type": SchedulerType.WARMUP_STABLE_DECAY, "save_strategy": SaveStrategy.STEPS,
     "hub_strategy": HubStrategy.END},
]


@pytest.mark.parametrize("kwargs", ARGUMENT_SETS)
def test_argument_sets_resolve_as_the_reference_resolves_them(kwargs, tmp_path):
    ours = TrainingArguments(output_dir=str(tmp_path), **kwargs)
    reference = transformers.TrainingArguments(output_dir=str(tmp_path), **kwargs)
    for field in dataclasses.fields(transformers.TrainingArguments):
        if field.name in ("accelerator_config", "debug"):
            continue
        assert _plain(getattr(ours, field.name)) == _plain(getattr(reference, field.name)), field.name
    assert [_plain(d) for d in reference.debug] == ours.debug


def test_enums_have_the_reference_values():
    assert [m.value for m in IntervalStrategy] == [m.value for m in transformers.IntervalStrategy]
    assert [m.value for m in SchedulerType] == [m.value for m in transformers.SchedulerType]
    assert [m.value for m in SaveStrategy] == [m.value for m in transformers.trainer_utils.SaveStrategy]
    assert [m.value for m in HubStrategy] == [m.value for m in transformers.trainer_utils.HubStrategy]
    assert IntervalStrategy.EPOCH == "epoch" and TrainingArguments(eval_strategy="epoch").eval_strategy == "epoch"


def test_report_to_forms():
    assert TrainingArguments(report_to="none").report_to == []
    assert TrainingArguments(report_to=["none"]).report_to == []
    assert TrainingArguments(report_to="tensorboard").report_to == ["tensorboard"]
    assert TrainingArguments(report_to=["tensorboard", "wandb"]).report_to == ["tensorboard", "wandb"]
    assert TrainingArguments(report_to="all").report_to in ([], ["tensorboard"])
    with pytest.raises(ValueError, match="report_to"):
        TrainingArguments(report_to="carrier_pigeon")


def test_evaluation_strategy_and_logging_dir_from_older_scripts(tmp_path):
    with pytest.warns(FutureWarning, match="eval_strategy"):
        args = TrainingArguments(output_dir=str(tmp_path), evaluation_strategy="steps", eval_steps=10,
                                 logging_dir=str(tmp_path / "logs"))
    assert args.eval_strategy == "steps" and args.do_eval and args.logging_dir == str(tmp_path / "logs")


def test_to_dict_hides_tokens_and_serializes(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), hub_token="hf_secret", lr_scheduler_type="cosine")
    values = json.loads(args.to_json_string())
    assert values["hub_token"] == "<HUB_TOKEN>" and values["lr_scheduler_type"] == "cosine"
    assert "hf_secret" not in args.to_json_string()
    assert args.to_sanitized_dict()["report_to"] == "[]"


def test_metric_following_schedules_need_evaluation():
    with pytest.raises(ValueError, match="eval_strategy"):
        TrainingArguments(lr_scheduler_type="reduce_lr_on_plateau")
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        TrainingArguments(lr_scheduler_type="sometimes_cosine")
    with pytest.raises(ValueError, match="optim must be one of"):
        TrainingArguments(optim="adam_from_the_future")


@pytest.mark.parametrize("level", ["passive", "debug", "info", "warning", "error", "critical"])
def test_log_levels_resolve_as_the_reference(level):
    ours = TrainingArguments(log_level=level, log_level_replica="error")
    reference = transformers.TrainingArguments(log_level=level, log_level_replica="error")
    assert ours.get_process_log_level() == reference.get_process_log_level()
    assert ours.should_log == reference.should_log
    with pytest.raises(ValueError, match="log_level"):
        TrainingArguments(log_level="loud")


SETTERS = [
    ("set_training", dict(learning_rate=1e-4, batch_size=4, weight_decay=0.1, num_epochs=2, max_steps=10,
                          gradient_accumulation_steps=2, seed=1, gradient_checkpointing=True)),
    ("set_evaluate", dict(strategy="steps", steps=50, batch_size=16, delay=3, loss_only=True)),
    ("set_testing", dict(batch_size=5, loss_only=True)),
    ("set_save", dict(strategy="epoch", total_limit=2)),
    ("set_logging", dict(strategy="steps", steps=7, first_step=True, nan_inf_filter=True, level="info")),
    ("set_push_to_hub", dict(model_id="me/model", strategy="checkpoint", private_repo=True)),
    ("set_optimizer", dict(name="adafactor", learning_rate=3e-4, beta1=0.8, epsilon=1e-6, args="x=1")),
    ("set_lr_scheduler", dict(name="cosine", num_epochs=5, warmup_steps=0.1)),
    ("set_dataloader", dict(train_batch_size=3, eval_batch_size=6, drop_last=True, num_workers=2,
                            sampler_seed=9, ignore_data_skip=True)),
]


@pytest.mark.parametrize(("setter", "kwargs"), SETTERS)
def test_setters_change_the_fields_the_reference_changes(setter, kwargs, tmp_path):
    ours = getattr(TrainingArguments(output_dir=str(tmp_path)), setter)(**kwargs)
    reference = getattr(transformers.TrainingArguments(output_dir=str(tmp_path)), setter)(**kwargs)
    for field in dataclasses.fields(transformers.TrainingArguments):
        if field.name not in ("accelerator_config", "debug"):
            assert _plain(getattr(ours, field.name)) == _plain(getattr(reference, field.name)), field.name


def test_main_process_first_runs_the_block_in_one_process():
    ran = []
    with TrainingArguments().main_process_first(desc="dataset map pre-processing"):
        ran.append(True)
    assert ran == [True]


def test_progress_bars_follow_the_library_verbosity_as_the_reference():
    import openformers

    before = openformers.logging.get_verbosity(), transformers.logging.get_verbosity()
    try:
        for setter in ("set_verbosity_error", "set_verbosity_warning", "set_verbosity_info"):
            getattr(openformers.logging, setter)()
            getattr(transformers.logging, setter)()
            assert TrainingArguments().disable_tqdm == transformers.TrainingArguments().disable_tqdm, setter
    finally:
        openformers.logging.set_verbosity(before[0])
        transformers.logging.set_verbosity(before[1])


def test_numbers_given_as_strings_are_refused_by_name():
    # YAML 1.1 reads 2e-5 (no dot) as a string; the reference keeps it until its optimizer compares it with 0.
    for name, value in (("learning_rate", "2e-5"), ("per_device_train_batch_size", "8"), ("warmup_ratio", "0.1"),
                        ("seed", "42")):
        with pytest.raises(TypeError, match=rf"^{name} must be a number, got str '{value}'.*2\.0e-5"):
            TrainingArguments(output_dir="out", **{name: value})
    numpy = pytest.importorskip("numpy")
    args = TrainingArguments(output_dir="out", learning_rate=numpy.float32(1e-4), warmup_ratio=numpy.float64(0.1),
                             seed=numpy.int64(7))
    assert args.learning_rate == pytest.approx(1e-4) and args.seed == 7
