"""Logits processors and sampling: each step of `generate` turns the model's scores into the next token here.

A processor is a `LogitsProcessor` called as `processor(input_ids, scores) -> scores`, where `input_ids` is
the (B, T) context so far (prompt and generated tokens) and `scores` the (B, V) next-token scores. Most are
small frozen dataclasses; the few that keep state between steps (a lazily built bias table, a model's cache)
are plain classes. They match the reference's processors bit for bit, so a processor here and its namesake in
`transformers` give the same scores on the same input. `build_processors(config, prompt_length, ...)` builds
the `LogitsProcessorList` once, in the reference's order: the processors that constrain tokens first, then the
user's own, then, when sampling, the warpers that reshape the distribution, then watermarking and
renormalization. `sample_next_token` picks the token: argmax, or a draw from the softmax.

Processors never modify `scores` in place; a filtered token gets `filter_value` (-inf), which the softmax
turns into probability 0.
"""

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .options import OPTIONS_BY_NAME, is_int, is_number


class LogitsProcessor:
    """The base of every processor: `__call__(input_ids, scores) -> scores`, as in the reference.

    Subclass it for a processor of your own and pass it to `generate(..., logits_processor=[...])`. A
    `__call__` that takes more arguments receives the keyword arguments given to `LogitsProcessorList`.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} subclasses LogitsProcessor but does not define "
            "__call__(self, input_ids, scores) -> scores; define it to turn the (B, V) scores into new ones."
        )


class LogitsWarper(LogitsProcessor):
    """The reference's former base for the processors used only when sampling (temperature, top-k, ...).

    Kept so that code subclassing `LogitsWarper` keeps working; it is a `LogitsProcessor` in every way.
    """


class LogitsProcessorList(list):
    """A list of processors that is itself a processor: calling it runs each in turn on the scores.

    Keyword arguments go to the processors whose `__call__` takes more than `(input_ids, scores)`; such a
    processor raises a ValueError when one of its extra arguments is missing.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        for processor in self:
            extra = _extra_arguments(processor)
            if not extra:
                scores = processor(input_ids, scores)
                continue
            missing = [name for name in extra if name not in kwargs]
            if missing:
                raise ValueError(
                    f"{type(processor).__name__} needs the keyword arguments {extra}, but {missing} were not "
                    "passed: call the LogitsProcessorList with them."
                )
            scores = processor(input_ids, scores, **kwargs)
        return scores


def _reject(name: str, value, expected: str, hint: str = "") -> None:
    raise ValueError(f"{name} must be {expected}, got {value!r}.{' ' + hint if hint else ''}")


def _check_min_tokens_to_keep(value) -> None:
    if not is_int(value) or value < 1:
        _reject("min_tokens_to_keep", value, "an integer >= 1")


def _token_id_list(name: str, ids) -> list[int]:
    """An int, a list of ints or a 1-D tensor of ids, as a list of non-negative ints."""
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    elif is_int(ids):
        ids = [ids]
    if not isinstance(ids, (list, tuple)) or not all(is_int(i) and i >= 0 for i in ids):
        _reject(name, ids, "a token id or a list of token ids (integers >= 0)")
    return [int(i) for i in ids]


def _banned(scores: torch.Tensor, token_ids: torch.Tensor, largest: int | None = None) -> torch.Tensor:
    """`scores` with -inf at `token_ids` in every row; ids past the vocabulary are ignored.

    index_fill writes the few ids into a copy, where a vocabulary-wide mask and masked_fill cost four times as much
    (SmolLM2's 49152 ids, one row, one thread: 15 against 62 us), paid at every step by min_new_tokens' processors.
    `largest`, the largest id when the caller knows it, spares ids that are all in the vocabulary (EOS ids) the
    filter, as ids on the scores' device are spared the move: three small operations a step each, which min_length
    and min_new_tokens' two processors paid at every decoding step.
    """
    if token_ids.device != scores.device:
        token_ids = token_ids.to(scores.device)
    if largest is None or largest >= scores.shape[-1]:
        token_ids = token_ids[token_ids < scores.shape[-1]]
    return scores.index_fill(-1, token_ids, -math.inf)


_EXTRA_ARGUMENTS = {}  # a processor class's __call__ -> the names it takes after (input_ids, scores)


def _extra_arguments(processor) -> list[str]:
    """The parameters of `processor.__call__` after `(input_ids, scores)`, read once per class."""
    function = getattr(processor.__call__, "__func__", None)
    if function is None:  # not a method: read it every time
        return list(inspect.signature(processor.__call__).parameters)[2:]
    if function not in _EXTRA_ARGUMENTS:
        _EXTRA_ARGUMENTS[function] = list(inspect.signature(processor.__call__).parameters)[2:]
    return _EXTRA_ARGUMENTS[function]


@dataclass(frozen=True)
class TemperatureLogitsWarper(LogitsWarper):
    """Divide the scores by `temperature`: below 1 sharpens the distribution, above 1 flattens it."""

    temperature: float

    def __post_init__(self):
        if not is_number(self.temperature) or not self.temperature > 0:
            _reject(
                "temperature", self.temperature, "a number > 0",
                "For greedy decoding pass do_sample=False instead of temperature=0.",
            )

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


@dataclass(frozen=True)
class TopKLogitsWarper(LogitsWarper):
    """Keep the `top_k` highest scores (every token tied with the k-th one included), filter the rest."""

    top_k: int
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not is_int(self.top_k) or self.top_k <= 0:
            _reject("top_k", self.top_k, "an integer > 0", "Pass top_k=0 to generate() to turn top-k filtering off.")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(max(self.top_k, self.min_tokens_to_keep), scores.shape[-1])
        kth_best = scores.topk(k, dim=-1).values[:, -1:]  # (B, 1)
        return scores.masked_fill(scores < kth_best, self.filter_value)


