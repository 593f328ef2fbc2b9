"""Weight-only int8 and int4 quantization: accuracy of the layer, the compiled kernel against the plain path, the
real model."""

import gc
import platform
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from openformers import AutoModelForCausalLM, AutoTokenizer, kernels
from openformers.kernels import Linear, library, quantize
from openformers.kernels import linear as linear_module
from openformers.kernels.linear import free_unpacked_matrices

from test_kernels import (
    accelerated, counted_decode_steps, counted_matvecs, plain_path_rounds_inputs, rounded, step_logits, tiny_model,
)


def int8(linear: nn.Linear) -> Linear:
    return Linear.from_linear(linear, "int8")


def int4(linear: nn.Linear) -> Linear:
    return Linear.from_linear(linear, "int4")


@pytest.fixture(params=["kernel", "plain"])
def quantizing_path(request, monkeypatch):
    """Quantizing by the kernel's quantize ops, or by PyTorch's operations (`library.loaded()` False)."""
    if request.param == "plain":
        monkeypatch.setattr(library, "loaded", lambda: False)
    else:
        assert kernels.build()
    return request.param


def test_int8_linear_is_close_to_the_float_layer():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    quantized = int8(linear)
    assert quantized.weight.dtype == torch.int8 and quantized.scale.shape == (48, 2)
    x = torch.randn(5, 7, 64)
    reference = linear(x)
    for dtype, tolerance in ((torch.float32, 0.01), (torch.bfloat16, 0.05)):
        error = (quantized(x.to(dtype)).float() - reference).abs().max() / reference.abs().max()
        assert error < tolerance, dtype


def test_int8_keeps_a_scale_per_block_of_32_weights():
    # llama.cpp's Q8_0 grid: each block's largest magnitude at step 127; an outlier coarsens its own block only.
    torch.manual_seed(0)
    linear = nn.Linear(72, 8)  # two whole blocks and a last one of 8 weights
    with torch.no_grad():
        linear.weight[3, 5] = 50.0
    quantized = int8(linear)
    assert quantized.scale.shape == (8, 3) and quantized.scale.dtype == torch.float32
    blocks = nn.functional.pad(linear.weight.detach(), (0, 24)).unflatten(-1, (3, 32))
    torch.testing.assert_close(quantized.scale, blocks.abs().amax(-1) / 127, rtol=0, atol=0)
    step = quantized.scale.repeat_interleave(32, dim=1)[:, :72]
    error = (quantized.dequantized(torch.float32) - linear.weight).abs()
    assert (error <= step / 2 * (1 + 1e-6)).all()
    assert error[3, 32:].max() < 0.01 and error[3, :32].max() > 0.01  # the outlier's block alone is coarse


def q8_0_weight(weight: torch.Tensor):
    """`weight` made Q8_0 blocks by the gguf package: the blocks' float16 scales (rows, blocks), int8 steps, and the
    float32 weights they stand for (what loading the GGUF file gives before quantizing)."""
    import gguf

    blocks = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType.Q8_0)
    raw = torch.from_numpy(blocks).reshape(weight.shape[0], -1, 34)
    scales = raw[..., :2].contiguous().view(torch.float16).squeeze(-1)
    steps = raw[..., 2:].contiguous().view(torch.int8).reshape(weight.shape)
    floats = torch.from_numpy(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q8_0).copy())
    return scales, steps, floats


def test_int8_keeps_q8_0_weights_exactly(quantizing_path):
    torch.manual_seed(0)
    scales, steps, floats = q8_0_weight(torch.randn(40, 96) * torch.linspace(0.01, 5, 96))
    linear = nn.Linear(96, 40, bias=False)
    linear.weight.data = floats
    quantized = int8(linear)
    assert torch.equal(quantized.weight, steps) and torch.equal(quantized.scale, scales.float())
    assert torch.equal(quantized.dequantized(torch.float32), floats)


def test_int8_refuses_weights_that_are_not_finite(quantizing_path):
    linear = nn.Linear(64, 2, bias=False)
    for value in ("nan", "inf"):
        linear.weight.data[1, 40] = float(value)
        with pytest.raises(ValueError, match="quantization='int8'.*NaN or infinity"):
            int8(linear)


