"""QLoRA with gradient checkpointing (kernels/linear.py's _PackedProduct, models/layers.run_layer): a checkpointed
layer's recomputation, and the stack's last layer, which is not checkpointed, keep their unpacked weight matrices
for the layer's backward, which then unpacks nothing again; the gradients stay exactly those of a run without
checkpointing."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

transformers = pytest.importorskip("transformers")

from openformers import AutoModelForSequenceClassification, LoraConfig, kernels  # noqa: E402
from openformers.kernels import linear  # noqa: E402
from openformers.models import layers  # noqa: E402

LAYERS = 2
CONFIG = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, num_labels=2)


class _Unpackings(TorchDispatchMode):
    """Counts the kernel's dequantize_into calls (each unpacks one weight matrix)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.name().startswith("openformers::dequantize_into"):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qlora") / "base"
    torch.manual_seed(0)
    transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**CONFIG)).save_pretrained(folder)
    return folder


def _gradients(folder, quantization, checkpointing, steps=2, dtype=torch.bfloat16, length=12):
    """The adapter's and head's gradients after `steps` forward and backward passes, and the unpackings counted
    in the last one."""
    model = AutoModelForSequenceClassification.from_pretrained(folder, quantization=quantization,
                                                               dtype=dtype)
    torch.manual_seed(1)
    model.add_adapter(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"],
                                 init_lora_weights=False))
    if checkpointing is not None:
        model.gradient_checkpointing_enable(checkpointing)
    model.train()
    ids = torch.randint(1, 64, (2, length), generator=torch.Generator().manual_seed(3))
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        with _Unpackings() as unpackings:
            model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}, unpackings.count


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_checkpointing_unpacks_each_recomputed_matrix_once_and_keeps_the_gradients(base, quantization):
    if not kernels.build():
        pytest.skip("the CPU kernels are not built here: the plain path unpacks with PyTorch's operations")
    plain, plain_unpackings = _gradients(base, quantization, None)
    # Without checkpointing: every product in the forward, and again in the backward, except the first layer's
    # q/k/v, whose input (the frozen embeddings) needs no gradient.
    assert plain_unpackings == 2 * 7 * LAYERS - 3
    for options in ({"use_reentrant": False}, {"use_reentrant": True}):
        checkpointed, unpackings = _gradients(base, quantization, options)
        assert checkpointed.keys() == plain.keys()
        for name, gradient in plain.items():
            assert torch.equal(checkpointed[name], gradient), (options, name)
        # The last layer is not checkpointed: its forward keeps its 7 matrices for its backward, which comes next.
        if options["use_reentrant"]:
            # The forward runs without gradients and the recomputation runs each layer whole, keeping every
            # matrix (the embeddings' output is made to need a gradient): the backward unpacks none.
            assert unpackings == (7 + 7) * (LAYERS - 1) + 7
        else:
            # Per layer: forward 7, recomputation 6 (it stops before down_proj, whose input nothing saves), backward
            # 1 (down_proj); unpacking in the backward again made it 7 + 6 + 7, less the first layer's q/k/v.
            assert unpackings == (7 + 6 + 1) * (LAYERS - 1) + 7
    # Kept matrices are all handed back: one layer's worth stays for the next step, none is held for a backward.
    assert not linear._unpacked.__dict__.get("kept")
    assert 0 < len(linear._unpacked.__dict__["spare"]) <= 7
    linear.free_unpacked_matrices()
    assert not linear._unpacked.__dict__


def test_a_kept_matrix_is_not_used_once_the_weights_change():
    if not kernels.build():
        pytest.skip("the CPU kernels are not built here")
    torch.manual_seed(0)
    layer = linear.Linear.from_linear(torch.nn.Linear(64, 32), "int4")
    x = torch.randn(5, 64, requires_grad=True)
    y = linear._PackedProduct.apply(x, layer)
    with layers._backward_next():  # a recomputation's forward keeps the matrix for this product's backward ...
        linear._PackedProduct.apply(x.detach().requires_grad_(), layer)
    assert layer in linear._unpacked.kept
    layer.weight.copy_(linear.Linear.from_linear(torch.nn.Linear(64, 32), "int4").weight)  # ... then they change
    y.backward(torch.ones_like(y))
    expected = torch.ones(5, 32) @ layer.dequantized(torch.float32)
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-5)
    linear.free_unpacked_matrices()