@dataclass(frozen=True)
class TopPLogitsWarper(LogitsWarper):
    """Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p`, filter the rest."""

    top_p: float
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not is_number(self.top_p) or not 0 < self.top_p <= 1:
            _reject("top_p", self.top_p, "a number in (0, 1]", "Pass top_p=1.0 to turn nucleus filtering off.")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cut = self._cut_among_few(scores)
        if cut is not None:
            return cut
        # Accumulate from the least likely token up: the tail whose mass stays within 1 - top_p is dropped.
        # (Summing in this order, as the reference does, decides the boundary token the same way.)
        ascending, order = torch.sort(scores, descending=False)
        tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = tail_mass <= 1 - self.top_p
        drop_sorted[:, -self.min_tokens_to_keep :] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return scores.masked_fill(drop, self.filter_value)

    def _cut_among_few(self, scores: torch.Tensor) -> torch.Tensor | None:
        """The same cut where a filter before this one (top_k's 50 of a vocabulary) left few scores finite, sorting
        only those: sorting all of them took ~1.6 ms a SmolLM2 token, as long as half its int4 step. The sorted
        array is the full sort's (the -inf scores first, then the finite ones in order), so its softmax and sums are
        bit for bit the reference's, and the dropped scores are the same smallest ones; None where they might not
        be: a cut between equal scores (whose order the full sort decides), rows with unequal counts of finite
        scores, a NaN or +inf, a filter value other than -inf, or more finite scores than an eighth."""
        rows, width = scores.shape
        if scores.device.type != "cpu" or not rows:  # its counts are read on the host each token
            return None
        finite = torch.isfinite(scores)
        counts = finite.sum(dim=-1)
        count = int(counts[0])
        if (self.filter_value != -math.inf or not self.min_tokens_to_keep <= count or 8 * count > width
                or not bool((counts == count).all()) or bool(((scores != -math.inf) != finite).any())):
            return None
        columns = finite.nonzero()[:, 1].view(rows, count)
        values, order = scores[finite].view(rows, count).sort(dim=-1)
        ascending = scores.new_full(scores.shape, -math.inf)
        ascending[:, width - count:] = values
        drop_sorted = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - self.top_p
        drop_sorted[:, -self.min_tokens_to_keep :] = False
        dropped = drop_sorted[:, width - count:]  # a prefix of each row's finite scores
        cut = dropped.sum(dim=-1, keepdim=True)
        if count > 1:  # one finite score is kept whole
            first_kept = cut.clamp(1, count - 1)
            tied = values.gather(1, first_kept - 1) == values.gather(1, first_kept)
            if bool(((cut > 0) & (cut < count) & tied).any()):
                return None
        drop = torch.zeros_like(finite).scatter_(1, columns.gather(1, order), dropped)
        return scores.masked_fill(drop, self.filter_value)


@dataclass(frozen=True)
class MinPLogitsWarper(LogitsWarper):
    """Filter tokens less likely than `min_p` times the most likely token's probability."""

    min_p: float
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not is_number(self.min_p) or not 0 <= self.min_p <= 1:
            _reject("min_p", self.min_p, "a number in [0, 1]")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = scores.softmax(dim=-1)
        drop = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        most_likely = probs.topk(min(self.min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
        drop.scatter_(1, most_likely, False)
        return scores.masked_fill(drop, self.filter_value)


@dataclass(frozen=True)
class TypicalLogitsWarper(LogitsWarper):
    """Typical sampling: keep the tokens whose surprise is closest to the entropy, up to `mass` probability."""

    mass: float = 0.9
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not is_number(self.mass) or not 0 < self.mass <= 1:
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
class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Make tokens already in the context less likely: positive scores are divided by `penalty`, negative
    ones multiplied (CTRL, https://arxiv.org/abs/1909.05858).

    `prompt_ignore_length` leaves the first positions of each row out: an int for all rows, or a (B,) tensor,
    which `generate` uses to skip each row's left padding.
    """

    penalty: float
    prompt_ignore_length: int | torch.Tensor | None = field(default=None, compare=False)

    def __post_init__(self):
        if not is_number(self.penalty) or not self.penalty > 0:
            _reject("repetition_penalty", self.penalty, "a number > 0", "1.0 means no penalty.")
        ignore = self.prompt_ignore_length
        if isinstance(ignore, torch.Tensor):
            if ignore.dim() != 1:
                _reject("prompt_ignore_length", tuple(ignore.shape), "an int or a 1-D tensor with one entry per row")
        elif ignore is not None and (not is_int(ignore) or ignore < 0):
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
class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban any token that would repeat an n-gram of `ngram_size` tokens already in the context (prompt included)."""

    ngram_size: int

    def __post_init__(self):
        if not is_int(self.ngram_size) or self.ngram_size <= 0:
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
class NoBadWordsLogitsProcessor(LogitsProcessor):
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
            or not all(is_int(token) and token >= 0 for word in words for token in word)
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

    @property
    def bad_word_ids(self) -> list[list[int]]:
        """The reference's attribute name for `bad_words_ids`."""
        return self.bad_words_ids

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
class MinLengthLogitsProcessor(LogitsProcessor):
    """Ban the EOS ids while the context (prompt included) is shorter than `min_length`."""

    min_length: int
    eos_token_id: int | list[int]
    device: str | torch.device = field(default="cpu", compare=False)
    _eos: torch.Tensor = field(init=False, repr=False, compare=False)
    _largest_eos: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not is_int(self.min_length) or self.min_length < 0:
            _reject("min_length", self.min_length, "an integer >= 0")
        eos = _token_id_list("eos_token_id", self.eos_token_id)
        object.__setattr__(self, "_eos", torch.tensor(eos, dtype=torch.long, device=self.device))
        object.__setattr__(self, "_largest_eos", max(eos, default=-1))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] >= self.min_length:
            return scores
        return _banned(scores, self._eos, self._largest_eos)


@dataclass(frozen=True)
class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """Ban the EOS ids until `min_new_tokens` tokens follow the prompt of `prompt_length_to_skip` tokens."""

    prompt_length_to_skip: int
    min_new_tokens: int
    eos_token_id: int | list[int]
    device: str | torch.device = field(default="cpu", compare=False)
    _eos: torch.Tensor = field(init=False, repr=False, compare=False)
    _largest_eos: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("prompt_length_to_skip", "min_new_tokens"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                _reject(name, value, "an integer >= 0")
        eos = _token_id_list("eos_token_id", self.eos_token_id)
        object.__setattr__(self, "_eos", torch.tensor(eos, dtype=torch.long, device=self.device))
        object.__setattr__(self, "_largest_eos", max(eos, default=-1))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] - self.prompt_length_to_skip >= self.min_new_tokens:
            return scores
        return _banned(scores, self._eos, self._largest_eos)


@dataclass(frozen=True)
class SuppressTokensLogitsProcessor(LogitsProcessor):
    """Never generate the ids in `suppress_tokens`."""

    suppress_tokens: list[int]
    device: str | torch.device = field(default="cpu", compare=False)
    _ids: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        ids = _token_id_list("suppress_tokens", self.suppress_tokens)
        object.__setattr__(self, "_ids", torch.tensor(ids, dtype=torch.long, device=self.device))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return _banned(scores, self._ids)


@dataclass(frozen=True)
class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """Ban the ids in `begin_suppress_tokens` at the first generated position only (where the context has
    `begin_index` tokens), e.g. so that a blank or EOS never opens the answer."""

    begin_suppress_tokens: torch.Tensor = field(compare=False)  # tensors cannot be compared to one bool
    begin_index: int
    device: str | torch.device = field(default="cpu", compare=False)

    def __post_init__(self):
        ids = _token_id_list("begin_suppress_tokens", self.begin_suppress_tokens)
        object.__setattr__(self, "begin_suppress_tokens", torch.tensor(ids, dtype=torch.long, device=self.device))
        if not is_int(self.begin_index) or self.begin_index < 0:
            _reject("begin_index", self.begin_index, "an integer >= 0 (the prompt's length)")

    def set_begin_index(self, begin_index: int) -> None:
        """Move the suppressed position, as the reference's method does (a model that forces a prefix needs it)."""
        object.__setattr__(self, "begin_index", begin_index)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return _banned(scores, self.begin_suppress_tokens)


@dataclass(frozen=True)
class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """Make `bos_token_id` the only possible token when the context holds one token (the decoder start)."""

    bos_token_id: int

    def __post_init__(self):
        if not is_int(self.bos_token_id) or self.bos_token_id < 0:
            _reject("forced_bos_token_id", self.bos_token_id, "a token id (an integer >= 0)")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] != 1:
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.bos_token_id] = 0
        return forced