def test_a_q8_0_gguf_loads_as_int8_with_every_weight_unchanged(tmp_path, monkeypatch):
    import gguf

    from test_models_llama import _save_tiny, _write_gguf

    reference = _save_tiny(tmp_path / "hf")
    _write_gguf(tmp_path / "tiny.gguf", reference, quantize_to=gguf.GGMLQuantizationType.Q8_0)
    floats = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf", quantization="int8")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, Linear)}
    assert len(layers) == 15  # 7 per layer and the head
    for name, layer in layers.items():
        expected = floats.get_submodule(name).weight
        assert layer.weight.dtype == torch.int8 and torch.equal(layer.dequantized(torch.float32), expected), name
    # 70 rows through the layers (not the compiled prompt step): PyTorch's matmul over the unpacked weights, the
    # input not rounded, in float32 on every CPU
    monkeypatch.setattr(kernels.llama, "PROMPT_ROWS", {})
    monkeypatch.setattr(linear_module, "INTEGER_PROMPT_PRODUCTS", False)
    monkeypatch.setattr(linear_module, "BFLOAT16_PROMPT_PRODUCTS", False)
    ids = torch.arange(1, 71)[None]
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, floats(ids).logits, atol=1e-5, rtol=1e-5)


def test_a_q4_0_gguf_loads_as_int4_with_every_layer_weight_unchanged(tmp_path):
    import gguf

    from test_models_llama import _save_tiny, _write_gguf

    reference = _save_tiny(tmp_path / "hf")
    _write_gguf(tmp_path / "tiny.gguf", reference, quantize_to=gguf.GGMLQuantizationType.Q4_0)
    floats = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf", quantization="int4")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, Linear) and name != "lm_head"}
    assert len(layers) == 14  # the head stays int8, whose grid is not Q4_0's
    for name, layer in layers.items():
        expected = floats.get_submodule(name).weight
        assert layer.weight.dtype == torch.uint8 and torch.equal(layer.dequantized(torch.float32), expected), name


def test_a_gguf_of_mixed_widths_keeps_its_wider_matrices_at_int8_under_int4(tmp_path, monkeypatch):
    # As llama.cpp's Q4_K_M keeps v and down in Q6_K: here Q8_0, Q6_K and Q5_1 beside Q4_0. Under int4 each matrix
    # keeps the width the file gave it, and the decoding step takes the mixed stack.
    import gguf

    from test_models_llama import _save_tiny, _write_gguf

    from openformers.weights import GGUFFile

    reference = _save_tiny(tmp_path / "hf", intermediate_size=256)  # down's rows: a Q6_K block of 256 weights
    Q4_0, Q5_1, Q6_K, Q8_0 = (gguf.GGMLQuantizationType[kind] for kind in ("Q4_0", "Q5_1", "Q6_K", "Q8_0"))
    kinds = {"attn_v.weight": Q8_0, "ffn_down.weight": Q6_K, "ffn_up.weight": Q5_1}
    _write_gguf(tmp_path / "mixed.gguf", reference, quantize_to=lambda name: kinds.get(name.split(".", 2)[-1], Q4_0))
    _write_gguf(tmp_path / "q8_0.gguf", reference, quantize_to=Q8_0)
    assert GGUFFile(tmp_path / "mixed.gguf").mixes_widths() and not GGUFFile(tmp_path / "q8_0.gguf").mixes_widths()
    floats = AutoModelForCausalLM.from_pretrained(tmp_path / "mixed.gguf")
    dequantized = []
    tensor = GGUFFile.tensor
    monkeypatch.setattr(GGUFFile, "tensor", lambda self, name, *args: dequantized.append(name) or tensor(self, name, *args))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "mixed.gguf", quantization="int4")
    # The matrices whose blocks their layout holds (Q4_0 as int4, Q8_0 and Q6_K as int8) are packed straight from
    # them, Q6_K's with a scale per 16 weights; the Q5_1 ones are dequantized and quantized as int8, as is the
    # embedding read.
    stored = GGUFFile(tmp_path / "mixed.gguf").tensors
    assert [name for name in dequantized if len(stored[name].shape) == 2] == [
        "blk.0.ffn_up.weight", "blk.1.ffn_up.weight", "token_embd.weight"]
    layers = {name: m for name, m in model.named_modules() if isinstance(m, Linear) and name != "lm_head"}
    assert len(layers) == 14
    for name, layer in layers.items():
        expected, unpacked = floats.get_submodule(name).weight, layer.dequantized(torch.float32)
        assert layer.weight.dtype == (torch.int8 if name.endswith(("v_proj", "up_proj", "down_proj")) else torch.uint8)
        if name.endswith("up_proj"):  # int8 steps of Q5_1's weights (an offset a block): close, not exact
            assert (unpacked - expected).square().mean().sqrt() < 0.01 * expected.square().mean().sqrt(), name
        else:
            assert torch.equal(unpacked, expected), name
        if name.endswith("down_proj"):
            assert layer.scale.shape == (64, 256 // 16), name
    steps = counted_decode_steps(monkeypatch)
    prompt = torch.tensor([[1, 5, 9]])
    tokens = model.generate(prompt, max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True)
    assert len(steps) == 3
    with torch.inference_mode():  # the same products one layer at a time (the kernel's matvec for a row each)
        logits = model(tokens.sequences[:, :-1]).logits[:, 2:]
    torch.testing.assert_close(torch.stack(tokens.scores, 1), logits, atol=1e-4, rtol=1e-4)
    # A file of one width is quantized as asked: Q8_0 matrices to int4.
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q8_0.gguf", quantization="int4")
    assert {layer.weight.dtype for name, layer in model.named_modules()
            if isinstance(layer, Linear) and name != "lm_head"} == {torch.uint8}


def test_int8_keeps_the_smollm2_q8_0_embedding_exactly_in_its_head(smollm2_gguf):
    # The shipped file's one Q8_0 tensor, the token embedding, is also the tied head's weight.
    from openformers.weights import GGUFFile

    weight = GGUFFile(smollm2_gguf).tensor("token_embd.weight")[:4096]
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight.data = weight
    assert torch.equal(int8(linear).dequantized(torch.float32), weight)


def test_quantize_replaces_every_linear_layer():
    model = quantize(tiny_model(), "int8")
    assert not any(type(module) is nn.Linear for module in model.modules())
    assert model.lm_head.weight.dtype == torch.int8 and not list(model.lm_head.parameters())


def test_unknown_quantization_is_refused(smollm2_gguf):
    with pytest.raises(ValueError, match="quantization='int2'.*'int8', 'int4'"):
        AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, quantization="int2")


