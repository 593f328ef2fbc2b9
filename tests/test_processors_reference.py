"""The processors added for drop-in compatibility, each checked against its namesake in HF transformers."""

import math
from types import SimpleNamespace

import pytest
import torch

from openformers.generation import processors as of

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("transformers.generation.logits_process")

BATCH, LENGTH, VOCAB = 4, 12, 40


def make_inputs(seed: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (B, T) ids from a small range (so n-grams repeat) and (B, V) fp32 scores."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 8, (BATCH, LENGTH), generator=generator)
    if kind == "ties":
        scores = torch.randint(-2, 3, (BATCH, VOCAB), generator=generator).float()
    else:
        scores = torch.randn(BATCH, VOCAB, generator=generator) * 3
    if kind == "with_inf":
        scores[torch.rand(BATCH, VOCAB, generator=generator) < 0.3] = -math.inf
    if kind == "with_nan":
        scores[0, 3], scores[1, 5], scores[2, 7] = math.nan, math.inf, -math.inf
    return input_ids, scores


def encoder_ids(seed: int) -> torch.Tensor:
    return torch.randint(0, 8, (2, 7), generator=torch.Generator().manual_seed(100 + seed))


def allowed_tokens(batch_id: int, ids: torch.Tensor) -> list[int]:
    """A prefix function whose answer depends on both the batch id and the context."""
    return [int(ids[-1]) % VOCAB, (batch_id * 7 + int(ids.sum())) % VOCAB, 39]


SEQUENCE_BIAS = [[[3], -2.5], [[5, 6], 4.0], [[1, 2, 3], -math.inf], [[0, 7], 1.5], [[6], 0.25]]

# name -> a function building (ours, the reference's) from the same arguments; a new pair per call, since some
# processors keep state between calls.
PAIRS = {
    "forced bos": lambda seed: (of.ForcedBOSTokenLogitsProcessor(4), hf.ForcedBOSTokenLogitsProcessor(4)),
    "forced eos now": lambda seed: (
        of.ForcedEOSTokenLogitsProcessor(LENGTH + 1, [2, 9]), hf.ForcedEOSTokenLogitsProcessor(LENGTH + 1, [2, 9])
    ),
    "forced eos later": lambda seed: (
        of.ForcedEOSTokenLogitsProcessor(LENGTH + 5, 2), hf.ForcedEOSTokenLogitsProcessor(LENGTH + 5, 2)
    ),
    "inf nan": lambda seed: (of.InfNanRemoveLogitsProcessor(), hf.InfNanRemoveLogitsProcessor()),
    "log normalization": lambda seed: (of.LogitNormalization(), hf.LogitNormalization()),
    "sequence bias": lambda seed: (
        of.SequenceBiasLogitsProcessor(SEQUENCE_BIAS), hf.SequenceBiasLogitsProcessor(SEQUENCE_BIAS)
    ),
    "sequence bias dict": lambda seed: (
        of.SequenceBiasLogitsProcessor({(4,): 1.0, (2, 2): -3.0}),
        hf.SequenceBiasLogitsProcessor({(4,): 1.0, (2, 2): -3.0}),
    ),
    "prefix constrained": lambda seed: (
        of.PrefixConstrainedLogitsProcessor(allowed_tokens, 2), hf.PrefixConstrainedLogitsProcessor(allowed_tokens, 2)
    ),
    "prefix constrained one beam": lambda seed: (
        of.PrefixConstrainedLogitsProcessor(allowed_tokens, 1), hf.PrefixConstrainedLogitsProcessor(allowed_tokens, 1)
    ),
    "exp decay active": lambda seed: (
        of.ExponentialDecayLengthPenalty((2, 1.5), [2, 9], 5), hf.ExponentialDecayLengthPenalty((2, 1.5), [2, 9], 5)
    ),
    "exp decay not yet": lambda seed: (
        of.ExponentialDecayLengthPenalty((9, 1.5), 2, 5), hf.ExponentialDecayLengthPenalty((9, 1.5), 2, 5)
    ),
    "epsilon": lambda seed: (of.EpsilonLogitsWarper(0.05), hf.EpsilonLogitsWarper(0.05)),
    "epsilon keep 5": lambda seed: (
        of.EpsilonLogitsWarper(0.3, min_tokens_to_keep=5), hf.EpsilonLogitsWarper(0.3, min_tokens_to_keep=5)
    ),
    "eta": lambda seed: (of.EtaLogitsWarper(0.05), hf.EtaLogitsWarper(0.05)),
    "eta keep 3": lambda seed: (
        of.EtaLogitsWarper(0.5, min_tokens_to_keep=3), hf.EtaLogitsWarper(0.5, min_tokens_to_keep=3)
    ),
    "top_h": lambda seed: (of.TopHLogitsWarper(0.4), hf.TopHLogitsWarper(0.4)),
    "top_h=1": lambda seed: (of.TopHLogitsWarper(1.0), hf.TopHLogitsWarper(1.0)),
    "suppress at begin now": lambda seed: (
        of.SuppressTokensAtBeginLogitsProcessor([1, 4, 39], LENGTH),
        hf.SuppressTokensAtBeginLogitsProcessor([1, 4, 39], LENGTH),
    ),
    "suppress at begin later": lambda seed: (
        of.SuppressTokensAtBeginLogitsProcessor([1, 4], LENGTH + 1),
        hf.SuppressTokensAtBeginLogitsProcessor([1, 4], LENGTH + 1),
    ),
    "encoder repetition >1": lambda seed: (
        of.EncoderRepetitionPenaltyLogitsProcessor(1.4, encoder_ids(seed)),
        hf.EncoderRepetitionPenaltyLogitsProcessor(1.4, encoder_ids(seed)),
    ),
    "encoder repetition <1": lambda seed: (
        of.EncoderRepetitionPenaltyLogitsProcessor(0.7, encoder_ids(seed)),
        hf.EncoderRepetitionPenaltyLogitsProcessor(0.7, encoder_ids(seed)),
    ),
    "encoder ngram 1": lambda seed: (
        of.EncoderNoRepeatNGramLogitsProcessor(1, encoder_ids(seed)),
        hf.EncoderNoRepeatNGramLogitsProcessor(1, encoder_ids(seed)),
    ),
    "encoder ngram 2": lambda seed: (
        of.EncoderNoRepeatNGramLogitsProcessor(2, encoder_ids(seed)),
        hf.EncoderNoRepeatNGramLogitsProcessor(2, encoder_ids(seed)),
    ),
    "encoder ngram 3": lambda seed: (
        of.EncoderNoRepeatNGramLogitsProcessor(3, encoder_ids(seed)),
        hf.EncoderNoRepeatNGramLogitsProcessor(3, encoder_ids(seed)),
    ),
}


@pytest.mark.parametrize("kind", ["random", "with_inf", "ties", "with_nan"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(PAIRS))
def test_processor_matches_reference(name, seed, kind):
    ours, theirs = PAIRS[name](seed)
    input_ids, scores = make_inputs(seed, kind)
    original = scores.clone()
    for step in range(3):  # later calls too: several processors keep state between calls
        ids = torch.cat([input_ids, input_ids[:, :step]], dim=1)
        try:
            expected = theirs(ids.clone(), scores.clone())
        except ValueError:  # NaN scores are refused by the distributions eta and top-h measure; ours too
            assert kind == "with_nan"
            with pytest.raises(ValueError):
                ours(ids, scores)
            return
        got = ours(ids, scores)
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(scores.nan_to_num(), original.nan_to_num()), "a processor must not modify its input"


def test_classifier_free_guidance_matches_reference():
    input_ids, _ = make_inputs(0, "random")
    scores = torch.randn(2 * BATCH, VOCAB, generator=torch.Generator().manual_seed(5))
    ours = of.ClassifierFreeGuidanceLogitsProcessor(1.5)(input_ids, scores)
    torch.testing.assert_close(ours, hf.ClassifierFreeGuidanceLogitsProcessor(1.5)(input_ids, scores), rtol=0, atol=0)
    with pytest.raises(ValueError, match="twice the rows"):
        of.ClassifierFreeGuidanceLogitsProcessor(1.5)(input_ids, scores[:BATCH])
    with pytest.raises(ValueError, match="guidance_scale must be a number > 1"):
        of.ClassifierFreeGuidanceLogitsProcessor(1.0)


# --- the list and the base classes ------------------------------------------------------------------------


class AddStep(of.LogitsProcessor):
    """A user processor that takes an extra keyword argument."""

    def __call__(self, input_ids, scores, step):
        return scores + step


def test_processor_list_passes_keyword_arguments_as_the_reference():
    input_ids, scores = make_inputs(0, "random")
    ours = of.LogitsProcessorList([of.TemperatureLogitsWarper(0.5), AddStep()])
    theirs = hf.LogitsProcessorList([hf.TemperatureLogitsWarper(0.5), AddStep()])
    torch.testing.assert_close(ours(input_ids, scores, step=2.0), theirs(input_ids, scores, step=2.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"AddStep needs the keyword arguments \['step'\]"):
        ours(input_ids, scores)
    assert isinstance(ours, list)


def test_base_classes():
    assert issubclass(of.TopKLogitsWarper, of.LogitsWarper) and issubclass(of.LogitsWarper, of.LogitsProcessor)
    for name in ("NoBadWordsLogitsProcessor", "SequenceBiasLogitsProcessor", "ForcedBOSTokenLogitsProcessor"):
        assert issubclass(getattr(of, name), of.LogitsProcessor)
    with pytest.raises(NotImplementedError, match="define it"):
        of.LogitsProcessor()(None, None)


def test_reference_attribute_names():
    assert of.EncoderRepetitionPenaltyLogitsProcessor(2.0, torch.zeros(1, 2, dtype=torch.long)).penalty == 0.5
    decay = of.ExponentialDecayLengthPenalty((3, 1.1), 2, 4)
    assert (decay.regulation_start, decay.regulation_factor) == (7, 1.1)
    assert of.TopHLogitsWarper(0.5).top_n == 100
    begin = of.SuppressTokensAtBeginLogitsProcessor([1], 3)
    begin.set_begin_index(5)
    assert begin.begin_index == 5 and begin.begin_suppress_tokens.tolist() == [1]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: of.EpsilonLogitsWarper(0.0), r"epsilon_cutoff must be a number in \(0, 1\)"),
        (lambda: of.EtaLogitsWarper(1.0), r"eta_cutoff must be a number in \(0, 1\)"),
        (lambda: of.TopHLogitsWarper(0.0), r"top_h must be a number in \(0, 1\]"),
        (lambda: of.SequenceBiasLogitsProcessor([[[1], 2]]), "sequence_bias must be"),
        (lambda: of.SequenceBiasLogitsProcessor({}), "sequence_bias must be"),
        (lambda: of.ExponentialDecayLengthPenalty((1, 1.1), None, 3), "needs eos_token_id"),
        (lambda: of.EncoderNoRepeatNGramLogitsProcessor(0, torch.zeros(1, 2)), "encoder_no_repeat_ngram_size"),
        (lambda: of.ForcedBOSTokenLogitsProcessor(-1), "forced_bos_token_id must be"),
    ],
)
def test_impossible_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_sequence_bias_outside_the_vocabulary_is_an_error():
    with pytest.raises(ValueError, match=r"sequence_bias names token ids \[99\]"):
        of.SequenceBiasLogitsProcessor([[[99], 1.0]])(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 10))


