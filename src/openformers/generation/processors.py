"""Logits processors and sampling: each step of `generate` turns the model's scores into the next token here.

A processor is a small frozen dataclass called as `processor(input_ids, scores) -> scores`, where `input_ids`
is the (B, T) context so far (prompt and generated tokens) and `scores` the (B, V) next-token scores. They
match the reference's processors bit for bit, so a processor here and its namesake in `transformers` give
the same scores on the same input. `build_processors(config, prompt_length)` builds the list once, in the
reference's order: the processors that constrain tokens first, then, when sampling, the warpers that
reshape the distribution. `sample_next_token` picks the token: argmax, or a draw from the softmax.

Processors never modify `scores` in place; a filtered token gets `filter_value` (-inf), which the softmax
turns into probability 0.
"""

import math
from dataclasses import dataclass, field
from numbers import Integral, Real

import torch

# The reference's library defaults, used for options a config object does not have at all.
_DEFAULTS = {
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "min_length": 0,
    "min_new_tokens": None,
    "suppress_tokens": None,
    "eos_token_id": None,
}


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _reject(name: str, value, expected: str, hint: str = "") -> None:
    raise ValueError(f"{name} must be {expected}, got {value!r}.{' ' + hint if hint else ''}")


def _check_min_tokens_to_keep(value) -> None:
    if not _is_int(value) or value < 1:
        _reject("min_tokens_to_keep", value, "an integer >= 1")


def _token_id_list(name: str, ids) -> list[int]:
    """An int, a list of ints or a 1-D tensor of ids, as a list of non-negative ints."""
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    elif _is_int(ids):
        ids = [ids]
    if not isinstance(ids, (list, tuple)) or not all(_is_int(i) and i >= 0 for i in ids):
        _reject(name, ids, "a token id or a list of token ids (integers >= 0)")
    return [int(i) for i in ids]


