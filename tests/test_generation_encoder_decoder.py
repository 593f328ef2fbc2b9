"""The encoder-decoder side of generation: EncoderDecoderCache, the output classes, and generate on a seq2seq model.

Generation against the reference runs on a tiny random T5 (tests/test_models_t5.py builds the same models); the cache
is checked on small hand-made tensors.
"""

import warnings

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


# -- generate on a tiny random T5 made by the reference ---------------------------------------------------------

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
            relative_attention_max_distance=20, decoder_start_token_id=0, feed_forward_proj="gated-gelu",
            tie_word_embeddings=False)
EOS = 10  # a token the tiny model picks often, so that rows stop at different steps


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(reference, ours): a Flan-T5-like model with random norms and LM head, loaded by both."""
    torch.manual_seed(0)
    reference = transformers.T5ForConditionalGeneration(transformers.T5Config(**TINY)).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.normal_(1.0, 0.2)
        reference.lm_head.weight = torch.nn.Parameter(torch.randn_like(reference.lm_head.weight))
    folder = tmp_path_factory.mktemp("t5")
    reference.save_pretrained(folder)
    return reference, openformers.T5ForConditionalGeneration.from_pretrained(folder)


@pytest.fixture(scope="module")
def prompts():
    """Two prompts, the second right-padded, as a T5 tokenizer pads."""
    ids = torch.randint(2, 99, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = 0, 0
    return ids, mask


def _both(models, prompts, seed=3, **options):
    reference, ours = models
    ids, mask = prompts
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = reference.generate(ids, attention_mask=mask, **options)
    torch.manual_seed(seed)
    return ours.generate(ids, attention_mask=mask, **options), theirs


STRATEGIES = {
    "greedy": dict(),
    "greedy eos": dict(eos_token_id=EOS),
    "greedy processors": dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=5, eos_token_id=EOS),
    "encoder processors": dict(encoder_repetition_penalty=1.5, encoder_no_repeat_ngram_size=2),
    "bad words": dict(bad_words_ids=[[10], [58, 81]]),
    "max_length": dict(max_length=6, max_new_tokens=None),
    "sample": dict(do_sample=True, top_k=20, eos_token_id=EOS),
    "sample many": dict(do_sample=True, temperature=0.7, top_p=0.9, num_return_sequences=3),
    "beams": dict(num_beams=3, eos_token_id=EOS),
    "beams returned": dict(num_beams=3, num_return_sequences=2, length_penalty=0.5, eos_token_id=EOS),
    "beam sample": dict(num_beams=3, do_sample=True),
    "beams, encoder processors": dict(num_beams=2, encoder_no_repeat_ngram_size=2, encoder_repetition_penalty=1.4),
    "sample many, decay": dict(do_sample=True, num_return_sequences=2, encoder_repetition_penalty=1.4,
                               exponential_decay_length_penalty=(3, 1.2), eos_token_id=EOS),
    "beams, early stop": dict(num_beams=3, early_stopping=True, length_penalty=-0.5, eos_token_id=EOS),
    "decoder prefix": dict(decoder_input_ids=torch.tensor([[0, 81], [0, 72]])),
    "decoder prefix without start": dict(decoder_input_ids=torch.tensor([[81], [72]])),
}


@pytest.mark.parametrize("options", list(STRATEGIES.values()), ids=list(STRATEGIES))
def test_generate_gives_the_reference_s_tokens(models, prompts, options):
    ours, theirs = _both(models, prompts, **{"max_new_tokens": 8, **options})
    assert ours.tolist() == theirs.tolist()


def test_the_default_length_counts_decoder_tokens(models, prompts):
    ours, theirs = _both(models, prompts)
    assert ours.shape == theirs.shape == (2, 21) and ours.tolist() == theirs.tolist()  # start token + 20 new


@pytest.mark.parametrize("beams", [1, 3])
def test_outputs_with_return_dict_are_the_reference_s(models, prompts, beams):
    options = dict(max_new_tokens=5, num_beams=beams, return_dict_in_generate=True, output_scores=True,
                   output_logits=True, output_attentions=True, output_hidden_states=True)
    ours, theirs = _both(models, prompts, **options)
    expected = "GenerateBeamEncoderDecoderOutput" if beams > 1 else "GenerateEncoderDecoderOutput"
    assert type(ours).__name__ == type(theirs).__name__ == expected
    assert isinstance(ours.past_key_values, EncoderDecoderCache)
    # The reference's sdpa path leaves attention weights out (its eager path has them; tests/test_models_t5.py
    # compares those): ours are there, one row per beam, for every step and layer.
    assert [k for k in ours.keys() if "attentions" not in k] == [k for k in theirs.keys() if "attentions" not in k]
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    for name in ("scores", "logits"):
        for a, b in zip(ours[name], theirs[name]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for name in ("encoder_hidden_states", "decoder_hidden_states"):
        flat = lambda nested: [t for item in nested for t in (item if isinstance(item, tuple) else (item,))]
        for a, b in zip(flat(ours[name]), flat(theirs[name])):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)
    steps = len(ours.scores)
    assert len(ours.decoder_attentions) == len(ours.cross_attentions) == steps
    assert ours.cross_attentions[-1][0].shape == (2 * beams, 4, 1, 9)
    assert len(ours.encoder_attentions) == 2 and ours.encoder_attentions[0].shape == (2, 4, 9, 9)
    if beams > 1:
        assert ours.beam_indices.tolist() == theirs.beam_indices.tolist()
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-4)


def test_a_batch_gives_each_prompt_s_own_tokens(models, prompts):
    _, ours = models
    ids, mask = prompts
    together = ours.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=2)
    alone = ours.generate(ids[1:, :6], max_new_tokens=8, num_beams=2)
    assert together[1, : alone.shape[1]].tolist() == alone[0].tolist()


def test_the_encoder_runs_once_and_cross_attention_keys_are_projected_once(models, prompts):
    _, ours = models
    ids, mask = prompts
    calls = {"encoder": 0, "k": 0}
    hooks = [ours.encoder.register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1)),
             ours.decoder.block[0].layer[1].EncDecAttention.k.register_forward_hook(
                 lambda *_: calls.__setitem__("k", calls["k"] + 1))]
    try:
        ours.generate(ids, attention_mask=mask, max_new_tokens=6, num_beams=3)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"encoder": 1, "k": 1}


def test_given_encoder_outputs_are_decoded_as_the_ids_would_be(models, prompts):
    _, ours = models
    ids, mask = prompts
    encoded = ours.get_encoder()(ids, attention_mask=mask)
    from_outputs = ours.generate(encoder_outputs=encoded, attention_mask=mask, max_new_tokens=6)
    assert from_outputs.tolist() == ours.generate(ids, attention_mask=mask, max_new_tokens=6).tolist()


def test_input_embeddings_are_encoded_as_the_reference_encodes_them(models, prompts):
    reference, ours = models
    ids, mask = prompts
    with torch.no_grad():
        embeds = reference.shared(ids) * 1.5  # not the table's rows: the encoder reads the embeddings given
    expected = reference.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=8, num_beams=2)
    got = ours.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=8, num_beams=2)
    assert got.tolist() == expected.tolist()
    with pytest.raises(ValueError, match="both input_ids and inputs_embeds"):
        ours.generate(ids, inputs_embeds=embeds, max_new_tokens=2)


def test_the_streamer_gets_the_start_token_then_the_new_ones(models, prompts):
    _, ours = models
    ids, _ = prompts

    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value):
            self.puts.append(value.tolist())

        def end(self):
            self.ended = True

    streamer = Recorder()
    out = ours.generate(ids[:1], max_new_tokens=5, streamer=streamer)
    assert streamer.puts[0] == [[0]] and streamer.ended
    assert [token for put in streamer.puts[1:] for token in put] == out[0, 1:].tolist()


def test_stop_strings_end_the_decoder_s_text(models, prompts):
    _, ours = models
    ids, _ = prompts

    class Digits:  # a tokenizer whose token i reads as the text "<i>"
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [-1]}  # the criterion's fixed prefix, as one token

        def convert_ids_to_tokens(self, ids):
            if isinstance(ids, int):
                return "abcdef" if ids == -1 else f"<{ids}>"
            return [self.convert_ids_to_tokens(i) for i in ids]

        def convert_tokens_to_string(self, tokens):
            return "".join(tokens)

    full = ours.generate(ids[:1], max_new_tokens=8, eos_token_id=None)
    stop = f"<{full[0, 3].item()}>"
    stopped = ours.generate(ids[:1], max_new_tokens=8, eos_token_id=None, stop_strings=[stop], tokenizer=Digits())
    assert stopped[0].tolist() == full[0, : full[0].tolist().index(full[0, 3].item(), 1) + 1].tolist()


def test_prompt_lookup_gives_the_greedy_tokens(models, prompts):
    _, ours = models
    ids, mask = prompts
    for row in range(2):
        prompt = ids[row : row + 1, : int(mask[row].sum())]
        greedy = ours.generate(prompt, max_new_tokens=12, repetition_penalty=0.7, eos_token_id=None)
        looked_up = ours.generate(prompt, max_new_tokens=12, repetition_penalty=0.7, eos_token_id=None,
                                  prompt_lookup_num_tokens=3, return_dict_in_generate=True)
        assert looked_up.sequences.tolist() == greedy.tolist()
        assert type(looked_up).__name__ == "GenerateEncoderDecoderOutput"


def test_a_draft_encoder_decoder_gives_the_greedy_tokens(models, prompts, tmp_path):
    _, ours = models
    ids, mask = prompts
    torch.manual_seed(1)  # a smaller draft of the same vocabulary: one layer, other weights
    draft = openformers.T5ForConditionalGeneration(openformers.T5Config(**{**TINY, "num_layers": 1}))
    for row in range(2):
        prompt = ids[row : row + 1, : int(mask[row].sum())]
        greedy = ours.generate(prompt, max_new_tokens=12, eos_token_id=EOS)
        assisted = ours.generate(prompt, max_new_tokens=12, eos_token_id=EOS, assistant_model=draft,
                                 num_assistant_tokens=3)
        assert assisted.tolist() == greedy.tolist()
    assisted = ours.generate(ids[:1], max_new_tokens=12, eos_token_id=EOS, assistant_model=ours)  # a perfect draft
    assert assisted.tolist() == ours.generate(ids[:1], max_new_tokens=12, eos_token_id=EOS).tolist()


def test_what_encoder_decoders_do_not_run_is_refused(models, prompts):
    _, ours = models
    ids, _ = prompts
    with pytest.raises(ValueError, match="must be an encoder-decoder too"):
        ours.generate(ids[:1], assistant_model=torch.nn.Linear(2, 2), max_new_tokens=3)
    with pytest.raises(ValueError, match="cache_implementation"):
        ours.generate(ids[:1], cache_implementation="static", max_new_tokens=3)
    with pytest.raises(TypeError, match="EncoderDecoderCache"):
        ours.generate(ids[:1], past_key_values=DynamicCache(), max_new_tokens=3)
    with pytest.raises(ValueError, match="token_type_ids are an input of decoder-only models"):
        ours.generate(ids[:1], token_type_ids=torch.zeros_like(ids[:1]), max_new_tokens=3)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        ours.generate(ids[:1], decoder_start_token_id=None, bos_token_id=None, max_new_tokens=3,
                      generation_config=openformers.GenerationConfig(), use_model_defaults=False)