def test_prefix_function_with_no_allowed_token_is_an_error():
    processor = of.PrefixConstrainedLogitsProcessor(lambda batch_id, ids: [], 1)
    with pytest.raises(ValueError, match="returned no allowed token for batch id 0"):
        processor(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 10))


# --- build_processors with the new options, against the reference's generate ---------------------------------


@pytest.fixture(scope="module")
def tiny_hf_model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )
    return transformers.LlamaForCausalLM(config).eval()


def reference_run(model, input_ids, **options):
    """The reference's processor list, raw logits and processed scores for one generated token."""
    built = []
    original = model._get_logits_processor

    def capture(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    model._get_logits_processor = capture
    try:
        out = model.generate(
            input_ids, max_new_tokens=1, pad_token_id=0, output_scores=True, output_logits=True,
            return_dict_in_generate=True, **options,
        )
    finally:
        del model._get_logits_processor
    return built[0], out.logits[0], out.scores[0]


def names(processors):
    return [type(p).__name__ for p in processors]


NEW_OPTIONS = dict(
    sequence_bias=[[[5], -1.0], [[3, 4], 2.0]], encoder_repetition_penalty=1.3, encoder_no_repeat_ngram_size=2,
    forced_eos_token_id=2, remove_invalid_values=True, exponential_decay_length_penalty=(1, 1.2),
    begin_suppress_tokens=[7, 8], eos_token_id=[2, 3], repetition_penalty=1.1, renormalize_logits=True,
)


@pytest.mark.parametrize(
    "options",
    [
        NEW_OPTIONS,
        {**NEW_OPTIONS, "do_sample": True, "top_h": 0.8, "epsilon_cutoff": 0.01, "eta_cutoff": 0.02, "top_k": 20},
        {**NEW_OPTIONS, "forced_bos_token_id": 4, "forced_eos_token_id": None, "suppress_tokens": [9]},
        dict(do_sample=True, epsilon_cutoff=0.0, eta_cutoff=0.0, remove_invalid_values=False, eos_token_id=2),
    ],
    ids=["greedy", "sampling", "forced-bos", "off"],
)
@pytest.mark.filterwarnings("ignore")
def test_build_processors_matches_reference(tiny_hf_model, options):
    input_ids = torch.randint(0, 12, (2, 9), generator=torch.Generator().manual_seed(0))
    hf_list, logits, hf_scores = reference_run(tiny_hf_model, input_ids, **options)
    config = SimpleNamespace(max_new_tokens=1, **options)
    ours = of.build_processors(config, input_ids.shape[1], encoder_input_ids=input_ids)
    assert isinstance(ours, of.LogitsProcessorList)
    assert names(ours) == names(hf_list)
    torch.testing.assert_close(ours(input_ids, logits), hf_scores, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore")
def test_user_processors_merge_as_in_the_reference(tiny_hf_model):
    input_ids = torch.randint(0, 12, (2, 9), generator=torch.Generator().manual_seed(1))
    options = dict(do_sample=True, top_k=5, repetition_penalty=1.2, eos_token_id=2)
    hf_user = [hf.RepetitionPenaltyLogitsProcessor(1.5), hf.SuppressTokensLogitsProcessor([3])]
    hf_list, logits, hf_scores = reference_run(
        tiny_hf_model, input_ids, logits_processor=hf.LogitsProcessorList(hf_user), **options
    )
    assert names(hf_list) == [
        "RepetitionPenaltyLogitsProcessor", "SuppressTokensLogitsProcessor", "TopKLogitsWarper"
    ]
    user = [of.RepetitionPenaltyLogitsProcessor(1.5), of.SuppressTokensLogitsProcessor([3])]
    with pytest.warns(UserWarning, match="RepetitionPenaltyLogitsProcessor was passed in logits_processor"):
        ours = of.build_processors(SimpleNamespace(**options), input_ids.shape[1], logits_processor=user)
    assert names(ours) == names(hf_list)
    assert ours[0] is user[0] and ours[1] is user[1]  # the user's own objects, not copies
    torch.testing.assert_close(ours(input_ids, logits), hf_scores, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore")
def test_prefix_allowed_tokens_fn_matches_reference(tiny_hf_model):
    input_ids = torch.randint(0, 12, (2, 9), generator=torch.Generator().manual_seed(2))

    def allowed(batch_id, ids):
        return [batch_id + 10, int(ids[-1])]

    options = dict(num_beams=2, num_return_sequences=2, eos_token_id=2)
    hf_list, _, _ = reference_run(tiny_hf_model, input_ids, prefix_allowed_tokens_fn=allowed, **options)
    ours = of.build_processors(SimpleNamespace(**options), 9, prefix_allowed_tokens_fn=allowed)
    assert names(ours) == names(hf_list) == ["PrefixConstrainedLogitsProcessor"]
    assert ours[0]._num_beams == hf_list[0]._num_beams == 2


def test_encoder_options_without_encoder_ids_are_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="encoder_repetition_penalty needs the prompt ids"):
        assert of.build_processors(SimpleNamespace(encoder_repetition_penalty=1.5), 4) == []


def test_guidance_needs_the_model():
    with pytest.raises(ValueError, match="guidance_scale=1.5 runs the model"):
        of.build_processors(SimpleNamespace(guidance_scale=1.5), 4)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, tiny_hf_model):
    """The tiny reference model and the same weights loaded by openformers."""
    from openformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_hf_model.save_pretrained(folder)
    return tiny_hf_model, AutoModelForCausalLM.from_pretrained(folder).eval()


@pytest.mark.parametrize("negative", [False, True], ids=["last-token", "negative-prompt"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
def test_unbatched_guidance_matches_reference(tiny_pair, negative, use_cache):
    """Our processor runs our model (with its own cache); the reference's, without a cache, runs its model."""
    theirs_model, ours_model = tiny_pair
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, 64, (2, 6), generator=generator)
    negative_ids = torch.randint(0, 64, (2, 4), generator=generator) if negative else None
    negative_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]) if negative else None
    ours = of.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.7, ours_model, negative_ids, negative_mask, use_cache)
    theirs = hf.UnbatchedClassifierFreeGuidanceLogitsProcessor(
        1.7, theirs_model, negative_ids, negative_mask, use_cache=False
    )
    with torch.no_grad():
        for _ in range(4):
            scores = torch.randn(2, 64, generator=generator)
            expected = theirs(input_ids, scores)
            torch.testing.assert_close(ours(input_ids, scores), expected, rtol=1e-5, atol=1e-5)
            input_ids = torch.cat([input_ids, expected.argmax(dim=-1, keepdim=True)], dim=1)


