"""Stopping criteria: objects that say, after each step, which rows of a batch are done.

A criterion is called as `criterion(input_ids, scores) -> (batch,) bool tensor`, where `input_ids` holds the
prompt and everything generated so far and `scores` is the tuple of processed scores per step (None unless
generate keeps them). `generate` builds the criteria its options ask for (length, time, EOS ids, stop strings),
then appends the user's `stopping_criteria=`; a row stops when any criterion says so.
"""

import time
import warnings
from copy import deepcopy

import torch

from ..tokenizers.pre_tokenizers import CHAR_TO_BYTE


class StoppingCriteria:
    """The base class: subclasses implement `__call__(input_ids, scores, **kwargs) -> (batch,) bool tensor`."""

    def __call__(self, input_ids: torch.Tensor, scores: tuple[torch.Tensor, ...] | None, **kwargs) -> torch.Tensor:
        raise TypeError(
            f"{type(self).__name__} must define __call__(input_ids, scores, **kwargs) returning one bool per row; "
            "StoppingCriteria itself is only the base class."
        )


def _every_row(input_ids: torch.Tensor, done: bool) -> torch.Tensor:
    return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class MaxLengthCriteria(StoppingCriteria):
    """Done once the sequences (prompt included) hold `max_length` tokens."""

    def __init__(self, max_length: int, max_position_embeddings: int | None = None):
        self.max_length = max_length
        self.max_position_embeddings = max_position_embeddings
        self._warned = False

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        return _every_row(input_ids, self.done_at(input_ids.shape[1]))

    def done_at(self, length: int) -> bool:
        """Whether sequences of `length` tokens are done; warns once when they outgrow the model's positions."""
        done = length >= self.max_length
        too_long = self.max_position_embeddings is not None and length > self.max_position_embeddings
        if too_long and not done and not self._warned:
            self._warned = True
            warnings.warn(
                f"The sequences are longer ({length} tokens) than the model's max_position_embeddings "
                f"({self.max_position_embeddings}); its outputs past that length may be meaningless.",
                UserWarning, stacklevel=3,
            )
        return done