@pytest.mark.parametrize("quantization", ["int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_plain_quantized_path(quantization, dtype, monkeypatch):
    model = accelerated(quantize(tiny_model(), quantization).to(dtype))
    tokens = torch.randint(0, 96, (24,), generator=torch.Generator().manual_seed(3)).tolist()
    steps = counted_decode_steps(monkeypatch)
    fast = step_logits(model, tokens, True, monkeypatch).float()
    assert len(steps) == len(tokens) - 3
    plain_path_rounds_inputs(monkeypatch)
    plain = step_logits(model, tokens, False, monkeypatch).float()
    tolerance = 1e-4 if dtype == torch.float32 else 0.1  # bfloat16's plain path rounds every activation
    torch.testing.assert_close(fast, plain, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("pack", [int8, int4])
def test_few_rows_take_the_kernel_with_the_plain_results(pack, monkeypatch):
    torch.manual_seed(0)
    layer = pack(nn.Linear(64, 200, bias=True)).eval()  # four blocks of rows for three threads
    x = torch.randn(65, 64)
    assert kernels.build()  # loads the kernels, before the switch is pinned below
    monkeypatch.setattr(linear_module, "BFLOAT16_PROMPT_PRODUCTS", False)  # the plain path: float32 products
    integer_prompts = linear_module._compiled_prompt_products()  # 65 rows: rounded in the kernel's prompt product
    results, calls = {}, counted_matvecs(monkeypatch)
    threads = torch.get_num_threads()
    for use_kernels in (True, False):
        monkeypatch.setattr(library, "loaded", lambda: use_kernels)
        try:
            torch.set_num_threads(3)
            with torch.inference_mode():
                # 1 to 64 rows (a batch decoding a token each, a short prompt) go to the kernel's matvec, which
                # rounds its input to int8 steps (the plain path is given it rounded); 65 to its prompt product,
                # which rounds it too, where the build has its vector loops, else they widen the weights either
                # way, as do 9 in training (what a reentrant checkpoint's recomputation multiplies).
                inputs = [x[:1], x[:3], x[:9], x[:64], x[:65], x[:6].view(2, 3, 64)]
                if not use_kernels:
                    inputs = [rows if len(rows) == 65 and not integer_prompts else rounded(rows) for rows in inputs]
                results[use_kernels] = [layer(rows) for rows in inputs]
                layer.train()
                results[use_kernels].append(layer(x[:9]))
                layer.eval()
        finally:
            torch.set_num_threads(threads)
    assert calls == [1, 3, 9, 64, 6]
    torch.testing.assert_close(results[True][-1], nn.functional.linear(x[:9], layer.float_weight(torch.float32),
                                                                       layer.bias), atol=1e-5, rtol=1e-5)
    for fast, plain in zip(results[True], results[False]):
        assert fast.shape == plain.shape
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pack", [int8, int4])
def test_the_kernel_unpacks_weights_as_the_plain_path(pack):
    torch.manual_seed(0)
    layer = pack(nn.Linear(96, 40))
    assert kernels.build()
    torch.testing.assert_close(layer.float_weight(torch.float32), layer.dequantized(torch.float32))
    # bfloat16 straight from the kernel: each weight computed in float32 and rounded once
    assert torch.equal(layer.float_weight(torch.bfloat16), layer.float_weight(torch.float32).to(torch.bfloat16))
    assert torch.equal(layer.dequantized(torch.bfloat16), layer.dequantized(torch.float32).to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pack", [int8, int4])
def test_layers_sharing_the_reused_unpacked_matrix_keep_exact_results_and_gradients(pack, dtype, monkeypatch):
    """Two layers of one shape unpack into the same reused matrix in turn (forward, forward, backward,
    backward): each result and input gradient is still exactly F.linear's with that layer's own weights."""
    assert kernels.build()
    monkeypatch.setattr(linear_module, "BFLOAT16_PROMPT_PRODUCTS", False)  # float32 prompts multiply in float32
    torch.manual_seed(0)
    first, second = pack(nn.Linear(96, 40)), pack(nn.Linear(96, 40))
    x = torch.randn(2, 40, 96).to(dtype)  # more rows than the kernel takes
    inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outputs = [first(inputs[0]), second(inputs[1])]  # the second unpacks over the first's matrix
    seeds = [torch.randn(2, 40, 40).to(dtype) for _ in outputs]
    for output, seed in zip(reversed(outputs), reversed(seeds)):
        output.backward(seed)
    for layer, given, output, seed in zip((first, second), inputs, outputs, seeds):
        expected_input = x.clone().requires_grad_()
        weight, bias = layer.float_weight(dtype), layer.bias.to(dtype)
        expected = nn.functional.linear(expected_input, weight) + bias  # the bias added after, as the layer does
        expected.backward(seed)
        assert output.dtype == dtype and torch.equal(output, expected)
        assert torch.equal(given.grad, expected_input.grad)
        with torch.no_grad():  # a prompt's product, without gradients, unpacks into the same matrix
            assert torch.equal(layer(x), nn.functional.linear(x, weight, bias))


def test_prompt_products_in_bfloat16_are_chosen_by_the_cpus_bfloat16_dot_products():
    flags = Path("/proc/cpuinfo")
    if not flags.exists() or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the CPU's flags are read from /proc/cpuinfo on x86-64 Linux")
    has_them = any(flag in flags.read_text().split() for flag in ("avx512_bf16", "amx_bf16"))
    assert linear_module.BFLOAT16_PROMPT_PRODUCTS == has_them


@pytest.mark.parametrize("pack", [int8, int4])
def test_float32_prompt_products_multiply_in_bfloat16_and_training_in_float32(pack, monkeypatch):
    """Where the CPU has bfloat16 dot products (forced on here, so that every CPU checks the route) and the
    integer prompt products are off (a build without their vector loops), a float32 input of more rows than the
    kernel takes multiplies in bfloat16 in inference, within bfloat16's rounding of the float32 product; fewer
    rows, bfloat16 inputs and a training layer's products keep their own."""
    assert kernels.build()
    monkeypatch.setattr(linear_module, "INTEGER_PROMPT_PRODUCTS", False)
    torch.manual_seed(0)
    layer = pack(nn.Linear(96, 40))
    x = torch.randn(3, 24, 96)  # 72 rows, more than the kernel takes
    weight, bias = layer.float_weight(torch.float32), layer.bias
    results, few_rows = {}, {}
    for bfloat16_products in (False, True):
        monkeypatch.setattr(linear_module, "BFLOAT16_PROMPT_PRODUCTS", bfloat16_products)
        layer.eval()
        with torch.inference_mode():
            results[bfloat16_products] = layer(x)
            few_rows[bfloat16_products] = layer(x[:1, :8])  # the kernel's, either way
            in_bfloat16 = nn.functional.linear(x.bfloat16(), weight.bfloat16(), bias.bfloat16())
            assert torch.equal(layer(x.bfloat16()), in_bfloat16)  # a bfloat16 model's products, as before
        layer.train()
        with torch.no_grad():  # a reentrant checkpoint's forward: training, no gradients, float32 still
            assert torch.equal(layer(x), nn.functional.linear(x, weight, bias))
        given = x.clone().requires_grad_()
        output = layer(given)
        output.backward(torch.ones_like(output))
        assert torch.equal(output, nn.functional.linear(x, weight) + bias)
        assert torch.equal(given.grad, torch.ones_like(output) @ weight)
        # gradients on, an input without them (a QLoRA base layer's first): float32 still
        assert torch.equal(layer(x), nn.functional.linear(x, weight, bias))
    assert torch.equal(few_rows[False], few_rows[True])
    plain, fast = results[False], results[True]
    assert torch.equal(plain, nn.functional.linear(x, weight, bias))
    assert fast.dtype == torch.float32
    assert torch.equal(fast, nn.functional.linear(x.bfloat16(), weight.bfloat16()).float() + bias)
    assert (fast - plain).norm() / plain.norm() < 1e-2  # measured 2.8e-3 on SmolLM2's layers


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_quantized_batch_generation_matches_the_plain_path(quantization, monkeypatch):
    model = accelerated(quantize(tiny_model(), quantization))
    prompts = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (prompts != 0).long()
    outputs = []
    for use_kernels in (True, False):
        monkeypatch.setattr(library, "loaded", lambda: use_kernels)
        outputs.append(model.generate(prompts, attention_mask=mask, max_new_tokens=12, do_sample=False).tolist())
    assert outputs[0] == outputs[1]


def test_a_quantized_model_of_a_refused_family_still_takes_the_kernel_for_few_rows(monkeypatch):
    from openformers.configs import DeepseekV3Config
    from openformers.models.deepseek_v3 import DeepseekV3ForCausalLM

    torch.manual_seed(0)
    config = DeepseekV3Config.from_dict(dict(
        vocab_size=96, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
        topk_group=1, q_lora_rank=32, kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        first_k_dense_replace=1))
    model = quantize(DeepseekV3ForCausalLM.from_config(config), "int8").eval()
    # no decoding step for DeepSeek-V3's latent attention, but the library is built for its layers
    assert not kernels.accelerate(model)
    calls = counted_matvecs(monkeypatch)
    with torch.inference_mode():
        fast = model(torch.tensor([[5]])).logits
        monkeypatch.setattr(library, "loaded", lambda: False)
        plain_path_rounds_inputs(monkeypatch)
        plain = model(torch.tensor([[5]])).logits
    assert calls
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_smollm2_int8_greedy_agrees_with_float32(smollm2_gguf):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    load = dict(gguf_file=smollm2_gguf.name)
    full = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, **load)
    int8 = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, quantization="int8", **load)
    input_ids = tokenizer.encode("The capital of France is", return_tensors="pt")
    expected = full.generate(input_ids, max_new_tokens=16)[0].tolist()
    assert int8.generate(input_ids, max_new_tokens=16)[0].tolist()[: input_ids.shape[1] + 8] == expected[: input_ids.shape[1] + 8]


def test_int4_linear_round_trips_its_groups():
    torch.manual_seed(0)
    linear = nn.Linear(64, 8, bias=True)
    quantized = int4(linear)
    assert quantized.weight.dtype == torch.uint8 and quantized.weight.shape == (8, 32)
    assert quantized.scale.shape == (8, 2, 2) and quantized.scale.dtype == torch.float16  # 20 bytes a group, as Q4_1
    # Each weight lies within half a step of its group's grid.
    step = quantized.scale[..., 0].repeat_interleave(32, dim=1)
    assert ((quantized.dequantized(torch.float32) - linear.weight).abs() <= step / 2 + 1e-6).all()
    x = torch.randn(3, 64)
    torch.testing.assert_close(quantized(x), x @ quantized.dequantized(torch.float32).T + linear.bias)


def test_int4_keeps_the_head_at_int8():
    model = quantize(tiny_model(), "int4")
    assert model.lm_head.weight.dtype == torch.int8
    assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.uint8


def test_int4_refuses_inputs_that_do_not_fill_groups():
    with pytest.raises(ValueError, match="groups each row's weights by 32.*quantization='int8'"):
        quantize(nn.Sequential(nn.Linear(48, 8)), "int4")


def test_int4_keeps_q4_1_gguf_weights_exactly(smollm2_gguf, quantizing_path):
    # The default model ships as Q4_1: quantization="int4" finds the same grid again, so nothing is lost.
    from openformers.weights import GGUFFile

    gguf = GGUFFile(smollm2_gguf)
    for name in ("blk.0.ffn_up.weight", "blk.7.attn_k.weight", "blk.29.ffn_down.weight"):
        weight = gguf.tensor(name)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        linear.weight.data = weight
        assert torch.equal(int4(linear).dequantized(torch.float32), weight), name


def test_int4_keeps_the_q4_1_gguf_blocks_bit_for_bit(smollm2_gguf, quantizing_path):
    # Not only the same float weights: the same steps and the same float16 (d, m) as the file's blocks.
    import gguf

    from openformers.weights import GGUFFile

    tensors = {t.name: t for t in gguf.GGUFReader(smollm2_gguf).tensors}
    for name in ("blk.3.attn_q.weight", "blk.12.ffn_gate.weight"):
        blocks = torch.from_numpy(tensors[name].data.copy()).reshape(-1, 20)  # Q4_1: d, m (float16), 16 bytes
        weight = GGUFFile(smollm2_gguf).tensor(name)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        linear.weight.data = weight
        quantized = int4(linear)
        assert torch.equal(quantized.scale.reshape(-1, 2), blocks[:, :4].contiguous().view(torch.float16)), name
        assert torch.equal(quantized.weight.reshape(-1, 16), blocks[:, 4:]), name


def test_int4_is_no_further_from_float_weights_than_llama_cpp_q4_1():
    # The float16 pairs are rounded before the steps are chosen (llama.cpp's quantize_row_q4_1 chooses them with
    # the float32 pair and stores it rounded): per weight matrix, the squared error is at most Q4_1's.
    import gguf

    torch.manual_seed(0)
    for weight in (torch.randn(64, 256) * 0.02, torch.randn(64, 256) * torch.linspace(1e-3, 4, 256),
                   torch.randn(64, 256) + 30):  # a large mean: the minimum's float16 rounding matters most
        linear = nn.Linear(256, 64, bias=False)
        linear.weight.data = weight
        ours = int4(linear).dequantized(torch.float32)
        blocks = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType.Q4_1)
        q4_1 = torch.from_numpy(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_1).copy())
        assert (ours - weight).square().sum() <= (q4_1 - weight).square().sum()