def test_unbatched_guidance_with_a_plain_function_as_model():
    """As in the reference's own test: a callable without cache or logits_to_keep still guides."""
    unconditional = torch.tensor([[[1.0, 0.0, 1.5]]])
    conditional = torch.tensor([[[1.0, 1.0, 1.0]]])

    def model(input_ids, attention_mask, use_cache=True, past_key_values=None):
        return SimpleNamespace(logits=unconditional, past_key_values=None)

    expected = unconditional.log_softmax(-1) + 1.5 * (conditional.log_softmax(-1) - unconditional.log_softmax(-1))
    for negative in (torch.tensor([[0]]), None):
        processor = of.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model, negative)
        for _ in range(2):
            torch.testing.assert_close(processor(torch.tensor([[0]]), conditional), expected)


GENERATE_OPTIONS = {
    "sequence bias": dict(sequence_bias=[[[5], 3.0], [[7, 8], -2.0]]),
    "encoder penalties": dict(encoder_repetition_penalty=1.5, encoder_no_repeat_ngram_size=2),
    "forced eos and decay": dict(forced_eos_token_id=2, exponential_decay_length_penalty=(2, 1.5), eos_token_id=2),
    "begin suppress": dict(begin_suppress_tokens=[37, 12], suppress_tokens=[61]),
    "renormalize": dict(renormalize_logits=True, remove_invalid_values=True, repetition_penalty=1.2),
    "guidance": dict(guidance_scale=1.5),
    "watermark": dict(watermarking="green"),
    "synthid": dict(watermarking="synthid"),
}


