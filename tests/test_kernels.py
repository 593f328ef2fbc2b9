"""The compiled decoding kernel (kernels/decode.cpp) against the plain PyTorch path it replaces."""

import pytest
import torch

from openformers import AutoModelForCausalLM, AutoTokenizer, kernels
from openformers.configs import LlamaConfig, MistralConfig, Qwen2Config
from openformers.generation.cache import DynamicCache
from openformers.models.llama import LlamaForCausalLM

TINY = dict(
    vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512,
)


kernels_built = kernels.available  # the real switch, for tests that pin `kernels.available` to True or False


def test_kernels_build_here():
    # CI machines have a compiler and ninja: a failed build there must be red, not a silent fallback.
    assert kernels_built()


def tiny_model(config_class=LlamaConfig, dtype=torch.float32, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_config(config_class.from_dict({**TINY, **overrides}), dtype=dtype)
    if model.model.layers[0].self_attn.q_proj.bias is not None:  # from_config zeroes biases; make them count
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    return model.eval()


def step_logits(model, tokens: list[int], use_kernels: bool, monkeypatch) -> torch.Tensor:
    """Logits of every decoding step after a 3-token prefill, one token at a time through a DynamicCache."""
    assert not use_kernels or kernels_built()  # before the switch is pinned
    monkeypatch.setattr(kernels, "available", lambda: use_kernels)
    cache, logits = DynamicCache(), []
    with torch.inference_mode():
        model(torch.tensor([tokens[:3]]), past_key_values=cache)
        for token in tokens[3:]:
            logits.append(model(torch.tensor([[token]]), past_key_values=cache, logits_to_keep=1).logits[0, -1])
    return torch.stack(logits)


@pytest.mark.parametrize(
    "config_class, overrides",
    [(LlamaConfig, {}), (Qwen2Config, {}), (MistralConfig, {"sliding_window": 5}), (LlamaConfig, {"head_dim": 8})],
    ids=["llama", "qwen2-bias", "mistral-window", "head-dim"],
)
def test_decode_steps_match_plain_path(config_class, overrides, monkeypatch):
    model = tiny_model(config_class, **overrides)
    tokens = torch.randint(0, 96, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    fast = step_logits(model, tokens, True, monkeypatch)
    plain = step_logits(model, tokens, False, monkeypatch)
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("quantization", [None, "int8", "int4"])
def test_a_team_of_threads_gives_the_one_thread_results(quantization, monkeypatch):
    # The suite runs one thread per worker; three threads split every matrix and the heads unevenly
    # (four query heads, two key/value heads), so a missing barrier or a wrong share shows here.
    from openformers.quantization import quantize

    model = tiny_model(MistralConfig, sliding_window=6, intermediate_size=96)
    if quantization:
        model = quantize(model, quantization)
    tokens = torch.randint(0, 96, (30,), generator=torch.Generator().manual_seed(4)).tolist()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        team = step_logits(model, tokens, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    alone = step_logits(model, tokens, True, monkeypatch) if threads == 1 else None
    plain = step_logits(model, tokens, False, monkeypatch)
    torch.testing.assert_close(team, plain, atol=1e-4, rtol=1e-4)
    if alone is not None:
        torch.testing.assert_close(team, alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_few_rows_of_a_linear_layer_take_the_kernel_with_torch_results(dtype, monkeypatch):
    from openformers.models.layers import Linear

    torch.manual_seed(0)
    layer = Linear(72, 200, bias=True).to(dtype)  # 72 columns: a 16-wide tail; 200 rows: four blocks of rows
    x = torch.randn(2, 9, 72).to(dtype)
    assert kernels_built()
    calls, matvec = [], torch.ops.openformers.matvec
    monkeypatch.setattr(torch.ops.openformers, "matvec", lambda *args: calls.append(len(args[0])) or matvec(*args))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with torch.inference_mode():
            for rows in (1, 3, 4, 7, 8, 9):
                flat = x.reshape(-1, 72)[:rows]
                expected = torch.nn.functional.linear(flat, layer.weight, layer.bias)
                tolerance = 1e-5 if dtype == torch.float32 else 1e-2
                torch.testing.assert_close(layer(flat), expected, atol=tolerance, rtol=tolerance)
            assert layer(x[:, :4]).shape == (2, 4, 200)  # 8 rows in a batch of two
    finally:
        torch.set_num_threads(threads)
    assert calls == [1, 3, 4, 7, 8, 8]  # 9 rows take torch's matmul
    assert layer(x[0, :2].clone().requires_grad_(True)).requires_grad  # gradients: torch's path
    assert calls == [1, 3, 4, 7, 8, 8]


def test_bfloat16_weights_stay_close_to_float32(monkeypatch):
    model = tiny_model()
    tokens = torch.randint(0, 96, (20,), generator=torch.Generator().manual_seed(2)).tolist()
    reference = step_logits(model, tokens, False, monkeypatch)
    fast = step_logits(model.to(torch.bfloat16), tokens, True, monkeypatch)
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), reference, atol=0.1, rtol=0.05)


def test_cache_grows_past_its_first_block(monkeypatch):
    model = tiny_model()
    prompt = torch.tensor([[1, 2, 3]])
    assert kernels_built()
    monkeypatch.setattr(kernels, "available", lambda: True)
    fast = model.generate(prompt, max_new_tokens=300, min_new_tokens=300, do_sample=False)
    monkeypatch.setattr(kernels, "available", lambda: False)
    plain = model.generate(prompt, max_new_tokens=300, min_new_tokens=300, do_sample=False)
    assert fast.shape == (1, 303)
    assert fast.tolist() == plain.tolist()


def test_training_and_batches_take_the_plain_path(monkeypatch):
    model = tiny_model()
    calls = []
    original = model.model._decode_with_kernels
    monkeypatch.setattr(model.model, "_decode_with_kernels", lambda *args: calls.append(1) or original(*args))
    cache = DynamicCache()
    model(torch.tensor([[1, 2], [3, 4]]), past_key_values=cache)
    model(torch.tensor([[5], [6]]), past_key_values=cache)  # two rows
    cache = DynamicCache()
    model(torch.tensor([[1, 2]]), past_key_values=cache)
    model(torch.tensor([[5]]), past_key_values=cache)  # one row, but gradients are on
    with torch.inference_mode():
        cache = DynamicCache()
        model(torch.tensor([[1, 2]]), past_key_values=cache)
        model(torch.tensor([[5]]), past_key_values=cache)
    assert calls == [1]


def test_weights_replaced_or_cast_after_a_step_are_the_ones_used(monkeypatch):
    # The model keeps the tensors it hands the kernel between steps; every way of changing them must show.
    model = tiny_model()
    tokens = torch.randint(0, 96, (12,), generator=torch.Generator().manual_seed(3)).tolist()
    step_logits(model, tokens, True, monkeypatch)  # gathers and keeps the tensors
    changes = [
        lambda: setattr(model.model.layers[0].mlp, "down_proj", torch.nn.Linear(96, 64, bias=False)),
        lambda: setattr(model.model.layers[1].self_attn.q_proj, "weight", torch.nn.Parameter(torch.randn(64, 64))),
        lambda: model.model.layers[1].mlp.up_proj.weight.data.mul_(2),  # in place: the kept tensor itself
        lambda: model.to(torch.bfloat16),
    ]
    for change in changes:
        change()
        fast = step_logits(model, tokens, True, monkeypatch)
        plain = step_logits(model, tokens, False, monkeypatch)
        tolerance = 1e-4 if fast.dtype == torch.float32 else 0.1
        torch.testing.assert_close(fast, plain, atol=tolerance, rtol=tolerance)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("OPENFORMERS_KERNELS", "0")
    kernels.available.cache_clear()
    try:
        assert not kernels.available()
    finally:
        monkeypatch.delenv("OPENFORMERS_KERNELS")
        kernels.available.cache_clear()


def test_smollm2_greedy_tokens_match_plain_path(smollm2_gguf, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    input_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three rivers in Europe."}], add_generation_prompt=True, return_tensors="pt"
    )
    fast = model.generate(input_ids, max_new_tokens=48)
    monkeypatch.setattr(kernels, "available", lambda: False)
    assert fast.tolist() == model.generate(input_ids, max_new_tokens=48).tolist()


def test_sampling_beams_and_streaming_give_the_plain_path_results(monkeypatch):
    model = tiny_model()
    prompt = torch.tensor([[5, 6, 7]])
    runs = {
        "sampled": dict(do_sample=True, top_k=20, temperature=0.9, max_new_tokens=24),
        "beams": dict(num_beams=3, num_return_sequences=2, max_new_tokens=12),
        "penalized": dict(repetition_penalty=1.3, no_repeat_ngram_size=2, max_new_tokens=24),
    }
    assert kernels_built()
    results = {}
    for use_kernels in (True, False):
        monkeypatch.setattr(kernels, "available", lambda: use_kernels)
        for name, options in runs.items():
            torch.manual_seed(7)
            results[use_kernels, name] = model.generate(prompt, **options).tolist()
    for name in runs:
        assert results[True, name] == results[False, name], name


def test_streamed_text_matches_the_returned_tokens(smollm2_gguf):
    from openformers import TextIteratorStreamer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    input_ids = tokenizer.encode("Write a haiku about the sea.", return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    output = model.generate(input_ids, max_new_tokens=24, streamer=streamer)
    assert "".join(streamer) == tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True)