def test_int4_keeps_groups_of_equal_weights_and_refuses_what_float16_cannot_hold(quantizing_path):
    linear = nn.Linear(64, 2, bias=False)
    linear.weight.data = torch.cat([torch.full((2, 32), 0.375), torch.full((2, 32), -2.0)], dim=1)
    assert torch.equal(int4(linear).dequantized(torch.float32), linear.weight.data)
    linear.weight.data[1, 5] = 1e6  # a scale of 1e6 / 15, beyond float16's 65504
    with pytest.raises(ValueError, match="float16.*1e\\+06.*quantization='int8'"):
        int4(linear)


def test_int4_keeps_q4_0_weights_exactly(quantizing_path):
    # Q4_0: d * (q - 8), the largest magnitude at 8 |d|. Groups that leave steps at one end unused span fewer
    # than 15 steps, where a (max - min) / 15 grid would move every weight: int4 takes the group's own step.
    import gguf

    torch.manual_seed(0)
    weight = torch.randn(40, 256) * torch.linspace(0.01, 5, 256)
    blocks = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType.Q4_0)
    floats = torch.from_numpy(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_0).copy())
    groups = floats.unflatten(-1, (-1, 32))
    span_in_steps = (groups.amax(-1) - groups.amin(-1)) / (groups.abs().amax(-1) / 8)
    assert (span_in_steps < 14.5).float().mean() > 0.3
    linear = nn.Linear(256, 40, bias=False)
    linear.weight.data = floats
    quantized = int4(linear)
    assert torch.equal(quantized.dequantized(torch.float32), floats)


