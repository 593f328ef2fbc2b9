"""The int8 and int4 products as integer dot products (decode.cpp's `Rounded` and `integer_rows`): the kernel
rounds each input to 8-bit steps per block of 32 and computes exactly the packed weights times that rounded input
(checked to float-sum precision against PyTorch), which is within the rounding's bound of the unrounded product."""

import contextlib
from pathlib import Path

import pytest
import torch

from openformers import kernels
from openformers.kernels import library
from openformers.kernels import linear as linear_module
from test_kernels import int8_per_16, rounded


def packed_layer(quantization: str, columns: int, rows: int = 203) -> kernels.Linear:
    """"int8", "int4", or "int8/16": int8 with a scale per 16 weights (a GGUF Q6_K matrix's layout)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(columns, rows).eval()  # in inference: the kernel's
    with torch.no_grad():  # weight blocks of different scales: each block's own scale must meet its own steps
        linear.weight *= torch.linspace(0.1, 10, columns).roll(columns // 3)
    if quantization == "int8/16":
        return int8_per_16(linear)
    return kernels.quantize(torch.nn.Sequential(linear), quantization)[0]


@contextlib.contextmanager
def inference_on(threads: int):
    """Inference mode on `threads` threads (three: uneven shares of the rows), the kernels loaded."""
    assert kernels.build()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(before)


def kernel_product(layer: kernels.Linear, x: torch.Tensor, threads: int = 3) -> torch.Tensor:
    with inference_on(threads):
        return layer(x)


# int8: 576 and 1536 columns are whole 64-byte steps, 72 and 100 end in a part of a step and a part of a block; with
# a scale per 16, 80 and 112 end in one and three 16s past the 64s. int4: rows take four groups per step, then a
# pair, then one: 64 columns are a pair, 96 a pair and one, 160 four and one, 576 four times four and a pair, 1536
# four groups throughout.
SHAPES = [("int8", 72), ("int8", 100), ("int8", 576), ("int8", 1536),
          ("int8/16", 80), ("int8/16", 112), ("int8/16", 576), ("int8/16", 1536),
          ("int4", 64), ("int4", 96), ("int4", 160), ("int4", 576), ("int4", 1536)]


@pytest.mark.parametrize("quantization, columns", SHAPES)
def test_the_product_is_the_weights_times_the_rounded_input(quantization, columns):
    layer = packed_layer(quantization, columns)
    x = torch.randn(8, columns) * torch.linspace(0.1, 10, columns)  # blocks of different scales
    weights = layer.dequantized(torch.float32)
    for rows in (1, 2, 5, 8):  # the one-input loop and the few-row one, with every remainder of four
        expected = torch.nn.functional.linear(rounded(x[:rows]), weights, layer.bias)
        # float32 sums in another order: a few units in the last place of sums of ~columns terms
        torch.testing.assert_close(kernel_product(layer, x[:rows]), expected, atol=2e-5 * columns**0.5, rtol=1e-5)


@pytest.mark.parametrize("quantization, columns", SHAPES)
def test_rounding_the_input_costs_at_most_half_a_step_per_input(quantization, columns):
    # |y - W x| <= sum_i |W_ij| * s_i / 2, where s_i is the step of input i's block (its largest magnitude / 127).
    layer = packed_layer(quantization, columns)
    x = torch.randn(4, columns)
    weights = layer.dequantized(torch.float32)
    blocks = torch.nn.functional.pad(x, (0, -columns % 32)).unflatten(-1, (-1, 32))
    half_steps = (blocks.abs().amax(-1, keepdim=True) / 127 / 2).expand_as(blocks).flatten(-2)[:, :columns]
    bound = half_steps @ weights.abs().T
    error = (kernel_product(layer, x) - torch.nn.functional.linear(x, weights, layer.bias)).abs()
    assert (error <= bound + 1e-4).all()
    assert error.max() > 0  # the input is rounded: the test would not notice a kernel that skipped it


@pytest.mark.parametrize("quantization", ["int8", "int8/16", "int4"])
def test_zero_blocks_and_outliers_round_without_overflow(quantization):
    layer = packed_layer(quantization, 128)
    x = torch.randn(3, 128)
    x[0, :32] = 0  # a block of zeros: scale 0, no division by it
    x[1, 40] = 1e4  # an outlier takes step 127, its block's others round to few steps
    x[2] = -x[2].abs()  # every step negative, down to -127
    expected = torch.nn.functional.linear(rounded(x), layer.dequantized(torch.float32), layer.bias)
    result = kernel_product(layer, x)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, expected, atol=1e-2, rtol=1e-5)  # terms of ~1e4: their float32 sums


def products_one_by_one(layer: kernels.Linear, x: torch.Tensor) -> torch.Tensor:
    """Each row of `x` multiplied alone: the one-input loops (integer_rows), as a batch-1 decoding step runs them."""
    assert kernels.build()  # a test of a layer packed by hand (int8/16) may be its worker's first
    with torch.inference_mode():
        return torch.stack([torch.ops.openformers.matvec(row.contiguous(), layer.weight, layer.scale) for row in x])


def product_of_the_batch(layer: kernels.Linear, x: torch.Tensor, threads: int = 3) -> torch.Tensor:
    with inference_on(threads):
        return torch.ops.openformers.matvec(x.contiguous(), layer.weight, layer.scale)


# Every size of a batch from 2 to 32 in tiles of four inputs (int8) or two (int4) and what is left of them; 203 rows
# end in three rows that take the one-input loops.
BATCHES = [2, 3, 4, 5, 7, 8, 13, 32]


@pytest.mark.parametrize("quantization, columns", SHAPES)
def test_a_batch_of_inputs_multiplies_each_as_it_would_alone(quantization, columns):
    # Bit for bit: the batched loops sum in the one-input loops' order, so a batch decodes the tokens that its
    # sequences decode alone (an int8 model's next layer rounds its input, and a last-bit difference can move a step).
    layer = packed_layer(quantization, columns)
    torch.manual_seed(1)
    x = torch.randn(max(BATCHES), columns) * torch.linspace(0.1, 10, columns)
    alone = products_one_by_one(layer, x)
    for n in BATCHES:
        assert torch.equal(product_of_the_batch(layer, x[:n]), alone[:n]), n
    expected = torch.nn.functional.linear(rounded(x), layer.dequantized(torch.float32))
    torch.testing.assert_close(alone, expected, atol=2e-5 * columns**0.5, rtol=1e-5)


def test_a_batch_of_q4_0_groups_multiplies_each_as_it_would_alone():
    # A Q4_0 file's groups loaded as int4 keep their own step and a minimum of -8 steps (llama.cpp's d * (q - 8)):
    # the minimums' share of each product is then large and of the opposite sign of the steps' sum.
    import gguf

    torch.manual_seed(0)
    weight = torch.randn(36, 576) * torch.linspace(0.01, 5, 576)
    blocks = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType.Q4_0)
    floats = torch.from_numpy(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_0).copy())
    linear = torch.nn.Linear(576, 36, bias=False)
    linear.weight.data = floats
    layer = kernels.quantize(torch.nn.Sequential(linear), "int4")[0]
    assert torch.equal(layer.dequantized(torch.float32), floats)
    x = torch.randn(9, 576)
    alone = products_one_by_one(layer, x)
    assert torch.equal(product_of_the_batch(layer, x), alone)
    torch.testing.assert_close(alone, rounded(x) @ floats.T, atol=2e-5 * 576**0.5, rtol=1e-5)


def prompt_product(layer: kernels.Linear, x: torch.Tensor, threads: int = 3) -> torch.Tensor:
    """The compiled prompt product alone (a quantized layer's products of more rows than a batch decodes), called
    in every build: those without its vector loops take the one-input loops per row."""
    with inference_on(threads):
        return torch.ops.openformers.prompt_product(x.contiguous(), layer.weight, layer.scale)


# Every remainder of the tiles of six inputs, prompts past the 64 rows that the decode's loops take, and past the 512
# that are rounded and multiplied at a time; 203 rows end in a tile of 11.
PROMPT_ROWS = [1, 2, 3, 4, 5, 6, 7, 11, 65, 100, 600]


@pytest.mark.parametrize("quantization, columns", SHAPES)
def test_a_prompts_product_is_the_weights_times_the_rounded_input(quantization, columns):
    layer = packed_layer(quantization, columns)
    torch.manual_seed(2)
    x = torch.randn(max(PROMPT_ROWS), columns) * torch.linspace(0.1, 10, columns)
    weights = layer.dequantized(torch.float32)
    expected = torch.nn.functional.linear(rounded(x), weights)
    whole = prompt_product(layer, x)
    torch.testing.assert_close(whole, expected, atol=2e-5 * columns**0.5, rtol=1e-5)
    for n in PROMPT_ROWS:  # each row's sums depend on it alone: a prompt's rows as they would be alone, bit for bit
        assert torch.equal(prompt_product(layer, x[:n]), whole[:n]), n
    assert torch.equal(prompt_product(layer, x[:9], threads=1), whole[:9])


@pytest.mark.parametrize("quantization", ["int8", "int8/16", "int4"])
def test_a_prompts_zero_blocks_and_outliers_round_without_overflow(quantization):
    layer = packed_layer(quantization, 128)
    x = torch.randn(70, 128)
    x[0, :32] = 0
    x[1, 40] = 1e4
    x[2] = -x[2].abs()
    x[3] = torch.sign(torch.randn(128))  # every step at +-127: the largest sums of a block
    expected = torch.nn.functional.linear(rounded(x), layer.dequantized(torch.float32))
    result = prompt_product(layer, x)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, expected, atol=1e-2, rtol=1e-5)


def test_a_prompt_product_refuses_what_it_cannot_multiply():
    layer = packed_layer("int8", 64)
    product = torch.ops.openformers.prompt_product
    with pytest.raises(RuntimeError, match="x has 32 values per row for 64 weight columns"):
        product(torch.randn(70, 32), layer.weight, layer.scale)
    with pytest.raises(RuntimeError, match="x must be a contiguous float32 matrix"):
        product(torch.randn(70, 64).bfloat16(), layer.weight, layer.scale)
    with pytest.raises(RuntimeError, match="weights must be int8 or int4"):
        product(torch.randn(70, 64), torch.randn(203, 64), layer.scale)
    assert product(torch.randn(0, 64), layer.weight, layer.scale).shape == (0, 203)


def test_a_quantized_layers_prompt_takes_the_integer_product_where_the_build_has_its_loops(monkeypatch):
    # Without AVX-512 VNNI (tests/test_kernels_portability.py runs this in such builds) prompt_product's plain loops
    # are slower than unpacking the weights for PyTorch's matmul, which the layer keeps there.
    assert kernels.build()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and library._target() != "native":
        assert not torch.ops.openformers.prompt_product_vectorized()
    elif cpuinfo.exists():
        flags = cpuinfo.read_text().split()
        assert torch.ops.openformers.prompt_product_vectorized() is ("avx512_vnni" in flags and "avx512bw" in flags)
    vectorized = linear_module._compiled_prompt_products()
    calls, compiled = [], torch.ops.openformers.prompt_product
    monkeypatch.setattr(torch.ops.openformers, "prompt_product", lambda *args: calls.append(len(args[0])) or compiled(*args))
    layer = packed_layer("int4", 96)
    x = torch.randn(5, 13, 96)  # 65 rows
    with torch.inference_mode():
        result = layer(x)
        layer(torch.randn(4, 1, 96))  # a batch's token per row: matvec, each row's sums as alone
        layer(torch.randn(64, 96))  # at most 64 rows of no sequence: matvec
        layer(torch.randn(1, 16, 96))  # a prompt of 16 positions: prompt_product's
        layer(torch.randn(1, 15, 96))  # 15: matvec
        layer(torch.randn(16, 1, 96))
        monkeypatch.setattr(linear_module, "INTEGER_PROMPT_PRODUCTS", False)
        unpacked = layer(x)
        monkeypatch.setattr(linear_module, "INTEGER_PROMPT_PRODUCTS", True)
    layer.train()
    with torch.no_grad():  # a reentrant checkpoint's forward multiplies as its recomputation will, unrounded
        layer(x)
    assert calls == ([65, 16] if vectorized else [])
    if vectorized:
        assert torch.equal(result, (compiled(x.reshape(65, 96), layer.weight, layer.scale) + layer.bias).view(5, 13, -1))
    else:
        assert torch.equal(result, unpacked)