@pytest.mark.parametrize("name", list(GENERATE_OPTIONS))
@pytest.mark.filterwarnings("ignore")
def test_generate_with_config_driven_processors_matches_reference(tiny_pair, name):
    theirs_model, ours_model = tiny_pair
    options = dict(GENERATE_OPTIONS[name])
    watermarking = options.pop("watermarking", None)
    ours_options, theirs_options = dict(options), dict(options)
    if watermarking == "green":
        from openformers.generation import WatermarkingConfig

        ours_options["watermarking_config"] = WatermarkingConfig(bias=4.0)
        theirs_options["watermarking_config"] = transformers.WatermarkingConfig(bias=4.0)
    elif watermarking == "synthid":
        from openformers.generation import SynthIDTextWatermarkingConfig

        synthid = dict(ngram_len=3, keys=[11, 22, 33], sampling_table_size=2**12, context_history_size=32)
        ours_options["watermarking_config"] = SynthIDTextWatermarkingConfig(**synthid)
        theirs_options["watermarking_config"] = transformers.SynthIDTextWatermarkingConfig(**synthid)
    generator = torch.Generator().manual_seed(4)
    input_ids = torch.randint(3, 64, (2, 6), generator=generator)  # two rows: the plain (uncompiled) decode path
    if name == "guidance":
        negative = torch.randint(3, 64, (2, 3), generator=generator)
        ours_options["negative_prompt_ids"] = theirs_options["negative_prompt_ids"] = negative
    common = dict(max_new_tokens=8, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    expected = theirs_model.generate(input_ids, **common, **theirs_options)
    got = ours_model.generate(input_ids, **common, **ours_options)
    assert got.sequences.tolist() == expected.sequences.tolist()
    for ours_scores, theirs_scores in zip(got.scores, expected.scores, strict=True):
        torch.testing.assert_close(ours_scores, theirs_scores, rtol=1e-4, atol=1e-4)