def q4_k_groups(count: int, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    """`count` groups of 32 as llama.cpp's Q4_K dequantizes them (weights.py's `_q4_k`): d * scale * q - dmin * min
    in float32, d and dmin float16, scale and min six-bit, each group's q in a random part of 0..15."""
    def integers(low, high, shape=(count, 1)):
        return torch.randint(low, high, shape, generator=generator)

    d, dmin = (torch.rand(2, count, 1, generator=generator) * magnitude).half().float()
    low = integers(0, 15)
    high = torch.minimum(low + integers(1, 16), torch.tensor(15))
    q = (low + (torch.rand(count, 32, generator=generator) * (high - low + 1)).floor()).clamp(max=high)
    return q * (d * integers(1, 64)) - dmin * integers(0, 64)


@pytest.mark.parametrize("file_type", ["Q5_0", "Q4_0"])
def test_int8_keeps_q5_0_and_q4_0_weights_exactly(quantizing_path, file_type):
    # d * (q - 16) and d * (q - 8): a block's largest magnitude is at most 16 or 8 of its steps from zero, so its
    # largest / 127 is not the block's grid, where each weight would move by up to half an int8 step.
    import gguf

    torch.manual_seed(0)
    weight = torch.randn(40, 256) * torch.linspace(0.01, 5, 256)
    kind = getattr(gguf.GGMLQuantizationType, file_type)
    floats = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(weight.numpy(), kind), kind).copy())
    linear = nn.Linear(256, 40, bias=False)
    linear.weight.data = floats
    assert torch.equal(int8(linear).dequantized(torch.float32), floats)


