"""Text watermarks: processors that hide a statistical signal in the chosen tokens, and detectors that find it.

Two schemes, each with the reference's keys, seeds and hashes, so that text watermarked here is detected by the
reference and the other way round:
- the green-list watermark of Kirchenbauer et al. (https://arxiv.org/abs/2306.04634): each step, a pseudo-random
  "green" share of the vocabulary, seeded by the previous token(s), gets `bias` added to its scores; the detector
  counts green tokens and reports a z-score. `WatermarkingConfig`, `WatermarkLogitsProcessor`, `WatermarkDetector`.
- SynthID text (https://www.nature.com/articles/s41586-024-08025-4): each candidate token gets pseudo-random
  g-values from a hash of the last n-gram and the keys, and the distribution is tilted towards tokens with g = 1,
  one tournament layer per key; a trained Bayesian detector reads the g-values back.
  `SynthIDTextWatermarkingConfig`, `SynthIDTextWatermarkLogitsProcessor`, `SynthIDTextWatermarkDetector`.

The configs go into `GenerationConfig(watermarking_config=...)`; `build_processors` appends their processor after
every other one, as the reference does.
"""

import collections
import copy
import json
import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import numpy as np
import torch

from .processors import LogitsProcessor

# -- configs -----------------------------------------------------------------------------------------------------


class BaseWatermarkingConfig(ABC):
    """What every watermarking config offers: dict and JSON round trips, `update`, `validate` and the processor."""

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "BaseWatermarkingConfig":
        """A config from its dict; keyword arguments that name a field override it."""
        config = cls(**config_dict)
        config.update(**kwargs)
        return config

    def to_dict(self) -> dict:
        return copy.deepcopy(vars(self))

    def __iter__(self):
        yield from self.to_dict().items()

    def to_json_string(self) -> str:
        return json.dumps(vars(self), indent=2) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        with open(json_file_path, "w", encoding="utf-8") as file:
            file.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def update(self, **kwargs) -> None:
        """Set the fields named in `kwargs`; other keys are ignored, as in the reference."""
        for key, value in kwargs.items():
            if hasattr(self, key):
                setattr(self, key, value)

    @abstractmethod
    def validate(self) -> None:
        """Raise a ValueError for an impossible field."""

    @abstractmethod
    def construct_processor(self, vocab_size: int, device) -> LogitsProcessor:
        """The logits processor that applies this watermark to a model with `vocab_size` tokens."""


@dataclass(repr=False)
class WatermarkingConfig(BaseWatermarkingConfig):
    """The green-list watermark's options.

    greenlist_ratio: the share of the vocabulary that is green at each step.
    bias: added to the green tokens' scores (0.5 to 2.0 keeps the text natural).
    hashing_key: the secret that seeds the green lists; change it when you deploy a watermark.
    seeding_scheme: "lefthash" seeds with the previous token; "selfhash" also with the candidate token itself
        (more robust, slower).
    context_width: how many previous tokens seed the green list.
    """

    greenlist_ratio: float = 0.25
    bias: float = 2.0
    hashing_key: int = 15485863  # the millionth prime, the reference's default
    seeding_scheme: str = "lefthash"
    context_width: int = 1

    def validate(self) -> None:
        if self.seeding_scheme not in ("selfhash", "lefthash"):
            raise ValueError(f"watermarking_config.seeding_scheme must be 'lefthash' or 'selfhash', got "
                             f"{self.seeding_scheme!r}.")
        if not 0.0 <= self.greenlist_ratio <= 1.0:
            raise ValueError(f"watermarking_config.greenlist_ratio must be in [0, 1], got {self.greenlist_ratio!r}.")
        if not self.context_width >= 1:
            raise ValueError(f"watermarking_config.context_width must be an integer >= 1, got {self.context_width!r}.")

    def construct_processor(self, vocab_size: int, device) -> "WatermarkLogitsProcessor":
        return WatermarkLogitsProcessor(vocab_size, device, **self.to_dict())