class MaxTimeCriteria(StoppingCriteria):
    """Done for every row once `max_time` seconds have passed since `initial_timestamp` (default: creation)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        return _every_row(input_ids, time.time() - self.initial_timestamp > self.max_time)


class EosTokenCriteria(StoppingCriteria):
    """Done for the rows whose newest token (or any of the newest `new_token_length`) is an EOS id."""

    def __init__(self, eos_token_id: int | list[int] | torch.Tensor):
        if not isinstance(eos_token_id, torch.Tensor):
            eos_token_id = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        self.eos_token_id = eos_token_id
        self._ids_of, self._ids = None, set()

    def __call__(self, input_ids: torch.Tensor, scores=None, new_token_length: int = 1, **kwargs) -> torch.Tensor:
        if self.eos_token_id.device != input_ids.device:  # a move, even to where they are, costs a step some microseconds
            self.eos_token_id = self.eos_token_id.to(input_ids.device)
        return torch.isin(input_ids[:, -new_token_length:], self.eos_token_id).any(dim=-1)

    def is_eos(self, token: int) -> bool:
        return token in self.ids()

    def ids(self) -> set[int]:
        """The EOS ids as a set of ints."""
        if self._ids_of is not self.eos_token_id:  # made again if the tensor is replaced
            self._ids_of, self._ids = self.eos_token_id, set(self.eos_token_id.reshape(-1).tolist())
        return self._ids


class ConfidenceCriteria(StoppingCriteria):
    """For a draft model: done when the probability of its newest token falls below the threshold (row 0 only)."""

    def __init__(self, assistant_confidence_threshold: float):
        self.assistant_confidence_threshold = assistant_confidence_threshold

    def __call__(self, input_ids: torch.Tensor, scores: tuple[torch.Tensor, ...] | None, **kwargs) -> bool:
        probability = scores[-1].softmax(-1)[0, input_ids[0, -1]].item()
        return probability < self.assistant_confidence_threshold


class StopStringCriteria(StoppingCriteria):
    """Done for the rows whose text ends in one of `stop_strings`, the match overlapping the newest token.

    A stop string counts when it ends inside the newest token's text (it may start several tokens back and
    the token may run past its end): for "stop", the tokens "st"+"op", "las"+"topper" and "s"+"to"+"pped" end
    a row, "stop"+"at" does not (the match must reach the newest token, or it would have stopped earlier).

    Each token is read as the text it adds to the output, found as the reference does it: decode the token after
    a fixed prefix and keep what follows the prefix, so that a SentencePiece "▁stop" reads " stop" wherever it
    stands. Byte-level and byte-fallback vocabularies are matched on UTF-8 bytes, so a character split over two
    tokens still matches.
    """

    _PREFIX = "abcdef"

    def __init__(self, tokenizer, stop_strings: str | list[str]):
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.stop_strings: tuple[str, ...] = tuple(stop_strings)
        if not self.stop_strings or not all(isinstance(s, str) and s for s in self.stop_strings):
            raise ValueError(f"stop_strings must be a non-empty string or list of them, got {stop_strings!r}.")
        self.tokenizer = tokenizer
        self.matching_mode = _matching_mode(tokenizer)
        self._targets = [s.encode("utf-8") if self.matching_mode else s for s in self.stop_strings]
        self._longest = max(len(s) for s in self._targets)
        prefix_ids = tokenizer(self._PREFIX, add_special_tokens=False)["input_ids"]
        self._prefix_tokens = list(tokenizer.convert_ids_to_tokens(prefix_ids))
        self._token_texts: dict[int, str | bytes] = {}

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        rows = [self._row_ends_with_stop_string(row) for row in input_ids.tolist()]
        return torch.tensor(rows, dtype=torch.bool, device=input_ids.device)

    def _row_ends_with_stop_string(self, ids: list[int]) -> bool:
        newest = self._token_text(ids[-1])
        if not newest:
            return False
        # Enough tokens from the end that the text before the newest token can hold any stop string.
        pieces, before = [newest], 0
        for token_id in reversed(ids[:-1]):
            if before >= self._longest:
                break
            pieces.append(self._token_text(token_id))
            before += len(pieces[-1])
        text = pieces[0][:0].join(reversed(pieces))
        newest_start = len(text) - len(newest)
        for target in self._targets:
            # The latest place the stop string can end is the end of the text; the earliest, one unit into
            # the newest token.
            start = text.find(target, max(0, newest_start + 1 - len(target)))
            if start != -1 and start + len(target) > newest_start:
                return True
        return False

    def _token_text(self, token_id: int) -> str | bytes:
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._read_token(token_id)
            self._token_texts[token_id] = text
        return text

    def _read_token(self, token_id: int) -> str | bytes:
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        if token is None:
            return b"" if self.matching_mode else ""
        if self.matching_mode == "byte_level" and all(char in CHAR_TO_BYTE for char in token):
            return bytes(CHAR_TO_BYTE[char] for char in token)
        if self.matching_mode == "byte_fallback" and _is_byte_piece(token):
            return bytes([int(token[3:5], 16)])
        text = self.tokenizer.convert_tokens_to_string(self._prefix_tokens + [token])
        text = text[text.index(self._PREFIX) + len(self._PREFIX):]
        return text.encode("utf-8") if self.matching_mode else text


def _is_byte_piece(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">") and all(
        c in "0123456789abcdefABCDEF" for c in token[3:5]
    )


def _matching_mode(tokenizer) -> str | None:
    """"byte_level" or "byte_fallback" when the tokenizer's decoder works on bytes, else None (match text)."""
    decoder = getattr(getattr(tokenizer, "_pipeline", None), "decoder", None)
    if decoder is None:  # a tokenizer from the `tokenizers` library, whose decoder describes itself as JSON
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    kinds = _decoder_kinds(decoder)
    if "ByteLevel" in kinds and type(decoder).__name__ == "ByteLevel":
        return "byte_level"
    if "ByteFallback" in kinds:
        return "byte_fallback"
    return "byte_level" if "ByteLevel" in kinds else None


