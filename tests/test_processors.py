"""Logits processors and sampling, with HF transformers' processors as the oracle."""

import math
from types import SimpleNamespace

import pytest
import torch

from openformers.generation import processors as of

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("transformers.generation.logits_process")

BATCH, LENGTH, VOCAB = 4, 12, 40
SEEDS = [0, 1, 2]


def make_inputs(seed: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (B, T) ids and (B, V) fp32 scores. Ids come from a small range so n-grams and bad words repeat."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 8, (BATCH, LENGTH), generator=generator)
    if kind == "ties":  # few distinct values: every filter meets ties at its boundary
        scores = torch.randint(-2, 3, (BATCH, VOCAB), generator=generator).float()
    else:
        scores = torch.randn(BATCH, VOCAB, generator=generator) * 3
    if kind == "with_inf":  # as after an earlier processor banned tokens
        scores[torch.rand(BATCH, VOCAB, generator=generator) < 0.3] = -math.inf
    return input_ids, scores


# (our processor, the reference's) built from the same arguments
PAIRS = {
    "temperature<1": (of.TemperatureLogitsWarper(0.7), hf.TemperatureLogitsWarper(0.7)),
    "temperature>1": (of.TemperatureLogitsWarper(1.6), hf.TemperatureLogitsWarper(1.6)),
    "top_k": (of.TopKLogitsWarper(5), hf.TopKLogitsWarper(5)),
    "top_k=1": (of.TopKLogitsWarper(1), hf.TopKLogitsWarper(1)),
    "top_k keep 8": (of.TopKLogitsWarper(5, min_tokens_to_keep=8), hf.TopKLogitsWarper(5, min_tokens_to_keep=8)),
    "top_k > vocab": (of.TopKLogitsWarper(1000), hf.TopKLogitsWarper(1000)),
    "top_p": (of.TopPLogitsWarper(0.8), hf.TopPLogitsWarper(0.8)),
    "top_p small": (of.TopPLogitsWarper(0.05), hf.TopPLogitsWarper(0.05)),
    "top_p keep 3": (of.TopPLogitsWarper(0.3, min_tokens_to_keep=3), hf.TopPLogitsWarper(0.3, min_tokens_to_keep=3)),
    "top_p=1": (of.TopPLogitsWarper(1.0), hf.TopPLogitsWarper(1.0)),
    "min_p": (of.MinPLogitsWarper(0.1), hf.MinPLogitsWarper(0.1)),
    "min_p keep 3": (of.MinPLogitsWarper(0.5, min_tokens_to_keep=3), hf.MinPLogitsWarper(0.5, min_tokens_to_keep=3)),
    "min_p=0": (of.MinPLogitsWarper(0.0), hf.MinPLogitsWarper(0.0)),
    "min_p=1": (of.MinPLogitsWarper(1.0), hf.MinPLogitsWarper(1.0)),
    "typical": (of.TypicalLogitsWarper(0.9), hf.TypicalLogitsWarper(0.9)),
    "typical small keep 2": (
        of.TypicalLogitsWarper(0.2, min_tokens_to_keep=2),
        hf.TypicalLogitsWarper(0.2, min_tokens_to_keep=2),
    ),
    "repetition>1": (of.RepetitionPenaltyLogitsProcessor(1.3), hf.RepetitionPenaltyLogitsProcessor(1.3)),
    "repetition<1": (of.RepetitionPenaltyLogitsProcessor(0.6), hf.RepetitionPenaltyLogitsProcessor(0.6)),
    "repetition ignore int": (
        of.RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=5),
        hf.RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=5),
    ),
    "repetition ignore per row": (
        of.RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=torch.tensor([0, 3, 11, 12])),
        hf.RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=torch.tensor([0, 3, 11, 12])),
    ),
    "ngram 1": (of.NoRepeatNGramLogitsProcessor(1), hf.NoRepeatNGramLogitsProcessor(1)),
    "ngram 2": (of.NoRepeatNGramLogitsProcessor(2), hf.NoRepeatNGramLogitsProcessor(2)),
    "ngram 3": (of.NoRepeatNGramLogitsProcessor(3), hf.NoRepeatNGramLogitsProcessor(3)),
    "ngram longer than context": (of.NoRepeatNGramLogitsProcessor(13), hf.NoRepeatNGramLogitsProcessor(13)),
    "bad words": (
        of.NoBadWordsLogitsProcessor([[3], [4, 5], [1, 2], [6, 7, 0], [2]], eos_token_id=2),
        hf.NoBadWordsLogitsProcessor([[3], [4, 5], [1, 2], [6, 7, 0], [2]], eos_token_id=2),
    ),
    "bad words eos list": (
        of.NoBadWordsLogitsProcessor([[3], [5], [7], [0, 1], [2, 3, 4, 5]], eos_token_id=[5, 7]),
        hf.NoBadWordsLogitsProcessor([[3], [5], [7], [0, 1], [2, 3, 4, 5]], eos_token_id=[5, 7]),
    ),
    "bad words longer than context": (
        of.NoBadWordsLogitsProcessor([[1] * 13 + [2], [9]]),
        hf.NoBadWordsLogitsProcessor([[1] * 13 + [2], [9]]),
    ),
    "min_length active": (of.MinLengthLogitsProcessor(20, 2), hf.MinLengthLogitsProcessor(20, 2)),
    "min_length eos list": (of.MinLengthLogitsProcessor(13, [2, 9]), hf.MinLengthLogitsProcessor(13, [2, 9])),
    "min_length reached": (of.MinLengthLogitsProcessor(12, [2, 9]), hf.MinLengthLogitsProcessor(12, [2, 9])),
    "min_new_tokens active": (
        of.MinNewTokensLengthLogitsProcessor(8, 6, [2, 7]),
        hf.MinNewTokensLengthLogitsProcessor(8, 6, [2, 7]),
    ),
    "min_new_tokens reached": (
        of.MinNewTokensLengthLogitsProcessor(8, 4, 2),
        hf.MinNewTokensLengthLogitsProcessor(8, 4, 2),
    ),
    "suppress": (of.SuppressTokensLogitsProcessor([1, 4, 39]), hf.SuppressTokensLogitsProcessor([1, 4, 39])),
}


