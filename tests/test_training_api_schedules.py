"""Every learning-rate schedule and Adafactor, step by step against the reference's."""

import pytest
import torch
import transformers
import transformers.optimization as reference

import openformers
import openformers.training
from openformers.training import optimizers as ours_optimizers
from openformers.training import schedules as ours

STEPS = 40


def _rates(build, lr=0.1, steps=STEPS, **kwargs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build(optimizer, **kwargs)
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return values


SCHEDULES = [
    ("get_constant_schedule", {}),
    ("get_constant_schedule_with_warmup", {"num_warmup_steps": 7}),
    ("get_linear_schedule_with_warmup", {"num_warmup_steps": 5, "num_training_steps": 30}),
    ("get_linear_schedule_with_warmup", {"num_warmup_steps": 0, "num_training_steps": 30}),
    ("get_cosine_schedule_with_warmup", {"num_warmup_steps": 4, "num_training_steps": 33}),
    ("get_cosine_schedule_with_warmup", {"num_warmup_steps": 4, "num_training_steps": 33, "num_cycles": 1.5}),
    ("get_cosine_with_hard_restarts_schedule_with_warmup", {"num_warmup_steps": 3, "num_training_steps": 35,
                                                            "num_cycles": 3}),
    ("get_cosine_with_min_lr_schedule_with_warmup", {"num_warmup_steps": 3, "num_training_steps": 30,
                                                     "min_lr": 1e-3}),
    ("get_cosine_with_min_lr_schedule_with_warmup", {"num_warmup_steps": 3, "num_training_steps": 30,
                                                     "min_lr_rate": 0.2}),
    ("get_cosine_with_min_lr_schedule_with_warmup_lr_rate", {"num_warmup_steps": 5, "num_training_steps": 30,
                                                             "min_lr_rate": 0.1}),
    ("get_cosine_with_min_lr_schedule_with_warmup_lr_rate", {"num_warmup_steps": 5, "num_training_steps": 30,
                                                             "min_lr": 0.01, "warmup_lr_rate": 0.3}),
    ("get_polynomial_decay_schedule_with_warmup", {"num_warmup_steps": 2, "num_training_steps": 25}),
    ("get_polynomial_decay_schedule_with_warmup", {"num_warmup_steps": 2, "num_training_steps": 25, "lr_end": 1e-3,
                                                   "power": 2.0}),
    ("get_inverse_sqrt_schedule", {"num_warmup_steps": 6}),
    ("get_inverse_sqrt_schedule", {"num_warmup_steps": 6, "timescale": 11}),
    ("get_inverse_sqrt_schedule", {"num_warmup_steps": 0}),
]
WSD_SHAPES = [(warmup, decay) for warmup in ("linear", "cosine", "1-sqrt") for decay in ("linear", "cosine", "1-sqrt")]


@pytest.mark.parametrize(("name", "kwargs"), SCHEDULES)
def test_each_schedule_matches_the_reference_at_every_step(name, kwargs):
    ours_function = getattr(openformers, name, None) or getattr(openformers.training, name)
    assert _rates(ours_function, **kwargs) == pytest.approx(
        _rates(getattr(transformers, name), **kwargs), abs=1e-7)


@pytest.mark.parametrize(("warmup_type", "decay_type"), WSD_SHAPES)
def test_warmup_stable_decay_matches_the_reference(warmup_type, decay_type):
    for kwargs in ({"num_warmup_steps": 5, "num_decay_steps": 10, "num_training_steps": 35},
                   {"num_warmup_steps": 5, "num_decay_steps": 8, "num_stable_steps": 4, "min_lr_ratio": 0.1}):
        kwargs = dict(kwargs, warmup_type=warmup_type, decay_type=decay_type)
        assert _rates(openformers.get_wsd_schedule, **kwargs) == pytest.approx(
            _rates(transformers.get_wsd_schedule, **kwargs), abs=1e-7)


SCHEDULER_OPTIONS = {
    "cosine_with_min_lr": {"min_lr_rate": 0.1},
    "cosine_warmup_with_min_lr": {"min_lr": 0.005},
    "warmup_stable_decay": {"num_decay_steps": 6},
}


@pytest.mark.parametrize("name", [t.value for t in transformers.SchedulerType
                                  if t.value not in ("reduce_lr_on_plateau", "greedy")])
def test_get_scheduler_builds_every_step_schedule_by_name(name):
    options = SCHEDULER_OPTIONS.get(name)
    kwargs = dict(num_warmup_steps=4, num_training_steps=24, scheduler_specific_kwargs=options)
    ours_rates = _rates(lambda o, **k: openformers.get_scheduler(name, o, **k), **kwargs)
    assert ours_rates == pytest.approx(_rates(lambda o, **k: transformers.get_scheduler(name, o, **k), **kwargs),
                                       abs=1e-7)
    assert openformers.SchedulerType(name) == name and openformers.SchedulerType(name).value == name


def _metric_rates(get, name, metrics, **options):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1)), ], lr=0.5)
    scheduler = get(name, optimizer, scheduler_specific_kwargs=options)
    rates = []
    for value in metrics:
        scheduler.step(value)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates, scheduler


