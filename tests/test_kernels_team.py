"""The decoding step's team of threads (decode.cpp's Team): rows claimed in chunks, a barrier whose waiters sleep.
Each output row is summed by one thread in one fixed order, whichever thread claims it, so any team gives the
one-thread results bit for bit; a team of more threads than the machine has cores is descheduled mid-product
and sleeps at barriers, the case of a CPU shared with other work."""

import os

import pytest
import torch

from openformers import kernels
from openformers.configs import MistralConfig
from test_kernels import accelerated, counted_decode_steps, step_logits, tiny_model


@pytest.mark.parametrize("quantization", [None, "int4"])
def test_more_threads_than_cores_give_the_one_thread_results_exactly(quantization, monkeypatch):
    model = tiny_model(MistralConfig, sliding_window=6, intermediate_size=192)
    if quantization:
        model = kernels.quantize(model, quantization)
    accelerated(model)
    tokens = torch.randint(0, 96, (24,), generator=torch.Generator().manual_seed(5)).tolist()
    steps = counted_decode_steps(monkeypatch)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = step_logits(model, tokens, True, monkeypatch)
        torch.set_num_threads(2 * (os.cpu_count() or 1) + 1)
        crowd = step_logits(model, tokens, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    assert len(steps) == 2 * (len(tokens) - 3)
    assert torch.equal(crowd, alone)


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