@dataclass(repr=False)
class SynthIDTextWatermarkingConfig(BaseWatermarkingConfig):
    """SynthID text's options.

    ngram_len: the tokens hashed for each g-value (the candidate and the ngram_len - 1 before it).
    keys: one secret key per tournament layer (the watermark's depth).
    context_history_size: how many recent contexts are remembered, so a repeated context is not watermarked twice.
    sampling_table_seed, sampling_table_size: the table of random bits the hashes index.
    skip_first_ngram_calls: leave the first ngram_len - 1 steps unwatermarked.
    debug_mode: replace the scores by uniform ones first (to test the watermark alone).
    """

    ngram_len: int
    keys: list[int]
    context_history_size: int = 1024
    sampling_table_seed: int = 0
    sampling_table_size: int = 2**16
    skip_first_ngram_calls: bool = False
    debug_mode: bool = False

    def validate(self) -> None:
        if self.sampling_table_size > 2**24:
            raise ValueError(
                f"watermarking_config.sampling_table_size must be at most 2**24, got {self.sampling_table_size!r}."
            )

    def construct_processor(self, vocab_size: int, device) -> "SynthIDTextWatermarkLogitsProcessor":
        return SynthIDTextWatermarkLogitsProcessor(device=device, **self.to_dict())


def config_from_dict(values: dict) -> BaseWatermarkingConfig:
    """The watermarking config a saved dict describes: only SynthID's has `ngram_len`, as the reference tells them."""
    config_class = SynthIDTextWatermarkingConfig if "ngram_len" in values else WatermarkingConfig
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"watermarking_config has keys {unknown} that {config_class.__name__} does not take; it takes "
            f"{sorted(known)}."
        )
    return config_class.from_dict(values)


# -- the green-list watermark ---------------------------------------------------------------------------------

_TABLE_SIZE = 1_000_003  # a prime: the size of the fixed permutation that selfhash seeds index


