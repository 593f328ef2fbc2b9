"""The generation options: one row per option, the one place that says what an option is.

Each `Option` row gives the name, the library default, the check and what it accepts, its kind (which part
of generation reads it), what it feeds (a processor, a stopping rule or a part of the loop), and, where they
apply, the text-generation pipeline's default and the OpenAI request field that sets it per request. Readers:
- `GenerationConfig` (config.py): its attributes, their validation, `DEFAULTS`, the warnings about options the
  chosen strategy ignores (kinds SAMPLING, BEAM, EXTRA_OUTPUT) and the options that `generate` never leaves
  unset (`never_unset`);
- `build_processors` (processors.py): the default of an option a config object does not have;
- the text-generation pipeline (pipelines.py): which keyword arguments go to `generate`, and its defaults;
- `PreTrainedModel.save_pretrained`: which saved options sampling alone reads;
- the server's request parsing (serving/protocol.py): the fields a request may set (`server`), checked here.

How to add a generation option:
1. Add a row to `OPTIONS` among its kind: `Option(name, kind, default, check, expected, feeds=...)`. `default`
   is what `generate` uses when nothing sets the option (None: off); `check` returns whether a value is
   possible and `expected` says what it accepts, as the error message words it ("an integer >= 0").
   `GenerationConfig(name=...)`, its files, `generate(name=...)` and `pipeline(...)(text, name=...)` then
   accept, check, save and pass on the option with no other change.
2. If it shapes the scores: write its processor in processors.py (a frozen dataclass whose
   `__call__(input_ids, scores)` returns new scores) and build it in `build_processors` at the place the
   reference's order gives it (kind SAMPLING: in `_build_warpers`). If it stops generation: write a
   `StoppingCriteria` in stopping_criteria.py and add it where generate builds its stopping criteria
   (decoding.py). Name the class in `feeds`.
3. If the server should take it per request, set `server` to the OpenAI request field (often the same name);
   the field is then accepted, checked by `check` (protocol.py narrows it where OpenAI's API documents a
   tighter range) and handed to the scheduler by option name, whose `SamplingOptions` (serving/scheduler.py)
   passes it on to generate's sampler with a field of the same name.
4. Test it against the reference's processor and GenerationConfig (tests/test_processors*.py,
   tests/test_generation_config*.py); tests/test_generation_options.py checks that `feeds` names a class.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from numbers import Integral, Real


class Kind(str, Enum):
    """Which part of generation reads an option."""

    LENGTH = "length"  # when generation stops, and how short it may be
    STRATEGY = "strategy"  # which decoding loop runs
    CACHE = "cache"
    LOGITS = "logits"  # a processor that shapes the scores whatever the strategy
    SAMPLING = "sampling"  # a warper, read only when do_sample=True
    BEAM = "beam"  # read only by beam search
    OUTPUT = "output"  # what generate returns
    EXTRA_OUTPUT = "extra output"  # returned only with return_dict_in_generate=True
    TOKENS = "tokens"  # special token ids
    ASSISTED = "assisted"  # assisted decoding: a draft model, or prompt lookup
    PERFORMANCE = "performance"  # compilation and batching, which openformers stores without reading
    STORED = "stored"  # strategies the reference moved to the Hub; stored so that their files load


@dataclass(frozen=True)
class Option:
    """One generation option: what it is, what it accepts, and who reads it."""

    name: str
    kind: Kind
    default: object = None  # what generate uses when nothing sets the option
    check: Callable[[object], bool] | None = None  # None: any value is stored as it is
    expected: str = ""  # what `check` accepts, worded for the error message
    feeds: str = ""  # the processor, stopping rule or part of the loop that reads it
    never_unset: bool = False  # the loop needs a value: None passed to generate() means the default, not "off"
    pipeline_default: object = None  # the text-generation pipeline's default when neither caller nor model sets it
    server: str | None = None  # the OpenAI request field that sets it per request
    # Whether a value asks for a strategy openformers does not run (named in `feeds`): generate refuses it.
    refused_if: Callable[[object], bool] | None = None

    def is_possible(self, value) -> bool:
        return value is None or self.check is None or self.check(value)


def is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _any(value) -> bool:
    return True


def _is_bool(value) -> bool:
    return isinstance(value, bool)


def _is_token_ids(value) -> bool:
    ids = [value] if is_int(value) else value
    return isinstance(ids, (list, tuple)) and all(is_int(i) and i >= 0 for i in ids)


def _is_stop_strings(value) -> bool:
    strings = [value] if isinstance(value, str) else value
    return isinstance(strings, (list, tuple)) and len(strings) > 0 and all(isinstance(s, str) and s for s in strings)


def _is_bad_words(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(word, (list, tuple)) and len(word) > 0 and _is_token_ids(list(word)) for word in value
    )


def _is_decay(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and is_int(value[0]) and is_number(value[1])


def _int_at_least(low: int) -> Callable[[object], bool]:
    return lambda value: is_int(value) and value >= low


def _number_in(low: float, high: float = float("inf"), low_open: bool = False, high_open: bool = False
               ) -> Callable[[object], bool]:
    def check(value) -> bool:
        return (is_number(value) and (low < value if low_open else low <= value)
                and (value < high if high_open else value <= high))

    return check


# The cache names the reference accepts (static_cache.py says which ask for a StaticCache).
CACHE_IMPLEMENTATIONS = ("static", "offloaded_static", "sliding_window", "hybrid", "hybrid_chunked",
                         "offloaded_hybrid", "offloaded_hybrid_chunked", "dynamic", "offloaded", "quantized", "paged")
_BOOL = (_is_bool, "True or False")
_TOKEN_IDS = (_is_token_ids, "a token id or a list of token ids")
_SOME_TOKEN_IDS = (lambda v: _is_token_ids(v) and v != [], "a token id or a non-empty list of token ids")

OPTIONS = (
    # how long
    Option("max_length", Kind.LENGTH, 20, _int_at_least(1), "an integer >= 1", "MaxLengthCriteria (prompt included)",
           never_unset=True),
    Option("max_new_tokens", Kind.LENGTH, None, _int_at_least(1), "an integer >= 1 (the number of tokens to generate)",
           "MaxLengthCriteria (takes precedence over max_length)", pipeline_default=256),
    Option("min_length", Kind.LENGTH, 0, _int_at_least(0), "an integer >= 0", "MinLengthLogitsProcessor",
           never_unset=True),
    Option("min_new_tokens", Kind.LENGTH, None, _int_at_least(0), "an integer >= 0",
           "MinNewTokensLengthLogitsProcessor"),
    Option("early_stopping", Kind.BEAM, False, lambda v: isinstance(v, bool) or v == "never",
           "True, False or 'never'", "beam search's stop rule", never_unset=True),
    Option("max_time", Kind.LENGTH, None, _number_in(0, low_open=True), "a number of seconds > 0",
           "MaxTimeCriteria"),
    Option("stop_strings", Kind.LENGTH, None, _is_stop_strings, "a non-empty string or a list of non-empty strings",
           "StopStringCriteria (needs generate(..., tokenizer=tokenizer))"),
    # which strategy
    Option("do_sample", Kind.STRATEGY, False, *_BOOL, "sample_next_token", never_unset=True, pipeline_default=True),
    Option("num_beams", Kind.STRATEGY, 1, _int_at_least(1), "an integer >= 1 (1 means no beam search)",
           "beam search", never_unset=True),
    Option("use_mtp", Kind.STRATEGY, feeds="multi-token-prediction decoding", refused_if=bool),
    # the cache
    Option("use_cache", Kind.CACHE, True, *_BOOL, "the cache changes the speed, never the tokens", never_unset=True),
    Option("cache_implementation", Kind.CACHE, None, lambda v: v in CACHE_IMPLEMENTATIONS,
           f"one of {CACHE_IMPLEMENTATIONS}", "StaticCache, or else DynamicCache"),
    Option("cache_config", Kind.CACHE, feeds="stored"),
    Option("max_cache_len", Kind.CACHE, feeds="StaticCache's length"),
    # how the scores are shaped: the warpers that sampling alone reads, in the reference's order of application
    Option("temperature", Kind.SAMPLING, 1.0, _number_in(0), "a number >= 0 (0 means greedy decoding)",
           "TemperatureLogitsWarper", pipeline_default=0.7, server="temperature"),
    Option("top_k", Kind.SAMPLING, 50, _int_at_least(0), "an integer >= 0 (0 turns top-k filtering off)",
           "TopKLogitsWarper"),
    Option("top_p", Kind.SAMPLING, 1.0, _number_in(0, 1, low_open=True),
           "a number in (0, 1] (1 turns nucleus filtering off)", "TopPLogitsWarper", server="top_p"),
    Option("min_p", Kind.SAMPLING, None, _number_in(0, 1), "a number in [0, 1]", "MinPLogitsWarper"),
    Option("top_h", Kind.SAMPLING, None, _number_in(0, 1, low_open=True), "a number in (0, 1]", "TopHLogitsWarper"),
    Option("typical_p", Kind.SAMPLING, 1.0, _number_in(0, 1, low_open=True),
           "a number in (0, 1] (1 turns typical sampling off)", "TypicalLogitsWarper"),
    Option("epsilon_cutoff", Kind.SAMPLING, 0.0, _number_in(0, 1, high_open=True),
           "a number in [0, 1) (0 turns epsilon sampling off)", "EpsilonLogitsWarper"),
    Option("eta_cutoff", Kind.SAMPLING, 0.0, _number_in(0, 1, high_open=True),
           "a number in [0, 1) (0 turns eta sampling off)", "EtaLogitsWarper"),
    # the processors every strategy applies
    Option("repetition_penalty", Kind.LOGITS, 1.0, _number_in(0, low_open=True),
           "a number > 0 (1.0 means no penalty)", "RepetitionPenaltyLogitsProcessor"),
    Option("encoder_repetition_penalty", Kind.LOGITS, 1.0, _number_in(0, low_open=True),
           "a number > 0 (1.0 means no penalty)", "EncoderRepetitionPenaltyLogitsProcessor"),
    Option("length_penalty", Kind.BEAM, 1.0, is_number, "a number (> 0 favours longer sequences, < 0 shorter ones)",
           "beam search's scores", never_unset=True),
    Option("no_repeat_ngram_size", Kind.LOGITS, 0, _int_at_least(0), "an integer >= 0 (0 turns the n-gram ban off)",
           "NoRepeatNGramLogitsProcessor"),
    Option("bad_words_ids", Kind.LOGITS, None, _is_bad_words, "a non-empty list of non-empty lists of token ids",
           "NoBadWordsLogitsProcessor"),
    Option("renormalize_logits", Kind.LOGITS, None, *_BOOL, "LogitNormalization"),
    Option("forced_bos_token_id", Kind.LOGITS, None, _int_at_least(0), "a token id", "ForcedBOSTokenLogitsProcessor"),
    Option("forced_eos_token_id", Kind.LOGITS, None, *_SOME_TOKEN_IDS, "ForcedEOSTokenLogitsProcessor"),
    Option("remove_invalid_values", Kind.LOGITS, False, *_BOOL, "InfNanRemoveLogitsProcessor"),
    Option("exponential_decay_length_penalty", Kind.LOGITS, None, _is_decay,
           "a pair (start_index: int, decay_factor: float)", "ExponentialDecayLengthPenalty"),
    Option("suppress_tokens", Kind.LOGITS, None, *_TOKEN_IDS, "SuppressTokensLogitsProcessor"),
    Option("begin_suppress_tokens", Kind.LOGITS, None, *_TOKEN_IDS, "SuppressTokensAtBeginLogitsProcessor"),
    Option("sequence_bias", Kind.LOGITS, None, lambda v: isinstance(v, (list, tuple, dict)) and len(v) > 0,
           "a non-empty list of [token_ids, bias] pairs", "SequenceBiasLogitsProcessor"),
    Option("token_healing", Kind.LOGITS, feeds="token healing", refused_if=bool),
    Option("guidance_scale", Kind.LOGITS, None, is_number, "a number (1 means no guidance)",
           "UnbatchedClassifierFreeGuidanceLogitsProcessor"),
    # a WatermarkingConfig or SynthIDTextWatermarkingConfig, checked by its own validate()
    Option("watermarking_config", Kind.LOGITS, feeds="WatermarkLogitsProcessor"),
    # what generate returns
    Option("num_return_sequences", Kind.OUTPUT, 1, _int_at_least(1), "an integer >= 1", "the rows per prompt",
           never_unset=True),
    Option("output_attentions", Kind.EXTRA_OUTPUT, None, *_BOOL, "GenerateDecoderOnlyOutput.attentions"),
    Option("output_hidden_states", Kind.EXTRA_OUTPUT, None, *_BOOL, "GenerateDecoderOnlyOutput.hidden_states"),
    Option("output_scores", Kind.EXTRA_OUTPUT, False, *_BOOL, "GenerateDecoderOnlyOutput.scores", never_unset=True),
    Option("output_logits", Kind.EXTRA_OUTPUT, False, *_BOOL, "GenerateDecoderOnlyOutput.logits", never_unset=True),
    Option("return_dict_in_generate", Kind.OUTPUT, False, *_BOOL, "GenerateDecoderOnlyOutput", never_unset=True),
    # special tokens
    Option("pad_token_id", Kind.TOKENS, None, is_int, "a token id", "the padding of finished rows"),
    Option("bos_token_id", Kind.TOKENS, None, is_int, "a token id", "an empty prompt's first token"),
    Option("eos_token_id", Kind.TOKENS, None, *_SOME_TOKEN_IDS, "EosTokenCriteria"),
    # encoder-decoder models
    Option("encoder_no_repeat_ngram_size", Kind.LOGITS, 0, _int_at_least(0), "an integer >= 0 (0 turns the ban off)",
           "EncoderNoRepeatNGramLogitsProcessor"),
    Option("decoder_start_token_id", Kind.TOKENS, None, _is_token_ids,
           "a token id or a list of token ids (one per row)", "the decoder's first token"),
    # assisted decoding (a draft model, or prompt lookup)
    Option("is_assistant", Kind.ASSISTED, feeds="assisted decoding"),
    Option("num_assistant_tokens", Kind.ASSISTED, 20, _int_at_least(0), "an integer >= 0", "assisted decoding"),
    Option("num_assistant_tokens_schedule", Kind.ASSISTED, "constant", feeds="assisted decoding"),
    Option("assistant_confidence_threshold", Kind.ASSISTED, 0.4, _number_in(0, 1), "a number in [0, 1]",
           "ConfidenceCriteria"),
    Option("prompt_lookup_num_tokens", Kind.ASSISTED, None, _int_at_least(1), "an integer >= 1",
           "PromptLookupCandidateGenerator"),
    Option("max_matching_ngram_size", Kind.ASSISTED, None, _int_at_least(1), "an integer >= 1",
           "PromptLookupCandidateGenerator"),
    Option("assistant_early_exit", Kind.ASSISTED, feeds="early-exit assisted decoding", refused_if=_any),
    Option("assistant_lookbehind", Kind.ASSISTED, 10, feeds="stored"),
    Option("target_lookbehind", Kind.ASSISTED, 10, feeds="stored"),
    Option("assistant_ensemble_weight", Kind.ASSISTED, None, _number_in(0, 1, low_open=True, high_open=True),
           "a number in (0, 1)", "stored"),
    Option("speculation_type", Kind.ASSISTED, feeds="stored"),
    # performance
    Option("compile_config", Kind.PERFORMANCE, feeds="stored, never saved"),
    Option("disable_compile", Kind.PERFORMANCE, feeds="stored"),
    Option("continuous_batching_config", Kind.PERFORMANCE, feeds="stored"),
    # strategies the reference moved to the Hub
    Option("low_memory", Kind.STORED),
    Option("penalty_alpha", Kind.STORED, feeds="contrastive search", refused_if=lambda v: v > 0),
    Option("dola_layers", Kind.STORED, feeds="DoLa decoding", refused_if=_any),
    Option("diversity_penalty", Kind.STORED, 0.0, feeds="group beam search, with num_beam_groups"),
    Option("num_beam_groups", Kind.STORED, 1, feeds="group beam search", refused_if=lambda v: v > 1),
    Option("constraints", Kind.STORED, feeds="constrained beam search", refused_if=_any),
    Option("force_words_ids", Kind.STORED, feeds="constrained beam search", refused_if=_any),
    Option("prefill_chunk_size", Kind.PERFORMANCE, feeds="stored"),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
OPTION_NAMES = tuple(OPTIONS_BY_NAME)
# What generate uses for an option that nothing sets (the reference's library defaults).
DEFAULTS = {option.name: option.default for option in OPTIONS if option.default is not None}


def names_of_kind(kind: Kind) -> tuple[str, ...]:
    return tuple(option.name for option in OPTIONS if option.kind == kind)


def server_options() -> tuple[Option, ...]:
    """The options a server request sets per request, each under its `server` field."""
    return tuple(option for option in OPTIONS if option.server is not None)
