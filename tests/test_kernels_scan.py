"""Mamba's compiled selective scan (kernels/scan.cpp, through models/mamba.py `selective_scan`) against the sequential
recurrence (`sequential_scan`): outputs and last states in float32 and bfloat16 over lengths around the stretches of
64 positions the kernel works in, batches from a cache's state; the gradients of every input and of a model's
parameters; a model's logits and generation with the compiled scan and without."""

import pytest
import torch
import torch.nn.functional as F

from openformers import MambaCache, MambaConfig, MambaForCausalLM, kernels
from openformers.models import mamba


@pytest.fixture(scope="module", autouse=True)
def library():
    assert kernels.build()
    assert hasattr(torch.ops.openformers, "selective_scan")


def scan_inputs(B, T, D, N, dtype=torch.float32, seed=0, state=True):
    """x, dt, A, b, c and a state as the mixer hands them over: dt a softplus in float32, A = -exp(A_log), x and the
    state's layout strided as the mixer's (x a transposed convolution output, b and c slices of one projection)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, T, generator=g).to(dtype).transpose(1, 2)
    dt = F.softplus(torch.randn(B, T, D, generator=g) - 1)
    A_log = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(D, N) + 0.1 * torch.randn(D, N, generator=g)
    A = -torch.exp(A_log)
    projected = torch.randn(B, T, 3 * N, generator=g).to(dtype)
    b, c = projected[..., N : 2 * N], projected[..., 2 * N :]
    initial = torch.randn(B, D, N, generator=g) if state else None
    return x, dt, A, b, c, initial


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 5, 64, 65, 130])
@pytest.mark.parametrize("D, N", [(70, 16), (24, 8)])  # 70 x 16: a block of 64 channels and one of 6
@pytest.mark.parametrize("state", [True, False])
def test_compiled_scan_equals_the_sequential_one(dtype, T, D, N, state):
    x, dt, A, b, c, initial = scan_inputs(2, T, D, N, dtype, seed=T, state=state)
    with torch.inference_mode():
        y, last = mamba.selective_scan(x, dt, A, b, c, initial)
        expected_y, expected_last = mamba.sequential_scan(x, dt, A, b, c, x.new_zeros(2, D, N, dtype=torch.float32)
                                                           if initial is None else initial)
    assert y.dtype == dtype and y.shape == (2, T, D) and last.dtype == torch.float32
    # The states are the plain path's bits (the same products and sums, torch's exp); y sums C . h in another order.
    assert torch.equal(last, expected_last)
    if dtype == torch.float32:
        torch.testing.assert_close(y, expected_y, atol=1e-5, rtol=1e-5)
    else:  # the float32 sums before their rounding to bfloat16 differ in the last bits: at most one step apart
        steps = (y.float() - expected_y.float()).abs() / expected_y.float().abs().clamp(min=1e-30)
        assert (steps <= 2**-7).all() and (y != expected_y).float().mean() < 0.01


def test_compiled_scan_continues_from_a_cache():
    x, dt, A, b, c, _ = scan_inputs(2, 100, 40, 16, seed=3)
    with torch.inference_mode():
        whole, whole_last = mamba.selective_scan(x, dt, A, b, c, None)
        first, state = mamba.selective_scan(x[:, :70], dt[:, :70], A, b[:, :70], c[:, :70], None)
        steps = [first]
        for t in range(70, 100):
            y, state = mamba.selective_scan(x[:, t : t + 1], dt[:, t : t + 1], A, b[:, t : t + 1], c[:, t : t + 1],
                                            state)
            steps.append(y)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-5)
    assert torch.equal(state, whole_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 7, 64, 130])
def test_compiled_scan_gradients_equal_the_sequential_ones(dtype, T):
    x, dt, A, b, c, initial = scan_inputs(2, T, 70, 16, dtype, seed=T)
    leaves = [t.detach().clone().requires_grad_() for t in (x, dt, A, b, c, initial)]
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(2, T, 70, generator=g), torch.randn(2, 70, 16, generator=g)

    def gradients(scan):
        inputs = [t.clone() for t in leaves]  # non-leaf copies, so each run's gradients are its own
        y, last = scan(*inputs)
        loss = (y.float() * weights[0]).sum() + (last * weights[1]).sum()  # the last state's gradient too
        return torch.autograd.grad(loss, leaves)

    compiled = gradients(mamba.selective_scan)
    sequential = gradients(mamba.sequential_scan)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    for name, got, expected in zip(["x", "dt", "A", "b", "c", "state"], compiled, sequential):
        assert got.dtype == expected.dtype, name
        scale = expected.float().abs().max().item()
        torch.testing.assert_close(got.float(), expected.float(), atol=tolerance * scale, rtol=tolerance, msg=name)


TINY = dict(vocab_size=99, hidden_size=32, state_size=16, num_hidden_layers=2, conv_kernel=4, time_step_rank=8,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.2)


def tiny_model(dtype=torch.float32):
    torch.manual_seed(0)
    model = MambaForCausalLM(MambaConfig(**TINY)).to(dtype)
    return model


@pytest.fixture
def sequential(monkeypatch):
    """Every scan on the sequential path, as without the library."""

    def use(on: bool):
        monkeypatch.setattr(mamba, "_compiled_scan_applies", (lambda x, c: False) if on else compiled)

    compiled = mamba._compiled_scan_applies
    return use


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_models_logits_and_tokens_with_the_compiled_scan_and_without(dtype, sequential, monkeypatch):
    model = tiny_model(dtype).eval()
    ids = torch.randint(3, 99, (2, 75), generator=torch.Generator().manual_seed(0))
    calls = []
    monkeypatch.setattr(mamba, "sequential_scan", lambda *a, original=mamba.sequential_scan: calls.append(1)
                        or original(*a))
    with torch.inference_mode():
        logits = model(ids).logits
        tokens = model.generate(ids[:, :70], max_new_tokens=6, do_sample=False, eos_token_id=None)
        assert calls == []  # every scan, prefill and single steps, compiled
        sequential(True)
        expected = model(ids).logits
        expected_tokens = model.generate(ids[:, :70], max_new_tokens=6, do_sample=False, eos_token_id=None)
        assert calls
    tolerance = 1e-4 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(logits, expected, atol=tolerance, rtol=tolerance)
    assert torch.equal(tokens, expected_tokens)


def test_a_training_step_gives_the_sequential_scans_gradients(sequential):
    def gradients():
        model = tiny_model().train()
        ids = torch.randint(3, 99, (2, 70), generator=torch.Generator().manual_seed(1))
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    loss, compiled = gradients()
    sequential(True)
    expected_loss, expected = gradients()
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert compiled.keys() == expected.keys() and any("A_log" in name for name in compiled)
    for name, grad in compiled.items():
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(grad, expected[name], atol=1e-4 * scale, rtol=1e-3, msg=name)


def test_a_cached_prefill_with_gradients_continues_from_the_state(sequential):
    """A training forward through a cache (a state given, the last one kept): the state's gradient flows back into
    the first call's parameters' gradients as the sequential scan's does."""

    def gradients():
        model = tiny_model().train()
        ids = torch.randint(3, 99, (1, 20), generator=torch.Generator().manual_seed(2))
        cache = MambaCache()
        first = model(ids[:, :12], past_key_values=cache).logits
        second = model(ids[:, 12:], past_key_values=cache).logits
        (first.square().mean() + second.square().mean()).backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    compiled = gradients()
    sequential(True)
    expected = gradients()
    for name, grad in compiled.items():
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(grad, expected[name], atol=1e-4 * scale, rtol=1e-3, msg=name)