class WatermarkLogitsProcessor(LogitsProcessor):
    """Add `bias` to the scores of each row's green list (see WatermarkingConfig for the arguments).

    Each row's green list is the first `greenlist_ratio` share of a permutation of the vocabulary, drawn from a
    generator seeded by the row's last `context_width` tokens and `hashing_key`. With "selfhash" the candidate
    token takes part in its own seed, so only the 40 best candidates are checked, each against its own list.
    """

    def __init__(
        self,
        vocab_size: int,
        device,
        greenlist_ratio: float = 0.25,
        bias: float = 2.0,
        hashing_key: int = 15485863,
        seeding_scheme: str = "lefthash",
        context_width: int = 1,
    ):
        if seeding_scheme not in ("selfhash", "lefthash"):
            raise ValueError(f"seeding_scheme must be 'lefthash' or 'selfhash', got {seeding_scheme!r}.")
        if not 0.0 < greenlist_ratio < 1.0:
            raise ValueError(f"greenlist_ratio must be strictly between 0 and 1, got {greenlist_ratio!r}.")
        self.vocab_size = vocab_size
        self.greenlist_size = int(vocab_size * greenlist_ratio)
        self.bias = bias
        self.seeding_scheme = seeding_scheme
        self.hash_key = hashing_key
        self.context_width = context_width
        self.rng = torch.Generator(device=device)
        self.rng.manual_seed(hashing_key)
        self.table_size = _TABLE_SIZE
        self.fixed_table = torch.randperm(self.table_size, generator=self.rng, device=device)

    def set_seed(self, input_seq: torch.Tensor) -> None:
        """Seed the generator from the last `context_width` tokens of one row."""
        context = input_seq[-self.context_width :]
        if self.seeding_scheme == "selfhash":
            # int64 products that may wrap around, as in the reference, so the seeds are the same.
            every = self.fixed_table[context % self.table_size] + 1
            last = self.fixed_table[context[-1] % self.table_size] + 1
            seed = (self.hash_key * every * last).min().item()
        else:
            seed = self.hash_key * context[-1].item()
        self.rng.manual_seed(seed % (2**64 - 1))

    def _get_greenlist_ids(self, input_seq: torch.Tensor) -> torch.Tensor:
        self.set_seed(input_seq)
        permutation = torch.randperm(self.vocab_size, device=input_seq.device, generator=self.rng)
        return permutation[: self.greenlist_size]

    def _score_rejection_sampling(self, input_seq: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The selfhash green list: the best 40 candidates that are green under their own seed."""
        candidates = scores.argsort(dim=-1, descending=True)
        green = []
        for candidate in candidates[: min(40, len(candidates))]:
            greenlist = self._get_greenlist_ids(torch.cat([input_seq, candidate[None]], dim=-1))
            if bool((greenlist == candidate).any()):
                green.append(candidate)
        return torch.tensor(green, dtype=torch.long, device=input_seq.device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] < self.context_width:
            warnings.warn(
                f"The watermark is seeded by {self.context_width} tokens, but input_ids has {input_ids.shape[-1]}: "
                "this step is not watermarked.", UserWarning, stacklevel=2,
            )
            return scores
        processed = scores.clone()
        for row, input_seq in enumerate(input_ids):
            if self.seeding_scheme == "selfhash":
                green = self._score_rejection_sampling(input_seq, scores[row])
            else:
                green = self._get_greenlist_ids(input_seq)
            processed[row, green] = processed[row, green] + self.bias
        return processed


@dataclass
class WatermarkDetectorOutput:
    """What `WatermarkDetector(..., return_dict=True)` returns: numpy arrays with one entry per row.

    num_tokens_scored, num_green_tokens, green_fraction; z_score: how many standard deviations the green count is
    above what unwatermarked text gives; p_value of that z-score; prediction (z_score > z_threshold);
    confidence = 1 - p_value.
    """

    num_tokens_scored: np.ndarray | None = None
    num_green_tokens: np.ndarray | None = None
    green_fraction: np.ndarray | None = None
    z_score: np.ndarray | None = None
    p_value: np.ndarray | None = None
    prediction: np.ndarray | None = None
    confidence: np.ndarray | None = None


class WatermarkDetector:
    """Detect the green-list watermark in token ids, given the model's config and the generation's settings.

    model_config: gives vocab_size and the BOS id (a leading BOS is not scored).
    device: the device the text was generated on (the green lists depend on it).
    watermarking_config: the WatermarkingConfig (or its dict) used when generating.
    ignore_repeated_ngrams: count each distinct n-gram once.
    max_cache_size: how many n-gram verdicts are remembered between calls.
    """

    def __init__(self, model_config, device, watermarking_config, ignore_repeated_ngrams: bool = False,
                 max_cache_size: int = 128):
        if not isinstance(watermarking_config, dict):
            watermarking_config = watermarking_config.to_dict()
        encoder_decoder = getattr(model_config, "is_encoder_decoder", False)
        self.bos_token_id = model_config.decoder_start_token_id if encoder_decoder else model_config.bos_token_id
        self.greenlist_ratio = watermarking_config["greenlist_ratio"]
        self.ignore_repeated_ngrams = ignore_repeated_ngrams
        self.processor = WatermarkLogitsProcessor(model_config.vocab_size, device, **watermarking_config)
        self.max_cache_size = max_cache_size
        self._verdicts = collections.OrderedDict()  # (prefix tuple, target) -> is green, least recently used first

    def _is_green(self, prefix: tuple, target: int, like: torch.Tensor) -> bool:
        key = (prefix, target)
        if key in self._verdicts:
            self._verdicts.move_to_end(key)
            return self._verdicts[key]
        greenlist = self.processor._get_greenlist_ids(like.new_tensor(prefix))
        verdict = bool((greenlist == target).any())
        self._verdicts[key] = verdict
        if len(self._verdicts) > self.max_cache_size:
            self._verdicts.popitem(last=False)
        return verdict

    def _score_ngrams_in_passage(self, input_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per row: how many tokens were scored and how many of them are green."""
        selfhash = self.processor.seeding_scheme == "selfhash"
        n = self.processor.context_width + (0 if selfhash else 1)  # the seed's tokens, plus the scored one
        scored = np.zeros(input_ids.shape[0])
        green = np.zeros(input_ids.shape[0])
        for row, tokens in enumerate(input_ids.tolist()):
            counts = collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
            verdicts = {
                ngram: self._is_green(ngram if selfhash else ngram[:-1], ngram[-1], input_ids) for ngram in counts
            }
            if self.ignore_repeated_ngrams:
                scored[row], green[row] = len(counts), sum(verdicts.values())
            else:
                scored[row] = sum(counts.values())
                green[row] = sum(count * verdicts[ngram] for ngram, count in counts.items())
        return scored, green

    def _compute_z_score(self, green_token_count: np.ndarray, total_num_tokens: np.ndarray) -> np.ndarray:
        ratio = self.greenlist_ratio
        return (green_token_count - ratio * total_num_tokens) / np.sqrt(total_num_tokens * ratio * (1 - ratio))

    def _compute_pval(self, x, loc=0, scale=1) -> np.ndarray:
        """The one-sided p-value of a standard normal z-score."""
        z = (x - loc) / scale
        return 0.5 * torch.special.erfc(torch.as_tensor(z / np.sqrt(2))).numpy()

    def __call__(self, input_ids: torch.Tensor, z_threshold: float = 3.0, return_dict: bool = False):
        """Predict, per row of `input_ids` (better without the prompt), whether the text is watermarked.

        Returns a numpy bool array, or a WatermarkDetectorOutput with return_dict=True.
        """
        starts_with_bos = input_ids[:, 0] == self.bos_token_id
        if bool(starts_with_bos.any()) != bool(starts_with_bos.all()):
            raise ValueError(
                "Some rows of input_ids start with the BOS token and some do not: tokenize every row the same way."
            )
        if bool(starts_with_bos[0]):
            input_ids = input_ids[:, 1:]
        if input_ids.shape[-1] - self.processor.context_width < 1:
            raise ValueError(
                f"input_ids needs at least {self.processor.context_width + 1} tokens (after a leading BOS): the first "
                f"{self.processor.context_width} only seed the watermark and are not scored."
            )
        scored, green = self._score_ngrams_in_passage(input_ids)
        z_score = self._compute_z_score(green, scored)
        prediction = z_score > z_threshold
        if not return_dict:
            return prediction
        p_value = self._compute_pval(z_score)
        return WatermarkDetectorOutput(
            num_tokens_scored=scored, num_green_tokens=green, green_fraction=green / scored, z_score=z_score,
            p_value=p_value, prediction=prediction, confidence=1 - p_value,
        )


# -- SynthID text -------------------------------------------------------------------------------------------------

_LCG_MULTIPLIER = 6364136223846793005  # the newlib/musl linear congruential generator, as in the reference
_LCG_INCREMENT = 1


class SynthIDTextWatermarkState:
    """What the SynthID processor remembers between steps: each row's last ngram_len - 1 tokens and the hashes
    of recent contexts."""

    def __init__(self, batch_size: int, ngram_len: int, context_history_size: int, device):
        self.context = torch.zeros((batch_size, ngram_len - 1), dtype=torch.int64, device=device)
        self.context_history = torch.zeros((batch_size, context_history_size), dtype=torch.int64, device=device)
        self.num_calls = 0


class SynthIDTextWatermarkLogitsProcessor(LogitsProcessor):
    """Tilt each step's distribution towards tokens whose g-values are 1 (see SynthIDTextWatermarkingConfig).

    The g-value of a candidate at one layer is a bit of the sampling table, indexed by a hash of the last
    ngram_len - 1 tokens, the candidate and that layer's key. A context already seen (within
    `context_history_size` steps) is left unwatermarked. Returns log-probabilities. The first call starts from a
    context of zeros, as the reference's does; later calls shift in the newest token.
    """

    def __init__(self, ngram_len: int, keys: list[int], sampling_table_size: int, sampling_table_seed: int,
                 context_history_size: int, device, skip_first_ngram_calls: bool = False, debug_mode: bool = False):
        self.ngram_len = ngram_len
        self.keys = torch.tensor(keys, device=device)
        generator = torch.Generator(device=device).manual_seed(sampling_table_seed)
        self.sampling_table = torch.randint(0, 2, (sampling_table_size,), generator=generator, device=device)
        self.context_history_size = context_history_size
        self.device = device
        self.state = None
        self.skip_first_ngram_calls = skip_first_ngram_calls
        self.debug_mode = debug_mode

    def _init_state(self, batch_size: int) -> None:
        self.state = SynthIDTextWatermarkState(batch_size, self.ngram_len, self.context_history_size, self.device)

    def accumulate_hash(self, current_hash: torch.Tensor, data: torch.Tensor, multiplier: int = _LCG_MULTIPLIER,
                        increment: int = _LCG_INCREMENT) -> torch.Tensor:
        """Fold the last dimension of `data` into `current_hash` (broadcast against data.shape[:-1]) with an LCG
        step per element; int64 arithmetic wraps around, as in the reference."""
        for i in range(data.shape[-1]):
            current_hash = (current_hash + data[..., i]) * multiplier + increment
        return current_hash

    def _hash_with_keys(self, hashes: torch.Tensor) -> torch.Tensor:
        """(...,) hashes -> (..., depth): each hash folded with each layer's key."""
        return self.accumulate_hash(hashes[..., None], self.keys[:, None])

    def compute_ngram_keys(self, ngrams: torch.Tensor) -> torch.Tensor:
        """(B, N, ngram_len) n-grams -> (B, N, depth) keys."""
        if ngrams.dim() != 3 or ngrams.shape[2] != self.ngram_len:
            raise ValueError(
                f"ngrams must be shaped (batch_size, num_ngrams, ngram_len={self.ngram_len}), got {tuple(ngrams.shape)}."
            )
        start = torch.ones(ngrams.shape[:2], device=self.device, dtype=torch.long)
        return self._hash_with_keys(self.accumulate_hash(start, ngrams))

    def _compute_keys(self, n_minus_1_grams: torch.Tensor, indices: torch.Tensor):
        """Keys (B, V, depth) for every continuation in `indices` (B, V) of each row's context, and the hash of
        the context alone (B,)."""
        start = torch.ones(n_minus_1_grams.shape[0], device=self.device, dtype=torch.long)
        context_hash = self.accumulate_hash(start, n_minus_1_grams)
        with_candidate = self.accumulate_hash(context_hash[:, None], indices[..., None])
        return self._hash_with_keys(with_candidate), context_hash

    def sample_g_values(self, ngram_keys: torch.Tensor) -> torch.Tensor:
        """The table's bits at the keys (modulo the table size): (B, N, depth) g-values of 0 or 1."""
        return self.sampling_table[ngram_keys % self.sampling_table.shape[0]]

    def update_scores(self, scores: torch.Tensor, g_values: torch.Tensor) -> torch.Tensor:
        """One tournament layer per depth: each moves probability towards tokens with g = 1."""
        probs = torch.softmax(scores, dim=1)
        for depth in range(g_values.shape[2]):
            g = g_values[:, :, depth]
            g_mass = (g * probs).sum(dim=1, keepdim=True)
            probs = probs * (1 + g - g_mass)
        log_probs = torch.log(probs)
        return torch.where(torch.isfinite(log_probs), log_probs, torch.finfo(log_probs.dtype).min)

    def _check_input_ids_shape(self, input_ids: torch.Tensor) -> None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be shaped (batch_size, length), got {tuple(input_ids.shape)}.")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._check_input_ids_shape(input_ids)
        batch_size, vocab_size = scores.shape
        if self.debug_mode:
            scores = torch.ones_like(scores)
        if self.state is None:
            self._init_state(batch_size)
        else:
            self.state.context = torch.cat([self.state.context, input_ids[:, -1:]], dim=1)[:, 1:]
        self.state.num_calls += 1
        if self.skip_first_ngram_calls and self.state.num_calls < self.ngram_len:
            return scores
        candidates = torch.arange(vocab_size, device=self.device)[None].expand(batch_size, -1)
        keys, context_hash = self._compute_keys(self.state.context, candidates)
        watermarked = self.update_scores(scores, self.sample_g_values(keys))
        seen = (self.state.context_history == context_hash[:, None]).any(dim=1, keepdim=True)
        self.state.context_history = torch.cat([context_hash[:, None], self.state.context_history], dim=1)[:, :-1]
        return torch.where(seen, scores, watermarked)

    def compute_g_values(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T - ngram_len + 1, depth) g-values of each n-gram."""
        self._check_input_ids_shape(input_ids)
        return self.sample_g_values(self.compute_ngram_keys(input_ids.unfold(1, self.ngram_len, 1)))

    def compute_context_repetition_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T - ngram_len + 1): True where an n-gram's context was not seen in the recent history."""
        self._check_input_ids_shape(input_ids)
        batch_size = input_ids.shape[0]
        history = torch.zeros((batch_size, self.context_history_size), dtype=torch.int64, device=self.device)
        contexts = input_ids[:, :-1].unfold(1, self.ngram_len - 1, 1)
        repeated = []
        for i in range(contexts.shape[1]):
            start = torch.ones(batch_size, device=self.device, dtype=torch.long)
            context_hash = self.accumulate_hash(start, contexts[:, i])[:, None]
            repeated.append((history == context_hash).any(dim=1, keepdim=True))
            history = torch.cat([context_hash, history], dim=1)[:, :-1]
        return torch.logical_not(torch.cat(repeated, dim=1))

    def compute_eos_token_mask(self, input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
        """(B, T): 1 before each row's first EOS, 0 from it on."""
        self._check_input_ids_shape(input_ids)
        is_eos = input_ids == eos_token_id
        after_first_eos = is_eos.cumsum(dim=1) > 0
        return (~after_first_eos).to(is_eos.dtype)

    def expected_mean_g_value(self, vocab_size: int, coinflip_prob: float = 0.5) -> float:
        """The mean g-value of watermarked text under a uniform distribution (one layer)."""
        return coinflip_prob + coinflip_prob * (1 - coinflip_prob) * (1 - (1 / vocab_size))


class SynthIDTextWatermarkDetector:
    """Score token ids for the SynthID watermark with a trained detector.

    detector_module: a Bayesian detector called as `detector_module(g_values, mask)` (the reference's
        BayesianDetectorModel, trained as in its synthid_text example).
    logits_processor: the SynthIDTextWatermarkLogitsProcessor that watermarked the text.
    tokenizer: its eos_token_id ends the scored part of each row.
    """

    def __init__(self, detector_module, logits_processor: SynthIDTextWatermarkLogitsProcessor, tokenizer):
        self.detector_module = detector_module
        self.logits_processor = logits_processor
        self.tokenizer = tokenizer

    def __call__(self, tokenized_outputs: torch.Tensor):
        processor = self.logits_processor
        # n-grams that reach an EOS, or whose context repeats, are not scored.
        before_eos = processor.compute_eos_token_mask(tokenized_outputs, self.tokenizer.eos_token_id)
        mask = processor.compute_context_repetition_mask(tokenized_outputs) * before_eos[:, processor.ngram_len - 1 :]
        return self.detector_module(processor.compute_g_values(tokenized_outputs), mask)
