"""LoRA's dropout through the compiled library (kernels/decode.cpp `dropout`): F.dropout's masks and outputs bit for
bit, the CPU generator left where F.dropout leaves it, gradients through the same masks (also when gradient
checkpointing recomputes a layer), and a LoRA fine-tune with dropout giving peft's loss curve."""

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch.utils.checkpoint import checkpoint

from openformers import AutoModelForSequenceClassification, LoraConfig, kernels
from openformers.models import lora
from openformers.models.lora import LoraDropout

peft = pytest.importorskip("peft")

# Sizes around the generator's blocks (624 words, two a element: 312 elements) and the kernel's stretches (2048).
SIZES = [(1,), (7,), (311,), (312,), (313,), (624,), (625,), (2047,), (2049,), (3, 1411), (2, 5, 417)]


@pytest.fixture(scope="module", autouse=True)
def built():
    assert kernels.build()


def _bernoulli_draws_two_words_an_element() -> bool:
    """Whether bernoulli_ here draws from the CPU generator (two 32-bit words a element; 1000 elements leave its
    next word at 2000 mod 624 = 128): not so where PyTorch hands it to MKL (builds with MKL on Intel CPUs)."""
    state = torch.get_rng_state()
    torch.manual_seed(0)
    torch.empty(1000).bernoulli_(0.5)
    next_word = int.from_bytes(torch.get_rng_state()[16:24].numpy().tobytes(), "little")
    torch.set_rng_state(state)
    return next_word == 2000 % 624


def test_the_kernel_is_used_exactly_where_bernoulli_draws_from_the_generator():
    before = torch.get_rng_state()
    assert lora._kernel_draws_bernoulli() == _bernoulli_draws_two_words_an_element()
    assert torch.equal(torch.get_rng_state(), before)  # the check puts the generator back


@pytest.fixture
def drawn_by_the_kernel(monkeypatch):
    if not lora._kernel_draws_bernoulli():
        pytest.skip("this PyTorch hands bernoulli_ to MKL here: LoraDropout is F.dropout")
    calls = []
    apply = lora._KernelDropout.apply
    monkeypatch.setattr(lora._KernelDropout, "apply", lambda *args: calls.append(args[0].shape) or apply(*args))
    return calls


def _after_other_draws(seed: int) -> None:
    """The generator after other uses: a few normal samples (which leave one cached in its state), uniform ones."""
    torch.manual_seed(seed)
    if seed % 3 == 1:
        torch.randn(seed % 7 + 1)
    elif seed % 3 == 2:
        torch.rand(seed * 37)
        torch.randn(3, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_masks_and_generator_are_f_dropout_s(dtype, drawn_by_the_kernel):
    checked = 0
    for seed in range(12):
        for size in SIZES:
            for p in (0.05, 0.5, 0.9, 1e-6):
                _after_other_draws(seed)
                x = torch.randn(size, dtype=dtype)
                x.view(-1)[::5] = -x.view(-1)[::5].abs()  # negative values, whose dropped products are -0
                state = torch.get_rng_state()
                expected = F.dropout(x, p, training=True)
                expected_state = torch.get_rng_state()
                torch.set_rng_state(state)
                got = LoraDropout(p)(x)
                assert got.dtype == dtype and got.shape == x.shape
                assert torch.equal(got.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                                   expected.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)), (seed, size, p)
                # The whole state: the engine's words and position, and a cached normal sample when there is one.
                assert torch.equal(torch.get_rng_state(), expected_state), (seed, size, p)
                checked += 1
    assert len(drawn_by_the_kernel) == checked


def test_a_large_activation_and_threads(drawn_by_the_kernel):
    threads = torch.get_num_threads()
    x = torch.randn(128, 4096, dtype=torch.bfloat16)
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            torch.manual_seed(count)
            expected = F.dropout(x, 0.05, training=True)
            torch.manual_seed(count)
            assert torch.equal(LoraDropout(0.05)(x), expected)
    finally:
        torch.set_num_threads(threads)
    assert len(drawn_by_the_kernel) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_go_through_the_same_mask(dtype, drawn_by_the_kernel):
    torch.manual_seed(3)
    x = torch.randn(5, 333, dtype=dtype)
    grad = torch.randn(5, 333, dtype=dtype)
    results = []
    for dropout in (lambda t: F.dropout(t, 0.2, training=True), LoraDropout(0.2)):
        torch.manual_seed(4)
        leaf = x.clone().requires_grad_()
        out = dropout(leaf)
        out.backward(grad)
        results.append((out.detach(), leaf.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    # A gradient that is not contiguous (a transposed product's) is taken as well.
    torch.manual_seed(4)
    leaf = x.clone().requires_grad_()
    LoraDropout(0.2)(leaf).backward(grad.t().contiguous().t())
    assert torch.equal(leaf.grad, results[0][1])
    assert len(drawn_by_the_kernel) == 2


def test_checkpointing_recomputes_the_same_masks(drawn_by_the_kernel):
    torch.manual_seed(5)
    weight = torch.randn(64, 64, dtype=torch.bfloat16, requires_grad=True)
    x = torch.randn(4, 9, 64, dtype=torch.bfloat16)
    dropout = LoraDropout(0.3)

    def layer(t):  # two draws, as a layer's q and v adapters
        return dropout(t) @ weight + dropout(t).square() @ weight

    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(6)
        leaf = x.clone().requires_grad_()
        out = checkpoint(layer, leaf, use_reentrant=False) if checkpointed else layer(leaf)
        out.float().square().sum().backward()
        grads.append((leaf.grad, weight.grad.clone(), torch.get_rng_state()))
        weight.grad = None
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert len(drawn_by_the_kernel) == 2 + 4  # the checkpointed pass draws each mask twice


def test_evaluation_and_other_tensors_stay_f_dropout(drawn_by_the_kernel):
    x = torch.randn(6, 10)
    assert torch.equal(LoraDropout(0.5).eval()(x), x)
    for tensor in (x.t(), x.double(), x.half()):  # not contiguous, other dtypes
        torch.manual_seed(7)
        expected = F.dropout(tensor, 0.5, training=True)
        torch.manual_seed(7)
        assert torch.equal(LoraDropout(0.5)(tensor), expected)
    compiled = torch.compile(LoraDropout(0.5), backend="eager")  # a traced graph draws its masks itself
    y = compiled(x)
    assert ((y == 0) | (y == 2 * x)).all() and (y == 0).any()
    assert drawn_by_the_kernel == []


TINY_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, num_labels=2)


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_a_lora_fine_tune_with_dropout_gives_peft_s_loss_curve(gradient_checkpointing, drawn_by_the_kernel,
                                                              tmp_path):
    torch.manual_seed(0)
    reference = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**TINY_LLAMA))
    reference.save_pretrained(tmp_path)
    ours = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    options = dict(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(1)
    wrapped = peft.get_peft_model(reference, peft.LoraConfig(**options))
    torch.manual_seed(1)
    ours.add_adapter(LoraConfig(**options))
    ids = torch.randint(1, 64, (4, 12), generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 1, 0])
    curves = []
    for model in (wrapped, ours):
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        torch.manual_seed(3)
        curve = []
        for _ in range(4):
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            curve.append(loss.item())
        curves.append(curve)
    assert curves[1] == pytest.approx(curves[0], abs=1e-5)
    assert drawn_by_the_kernel  # ours drew its masks through the kernel