@dataclass(frozen=True)
class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """Make the EOS ids the only possible tokens at the last position allowed by `max_length`.

    With several EOS ids each gets score 0, so the first of them wins under argmax.
    """

    max_length: int
    eos_token_id: int | list[int] | torch.Tensor = field(compare=False)
    device: str | torch.device = field(default="cpu", compare=False)

    def __post_init__(self):
        eos = _token_id_list("eos_token_id", self.eos_token_id)
        object.__setattr__(self, "eos_token_id", torch.tensor(eos, dtype=torch.long, device=self.device))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] != self.max_length - 1:
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.eos_token_id.to(scores.device)] = 0
        return forced


@dataclass(frozen=True)
class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """Replace NaN scores by 0 and infinite ones by the largest finite value of their sign, so sampling cannot
    fail on them. Slower than needed for healthy models: use it only to work around broken numerics."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        finfo = torch.finfo(scores.dtype)
        cleaned = torch.where(scores.isnan(), 0.0, scores)
        cleaned = torch.where(scores == math.inf, finfo.max, cleaned)
        return torch.where(scores == -math.inf, finfo.min, cleaned)


@dataclass(frozen=True)
class LogitNormalization(LogitsProcessor):
    """Turn the scores into log-probabilities (log-softmax), so that beam search compares normalized scores
    after the other processors changed them. Always the last processor."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.log_softmax(dim=-1)


@dataclass(frozen=True)
class ExponentialDecayLengthPenalty(LogitsProcessor):
    """Raise the EOS scores exponentially once the sequence passes a length, so it ends soon but not abruptly.

    `exponential_decay_length_penalty` is `(start_index, decay_factor)`: from `start_index` generated tokens
    on, each EOS score grows by |score| * (decay_factor ** tokens_past_start - 1).
    """

    exponential_decay_length_penalty: tuple[int, float]
    eos_token_id: int | list[int] | torch.Tensor = field(compare=False)
    input_ids_seq_length: int
    regulation_start: int = field(init=False)
    regulation_factor: float = field(init=False)

    def __post_init__(self):
        pair = self.exponential_decay_length_penalty
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not is_int(pair[0]) or not is_number(pair[1]):
            _reject("exponential_decay_length_penalty", pair, "a pair (start_index: int, decay_factor: float)")
        if self.eos_token_id is None:
            raise ValueError("exponential_decay_length_penalty raises the EOS scores, so it needs eos_token_id.")
        eos = _token_id_list("eos_token_id", self.eos_token_id)
        object.__setattr__(self, "eos_token_id", torch.tensor(eos, dtype=torch.long))
        object.__setattr__(self, "regulation_start", pair[0] + self.input_ids_seq_length)
        object.__setattr__(self, "regulation_factor", pair[1])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        steps_past_start = input_ids.shape[-1] - self.regulation_start
        if steps_past_start <= 0:
            return scores
        eos = self.eos_token_id.to(scores.device)
        eos_scores = scores[:, eos]
        # Scaling |score| works for negative scores too; infinite ones (a banned EOS) stay as they are.
        penalty = eos_scores.abs() * (pow(self.regulation_factor, steps_past_start) - 1)
        penalties = torch.zeros_like(scores)
        penalties[:, eos] = penalty.masked_fill(~eos_scores.isfinite(), 0.0)
        return scores + penalties