# 2112 x 4096: a bfloat16 matrix past the kernel's 16 MB, written with non-temporal stores.
@pytest.mark.parametrize("shape", [(40, 128), (2112, 4096)])
def test_int4_unpacks_to_bfloat16_as_its_float32_matrix_rounds(shape):
    """The bf16 matrix a QLoRA product multiplies equals the float32 one rounded as c10::BFloat16 rounds, bit for bit,
    also for groups whose values are subnormal (which vcvtne2ps2bf16 would flush to zero) or NaN, and also
    into a matrix that does not start on a 64-byte boundary (which non-temporal stores need)."""
    if not kernels.build():
        pytest.skip("the CPU kernels are not built here")
    torch.manual_seed(0)
    out_features, in_features = shape
    layer = linear.Linear.from_linear(torch.nn.Linear(in_features, out_features), "int4")
    layer.scale[0, 0] = torch.tensor([1e-12, 1e-39])  # steps of 1e-12 above a subnormal minimum
    layer.scale[1, 2] = torch.tensor([1e-40, -1e-39])  # subnormal values of both signs
    layer.scale[2, 1] = torch.tensor([float("nan"), 0.5])
    layer.scale[-1, -1] = torch.tensor([float("inf"), -0.5])  # infinite steps, and NaN where the step is 0:
    layer.weight[-1, -16:] = torch.arange(16, dtype=torch.uint8) * 17  # steps 0..15 in the low and high nibbles
    expected = layer.float_weight(torch.float32)
    finite = ~expected.isnan()
    aligned = layer.float_weight(torch.bfloat16)
    unaligned = torch.empty(out_features * in_features + 1, dtype=torch.bfloat16)[1:].view(out_features, in_features)
    torch.ops.openformers.dequantize_into(layer.weight, layer.scale, unaligned)
    for matrix in (aligned, unaligned):
        assert torch.equal(matrix[finite], expected[finite].to(torch.bfloat16))
        assert matrix[~finite].isnan().all() and (~finite).sum() == 32 + 2
        assert matrix[-1, -32:].isinf().sum() == 30


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_reentrant_checkpoints_forward_of_a_few_tokens_multiplies_as_its_recomputation(base, quantization):
    # 2 x 3 tokens: few enough rows for the kernel, which rounds its input to int8 steps; a training layer leaves
    # them to PyTorch's products, as the recomputation with gradients multiplies (adapters' gradients moved by up
    # to 3e-3 otherwise).
    plain, _ = _gradients(base, quantization, None, steps=1, dtype=torch.float32, length=3)
    checkpointed, _ = _gradients(base, quantization, {"use_reentrant": True}, steps=1, dtype=torch.float32, length=3)
    for name, gradient in plain.items():
        assert torch.equal(checkpointed[name], gradient), name


def test_float32_training_keeps_float32_products_in_a_reentrant_checkpoints_forward(base, monkeypatch):
    # The forward that a reentrant checkpoint runs without gradients must compute what its recomputation computes,
    # so a training layer never takes the prompt's bfloat16 route, even where the CPU would make it pay.
    monkeypatch.setattr(linear, "BFLOAT16_PROMPT_PRODUCTS", True)
    plain, _ = _gradients(base, "int8", None, steps=1, dtype=torch.float32)
    checkpointed, _ = _gradients(base, "int8", {"use_reentrant": True}, steps=1, dtype=torch.float32)
    for name, gradient in plain.items():
        assert torch.equal(checkpointed[name], gradient), name