def _decoder_kinds(decoder) -> set[str]:
    if decoder is None:
        return set()
    kinds = {type(decoder).__name__}
    if getattr(decoder, "byte_pieces", None):  # our SentencePiece decoder, built with byte_fallback
        kinds.add("ByteFallback")
    for part in getattr(decoder, "decoders", []) or []:
        kinds |= _decoder_kinds(part)
    state = getattr(decoder, "__getstate__", lambda: None)()
    if isinstance(state, (str, bytes)) and (b"ByteFallback" if isinstance(state, bytes) else "ByteFallback") in state:
        kinds.add("ByteFallback")
    if isinstance(state, (str, bytes)) and (b'"ByteLevel"' if isinstance(state, bytes) else '"ByteLevel"') in state:
        kinds.add("ByteLevel")
    return kinds


class StoppingCriteriaList(list):
    """A list of criteria, itself a criterion: a row is done when any of them says so."""

    def __call__(self, input_ids: torch.Tensor, scores: tuple[torch.Tensor, ...] | None, **kwargs) -> torch.Tensor:
        # The first criterion's answer as it is when it is already one bool per row: each small operation counts
        # in a decoding loop (generate's greedy steps: max_length's criterion alone), ~10 us after a step.
        done = None
        for criterion in self:
            said = criterion(input_ids, scores, **kwargs)
            done = said if done is None else done | said
        rows = input_ids.shape[0]
        if not (isinstance(done, torch.Tensor) and done.dtype == torch.bool and done.shape == (rows,)):
            done = (_every_row(input_ids, False) | (False if done is None else done)).to(torch.bool)
        return done

    @property
    def max_length(self) -> int | None:
        """The max_length of the first MaxLengthCriteria in the list, if there is one."""
        return next((c.max_length for c in self if isinstance(c, MaxLengthCriteria)), None)


class OneRowStops:
    """A list of max_length's and EOS criteria alone (generate's own, without stop strings or the caller's
    criteria), asked whether one row stops by its length and newest token id: Python comparisons where calling the
    list runs 3-8 small tensor operations (the ids' slice, each criterion's answer, their or), each 5-20 us right
    after a decoding step has streamed the weights through the CPU's caches."""

    def __init__(self, criteria: StoppingCriteriaList):
        self.lengths = [c for c in criteria if type(c) is MaxLengthCriteria]
        self.eos = [c for c in criteria if type(c) is EosTokenCriteria]

    @classmethod
    def of(cls, criteria) -> "OneRowStops | None":
        """For a list of such criteria alone, else None (the list is called)."""
        plain = type(criteria) is StoppingCriteriaList and all(type(c) in (MaxLengthCriteria, EosTokenCriteria)
                                                                for c in criteria)
        return cls(criteria) if plain else None

    def __call__(self, length: int, token: int) -> bool:
        # Every criterion is asked, as the list asks each: max_length's warns as it would.
        done = False
        for criterion in self.lengths:
            done = criterion.done_at(length) or done
        for criterion in self.eos:
            done = criterion.is_eos(token) or done
        return done


def validate_stopping_criteria(stopping_criteria: StoppingCriteriaList, max_length: int) -> StoppingCriteriaList:
    """A copy of the list that stops at `max_length`: warns when its own max length differs, adds one if missing."""
    found = stopping_criteria.max_length
    checked = deepcopy(stopping_criteria)
    if found is None:
        checked.append(MaxLengthCriteria(max_length=max_length))
    elif found != max_length:
        warnings.warn(
            f"The stopping criteria stop at max_length={found}, but max_length={max_length} was passed; "
            "the criteria's value is used.", UserWarning, stacklevel=2,
        )
    return checked