@dataclass(frozen=True)
class EpsilonLogitsWarper(LogitsWarper):
    """Epsilon sampling: filter tokens whose probability is below `epsilon` (https://arxiv.org/abs/2210.15191)."""

    epsilon: float
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1

    def __post_init__(self):
        if not is_number(self.epsilon) or not 0 < self.epsilon < 1:
            _reject("epsilon_cutoff", self.epsilon, "a number in (0, 1)", "0 turns epsilon sampling off.")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)
        object.__setattr__(self, "epsilon", float(self.epsilon))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        drop = scores.softmax(dim=-1) < self.epsilon
        return scores.masked_fill(drop & _below_top(scores, self.min_tokens_to_keep), self.filter_value)


@dataclass(frozen=True)
class EtaLogitsWarper(LogitsWarper):
    """Eta sampling: filter tokens below min(epsilon, sqrt(epsilon) * exp(-entropy)), a cutoff that loosens
    when the distribution is flat (https://arxiv.org/abs/2210.15191)."""

    epsilon: float
    filter_value: float = -math.inf
    min_tokens_to_keep: int = 1
    device: str | torch.device = field(default="cpu", compare=False)

    def __post_init__(self):
        if not is_number(self.epsilon) or not 0 < self.epsilon < 1:
            _reject("eta_cutoff", self.epsilon, "a number in (0, 1)", "0 turns eta sampling off.")
        _check_min_tokens_to_keep(self.min_tokens_to_keep)
        # Kept as a float32 tensor: the cutoff is computed in float32, as in the reference.
        object.__setattr__(self, "epsilon", torch.tensor(float(self.epsilon), device=self.device))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        entropy = torch.distributions.Categorical(logits=scores).entropy()
        epsilon = self.epsilon.to(scores.device)
        eta = torch.min(epsilon, epsilon.sqrt() * torch.exp(-entropy))[:, None]
        drop = scores.softmax(dim=-1) < eta
        return scores.masked_fill(drop & _below_top(scores, self.min_tokens_to_keep), self.filter_value)


@dataclass(frozen=True)
class TopHLogitsWarper(LogitsWarper):
    """Top-H sampling: among the 100 most likely tokens, keep the most likely ones while their share of the
    entropy stays within `top_h` times the entropy of those 100 (the most likely token is always kept)."""

    top_h: float
    filter_value: float = -math.inf
    top_n: int = field(default=100, init=False)  # how many top tokens the entropy is measured over

    def __post_init__(self):
        if not is_number(self.top_h) or not 0 < self.top_h <= 1:
            _reject("top_h", self.top_h, "a number in (0, 1]")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top_scores, top_ids = scores.topk(min(self.top_n, scores.shape[-1]), dim=-1)  # sorted, most likely first
        distribution = torch.distributions.Categorical(logits=top_scores)
        probs = distribution.probs
        threshold = (distribution.entropy() * self.top_h)[:, None]
        keep_sorted = torch.cumsum(-probs * torch.log(probs), dim=-1) <= threshold
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top_ids, keep_sorted)
        return scores.masked_fill(~keep, self.filter_value)


def _accepts(function, name: str) -> bool:
    """Whether `function` (a model's forward, or any callable) takes the keyword argument `name`."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _below_top(scores: torch.Tensor, min_tokens_to_keep: int) -> torch.Tensor:
    """(B, V): True for tokens scored below the `min_tokens_to_keep`-th best, which a filter may drop."""
    kth_best = scores.topk(min(min_tokens_to_keep, scores.shape[-1]), dim=-1).values[:, -1:]
    return scores < kth_best


@dataclass(frozen=True)
class EncoderRepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Make the tokens of the encoder input (for a decoder-only model: the prompt) MORE likely when
    `penalty` > 1: the opposite of the repetition penalty, to keep the answer close to the source.

    As in the reference, the attribute `penalty` holds 1 / penalty.
    """

    penalty: float
    encoder_input_ids: torch.Tensor = field(compare=False)

    def __post_init__(self):
        if not is_number(self.penalty) or not self.penalty > 0:
            _reject("encoder_repetition_penalty", self.penalty, "a number > 0", "1.0 means no penalty.")
        object.__setattr__(self, "penalty", 1 / self.penalty)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        source = self.encoder_input_ids.to(scores.device)
        if scores.shape[0] > source.shape[0]:  # beams or return sequences: each source row serves several rows
            source = source.repeat_interleave(scores.shape[0] // source.shape[0], dim=0)
        seen = scores.gather(1, source)
        favoured = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, source, favoured)


class EncoderNoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban any token that would complete an n-gram of `encoder_ngram_size` tokens found in the encoder input
    (for a decoder-only model: the prompt), so the answer does not copy the source verbatim."""

    def __init__(self, encoder_ngram_size: int, encoder_input_ids: torch.Tensor):
        if not is_int(encoder_ngram_size) or encoder_ngram_size <= 0:
            _reject("encoder_no_repeat_ngram_size", encoder_ngram_size, "an integer > 0", "0 turns it off.")
        if encoder_input_ids.dim() == 1:
            encoder_input_ids = encoder_input_ids[None]
        self.ngram_size = encoder_ngram_size
        self.batch_size = encoder_input_ids.shape[0]
        # One dict per source row: the first n - 1 tokens of each n-gram -> the tokens that completed it.
        self.generated_ngrams = [_ngram_completions(row, encoder_ngram_size) for row in encoder_input_ids.tolist()]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows_per_source = scores.shape[0] // self.batch_size
        length = input_ids.shape[-1]
        start = length + 1 - self.ngram_size  # the context's last n - 1 tokens (Python slicing, as the reference)
        processed = scores.clone()
        for row, context in enumerate(input_ids.tolist()):
            banned = self.generated_ngrams[row // rows_per_source].get(tuple(context[start:length]), [])
            processed[row, banned] = -math.inf
        return processed


def _ngram_completions(tokens: list[int], n: int) -> dict[tuple[int, ...], list[int]]:
    completions = {}
    for i in range(len(tokens) - n + 1):
        completions.setdefault(tuple(tokens[i : i + n - 1]), []).append(tokens[i + n - 1])
    return completions


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """Add a bias to the score of a token, or of the last token of a sequence when the context ends with the
    rest of it: `sequence_bias` is a list of `[token_ids, bias]` pairs (or the older dict `{tuple: bias}`).

    Positive biases make a sequence more likely, negative ones less (-inf bans it). The bias tables are built at
    the first call, when the vocabulary size is known.
    """

    def __init__(self, sequence_bias: list[list] | dict[tuple[int, ...], float]):
        self.sequence_bias = _sequence_bias_dict(sequence_bias)
        self.length_1_bias = None
        self.multi_token_biases = None  # one (prefixes (G, L), last tokens (G,), biases (G,)) per prefix length L
        self.prepared_bias_variables = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.prepared_bias_variables:
            self._prepare_bias_variables(scores)
        bias = torch.zeros_like(scores) + self.length_1_bias
        for prefixes, last_tokens, biases in self.multi_token_biases:
            if prefixes.shape[1] > input_ids.shape[1]:
                continue  # the context is shorter than the prefix: it cannot end with it
            ends_with_prefix = (input_ids[:, None, -prefixes.shape[1] :] == prefixes).all(dim=-1)  # (B, G)
            bias.index_add_(1, last_tokens, torch.where(ends_with_prefix, biases, 0.0).to(bias.dtype))
        return scores + bias

    def _prepare_bias_variables(self, scores: torch.Tensor) -> None:
        vocab_size = scores.shape[-1]
        outside = [token for sequence in self.sequence_bias for token in sequence if token >= vocab_size]
        if outside:
            raise ValueError(
                f"sequence_bias names token ids {outside}, but the model scores only {vocab_size} tokens; "
                "bias ids of this model's vocabulary."
            )
        device = scores.device
        self.length_1_bias = torch.zeros(vocab_size, dtype=torch.float, device=device)
        single = {sequence[0]: bias for sequence, bias in self.sequence_bias.items() if len(sequence) == 1}
        if single:
            self.length_1_bias[list(single)] = torch.tensor(list(single.values()), device=device)
        groups = {}
        for sequence, bias in self.sequence_bias.items():
            if len(sequence) > 1:
                groups.setdefault(len(sequence) - 1, []).append((sequence, bias))
        self.multi_token_biases = [
            (
                torch.tensor([sequence[:-1] for sequence, _ in group], device=device),
                torch.tensor([sequence[-1] for sequence, _ in group], device=device),
                torch.tensor([bias for _, bias in group], dtype=torch.float, device=device),
            )
            for group in groups.values()
        ]
        self.prepared_bias_variables = True


def _sequence_bias_dict(sequence_bias) -> dict[tuple[int, ...], float]:
    """`[[ids, bias], ...]` or `{tuple(ids): bias}` as a dict, checked as the reference checks it."""
    expected = "a non-empty list of [token_ids, bias] pairs (token ids >= 0, bias a float)"

    def valid(ids, bias) -> bool:
        return len(ids) > 0 and all(is_int(token) and token >= 0 for token in ids) and isinstance(bias, float)

    if isinstance(sequence_bias, dict) and sequence_bias:
        if not all(isinstance(ids, tuple) and valid(ids, bias) for ids, bias in sequence_bias.items()):
            _reject("sequence_bias", sequence_bias, "a dict of {tuple of token ids: float bias} or " + expected)
        return {tuple(int(t) for t in ids): bias for ids, bias in sequence_bias.items()}
    if isinstance(sequence_bias, (list, tuple)) and sequence_bias:
        pairs = []
        for pair in sequence_bias:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], list)
                    and valid(pair[0], pair[1])):
                _reject("sequence_bias", sequence_bias, expected, "For example [[[5, 6], -10.0], [[7], 2.5]].")
            pairs.append((tuple(int(t) for t in pair[0]), pair[1]))
        return dict(pairs)
    _reject("sequence_bias", sequence_bias, expected)


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Allow only the tokens `prefix_allowed_tokens_fn(batch_id, sentence)` returns for each row: constrained
    generation (e.g. entity names). `num_beams` rows (beams or return sequences) share each batch id.

    When every allowed token of a prompt's rows already scores -inf, the allowed tokens get score 0 so that the
    constraint still holds.
    """

    def __init__(self, prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]], num_beams: int):
        if not callable(prefix_allowed_tokens_fn):
            _reject("prefix_allowed_tokens_fn", prefix_allowed_tokens_fn,
                    "a function (batch_id, input_ids) -> list of allowed token ids")
        if not is_int(num_beams) or num_beams < 1:
            _reject("num_beams", num_beams, "an integer >= 1")
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        allowed = torch.full_like(scores, -math.inf)
        for row in range(input_ids.shape[0]):
            batch_id = row // self._num_beams
            tokens = self._prefix_allowed_tokens_fn(batch_id, input_ids[row])
            if len(tokens) == 0:
                raise ValueError(
                    f"prefix_allowed_tokens_fn returned no allowed token for batch id {batch_id}, so the "
                    "constraint cannot be met: it must return at least one token id for every prefix."
                )
            allowed[row, tokens] = 0
        processed = scores + allowed
        all_banned = processed.amax(dim=-1).isneginf().view(-1, self._num_beams).all(dim=-1, keepdim=True)
        return torch.where(all_banned.repeat_interleave(self._num_beams, dim=0), allowed, processed)