@pytest.mark.parametrize("kind", ["random", "with_inf", "ties"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(PAIRS))
def test_processor_matches_reference(name, seed, kind):
    ours, theirs = PAIRS[name]
    input_ids, scores = make_inputs(seed, kind)
    original = scores.clone()
    expected = theirs(input_ids.clone(), scores.clone())
    got = ours(input_ids, scores)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert got.dtype == scores.dtype
    assert torch.equal(scores, original), "a processor must not modify its input"


def test_bfloat16_scores_match_reference():
    input_ids, scores = make_inputs(0, "with_inf")
    scores = scores.bfloat16()
    for name in ("temperature<1", "top_k", "repetition>1", "bad words", "min_length active", "suppress"):
        ours, theirs = PAIRS[name]
        got = ours(input_ids, scores)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, theirs(input_ids, scores.clone()), rtol=0, atol=0)


@pytest.mark.parametrize(
    "ours, theirs",
    [(of.TopPLogitsWarper(p), hf.TopPLogitsWarper(p)) for p in (0.25, 0.5, 0.75)]
    + [(of.TypicalLogitsWarper(m), hf.TypicalLogitsWarper(m)) for m in (0.25, 0.5, 0.75)]
    + [(of.MinPLogitsWarper(m), hf.MinPLogitsWarper(m)) for m in (0.25, 0.5)],
)
def test_filters_on_exact_probability_boundaries(ours, theirs):
    # Powers of two make every probability and running sum exact, so the mass lands right on the threshold.
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0], [0.0, 1.0, 2.0, 1.0]]) * math.log(2)
    torch.testing.assert_close(ours(None, scores), theirs(None, scores.clone()), rtol=0, atol=0)


def test_filters_keep_the_best_token_and_ties():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]])
    kept = of.TopKLogitsWarper(2)(None, scores)
    assert torch.equal(kept, torch.tensor([[-math.inf, 3.0, 3.0, -math.inf, 3.0]]))  # all tied with the 2nd best
    assert torch.equal(of.TopPLogitsWarper(1.0)(None, scores), scores)
    assert torch.equal(of.TopKLogitsWarper(100)(None, scores), scores)
    assert of.MinPLogitsWarper(1.0)(None, scores).isfinite().sum() == 3


