"""The decoding step's team of threads (decode.cpp's Team): rows claimed in chunks, a barrier whose waiters sleep.
Each output row is summed by one thread in one fixed order, whichever thread claims it, so any team gives the
one-thread results bit for bit; a team of more threads than the machine has cores is descheduled mid-product
and sleeps at barriers, the case of a CPU shared with other work, where the teams that follow leave threads out
and later try them again."""

import os

import pytest
import torch

from openformers import kernels
from openformers.configs import MistralConfig
from test_kernels import accelerated, step_logits, tiny_model


@pytest.mark.parametrize("quantization", [None, "int4"])
def test_more_threads_than_cores_give_the_one_thread_results_exactly(quantization, monkeypatch):
    kernels.build()
    torch.ops.openformers.crowd_team(0, 0)
    model = tiny_model(MistralConfig, sliding_window=6, intermediate_size=192)
    if quantization:
        model = kernels.quantize(model, quantization)
    accelerated(model)
    tokens = torch.randint(0, 96, (24,), generator=torch.Generator().manual_seed(5)).tolist()
    sizes = team_sizes(monkeypatch)
    threads, crowd_size = torch.get_num_threads(), 2 * (os.cpu_count() or 1) + 1
    try:
        torch.set_num_threads(1)
        alone = step_logits(model, tokens, True, monkeypatch)
        torch.set_num_threads(crowd_size)
        crowd = step_logits(model, tokens, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
        torch.ops.openformers.crowd_team(0, 0)
    assert len(sizes) == 2 * (len(tokens) - 3)
    assert torch.equal(crowd, alone)
    # At most os.cpu_count() of the crowd run at once, so the rest of its time is lost: the teams shrink.
    crowded = sizes[len(tokens) - 3:]
    assert crowded[0] == crowd_size and min(crowded) < crowd_size, crowded


def team_sizes(monkeypatch) -> list[int]:
    """A list that gets the number of threads of each compiled decoding step from here on."""
    sizes, decode_step = [], torch.ops.openformers.decode_step
    monkeypatch.setattr(torch.ops.openformers, "decode_step", lambda *args: decode_step(*args) or sizes.append(
        torch.ops.openformers.team_threads()))
    return sizes


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_a_shrunk_team_grows_back_with_the_same_results(quantization, monkeypatch):
    model = tiny_model(MistralConfig, sliding_window=6, intermediate_size=192)
    if quantization:
        model = kernels.quantize(model, quantization)
    accelerated(model)
    tokens = torch.randint(0, 96, (40,), generator=torch.Generator().manual_seed(6)).tolist()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = step_logits(model, tokens, True, monkeypatch)
        torch.set_num_threads(3)
        torch.ops.openformers.crowd_team(2, 3)  # one thread for two teams (a step, the head), then a try with two
        sizes = team_sizes(monkeypatch)
        shrunk = step_logits(model, tokens, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
        torch.ops.openformers.crowd_team(0, 0)
    assert torch.equal(shrunk, alone)
    # What follows the try depends on how busy the machine is: shrinking back, or growing to three threads.
    assert sizes[:2] == [1, 2], sizes


def test_the_language_model_head_claimed_by_a_crowd_matches_one_thread():
    torch.manual_seed(0)
    layer = kernels.Linear.from_linear(torch.nn.Linear(64, 1000, bias=False))
    x = torch.randn(1, 64)
    assert kernels.build()
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode():
            torch.set_num_threads(1)
            alone = layer(x)
            torch.set_num_threads(2 * (os.cpu_count() or 1) + 1)
            crowd = layer(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(crowd, alone)