def test_int4_keeps_the_steps_of_q4_k_groups(quantizing_path):
    # Q4_K: d * scale * q - dmin * min, a float16 d times a six-bit scale, which float16 cannot hold; a group often
    # spans fewer than 15 of its steps. int4 finds that grid and keeps every weight's step, its error then only
    # the float16 roundings of the step and the minimum, where the span / 15 grid moved weights by up to half a step.
    floats = q4_k_groups(40 * 8, 1e-2, torch.Generator().manual_seed(0))
    step = (floats.amax(-1) - floats.amin(-1)) / 15
    linear = nn.Linear(256, 40, bias=False)
    linear.weight.data = floats.reshape(40, 256)
    error = int4(linear).dequantized(torch.float32).reshape(-1, 32) - floats
    float16_roundings = (15 * step + floats.abs().amax(-1)) * 2.0**-11
    assert (error.abs().amax(-1) <= float16_roundings).all()
    assert error.square().mean().sqrt() < 1e-3 * floats.square().mean().sqrt()  # the span / 15 grid: 2.2e-2


def group_values(kind: str, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    """32 weights of one kind of group: llama.cpp's Q4_1, Q4_0 or Q4_K grids (float16 d, and m), ties of the
    roundings, random, constant, or zeros of both signs with at most one other weight."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    steps = torch.randint(0, 16, (32,), generator=generator).float()
    d = (randn(()) * magnitude).half().float()
    if kind == "q4_1":
        return steps * d.abs() + (randn(()) * magnitude).half().float()
    if kind == "q4_k":
        return q4_k_groups(1, magnitude, generator)[0]
    if kind == "q5_0":  # d * (q - 16), q in 0..31, the largest magnitude often fewer than 16 steps from zero
        return d * (torch.randint(0, 32, (32,), generator=generator) - 16).clamp(
            min=-int(torch.randint(1, 17, (), generator=generator)))
    if kind == "q4_0":  # steps at one end often unused: the span is fewer than 15 steps
        steps[int(torch.randint(0, 32, (), generator=generator))] = 0
        return d * (steps.clamp(max=int(torch.randint(8, 16, (), generator=generator))) - 8)
    if kind == "ties":  # halfway cases of each rounding: the pair's float16s and the steps (int4 and int8)
        def halfway_above(x):  # the float32 halfway between the float16 x (not negative) and the next one
            x = x.abs().half()
            return (x.float() + (x.view(torch.int16) + 1).view(torch.float16).float()) / 2
        if torch.rand((), generator=generator) < 0.5:
            int8_step = 2.0 ** float(torch.randint(-20, 10, (), generator=generator))
            values = (torch.randint(-127, 127, (32,), generator=generator) + 0.5) * int8_step
            values[0] = 127 * int8_step
            return values
        lowest = halfway_above(randn(()) * magnitude) * torch.sign(randn(()))
        scale = halfway_above(randn(()) * magnitude / 15)
        values = lowest.half().float() + (torch.randint(0, 15, (32,), generator=generator) + 0.5) * scale.half().float()
        values[0], values[1] = lowest, lowest.half().float() + 15 * scale
        return values
    if kind == "constant":
        return torch.full((32,), float(randn(()) * magnitude))
    if kind == "zeros":
        zeros = torch.where(torch.rand(32, generator=generator) < 0.5, -0.0, 0.0)
        if torch.rand((), generator=generator) < 0.5:
            zeros[int(torch.randint(0, 32, (), generator=generator))] = float(randn(()) * magnitude)
        return zeros
    return randn(32) * magnitude


def quantized_both_ways(weight: torch.Tensor, quantization: str):
    """(packed, scale) or the ValueError raised, by the kernel and by the plain path."""
    results = []
    for kernel in (True, False):
        with mock.patch.object(library, "loaded", lambda: kernel):
            try:
                results.append(linear_module._quantized(weight, quantization))
            except ValueError as error:
                results.append(error)
    return results


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as integers: equal floats compare equal bit for bit, -0.0 apart from 0.0."""
    return tensor.view({torch.float16: torch.int16, torch.float32: torch.int32}.get(tensor.dtype, tensor.dtype))


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 4), groups=st.integers(1, 6), extra=st.integers(0, 31),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       quantization=st.sampled_from(["int8", "int4"]), not_finite=st.sampled_from([None] * 6 + ["nan", "inf", "-inf"]))
def test_the_kernel_quantizes_as_the_plain_path_bit_for_bit(seed, rows, groups, extra, dtype, quantization,
                                                             not_finite):
    assert kernels.build()
    generator = torch.Generator().manual_seed(seed)
    kinds = ["q4_1", "q4_0", "q4_k", "q5_0", "ties", "random", "constant", "zeros"]
    weight = torch.stack([
        torch.cat([group_values(kinds[int(torch.randint(0, len(kinds), (), generator=generator))],
                                10.0 ** float(torch.randint(-9, 5, (), generator=generator)), generator)
                   for _ in range(groups)])
        for _ in range(rows)])
    if quantization == "int8":
        weight = weight[:, : max(1, groups * 32 - extra)].contiguous()  # a short last block
    if not_finite is not None:
        weight.view(-1)[int(torch.randint(0, weight.numel(), (), generator=generator))] = float(not_finite)
    weight = weight.to(dtype)
    kernel, plain = quantized_both_ways(weight, quantization)
    if isinstance(plain, ValueError):  # weights that are not finite, or int4's pairs beyond float16
        assert isinstance(kernel, ValueError) and str(kernel) == str(plain)
        return
    assert not_finite is None and not isinstance(kernel, ValueError), kernel
    for ours, theirs in zip(kernel, plain):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and ours.is_contiguous()
        assert torch.equal(bits(ours), bits(theirs))