@dataclass(frozen=True)
class ClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance over a doubled batch: the first half of `scores` is conditioned on the prompt,
    the second half unconditioned; returns uncond + (cond - uncond) * guidance_scale, one row per prompt."""

    guidance_scale: float

    def __post_init__(self):
        if not is_number(self.guidance_scale) or not self.guidance_scale > 1:
            _reject("guidance_scale", self.guidance_scale, "a number > 1 for this processor",
                    "A scale of 1 means no guidance.")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != 2 * input_ids.shape[0]:
            raise ValueError(
                f"scores must have twice the rows of input_ids (conditional rows, then unconditional ones), got "
                f"{scores.shape[0]} score rows for {input_ids.shape[0]} input rows."
            )
        conditional, unconditional = scores.split(scores.shape[0] // 2, dim=0)
        return unconditional + (conditional - unconditional) * self.guidance_scale


class UnbatchedClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance that runs `model` itself on a negative (unconditional) prompt.

    The negative branch is `unconditional_ids` (default: the prompt's last token) followed by the generated
    tokens; its next-token log-probabilities U guide the prompt's ones S as U + guidance_scale * (S - U).
    A scale above 1 pushes away from the negative prompt, below 1 towards it. The branch keeps its own KV cache
    (`use_cache=True`) so each step feeds only the newest token. Returns log-probabilities.
    """

    def __init__(
        self,
        guidance_scale: float,
        model,
        unconditional_ids: torch.Tensor | None = None,
        unconditional_attention_mask: torch.Tensor | None = None,
        use_cache: bool = True,
    ):
        if not is_number(guidance_scale):
            _reject("guidance_scale", guidance_scale, "a number (1 means no guidance)")
        if model is None or not callable(model):
            _reject("model", model, "the model being generated from, to score the negative prompt")
        self.guidance_scale = guidance_scale
        self.model = model
        # The same keys as the reference's, so code that reads this dict keeps working.
        self.unconditional_context = {
            "input_ids": unconditional_ids,  # the negative branch so far
            "attention_mask": unconditional_attention_mask,
            "use_cache": use_cache,
            "cache": None,
            "first_pass": True,
        }

    def get_unconditional_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The model's (B, V) next-token logits for the negative branch, extended by the newest token."""
        from .cache import DynamicCache

        context = self.unconditional_context
        if context["first_pass"]:
            if context["input_ids"] is None:
                context["input_ids"] = input_ids[:, -1:]
            if context["attention_mask"] is None:
                context["attention_mask"] = torch.ones_like(context["input_ids"], dtype=torch.long)
            context["first_pass"] = False
            # A model that cannot take a cache (a plain function, say) sees the whole branch at every step.
            if context["use_cache"] and _accepts(getattr(self.model, "forward", self.model), "past_key_values"):
                context["cache"] = DynamicCache()
            new_ids = context["input_ids"]
        else:
            newest = input_ids[:, -1:]
            context["input_ids"] = torch.cat([context["input_ids"], newest], dim=1)
            context["attention_mask"] = torch.cat(
                [context["attention_mask"], torch.ones_like(newest, dtype=torch.long)], dim=1
            )
            new_ids = newest if context["cache"] is not None else context["input_ids"]
        options = {"attention_mask": context["attention_mask"].to(input_ids.device)}
        if context["cache"] is not None:
            options["past_key_values"] = context["cache"]
        if _accepts(getattr(self.model, "forward", self.model), "logits_to_keep"):
            options["logits_to_keep"] = 1
        output = self.model(new_ids.to(input_ids.device), **options)
        return output.logits[:, -1]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.log_softmax(dim=-1)
        if self.guidance_scale == 1:
            return scores
        unconditional = self.get_unconditional_logits(input_ids).float().log_softmax(dim=-1)
        return self.guidance_scale * (scores - unconditional) + unconditional


