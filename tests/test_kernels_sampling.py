"""The compiled draw of a sampled token (decode.cpp's multinomial_one) against torch.multinomial(probs, 1): the same
tokens and the same state of the default generator after, and generate's sampled tokens unchanged by it."""

import pytest
import torch

from openformers import kernels
from openformers.generation import processors
from test_kernels import tiny_model


@pytest.fixture(scope="module", autouse=True)
def library():
    assert kernels.build()
    assert processors._compiled_multinomial_agrees()  # asked once per process, before any test counts the draws


def probability_rows(seed: int, vocabulary: int) -> torch.Tensor:
    """Two rows of softmax probabilities as sampling makes them: spread out or sharp, some rows cut to their 50 most
    likely tokens (the rest exactly 0), some from logits rounded to bfloat16 (ties)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, vocabulary, generator=generator) * (1 + seed % 7)
    if seed % 3 == 0:
        kth = logits.topk(min(50, vocabulary), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if seed % 5 == 0:
        logits = logits.bfloat16().float()
    return logits.softmax(dim=-1)


@pytest.mark.parametrize("vocabulary", [1, 5, 1000, 49152, 151936])
def test_the_draw_is_torch_multinomials_token_and_leaves_the_generator_where_it_does(vocabulary):
    for seed in range(40):
        probs = probability_rows(seed, vocabulary)
        torch.manual_seed(seed)
        expected = torch.multinomial(probs, 1)
        expected_state = torch.get_rng_state()
        torch.manual_seed(seed)
        drawn = torch.ops.openformers.multinomial_one(probs)
        assert torch.equal(drawn, expected), (seed, drawn.tolist(), expected.tolist())
        assert torch.equal(torch.get_rng_state(), expected_state)


def test_rows_of_subnormal_probabilities_draw_torchs_token():
    # Quotients that round to 0 or to a few subnormal steps, where float's rounding decides the argmax and its ties.
    for seed in range(100):
        probs = torch.rand(2, 1000, generator=torch.Generator().manual_seed(seed)) * 3e-44
        torch.manual_seed(seed)
        expected = torch.multinomial(probs, 1)
        expected_state = torch.get_rng_state()
        torch.manual_seed(seed)
        assert torch.equal(torch.ops.openformers.multinomial_one(probs), expected), seed
        assert torch.equal(torch.get_rng_state(), expected_state)


def test_a_row_torch_refuses_draws_nothing_and_gets_torchs_error():
    state = torch.get_rng_state()
    for bad in (float("nan"), float("inf"), -0.5):
        probs = torch.full((2, 8), 0.125)
        probs[1, 3] = bad
        assert torch.ops.openformers.multinomial_one(probs).numel() == 0
    assert torch.ops.openformers.multinomial_one(torch.zeros(1, 8)).numel() == 0  # no positive probability
    assert torch.equal(torch.get_rng_state(), state)
    scores = torch.zeros(1, 8)
    scores[0, 2] = float("nan")
    with pytest.raises(RuntimeError, match="probability tensor contains"):
        processors.sample_next_token(scores, do_sample=True)
    with pytest.raises(RuntimeError, match="probs must be"):
        torch.ops.openformers.multinomial_one(torch.ones(8))


def test_sampling_takes_the_draw_from_the_default_generator_only(monkeypatch):
    calls, compiled = [], torch.ops.openformers.multinomial_one
    monkeypatch.setattr(torch.ops.openformers, "multinomial_one", lambda probs: calls.append(1) or compiled(probs))
    scores = torch.randn(3, 1000)
    torch.manual_seed(0)
    drawn = processors.sample_next_token(scores, do_sample=True)
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.multinomial(scores.softmax(dim=-1), 1).squeeze(1))
    assert calls == [1]
    processors.sample_next_token(scores, do_sample=True, generator=torch.Generator().manual_seed(0))
    processors.sample_next_token(scores.double(), do_sample=True)
    assert calls == [1]


def test_sampled_generate_gives_the_same_tokens_with_the_draw_and_without(monkeypatch):
    model = tiny_model()
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    options = dict(do_sample=True, max_new_tokens=24, temperature=1.5, top_k=0)
    calls, compiled = [], torch.ops.openformers.multinomial_one
    monkeypatch.setattr(torch.ops.openformers, "multinomial_one", lambda probs: calls.append(1) or compiled(probs))
    torch.manual_seed(5)
    drawn = model.generate(ids, **options)
    after_drawn = torch.rand(4)
    assert len(calls) == 24
    monkeypatch.setattr(processors, "_compiled_multinomial_applies", lambda probs: False)
    torch.manual_seed(5)
    assert torch.equal(model.generate(ids, **options), drawn)
    assert torch.equal(torch.rand(4), after_drawn)