@pytest.mark.parametrize(("name", "options"), [
    ("reduce_lr_on_plateau", {"patience": 1, "factor": 0.5}),
    ("greedy", {"patience": 1, "factor": 0.5, "min_lr": 0.05, "reset_start": 3}),
    ("greedy", {"patience": 2, "factor": 0.8, "cooldown": 1, "warmup": 1, "threshold_mode": "rel", "smooth": True,
                "window_size": 3}),
    ("greedy", {"mode": "max", "patience": 0, "factor": 0.9, "max_lr": 0.7}),
])
def test_metric_schedules_follow_the_reference(name, options):
    metrics = [1.0, 0.9, 0.8, 0.85, 0.86, 0.87, 0.7, 0.6, 0.5, 0.55, 0.56, 0.57, 0.58, 0.59, 0.6, 0.61, 0.62] * 3
    got, scheduler = _metric_rates(openformers.get_scheduler, name, metrics, **options)
    expected, reference_scheduler = _metric_rates(transformers.get_scheduler, name, metrics, **options)
    assert got == pytest.approx(expected, abs=1e-12)
    assert scheduler.get_last_lr() == pytest.approx(reference_scheduler.get_last_lr())


def test_greedy_state_round_trips():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = openformers.get_scheduler("greedy", optimizer, scheduler_specific_kwargs={"patience": 0})
    for value in (1.0, 2.0, 3.0):
        scheduler.step(value)
    fresh = ours.GreedyLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5), patience=0)
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh.get_last_lr() == scheduler.get_last_lr()
    assert fresh.optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_schedule_errors_name_the_argument():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="lr_scheduler_type must be one of"):
        openformers.get_scheduler("cosine_twice", optimizer, 1, 10)
    with pytest.raises(ValueError, match="num_training_steps"):
        openformers.get_scheduler("linear", optimizer, num_warmup_steps=1)
    with pytest.raises(ValueError, match="min_lr or min_lr_rate"):
        openformers.get_scheduler("cosine_with_min_lr", optimizer, 1, 10)
    with pytest.raises(ValueError, match="lr_end"):
        openformers.get_polynomial_decay_schedule_with_warmup(optimizer, 1, 10, lr_end=0.5)
    with pytest.raises(ValueError, match="decay_type"):
        openformers.get_wsd_schedule(optimizer, 1, 3, num_training_steps=10, decay_type="square")


def _adafactor_run(optimizer_class, steps=6, dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).to(dtype)
    extra = torch.nn.Parameter(torch.randn(2, 3, 4, dtype=dtype))  # factored over the last two axes
    optimizer = optimizer_class([*model.parameters(), extra], **kwargs)
    inputs = torch.randn(8, 6, dtype=dtype)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(inputs).pow(2).mean() + extra.sin().sum()
        loss.backward()
        optimizer.step()
    return [p.detach().float() for p in [*model.parameters(), extra]], optimizer


@pytest.mark.parametrize("kwargs", [
    {},
    {"warmup_init": True},
    {"scale_parameter": False},
    {"relative_step": False, "scale_parameter": False, "lr": 1e-2},
    {"relative_step": False, "lr": 1e-2, "beta1": 0.9, "weight_decay": 0.01, "clip_threshold": 0.5},
    {"beta1": 0.8, "decay_rate": -0.5, "eps": (1e-29, 1e-2)},
])
def test_adafactor_reaches_the_reference_parameters(kwargs):
    got, optimizer = _adafactor_run(openformers.Adafactor, **kwargs)
    expected, reference_optimizer = _adafactor_run(reference.Adafactor, **kwargs)
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-7)
    schedule = ours_optimizers.AdafactorSchedule(optimizer)
    reference_schedule = reference.AdafactorSchedule(reference_optimizer)
    assert schedule.get_lr() == pytest.approx([float(x) for x in reference_schedule.get_lr()])


def test_adafactor_in_bfloat16_and_its_argument_checks():
    got, _ = _adafactor_run(openformers.Adafactor, dtype=torch.bfloat16)
    expected, _ = _adafactor_run(reference.Adafactor, dtype=torch.bfloat16)
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="relative_step=False"):
        openformers.Adafactor([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    with pytest.raises(ValueError, match="warmup_init"):
        openformers.Adafactor([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, relative_step=False, warmup_init=True)