def test_no_repeat_ngram_bans_the_completion():
    input_ids = torch.tensor([[5, 6, 7, 5, 6, 1, 5]])
    scores = torch.zeros(1, 10)
    banned = of.NoRepeatNGramLogitsProcessor(2)(input_ids, scores).isinf().nonzero()[:, 1].tolist()
    assert banned == [6]  # the bigram "5 6" was seen, so 6 may not follow the final 5
    banned = of.NoRepeatNGramLogitsProcessor(3)(input_ids, scores).isinf().nonzero()[:, 1].tolist()
    assert banned == []  # no earlier trigram starts with the final "1 5"


def test_bad_word_out_of_vocabulary_is_an_error():
    processor = of.NoBadWordsLogitsProcessor([[3], [1, 60]])
    with pytest.raises(ValueError, match="bad_words_ids contains token id 60"):
        processor(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 50))


def test_bad_words_that_are_all_eos_ban_nothing():
    processor = of.NoBadWordsLogitsProcessor([[2]], eos_token_id=[2])
    scores = torch.randn(2, 10)
    assert torch.equal(processor(torch.zeros(2, 3, dtype=torch.long), scores), scores)


# --- build_processors: the list, in the reference's order -------------------------------------------------

EVERYTHING = dict(
    do_sample=True, temperature=0.7, top_k=10, top_p=0.9, min_p=0.05, typical_p=0.95, repetition_penalty=1.2,
    no_repeat_ngram_size=2, bad_words_ids=[[5], [6, 7], [3]], min_new_tokens=2, suppress_tokens=[8],
    eos_token_id=[2, 3],
)


@pytest.fixture(scope="module")
def tiny_hf_model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )
    return transformers.LlamaForCausalLM(config).eval()


def reference_run(model, input_ids, attention_mask, **options):
    """The reference's processor list, raw logits and processed scores for one generated token."""
    built = []
    original = model._get_logits_processor

    def capture(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    model._get_logits_processor = capture
    try:
        out = model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=1, pad_token_id=0,
            output_scores=True, output_logits=True, return_dict_in_generate=True, **options,
        )
    finally:
        del model._get_logits_processor
    return built[0], out.logits[0], out.scores[0]


def padded_prompts(seed):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 12, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0
    attention_mask[2, :1] = 0
    return input_ids, attention_mask


def names(processors):
    return [type(p).__name__ for p in processors]


