"""The compiled causal attention of a prompt (decode.cpp's prompt_attention) against torch's SDPA, and a prompt's
logits through models/layers.py's `attention` with it and without."""

import pytest
import torch
import torch.nn.functional as F

from openformers import kernels
from openformers.kernels import library as kernel_library
from openformers.configs import LlamaConfig
from openformers.generation.cache import DynamicCache
from openformers.models import layers
from openformers.models.llama import LlamaForCausalLM


@pytest.fixture(scope="module", autouse=True)
def library():
    assert kernels.build()


def causal_reference(q, k, v, scale=None):
    """SDPA in float32, query t seeing keys up to S - T + t (is_causal's top-left diagonal is wrong for S > T)."""
    T, S = q.shape[2], k.shape[2]
    mask = torch.ones(T, S, dtype=torch.bool).tril(S - T)
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True, scale=scale)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("head_dim", [64, 128, 40])  # 40: the plain loops, not the AVX-512 ones
@pytest.mark.parametrize("group", [1, 3, 4])
@pytest.mark.parametrize("T, S", [(1, 1), (15, 15), (17, 17), (100, 100), (513, 513), (1, 33), (17, 40), (100, 130)])
def test_prompt_attention_matches_sdpa(dtype, tolerance, head_dim, group, T, S):
    generator = torch.Generator().manual_seed(T * 1000 + S)
    # q as the layers hand it over: the (B, T, nh, hs) projection seen as (B, nh, T, hs).
    q = torch.randn(2, T, 2 * group, head_dim, generator=generator).to(dtype).transpose(1, 2)
    k, v = (torch.randn(2, 2, S, head_dim, generator=generator).to(dtype) for _ in range(2))
    out = torch.ops.openformers.prompt_attention(q, k, v, head_dim**-0.5)
    assert out.shape == q.shape and out.dtype == dtype
    assert out.transpose(1, 2).is_contiguous()  # merging the heads is a view, as after SDPA
    torch.testing.assert_close(out.float(), causal_reference(q, k, v), atol=tolerance, rtol=tolerance)
    if dtype == torch.bfloat16 and T == S:  # as close to SDPA's own bfloat16 result as that is to float32
        sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=True).float()
        exact = causal_reference(q, k, v)
        assert (out.float() - exact).abs().max() <= 2 * (sdpa - exact).abs().max() + 1e-3


def test_prompt_attention_takes_a_given_scale_and_strided_keys():
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 30, 64, generator=generator)
    cache = torch.randn(1, 2, 64, 64, generator=generator)  # a cache's buffer, 30 of its 64 positions used
    k, v = cache[:, :, :30], cache.flip(1)[:, :, :30]
    out = torch.ops.openformers.prompt_attention(q, k, v, 0.3)
    torch.testing.assert_close(out, causal_reference(q, k, v, scale=0.3), atol=1e-5, rtol=1e-5)


def test_prompt_attention_names_the_bad_argument():
    q = torch.randn(1, 3, 4, 64)
    with pytest.raises(RuntimeError, match="multiple"):
        torch.ops.openformers.prompt_attention(q, torch.randn(1, 2, 4, 64), torch.randn(1, 2, 4, 64), 0.125)
    with pytest.raises(RuntimeError, match="fewer"):
        torch.ops.openformers.prompt_attention(q, torch.randn(1, 1, 3, 64), torch.randn(1, 1, 3, 64), 0.125)
    with pytest.raises(RuntimeError, match="float32 or all bfloat16"):
        torch.ops.openformers.prompt_attention(q, torch.randn(1, 1, 4, 64).double(), torch.randn(1, 1, 4, 64), 0.125)


def tiny_llama(dtype: torch.dtype) -> LlamaForCausalLM:
    """Two layers of 6 query heads on 2 key/value heads of 64, random weights (seed 0)."""
    torch.manual_seed(0)
    config = LlamaConfig.from_dict(dict(vocab_size=96, hidden_size=384, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512))
    return LlamaForCausalLM.from_config(config, dtype=dtype).eval()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_a_prompts_logits_match_sdpas(dtype, tolerance, monkeypatch):
    model = tiny_llama(dtype)
    ids = torch.randint(0, 96, (2, 77), generator=torch.Generator().manual_seed(1))
    calls, compiled = [], torch.ops.openformers.prompt_attention
    monkeypatch.setattr(torch.ops.openformers, "prompt_attention", lambda *args: calls.append(1) or compiled(*args))
    with torch.inference_mode():
        fast = model(ids).logits
        assert len(calls) == 2
        monkeypatch.setattr(layers, "_compiled_prompt_attention_applies", lambda *args: False)
        plain = model(ids).logits
    assert len(calls) == 2
    torch.testing.assert_close(fast.float(), plain.float(), atol=tolerance, rtol=tolerance)