def saved_classifier(folder, layers=3):
    """A tiny Llama classifier saved as bf16 safetensors in several shards."""
    from openformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=2)
    LlamaForSequenceClassification(config).to(torch.bfloat16).save_pretrained(folder, max_shard_size=40_000)
    return folder


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantized_loading_reads_and_quantizes_one_layer_at_a_time(tmp_path, monkeypatch, dtype):
    # Loading a quantized model never holds the float model: each layer's weights are read from the file (not
    # through its mapping, whose pages would stay resident), cast and quantized before the next layer is read.
    from openformers import AutoModelForSequenceClassification
    from openformers.models import base
    from openformers.weights import TensorReader

    folder = saved_classifier(tmp_path / "model")
    assert len(list(folder.glob("*.safetensors"))) > 1
    events, mapped, float_weights_held, memory_used = [], set(), [], set()
    load_weights, read, quantize_unit = base.load_weights, TensorReader.read, kernels.quantize

    def mapped_weights(path):
        state_dict = load_weights(path)
        mapped.update(t.data_ptr() for t in state_dict.values())
        return state_dict

    def float_weights():
        # Plain tensors and parameters only: fake tensors other tests' compilations left have no data pointer.
        return {o.data_ptr() for o in gc.get_objects()
                if type(o) in (torch.Tensor, nn.Parameter) and o.is_floating_point() and o.shape in linear_shapes}

    def quantize_and_count(unit, quantization, *keep_and_prefix):
        # The layers' float weights in memory of their own (not the file's mapped, unread tensors, nor what earlier
        # tests in this process still hold) at this point.
        float_weights_held.append(len(float_weights() - mapped - held_before))
        memory_used.update(float_weights() - mapped - held_before)
        events.append(unit)
        return quantize_unit(unit, quantization, *keep_and_prefix)

    linear_shapes = {(64, 64), (32, 64), (96, 64), (64, 96)}
    monkeypatch.setattr(base, "load_weights", mapped_weights)
    monkeypatch.setattr(TensorReader, "read", lambda self, name, **out: events.append(name) or read(self, name, **out))
    monkeypatch.setattr(kernels, "quantize", quantize_and_count)
    free_unpacked_matrices()  # earlier tests' products leave reused matrices of these shapes
    gc.collect()
    held_before = float_weights()
    model = AutoModelForSequenceClassification.from_pretrained(folder, quantization="int4", dtype=dtype)
    assert float_weights_held == [7, 7, 7, 0]  # q, k, v, o, gate, up, down of the layer being quantized
    assert len(memory_used) == 7  # each layer's read into the memory of the one before

    units = [*model.model.layers, model]
    assert [e for e in events if not isinstance(e, str)] == units
    reads, names = [], []
    for event in events:
        if isinstance(event, str):
            names.append(event)
        else:
            reads.append(set(names))
            names = []
    checkpoint = set(model.state_dict()) - {k for k in model.state_dict() if "scale" in k}
    layers = [{n for n in checkpoint if n.startswith(f"model.layers.{i}.")} for i in range(3)]
    assert reads == [*layers, checkpoint - set().union(*layers)]

    # The same weights as quantizing the float model after loading it whole.
    float_model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype)
    expected = quantize(float_model, "int4").state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].dtype == expected[name].dtype and torch.equal(got[name], expected[name]), name
    assert model.model.embed_tokens.weight.dtype == dtype