@pytest.mark.parametrize(
    "options",
    [
        EVERYTHING,
        {**EVERYTHING, "do_sample": False},
        {**EVERYTHING, "eos_token_id": 2, "min_new_tokens": None, "min_length": 11},
        dict(do_sample=True, eos_token_id=2),
        dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, repetition_penalty=1.0),
        dict(do_sample=False, repetition_penalty=0.8, eos_token_id=None, min_length=15),
    ],
    ids=["everything", "greedy", "min_length", "defaults", "no-ops", "no-eos"],
)
@pytest.mark.filterwarnings("ignore")
def test_build_processors_matches_reference(tiny_hf_model, options):
    input_ids, attention_mask = padded_prompts(0)
    hf_list, logits, hf_scores = reference_run(tiny_hf_model, input_ids, attention_mask, **options)
    ours = of.build_processors(SimpleNamespace(**options), input_ids.shape[1], attention_mask=attention_mask)
    assert names(ours) == names(hf_list)
    # The whole chain, on the reference's own first-step logits, gives the reference's processed scores.
    torch.testing.assert_close(of.apply_processors(ours, input_ids, logits), hf_scores, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore")
def test_beam_sampling_keeps_one_token_more_than_eos(tiny_hf_model):
    input_ids, attention_mask = padded_prompts(1)
    options = dict(do_sample=True, num_beams=2, top_k=1, top_p=0.5, min_p=0.2, typical_p=0.5, eos_token_id=[2, 3])
    hf_list, _, _ = reference_run(tiny_hf_model, input_ids, attention_mask, **options)
    ours = of.build_processors(SimpleNamespace(**options), input_ids.shape[1])
    assert names(ours) == names(hf_list)
    assert [p.min_tokens_to_keep for p in ours] == [p.min_tokens_to_keep for p in hf_list] == [3, 3, 3, 3]
    no_eos = of.build_processors(SimpleNamespace(do_sample=True, num_beams=3, top_k=1), 4)
    assert no_eos[0].min_tokens_to_keep == 2


def test_build_processors_skips_no_ops_and_reads_missing_options_as_defaults():
    assert of.build_processors(SimpleNamespace(), 5) == []
    assert of.build_processors(SimpleNamespace(do_sample=True), 5) == [of.TopKLogitsWarper(50)]
    # temperature=0 is the usual spelling of greedy: it is ignored unless sampling
    assert of.build_processors(SimpleNamespace(temperature=0.0, top_k=None), 5) == []


def test_build_processors_places_processors_on_the_device():
    config = SimpleNamespace(suppress_tokens=[1], eos_token_id=2, min_length=3)
    processors = of.build_processors(config, 2, device="meta")
    assert processors[0]._eos.device.type == "meta" and processors[1]._ids.device.type == "meta"


# --- sampling ---------------------------------------------------------------------------------------------


def test_greedy_is_argmax():
    _, scores = make_inputs(0, "random")
    assert torch.equal(of.sample_next_token(scores, do_sample=False), scores.argmax(dim=-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_first_argmax_is_torchs_argmax_on_ties_nan_and_minus_infinity(dtype):
    # torch.max's indices stand in for argmax (vectorized over bfloat16 where argmax is not): the first of equal
    # maxima, the first NaN, the first of a row all -inf; rows long enough for torch to split them among threads.
    generator = torch.Generator().manual_seed(0)
    for length in (7, 1000, 65537, 262144):
        scores = torch.randint(-2, 3, (6, length), generator=generator).to(dtype)  # ties everywhere
        scores[1, length // 3] = scores[1, length - 1] = float("nan")
        scores[2] = float("-inf")
        scores[3] = 0.0
        scores[4, : length // 2] = float("-inf")
        assert torch.equal(of.first_argmax(scores), scores.argmax(dim=-1))
        assert torch.equal(of.sample_next_token(scores, do_sample=False), scores.argmax(dim=-1))


def test_sampling_is_reproducible_with_a_seeded_generator():
    _, scores = make_inputs(0, "with_inf")
    scores = scores.repeat(64, 1)
    draws = [of.sample_next_token(scores, True, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], of.sample_next_token(scores, True, torch.Generator().manual_seed(8)))
    assert torch.isfinite(scores.gather(1, draws[0][:, None])).all(), "a filtered token was sampled"


def test_sampling_without_generator_follows_the_global_seed_as_the_reference_does():
    _, scores = make_inputs(1, "random")
    torch.manual_seed(3)
    ours = of.sample_next_token(scores, True)
    torch.manual_seed(3)
    theirs = torch.multinomial(torch.nn.functional.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    assert torch.equal(ours, theirs)


def test_top_p_after_top_k_sorts_only_the_kept_scores_and_cuts_where_the_reference_does(monkeypatch):
    # Sampling's usual chain: top_k leaves 50 (or a few) scores finite, and top_p sorts only those. Scores rounded
    # to bfloat16 or to halves tie often; a cut between equal scores takes the reference's full sort.
    sorted_few, compiled = [], of.TopPLogitsWarper._cut_among_few
    monkeypatch.setattr(of.TopPLogitsWarper, "_cut_among_few",
                        lambda self, scores: (lambda cut: sorted_few.append(cut is not None) or cut)(compiled(self, scores)))
    for seed in range(240):
        generator = torch.Generator().manual_seed(seed)
        rows, width = 1 + seed % 3, (400, 4000)[seed % 2]
        scores = torch.randn(rows, width, generator=generator) * (0.5 + seed % 5)
        scores = scores.bfloat16().float() if seed % 3 == 1 else (scores * 2).round() / 2 if seed % 3 == 2 else scores
        scores = of.TopKLogitsWarper((5, 50, 3, 1)[seed % 4])(None, scores)  # 1: a single finite score
        top_p, keep = (0.9, 0.5, 0.95, 0.3, 0.99)[seed % 5], 1 + seed % 3
        ours = of.TopPLogitsWarper(top_p, min_tokens_to_keep=keep)(None, scores)
        assert torch.equal(ours, hf.TopPLogitsWarper(top_p, min_tokens_to_keep=keep)(None, scores)), seed
    assert 60 < sum(sorted_few) < len(sorted_few)
    tied = torch.full((1, 400), -math.inf)
    tied[0, 100:110] = 1.0  # ten equal scores, the cut among them
    assert compiled(of.TopPLogitsWarper(0.5), tied) is None
    assert torch.equal(of.TopPLogitsWarper(0.5)(None, tied), hf.TopPLogitsWarper(0.5)(None, tied))
    assert of.TopPLogitsWarper(0.5)(None, tied[:0]).shape == (0, 400)  # no rows


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: of.TemperatureLogitsWarper(0.0), r"temperature must be a number > 0, got 0.0.*do_sample=False"),
        (lambda: of.TemperatureLogitsWarper(-1), "temperature must be a number > 0, got -1"),
        (lambda: of.TopKLogitsWarper(0), "top_k must be an integer > 0, got 0"),
        (lambda: of.TopKLogitsWarper(2.5), "top_k must be an integer > 0, got 2.5"),
        (lambda: of.TopKLogitsWarper(5, min_tokens_to_keep=0), "min_tokens_to_keep must be an integer >= 1, got 0"),
        (lambda: of.TopPLogitsWarper(0.0), r"top_p must be a number in \(0, 1\], got 0.0"),
        (lambda: of.TopPLogitsWarper(1.5), r"top_p must be a number in \(0, 1\], got 1.5"),
        (lambda: of.MinPLogitsWarper(-0.1), r"min_p must be a number in \[0, 1\], got -0.1"),
        (lambda: of.TypicalLogitsWarper(0), r"typical_p must be a number in \(0, 1\], got 0"),
        (lambda: of.RepetitionPenaltyLogitsProcessor(0.0), "repetition_penalty must be a number > 0, got 0.0"),
        (lambda: of.RepetitionPenaltyLogitsProcessor(1.2, -1), "prompt_ignore_length must be an integer >= 0 or a 1-D"),
        (lambda: of.NoRepeatNGramLogitsProcessor(0), "no_repeat_ngram_size must be an integer > 0, got 0"),
        (lambda: of.NoBadWordsLogitsProcessor([1, 2]), r"bad_words_ids must be a non-empty list of non-empty lists"),
        (lambda: of.NoBadWordsLogitsProcessor([]), r"bad_words_ids must be .*, got \[\]"),
        (lambda: of.NoBadWordsLogitsProcessor([[1], []]), r"bad_words_ids must be .*, got \[\[1\], \[\]\]"),
        (lambda: of.NoBadWordsLogitsProcessor([[1, -2]]), r"bad_words_ids must be .*, got \[\[1, -2\]\]"),
        (lambda: of.NoBadWordsLogitsProcessor([["a"]]), r"bad_words_ids must be"),
        (lambda: of.MinLengthLogitsProcessor(-1, 2), "min_length must be an integer >= 0, got -1"),
        (lambda: of.MinLengthLogitsProcessor(3, "eos"), "eos_token_id must be a token id or a list of token ids"),
        (lambda: of.MinNewTokensLengthLogitsProcessor(3, -2, 2), "min_new_tokens must be an integer >= 0, got -2"),
        (lambda: of.SuppressTokensLogitsProcessor([1.5]), "suppress_tokens must be a token id or a list"),
    ],
)
def test_impossible_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(do_sample=True, temperature=0.0), "temperature must be a number > 0"),
        (dict(top_p=1.5), "top_p must be"),  # impossible even when greedy decoding would not use it
        (dict(do_sample=True, top_k=-1), "top_k must be an integer >= 0, got -1"),
        (dict(min_p=2.0), "min_p must be"),
        (dict(typical_p=0.0), "typical_p must be"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be an integer >= 0, got -1"),
        (dict(bad_words_ids=[[1], 2]), "bad_words_ids must be"),
        (dict(min_new_tokens=-1, eos_token_id=2), "min_new_tokens must be an integer >= 0, got -1"),
        (dict(min_length=1.5, eos_token_id=2), "min_length must be an integer >= 0, got 1.5"),
        (dict(eos_token_id=[2, -1]), "eos_token_id must be"),
    ],
)
def test_build_processors_rejects_impossible_config(options, message):
    with pytest.raises(ValueError, match=message):
        of.build_processors(SimpleNamespace(**options), 4)


def test_per_row_ignore_length_must_match_the_batch():
    processor = of.RepetitionPenaltyLogitsProcessor(1.2, prompt_ignore_length=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="prompt_ignore_length has 2 entries but input_ids has 4 rows"):
        processor(*make_inputs(0, "random"))