def test_gradients_masks_dropout_and_other_head_sizes_take_sdpa(monkeypatch):
    calls, compiled = [], torch.ops.openformers.prompt_attention
    monkeypatch.setattr(torch.ops.openformers, "prompt_attention", lambda *args: calls.append(1) or compiled(*args))
    q, k, v = (torch.randn(1, 2, 8, 64, dtype=torch.bfloat16) for _ in range(3))
    mask = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
    layers.attention(q.requires_grad_(), k, v, None).sum().backward()
    layers.attention(q.detach(), k, v, mask)
    with torch.no_grad():
        layers.attention(q, k, v, None, dropout=0.1)
        layers.attention(q.double(), k.double(), v.double(), None)
        layers.attention(q[..., :32], k[..., :32], v[..., :32], None)
        assert not calls
        layers.attention(q, k, v, None)
        layers.attention(q.float(), k.float(), v.float(), None)
    assert calls == [1, 1]


def test_a_build_without_the_vector_loops_keeps_sdpa(monkeypatch):
    # Built for a CPU without AVX-512 (tests/test_kernels_portability.py runs this in such builds), prompt_attention's
    # plain loops run at half of SDPA's speed.
    vectorized = torch.backends.cpu.get_cpu_capability() == "AVX512" and kernel_library._target() == "native"
    assert torch.ops.openformers.prompt_attention_vectorized(64) is vectorized
    assert torch.ops.openformers.prompt_attention_vectorized(128) is vectorized
    assert not torch.ops.openformers.prompt_attention_vectorized(40)
    calls, compiled = [], torch.ops.openformers.prompt_attention
    monkeypatch.setattr(torch.ops.openformers, "prompt_attention", lambda *args: calls.append(1) or compiled(*args))
    monkeypatch.setattr(layers, "_prompt_attention_vectorized", lambda head_dim: False)
    q, k, v = (torch.randn(1, 2, 8, 64) for _ in range(3))
    with torch.no_grad():
        out = layers.attention(q, k, v, None)
    assert not calls
    torch.testing.assert_close(out, causal_reference(q, k, v))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_a_prompt_after_a_cached_prefix_takes_it_with_the_one_pass_logits(dtype, tolerance, monkeypatch):
    # A long prompt's second chunk, or a chat's next turn: 37 new positions over 77 cached ones (S > T), which
    # models/decoder.py hands `attention` without a mask.
    model = tiny_llama(dtype)
    ids = torch.randint(0, 96, (2, 114), generator=torch.Generator().manual_seed(1))
    shapes, compiled = [], torch.ops.openformers.prompt_attention
    monkeypatch.setattr(torch.ops.openformers, "prompt_attention",
                        lambda q, k, *args: shapes.append((q.shape[2], k.shape[2])) or compiled(q, k, *args))

    def chunked() -> torch.Tensor:
        cache = DynamicCache()
        with torch.inference_mode():
            first = model(ids[:, :77], past_key_values=cache).logits
            return torch.cat([first, model(ids[:, 77:], past_key_values=cache).logits], dim=1)

    fast = chunked()
    assert shapes == [(77, 77)] * 2 + [(37, 114)] * 2
    monkeypatch.setattr(layers, "_compiled_prompt_attention_applies", lambda *args: False)
    with torch.inference_mode():
        whole = model(ids).logits  # SDPA's is_causal over all 114 positions at once
    torch.testing.assert_close(fast.float(), whole.float(), atol=tolerance, rtol=tolerance)
    # SDPA after the cache (no kernel) sees the same keys: the mask `attention` spells out for S > T.
    torch.testing.assert_close(chunked().float(), whole.float(), atol=tolerance, rtol=tolerance)