def test_a_tensor_read_into_memory_of_another_shape_is_refused(tmp_path):
    from openformers.weights import TensorReader

    folder = saved_classifier(tmp_path / "model", layers=1)
    reader = TensorReader(folder / "model.safetensors.index.json")
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(reader.read(name, out=torch.empty(96, 64, dtype=torch.bfloat16)), reader.read(name))
    with pytest.raises(ValueError, match="out must be a contiguous torch.bfloat16 tensor of shape \\(96, 64\\)"):
        reader.read(name, out=torch.empty(64, 96, dtype=torch.bfloat16))


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_cast_of_a_quantized_layer_keeps_its_scales_exact(quantization):
    torch.manual_seed(0)
    layer = kernels.Linear.from_linear(torch.nn.Linear(64, 96, bias=True), quantization)
    scale, weight = layer.scale.clone(), layer.weight.clone()
    layer.to(torch.bfloat16)
    assert torch.equal(layer.scale, scale) and layer.scale.dtype == scale.dtype
    assert torch.equal(layer.weight, weight) and layer.bias.dtype == torch.bfloat16
    x = torch.randn(3, 64)
    with torch.no_grad():
        expected = x @ layer.dequantized(torch.float32).T + layer.bias.float()
        assert torch.allclose(layer(x.bfloat16()).float(), expected, rtol=2e-2, atol=2e-2)
    layer.half().float()
    assert torch.equal(layer.scale, scale)