def _vocab_mask(token_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """A (V,) bool mask of `token_ids` over the vocabulary of `scores`; ids past the vocabulary are ignored."""
    vocab_size = scores.shape[-1]
    mask = torch.zeros(vocab_size + 1, dtype=torch.bool, device=scores.device)
    mask[token_ids.to(scores.device).clamp(max=vocab_size)] = True
    return mask[:vocab_size]


@dataclass(frozen=True)
class TemperatureLogitsWarper:
    """Divide the scores by `temperature`: below 1 sharpens the distribution, above 1 flattens it."""

    temperature: float

    def __post_init__(self):
        if not _is_number(self.temperature) or not self.temperature > 0:
            _reject(
                "temperature", self.temperature, "a number > 0",
                "For greedy decoding pass do_sample=False instead of temperature=0.",
            )

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


@dataclass(frozen=True)
class TopKLogitsWarper:
    """Keep the `top_k` highest scores (every token tied with the k-th one included), filter the rest."""

    top_k: int
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not _is_int(self.top_k) or self.top_k <= 0:
            _reject("top_k", self.top_k, "an integer > 0", "Pass top_k=0 to generate() to turn top-k filtering off.")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(max(self.top_k, self.min_tokens_to_keep), scores.shape[-1])
        kth_best = scores.topk(k, dim=-1).values[:, -1:]  # (B, 1)
        return scores.masked_fill(scores < kth_best, self.filter_value)


@dataclass(frozen=True)
class TopPLogitsWarper:
    """Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p`, filter the rest."""

    top_p: float
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            _reject("top_p", self.top_p, "a number in (0, 1]", "Pass top_p=1.0 to turn nucleus filtering off.")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # Accumulate from the least likely token up: the tail whose mass stays within 1 - top_p is dropped.
        # (Summing in this order, as the reference does, decides the boundary token the same way.)
        ascending, order = torch.sort(scores, descending=False)
        tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = tail_mass <= 1 - self.top_p
        drop_sorted[:, -self.min_tokens_to_keep :] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return scores.masked_fill(drop, self.filter_value)


@dataclass(frozen=True)
class MinPLogitsWarper:
    """Filter tokens less likely than `min_p` times the most likely token's probability."""

    min_p: float
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not _is_number(self.min_p) or not 0 <= self.min_p <= 1:
            _reject("min_p", self.min_p, "a number in [0, 1]")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = scores.softmax(dim=-1)
        drop = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        most_likely = probs.topk(min(self.min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
        drop.scatter_(1, most_likely, False)
        return scores.masked_fill(drop, self.filter_value)


@dataclass(frozen=True)
class TypicalLogitsWarper:
    """Typical sampling: keep the tokens whose surprise is closest to the entropy, up to `mass` probability."""

    mass: float = 0.9
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not _is_number(self.mass) or not 0 < self.mass <= 1:
            _reject("typical_p", self.mass, "a number in (0, 1]", "Pass typical_p=1.0 to turn typical sampling off.")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(scores, dim=-1)
        entropy = -(log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)  # nansum: 0 * -inf for filtered tokens
        distance = (-log_probs - entropy).abs()  # how far each token's surprise is from the expected surprise
        sorted_distance, order = torch.sort(distance, descending=False)
        mass = scores.gather(1, order).softmax(dim=-1).cumsum(dim=-1)
        # The last kept position is the first whose running mass reaches `mass`; ties with it are kept too.
        last_kept = (mass < self.mass).sum(dim=1).clamp(max=scores.shape[-1] - 1)
        drop_sorted = sorted_distance > sorted_distance.gather(1, last_kept[:, None])
        drop_sorted[:, : self.min_tokens_to_keep] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return scores.masked_fill(drop, self.filter_value)


@dataclass(frozen=True)
class RepetitionPenaltyLogitsProcessor:
    """Make tokens already in the context less likely: positive scores are divided by `penalty`, negative
    ones multiplied (CTRL, https://arxiv.org/abs/1909.05858).

    `prompt_ignore_length` leaves the first positions of each row out: an int for all rows, or a (B,) tensor,
    which `generate` uses to skip each row's left padding.
    """

    penalty: float
    prompt_ignore_length: int | torch.Tensor | None = field(default=None, compare=False)

    def __post_init__(self):
        if not _is_number(self.penalty) or not self.penalty > 0:
            _reject("repetition_penalty", self.penalty, "a number > 0", "1.0 means no penalty.")
        ignore = self.prompt_ignore_length
        if isinstance(ignore, torch.Tensor):
            if ignore.dim() != 1:
                _reject("prompt_ignore_length", tuple(ignore.shape), "an int or a 1-D tensor with one entry per row")
        elif ignore is not None and (not _is_int(ignore) or ignore < 0):
            _reject("prompt_ignore_length", ignore, "an integer >= 0 or a 1-D tensor")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        vocab_size = scores.shape[-1]
        # Ids the scores cannot hold (an embedding larger than the lm_head) and ignored positions go to a
        # spare column that is dropped afterwards.
        ids = input_ids.clamp(max=vocab_size)
        ignore = self.prompt_ignore_length
        if ignore is not None:
            if isinstance(ignore, torch.Tensor):
                if ignore.shape[0] != batch:
                    raise ValueError(
                        f"prompt_ignore_length has {ignore.shape[0]} entries but input_ids has {batch} rows; "
                        "give one entry per row (after expanding for beams or return sequences)."
                    )
                ignore = ignore.to(input_ids.device)[:, None]
            positions = torch.arange(length, device=input_ids.device)
            ids = ids.masked_fill(positions < ignore, vocab_size)
        padded = torch.nn.functional.pad(scores, (0, 1))
        seen = padded.gather(1, ids)  # (B, T); a token seen twice is penalized once, scatter writes it twice
        penalized = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return padded.scatter(1, ids, penalized)[:, :vocab_size]


@dataclass(frozen=True)
class NoRepeatNGramLogitsProcessor:
    """Ban any token that would repeat an n-gram of `ngram_size` tokens already in the context (prompt included)."""

    ngram_size: int

    def __post_init__(self):
        if not _is_int(self.ngram_size) or self.ngram_size <= 0:
            _reject("no_repeat_ngram_size", self.ngram_size, "an integer > 0", "0 turns the n-gram ban off.")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n = self.ngram_size
        batch, length = input_ids.shape
        if length < n:
            return scores
        # Window i is the n-gram input_ids[:, i : i + n]. If its first n - 1 tokens equal the last n - 1
        # tokens of the context, the next token would repeat it, so its last token is banned.
        windows = length - n + 1
        repeats = torch.ones(batch, windows, dtype=torch.bool, device=input_ids.device)
        for offset in range(n - 1):
            repeats &= input_ids[:, offset : offset + windows] == input_ids[:, length - n + 1 + offset, None]
        completions = input_ids[:, n - 1 :]  # (B, windows): the last token of each window
        vocab_size = scores.shape[-1]
        # Windows that do not repeat, and ids past the vocabulary, land in a spare column.
        banned = torch.zeros(batch, vocab_size + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, torch.where(repeats, completions.clamp(max=vocab_size), vocab_size), True)
        return scores.masked_fill(banned[:, :vocab_size], -math.inf)


@dataclass(frozen=True)
class NoBadWordsLogitsProcessor:
    """Never generate the token sequences in `bad_words_ids`.

    A one-token bad word is always banned. A longer one bans its last token only where the context ends
    with the rest of it. A one-token bad word equal to an EOS id is dropped, so generation can still stop.
    """

    bad_words_ids: list[list[int]]
    eos_token_id: int | list[int] | None = None
    device: str | torch.device = field(default="cpu", compare=False)
    _single: torch.Tensor = field(init=False, repr=False, compare=False)
    # One (prefixes (G, L), last tokens (G,)) pair per prefix length L, so each length is matched at once.
    _by_prefix_length: tuple = field(init=False, repr=False, compare=False)
    _largest_id: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        words = self.bad_words_ids
        if (
            not isinstance(words, (list, tuple))
            or not words
            or not all(isinstance(word, (list, tuple)) and word for word in words)
            or not all(_is_int(token) and token >= 0 for word in words for token in word)
        ):
            _reject(
                "bad_words_ids", words, "a non-empty list of non-empty lists of token ids (integers >= 0)",
                "For words, use tokenizer(words, add_special_tokens=False).input_ids.",
            )
        eos = [] if self.eos_token_id is None else _token_id_list("eos_token_id", self.eos_token_id)
        words = [[int(token) for token in word] for word in words if not (len(word) == 1 and word[0] in eos)]
        single = [word[0] for word in words if len(word) == 1]
        groups = {}
        for word in words:
            if len(word) > 1:
                groups.setdefault(len(word) - 1, []).append(word)
        by_prefix_length = tuple(
            (
                torch.tensor([word[:-1] for word in group], device=self.device),
                torch.tensor([word[-1] for word in group], device=self.device),
            )
            for group in groups.values()
        )
        object.__setattr__(self, "_single", torch.tensor(single, dtype=torch.long, device=self.device))
        object.__setattr__(self, "_by_prefix_length", by_prefix_length)
        object.__setattr__(self, "_largest_id", max((token for word in words for token in word), default=-1))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        batch, vocab_size = scores.shape
        if self._largest_id >= vocab_size:
            raise ValueError(
                f"bad_words_ids contains token id {self._largest_id}, but the model scores only {vocab_size} "
                "tokens; bad words must be ids of this model's vocabulary."
            )
        banned = torch.zeros(batch, vocab_size + 1, dtype=torch.bool, device=scores.device)
        banned[:, self._single.to(scores.device)] = True
        for prefixes, last_tokens in self._by_prefix_length:
            prefix_length = prefixes.shape[1]
            if prefix_length > input_ids.shape[1]:
                continue
            context_end = input_ids[:, None, -prefix_length:]  # (B, 1, L)
            completes = (context_end == prefixes.to(input_ids.device)).all(dim=-1)  # (B, G)
            last_tokens = last_tokens.to(scores.device)
            banned.scatter_(1, torch.where(completes, last_tokens, vocab_size), True)
        return scores.masked_fill(banned[:, :vocab_size], -math.inf)


@dataclass(frozen=True)
class MinLengthLogitsProcessor:
    """Ban the EOS ids while the context (prompt included) is shorter than `min_length`."""

    min_length: int
    eos_token_id: int | list[int]
    device: str | torch.device = field(default="cpu", compare=False)
    _eos: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not _is_int(self.min_length) or self.min_length < 0:
            _reject("min_length", self.min_length, "an integer >= 0")
        eos = _token_id_list("eos_token_id", self.eos_token_id)
        object.__setattr__(self, "_eos", torch.tensor(eos, dtype=torch.long, device=self.device))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] >= self.min_length:
            return scores
        return scores.masked_fill(_vocab_mask(self._eos, scores), -math.inf)


@dataclass(frozen=True)
class MinNewTokensLengthLogitsProcessor:
    """Ban the EOS ids until `min_new_tokens` tokens follow the prompt of `prompt_length_to_skip` tokens."""

    prompt_length_to_skip: int
    min_new_tokens: int
    eos_token_id: int | list[int]
    device: str | torch.device = field(default="cpu", compare=False)
    _eos: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("prompt_length_to_skip", "min_new_tokens"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                _reject(name, value, "an integer >= 0")
        eos = _token_id_list("eos_token_id", self.eos_token_id)
        object.__setattr__(self, "_eos", torch.tensor(eos, dtype=torch.long, device=self.device))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] - self.prompt_length_to_skip >= self.min_new_tokens:
            return scores
        return scores.masked_fill(_vocab_mask(self._eos, scores), -math.inf)


@dataclass(frozen=True)
class SuppressTokensLogitsProcessor:
    """Never generate the ids in `suppress_tokens`."""

    suppress_tokens: list[int]
    device: str | torch.device = field(default="cpu", compare=False)
    _ids: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        ids = _token_id_list("suppress_tokens", self.suppress_tokens)
        object.__setattr__(self, "_ids", torch.tensor(ids, dtype=torch.long, device=self.device))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(_vocab_mask(self._ids, scores), -math.inf)


def build_processors(
    config, prompt_length: int, attention_mask: torch.Tensor | None = None, device: str | torch.device | None = None
) -> list:
    """The processors `config` asks for, in the reference's order; warpers only when `config.do_sample`.

    `prompt_length` is the prompt's length in tokens (with padding). `attention_mask`, one row per generated
    sequence (after expanding for beams), lets the repetition penalty skip each row's left padding. Options
    missing from `config` take the reference's defaults; an option set to None is off. Impossible values raise
    a ValueError even when the option would not be used (a sampling option while decoding greedily), except
    temperature, which greedy decoding ignores, so that temperature=0 keeps meaning greedy.
    """

    def option(name):
        return getattr(config, name, _DEFAULTS[name])

    if device is None:
        device = attention_mask.device if attention_mask is not None else "cpu"
    eos = option("eos_token_id")
    eos = None if eos is None else _token_id_list("eos_token_id", eos)
    processors = []

    penalty = option("repetition_penalty")
    if penalty is not None and penalty != 1.0:
        # Left padding is not part of the text, so it must not be penalized: skip up to each row's first real token.
        padding = (attention_mask != 0).int().argmax(dim=1) if attention_mask is not None else None
        processors.append(RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=padding))
    ngram_size = option("no_repeat_ngram_size")
    if ngram_size is not None and (not _is_int(ngram_size) or ngram_size < 0):
        _reject("no_repeat_ngram_size", ngram_size, "an integer >= 0", "0 turns the n-gram ban off.")
    if ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(ngram_size))
    bad_words = option("bad_words_ids")
    if bad_words is not None:
        processors.append(NoBadWordsLogitsProcessor(bad_words, eos, device=device))

    min_length, min_new_tokens = option("min_length"), option("min_new_tokens")
    for name, value in (("min_length", min_length), ("min_new_tokens", min_new_tokens)):
        if value is not None and (not _is_int(value) or value < 0):
            _reject(name, value, "an integer >= 0")
    if min_new_tokens is not None:
        # As in the reference, min_new_tokens takes precedence and restates min_length from the prompt.
        min_length = min_new_tokens + prompt_length
    if eos is not None and min_length:
        processors.append(MinLengthLogitsProcessor(min_length, eos, device=device))
    if eos is not None and min_new_tokens:
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_length, min_new_tokens, eos, device=device))
    suppress = option("suppress_tokens")
    if suppress is not None:
        processors.append(SuppressTokensLogitsProcessor(suppress, device=device))

    warpers = _build_warpers(option)
    if option("do_sample"):
        processors.extend(warpers)
    return processors


