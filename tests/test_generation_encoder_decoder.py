"""The encoder-decoder side of generation: EncoderDecoderCache, the output classes, and generate on a seq2seq model.

Generation against the reference runs on a tiny random T5 (tests/test_models_t5.py builds the same models); the cache
is checked on small hand-made tensors.
"""

import pytest
import torch

import openformers
from openformers.generation import DynamicCache, EncoderDecoderCache
from openformers.generation.cache import Cache


def _kv(batch: int, length: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.arange(batch, dtype=torch.float)[:, None, None, None] + fill
    k = k.expand(batch, 2, length, 4).clone()
    return k, -k


def _filled(batch=3, layers=2, self_length=2, cross_length=5) -> EncoderDecoderCache:
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    for layer in range(layers):
        cache.update(layer, *_kv(batch, self_length, 0.0))
        cache.store_cross_attention(layer, *_kv(batch, cross_length, 100.0))
    return cache


def test_the_cache_counts_and_crops_the_decoder_positions_only():
    cache = _filled()
    assert isinstance(cache, Cache)
    assert cache.get_seq_length() == cache.seq_len == 2 and len(cache) == 2 and cache.batch_size == 3
    assert cache.cross_attention_cache.get_seq_length() == 5
    cache.crop(1)
    assert cache.get_seq_length() == 1 and cache.cross_attention(0)[0].shape[2] == 5


def test_cross_attention_is_stored_once_and_read_back():
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    assert cache.cross_attention(0) is None and not cache.is_updated.get(0)
    k, v = _kv(2, 3, 7.0)
    cache.store_cross_attention(0, k, v)
    assert cache.is_updated[0]
    stored_k, stored_v = cache.cross_attention(0)
    torch.testing.assert_close(stored_k, k)
    torch.testing.assert_close(stored_v, v)


def test_reordering_rows_moves_both_caches():
    cache = _filled()
    rows = torch.tensor([2, 2, 0])
    cache.reorder(rows)
    self_k, _, cross_k, _ = next(iter(cache))
    assert self_k[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert cross_k[:, 0, 0, 0].tolist() == [102.0, 102.0, 100.0]
    cache.batch_select_indices(torch.tensor([1]))
    assert cache.batch_size == 1 and cache.cross_attention(1)[0].shape[0] == 1
    cache.batch_repeat_interleave(2)
    assert cache.batch_size == 2 and cache.cross_attention(0)[0][:, 0, 0, 0].tolist() == [102.0, 102.0]


def test_reset_forgets_the_encoder_keys_too():
    cache = _filled()
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.cross_attention(0) is None


def test_the_cache_is_rebuilt_from_its_per_layer_tuples():
    cache = _filled(batch=2, self_length=3, cross_length=4)
    rebuilt = EncoderDecoderCache(list(cache))
    assert rebuilt.get_seq_length() == 3 and rebuilt.is_updated == {0: True, 1: True}
    for before, after in zip(cache, rebuilt):
        for a, b in zip(before, after):
            torch.testing.assert_close(a, b)


def test_wrong_arguments_say_what_the_cache_takes():
    with pytest.raises(TypeError, match="two caches"):
        EncoderDecoderCache(DynamicCache(), "cross")
    with pytest.raises(ValueError, match="expected 4"):
        EncoderDecoderCache([(torch.zeros(1, 1, 1, 1),) * 3])
    with pytest.raises(ValueError, match="got 3 arguments"):
        EncoderDecoderCache(DynamicCache(), DynamicCache(), DynamicCache())


def test_the_names_exist_where_the_reference_has_them():
    from openformers.cache_utils import EncoderDecoderCache as from_cache_utils
    from openformers.generation import GenerateBeamEncoderDecoderOutput, GenerateEncoderDecoderOutput
    from openformers.modeling_outputs import Seq2SeqLMOutput, Seq2SeqModelOutput

    assert openformers.EncoderDecoderCache is from_cache_utils is EncoderDecoderCache
    out = GenerateEncoderDecoderOutput(sequences=torch.zeros(1, 2, dtype=torch.long), cache=_filled())
    assert out.past_key_values is out.cache and "decoder_attentions" not in out
    assert list(GenerateBeamEncoderDecoderOutput.__dataclass_fields__)[:5] == [
        "sequences", "sequences_scores", "scores", "logits", "beam_indices"]
    assert list(Seq2SeqLMOutput.__dataclass_fields__) == ["loss", "logits"] + list(
        Seq2SeqModelOutput.__dataclass_fields__)[1:]
