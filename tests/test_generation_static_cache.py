"""The static cache and its compiled decoding step: the same greedy tokens as the dynamic cache, compiled and not."""

import pytest
import torch

from openformers import GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, RobertaForCausalLM
from openformers.configs import GPT2Config, LlamaConfig, MistralConfig, RobertaConfig
from openformers.generation.config import CompileConfig, GenerationConfig
from openformers.generation.static_cache import StaticCache

LLAMA = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, rope_theta=5000.0, rms_norm_eps=1e-5)
GPT2 = dict(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4)
ROBERTA = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               max_position_embeddings=64, is_decoder=True)


def _model(model_class, config_class, **options):
    torch.manual_seed(0)
    return model_class(config_class(**options)).eval()


@pytest.fixture(scope="module")
def llama():
    return _model(LlamaForCausalLM, LlamaConfig, **LLAMA)


def _ids(rows, length, vocab=LLAMA["vocab_size"], seed=1):
    return torch.randint(3, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


def _kv(T, value=1.0):
    return torch.full((2, 2, T, 4), value), torch.full((2, 2, T, 4), -value)


def test_update_writes_in_place_after_the_written_positions():
    cache = StaticCache(max_cache_len=6)
    keys, values = cache.update(0, *_kv(2, 1.0))
    assert keys.shape == (2, 2, 6, 4) and cache.get_seq_length() == 2 and cache.get_max_length() == 6
    address = keys.data_ptr()
    keys, values = cache.update(0, *_kv(1, 2.0))
    assert keys.data_ptr() == address
    assert keys[0, 0, :, 0].tolist() == [1.0, 1.0, 2.0, 0.0, 0.0, 0.0]
    assert values[0, 0, :, 0].tolist() == [-1.0, -1.0, -2.0, 0.0, 0.0, 0.0]
    assert cache.next_positions(2, torch.device("cpu")).tolist() == [3, 4]
    assert cache.is_compileable and cache.seq_len == 3


def test_reorder_crop_and_reset_keep_the_buffers():
    cache = StaticCache(max_cache_len=4)
    keys, _ = cache.update(0, torch.arange(2.0)[:, None, None, None].expand(2, 1, 3, 1).contiguous(),
                           torch.zeros(2, 1, 3, 1))
    address = keys.data_ptr()
    cache.reorder(torch.tensor([1, 1]))
    assert cache.keys[0].data_ptr() == address and cache.keys[0][:, 0, 0, 0].tolist() == [1.0, 1.0]
    cache.reorder(torch.tensor([0, 0, 1, 1]))  # more rows: new buffers (a beam search's expansion)
    assert cache.batch_size == 4
    cache.crop(-1)
    assert cache.get_seq_length() == 2
    cache.crop(1)
    assert cache.get_seq_length() == 1
    cache.reset()
    assert cache.get_seq_length() == 0 and not cache.keys[0].any()


def test_a_full_cache_and_a_missing_size_are_refused():
    cache = StaticCache(max_cache_len=2)
    cache.update(0, *_kv(2))
    with pytest.raises(ValueError, match="max_cache_len=2"):
        cache.update(0, *_kv(1))
    with pytest.raises(ValueError, match="max_cache_len"):
        StaticCache(config=None)


def test_generate_with_cache_implementation_static_gives_the_dynamic_cache_tokens(llama):
    ids = _ids(1, 7)
    dynamic = llama.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(llama.generate(ids, max_new_tokens=12, do_sample=False, cache_implementation="static"),
                       dynamic)
    config = GenerationConfig(cache_implementation="static", max_new_tokens=12, do_sample=False)
    assert torch.equal(llama.generate(ids, generation_config=config), dynamic)
    cache = StaticCache(config=llama.config, max_cache_len=32)
    assert torch.equal(llama.generate(ids, max_new_tokens=12, do_sample=False, past_key_values=cache), dynamic)
    assert cache.get_seq_length() == 7 + 11  # the last token is returned, never fed


def test_padded_batches_beams_and_assisted_decoding_with_a_static_cache(llama):
    ids, mask = _ids(2, 7), torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0
    for options in (dict(attention_mask=mask), dict(num_beams=3), dict(prompt_lookup_num_tokens=2)):
        rows = ids[:1] if "prompt_lookup_num_tokens" in options else ids
        dynamic = llama.generate(rows, max_new_tokens=8, do_sample=False, **options)
        static = llama.generate(rows, max_new_tokens=8, do_sample=False, cache_implementation="static", **options)
        assert torch.equal(static, dynamic), options


@pytest.mark.parametrize("family", ["mistral", "gpt2", "roberta"])
def test_other_families_give_the_same_logits_with_a_static_cache(family):
    if family == "mistral":  # a sliding window shorter than the sequence
        model = _model(MistralForCausalLM, MistralConfig, **LLAMA, sliding_window=4)
    elif family == "gpt2":
        model = _model(GPT2LMHeadModel, GPT2Config, **GPT2)
    else:
        model = _model(RobertaForCausalLM, RobertaConfig, **ROBERTA)
    ids = _ids(2, 6, vocab=model.config.vocab_size)
    options = dict(max_new_tokens=10, do_sample=False, return_dict_in_generate=True, output_logits=True)
    dynamic = model.generate(ids, **options)
    static = model.generate(ids, cache_implementation="static", **options)
    assert torch.equal(static.sequences, dynamic.sequences)
    torch.testing.assert_close(torch.stack(static.logits), torch.stack(dynamic.logits))


def test_a_cache_object_and_cache_implementation_together_are_refused(llama):
    with pytest.raises(ValueError, match="cache_implementation"):
        llama.generate(_ids(1, 4), max_new_tokens=2, cache_implementation="static",
                       past_key_values=StaticCache(max_cache_len=8))


def test_the_compiled_step_gives_the_same_tokens_in_one_graph(llama):
    """The reference's way of asking: a static cache and compile_config (on the CPU, _compile_all_devices).
    fullgraph=True fails on any graph break; one graph for every step and for a second call means no recompiles.
    A left-padded batch: its mask is widened to the cache's length for the compiled step."""
    from torch._dynamo.utils import counters

    ids, mask = _ids(2, 5), torch.ones(2, 5, dtype=torch.long)
    mask[0, :2] = 0
    dynamic = llama.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    compile_config = CompileConfig(fullgraph=True, mode="default")
    compile_config._compile_all_devices = True
    torch._dynamo.reset()
    counters.clear()
    for _ in range(2):
        compiled = llama.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                  cache_implementation="static", compile_config=compile_config)
        assert torch.equal(compiled, dynamic)
    assert counters["stats"]["unique_graphs"] == 1


def test_compile_config_without_a_static_cache_warns_that_nothing_is_compiled(llama):
    ids = _ids(1, 4)
    with pytest.warns(UserWarning, match="compile_config is set"):
        tokens = llama.generate(ids, max_new_tokens=3, do_sample=False, compile_config=CompileConfig())
    assert torch.equal(tokens, llama.generate(ids, max_new_tokens=3, do_sample=False))


def test_a_manual_decoding_loop_with_cache_position(llama):
    """The reference's guide: the prompt, then one token per call, cache_position counting the slots."""
    ids = _ids(1, 6)
    expected = llama.generate(ids, max_new_tokens=6, do_sample=False)[0, 6:].tolist()
    cache, cache_position, tokens = StaticCache(config=llama.config, max_cache_len=16), torch.arange(6), []
    with torch.no_grad():
        logits = llama(ids, cache_position=cache_position, past_key_values=cache, use_cache=True).logits
        for _ in range(6):
            tokens.append(int(logits[0, -1].argmax()))
            cache_position = cache_position[-1:] + 1
            logits = llama(torch.tensor([[tokens[-1]]]), cache_position=cache_position, past_key_values=cache).logits
    assert tokens == expected