def _build_warpers(option) -> list:
    """The sampling warpers, in the reference's order (temperature first, so min-p sees the scaled scores)."""
    num_beams = option("num_beams") or 1
    eos = option("eos_token_id")
    # Beam sampling must keep a non-EOS continuation for every beam, so it keeps one token more than the EOS ids.
    if num_beams > 1:
        min_tokens_to_keep = 2 if eos is None else len(_token_id_list("eos_token_id", eos)) + 1
    else:
        min_tokens_to_keep = 1
    warpers = []
    temperature = option("temperature")
    # Greedy decoding ignores temperature, so temperature=0 (a common way to ask for greedy) is checked only
    # when sampling.
    if option("do_sample") and temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    top_k = option("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        _reject("top_k", top_k, "an integer >= 0", "0 turns top-k filtering off.")
    if top_k:
        warpers.append(TopKLogitsWarper(top_k, min_tokens_to_keep=min_tokens_to_keep))
    # top_p=1 and typical_p=1 keep every token, so they are left out, but built first to check their values.
    top_p = option("top_p")
    if top_p is not None:
        top_p_warper = TopPLogitsWarper(top_p, min_tokens_to_keep=min_tokens_to_keep)
        if top_p < 1.0:
            warpers.append(top_p_warper)
    min_p = option("min_p")
    if min_p is not None:
        warpers.append(MinPLogitsWarper(min_p, min_tokens_to_keep=min_tokens_to_keep))
    typical_p = option("typical_p")
    if typical_p is not None:
        typical_warper = TypicalLogitsWarper(typical_p, min_tokens_to_keep=min_tokens_to_keep)
        if typical_p < 1.0:
            warpers.append(typical_warper)
    return warpers


def apply_processors(processors: list, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Run `scores` through each processor in turn."""
    for processor in processors:
        scores = processor(input_ids, scores)
    return scores


def sample_next_token(
    scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The (B,) next token ids: the argmax of `scores`, or a draw from their softmax with `generator`.

    Without a generator the draw uses torch's global generator, as the reference does, so the same
    `torch.manual_seed` gives the reference's tokens.
    """
    if not do_sample:
        return scores.argmax(dim=-1)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