def build_processors(
    config,
    prompt_length: int,
    attention_mask: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    *,
    logits_processor: list | None = None,
    prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]] | None = None,
    negative_prompt_ids: torch.Tensor | None = None,
    negative_prompt_attention_mask: torch.Tensor | None = None,
    model=None,
    encoder_input_ids: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> LogitsProcessorList:
    """The processors `config` asks for, in the reference's order, as a `LogitsProcessorList`.

    Positional parameters:
    - `config`: a GenerationConfig (resolved or not) or any object with its option names; options it lacks take
      their defaults from `options.OPTIONS` (the reference's), an option set to None is off.
    - `prompt_length`: the prompt's length in tokens (with padding).
    - `attention_mask`: one row per generated sequence (after expanding for beams / return sequences); lets the
      repetition penalty skip each row's left padding.
    - `device`: where the processors keep their tensors (default: the mask's device, else the CPU).

    Keyword-only parameters (what `generate` passes through from its own keyword arguments):
    - `logits_processor`: the user's processors (a list or LogitsProcessorList). As in the reference, a user
      processor of the same type as a built-in one replaces it at its place (with a warning); the others run
      after the built-in processors and before the sampling warpers.
    - `prefix_allowed_tokens_fn`: `fn(batch_id, input_ids_row) -> list of allowed ids`; adds a
      PrefixConstrainedLogitsProcessor over max(num_beams, num_return_sequences) rows per prompt.
    - `negative_prompt_ids`, `negative_prompt_attention_mask`: the negative prompt of classifier-free guidance
      (used when config.guidance_scale is set and != 1; default negative prompt: the prompt's last token).
    - `model`: the model being generated from; needed by guidance_scale (it scores the negative prompt, with its
      own cache) and gives the vocabulary size for watermarking.
    - `encoder_input_ids`: the (B, T) prompt ids, unexpanded (the encoder input of the reference's naming);
      needed by encoder_repetition_penalty and encoder_no_repeat_ngram_size.
    - `vocab_size`: the vocabulary size for watermarking when `model` is not given.

    Order: guidance, sequence bias, encoder repetition penalty, repetition penalty, n-gram bans, bad words, min
    lengths, prefix constraint, forced BOS/EOS, inf/nan removal, exponential decay, suppressed tokens; then the
    user's processors; then, when `config.do_sample`, the warpers (temperature, top-h, top-k, top-p, min-p,
    typical, epsilon, eta); then watermarking; then renormalization. Impossible values raise a ValueError even
    when the option would not be used (a sampling option while decoding greedily), except temperature, which
    greedy decoding ignores, so that temperature=0 keeps meaning greedy.
    """

    def option(name):
        return getattr(config, name, OPTIONS_BY_NAME[name].default)

    if device is None:
        device = attention_mask.device if attention_mask is not None else "cpu"
    eos = option("eos_token_id")
    eos = None if eos is None else _token_id_list("eos_token_id", eos)
    processors = LogitsProcessorList()

    guidance_scale = option("guidance_scale")
    if guidance_scale is not None and guidance_scale != 1:
        if model is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} runs the model on the negative prompt: pass model=... to "
                "build_processors (generate passes itself)."
            )
        processors.append(UnbatchedClassifierFreeGuidanceLogitsProcessor(
            guidance_scale, model, unconditional_ids=negative_prompt_ids,
            unconditional_attention_mask=negative_prompt_attention_mask, use_cache=option("use_cache") is not False,
        ))
    sequence_bias = option("sequence_bias")
    if sequence_bias is not None:
        processors.append(SequenceBiasLogitsProcessor(sequence_bias))
    # The reference ignores the encoder options (with a warning) when there is no encoder input.
    has_encoder_ids = (
        encoder_input_ids is not None and encoder_input_ids.dim() == 2 and not bool((encoder_input_ids < 0).any())
    )
    encoder_penalty = option("encoder_repetition_penalty")
    if encoder_penalty is not None and encoder_penalty != 1.0:
        if has_encoder_ids:
            processors.append(EncoderRepetitionPenaltyLogitsProcessor(encoder_penalty, encoder_input_ids))
        else:
            warnings.warn("encoder_repetition_penalty needs the prompt ids (encoder_input_ids); it is ignored.",
                          UserWarning, stacklevel=2)

    penalty = option("repetition_penalty")
    if penalty is not None and penalty != 1.0:
        # Left padding is not part of the text, so it must not be penalized: skip up to each row's first real token.
        padding = (attention_mask != 0).int().argmax(dim=1) if attention_mask is not None else None
        processors.append(RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=padding))
    ngram_size = option("no_repeat_ngram_size")
    if ngram_size is not None and (not is_int(ngram_size) or ngram_size < 0):
        _reject("no_repeat_ngram_size", ngram_size, "an integer >= 0", "0 turns the n-gram ban off.")
    if ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(ngram_size))
    encoder_ngram_size = option("encoder_no_repeat_ngram_size")
    if encoder_ngram_size is not None and encoder_ngram_size > 0:
        if has_encoder_ids:
            processors.append(EncoderNoRepeatNGramLogitsProcessor(encoder_ngram_size, encoder_input_ids))
        else:
            warnings.warn("encoder_no_repeat_ngram_size needs the prompt ids (encoder_input_ids); it is ignored.",
                          UserWarning, stacklevel=2)
    bad_words = option("bad_words_ids")
    if bad_words is not None:
        processors.append(NoBadWordsLogitsProcessor(bad_words, eos, device=device))

    min_length, min_new_tokens = option("min_length"), option("min_new_tokens")
    for name, value in (("min_length", min_length), ("min_new_tokens", min_new_tokens)):
        if value is not None and (not is_int(value) or value < 0):
            _reject(name, value, "an integer >= 0")
    if min_new_tokens is not None:
        # As in the reference, min_new_tokens takes precedence and restates min_length from the prompt.
        min_length = min_new_tokens + prompt_length
    if eos is not None and min_length:
        processors.append(MinLengthLogitsProcessor(min_length, eos, device=device))
    if eos is not None and min_new_tokens:
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_length, min_new_tokens, eos, device=device))
    if prefix_allowed_tokens_fn is not None:
        rows_per_prompt = max(option("num_beams") or 1, option("num_return_sequences") or 1)
        processors.append(PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, rows_per_prompt))
    forced_bos = option("forced_bos_token_id")
    if forced_bos is not None:
        processors.append(ForcedBOSTokenLogitsProcessor(forced_bos))
    forced_eos = option("forced_eos_token_id")
    if forced_eos is not None:
        processors.append(ForcedEOSTokenLogitsProcessor(_total_length(option, prompt_length), forced_eos, device))
    if option("remove_invalid_values") is True:
        processors.append(InfNanRemoveLogitsProcessor())
    decay = option("exponential_decay_length_penalty")
    if decay is not None:
        processors.append(ExponentialDecayLengthPenalty(decay, eos, prompt_length))
    suppress = option("suppress_tokens")
    if suppress is not None:
        processors.append(SuppressTokensLogitsProcessor(suppress, device=device))
    begin_suppress = option("begin_suppress_tokens")
    if begin_suppress is not None:
        # A forced BOS takes the first position of a one-token (decoder start) context, so suppress the next one.
        begin_index = prompt_length + (1 if prompt_length == 1 and forced_bos is not None else 0)
        processors.append(SuppressTokensAtBeginLogitsProcessor(begin_suppress, begin_index, device=device))

    processors = merged_with_user(processors, logits_processor, "logits_processor", stacklevel=2)

    warpers = _build_warpers(option, device)
    if option("do_sample"):
        processors.extend(warpers)
    watermarking = option("watermarking_config")
    if watermarking is not None:
        processors.append(_watermark_processor(watermarking, model, vocab_size, device))
    if option("renormalize_logits") is True:
        processors.append(LogitNormalization())  # always last: the scores must leave normalized
    return processors


def _total_length(option, prompt_length: int) -> int:
    """The length (prompt included) at which generation stops, as the reference computes max_length."""
    max_new_tokens = option("max_new_tokens")
    if max_new_tokens is not None:
        return prompt_length + max_new_tokens
    return option("max_length")


def merged_with_user(built: list, user: list | None, argument: str, stacklevel: int) -> list:
    """The reference's merge of generate's own processors (or stopping criteria) with the user's, passed as
    `argument`: a user's of a built one's type takes its place, with a warning (at `stacklevel` as seen from the
    caller); the rest go last."""
    if not user:
        return built
    merged = type(built)()
    for item in built:
        replacement = next((custom for custom in user if type(custom) is type(item)), None)
        if replacement is not None:
            warnings.warn(
                f"A {type(item).__name__} was passed in {argument}, and generate() also builds one from its options: "
                "the one passed is used. Leave out the matching generate() option to silence this.",
                UserWarning, stacklevel=stacklevel + 1,
            )
        merged.append(replacement if replacement is not None else item)
    merged.extend(custom for custom in user if not any(custom is chosen for chosen in merged))
    return merged


def _watermark_processor(watermarking, model, vocab_size: int | None, device):
    """The processor of a WatermarkingConfig or SynthIDTextWatermarkingConfig (GenerationConfig reads their dicts)."""
    if not hasattr(watermarking, "construct_processor"):
        raise TypeError(
            f"watermarking_config must be a WatermarkingConfig or SynthIDTextWatermarkingConfig, got "
            f"{type(watermarking).__name__}: build one (a saved file's dict is read by GenerationConfig)."
        )
    if vocab_size is None:
        vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab_size is None:
        raise ValueError(
            "watermarking_config needs the vocabulary size: pass model=... or vocab_size=... to build_processors."
        )
    return watermarking.construct_processor(vocab_size, device)


def _build_warpers(option, device="cpu") -> list:
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
    top_h = option("top_h")
    if top_h is not None:
        warpers.append(TopHLogitsWarper(top_h))
    top_k = option("top_k")
    if top_k is not None and (not is_int(top_k) or top_k < 0):
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
    # Cutoffs of 0 (the default) turn epsilon and eta sampling off.
    epsilon = option("epsilon_cutoff")
    if epsilon is not None and 0.0 < epsilon < 1.0:
        warpers.append(EpsilonLogitsWarper(epsilon, min_tokens_to_keep=min_tokens_to_keep))
    eta = option("eta_cutoff")
    if eta is not None and 0.0 < eta < 1.0:
        warpers.append(EtaLogitsWarper(eta, min_tokens_to_keep=min_tokens_to_keep, device=device))
    return warpers


def apply_processors(processors: list, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Run `scores` through each processor in turn."""
    for processor in processors:
        scores = processor(input_ids, scores)
    return scores


def first_argmax(scores: torch.Tensor) -> torch.Tensor:
    """scores.argmax(dim=-1), each row's first largest value (NaN above every number), as torch.max over the last
    dimension gives it: vectorized where argmax over bfloat16 is not (32 x 262144 bfloat16 logits, two threads: 3.6
    against 15.4 ms, a sixth of Gemma 3 270M's batched step; float32 the same either way)."""
    return scores.max(dim=-1).indices


def sample_next_token(
    scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The (B,) next token ids: the argmax of `scores`, or a draw from their softmax with `generator`.

    Without a generator the draw uses torch's global generator, as the reference does, so the same
    `torch.manual_seed` gives the reference's tokens.
    """
    if not do_sample:
        return first_argmax(scores)
    probs = scores.softmax(dim=-1)
    if generator is None and _compiled_multinomial_applies(probs):
        drawn = torch.ops.openformers.multinomial_one(probs)
        if drawn.numel():  # empty: a row torch refuses, whose error its own call gives
            return drawn.squeeze(1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def _compiled_multinomial_applies(probs: torch.Tensor) -> bool:
    """Whether the compiled library's multinomial_one may draw instead of torch.multinomial: the same tokens and the
    same generator state after, drawn with a logarithm only where the token could be the one drawn (kernels/
    decode.cpp; torch.multinomial takes one per vocabulary entry, ~1 ms a token for 49152 of them). For float32
    rows on the CPU from the default generator, once the library is loaded and agrees with torch.multinomial."""
    return (
        probs.device.type == "cpu" and probs.dtype == torch.float32 and probs.dim() == 2 and probs.is_contiguous()
        and type(probs) is torch.Tensor and not torch.compiler.is_compiling()
        and hasattr(torch.ops.openformers, "multinomial_one") and _compiled_multinomial_agrees()
    )


@functools.cache
def _compiled_multinomial_agrees() -> bool:
    """Whether multinomial_one draws torch.multinomial's tokens in this process, tried once (the library loaded) on
    rows of 3000 probabilities, some of them 0: where torch's exponential_ draws its own way (another build), every
    draw stays torch's. The generator's state is put back afterwards."""
    state = torch.get_rng_state()
    try:
        probs = torch.rand(4, 3000).pow(8)
        probs[1, ::3] = 0
        probs /= probs.sum(dim=-1, keepdim=True)
        torch.manual_seed(7)
        expected = [torch.multinomial(probs, 1) for _ in range(8)]
        expected_state = torch.get_rng_state()
        torch.manual_seed(7)
        drawn = [torch.ops.openformers.multinomial_one(probs) for _ in range(8)]
        return all(torch.equal(a, b) for a, b in zip(drawn, expected)) and torch.equal(
            torch.get_rng_state(), expected_state)
    finally:
        torch.set_rng_state(state)
