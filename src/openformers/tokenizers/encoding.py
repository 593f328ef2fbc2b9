"""One encoded sequence with everything the reference returns beside the ids, and what is done to it
after the pipeline: truncation (with overflowing windows), the post-processor's template, padding.

Offsets are (start, end) character positions in the text that was passed in; special tokens and
padding get (0, 0). Word ids count the pre-tokenized pieces (and added tokens) of each sequence.
"""

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import NamedTuple

from .processors import Template

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
SPIECE_UNDERLINE = "▁"  # SentencePiece's spelling of a space


class _StrEnum(str, Enum):
    """An enum whose members are their strings, so each is accepted wherever the string is."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"{value!r} is not a valid {cls.__name__}; choose one of {[member.value for member in cls]}.")


class TensorType(_StrEnum):
    """The `return_tensors` values, as the reference 5.x has them; "pt" (torch) and "np" (numpy) are
    what this library makes."""

    PYTORCH = "pt"
    NUMPY = "np"
    MLX = "mlx"


class PaddingStrategy(_StrEnum):
    LONGEST = "longest"
    MAX_LENGTH = "max_length"
    DO_NOT_PAD = "do_not_pad"


class TruncationStrategy(_StrEnum):
    ONLY_FIRST = "only_first"
    ONLY_SECOND = "only_second"
    LONGEST_FIRST = "longest_first"
    DO_NOT_TRUNCATE = "do_not_truncate"


@dataclass
class Encoding:
    ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    type_ids: list[int] = None
    special_tokens_mask: list[int] = None
    attention_mask: list[int] = None
    sequence_ids: list[int | None] = None
    overflowing: list["Encoding"] = field(default_factory=list)
    n_sequences: int = 1  # 2 for a pair, even when one of the two has no tokens
    tokens: list[str] | None = None  # the token strings, kept only when a BatchEncoding is pickled

    def __post_init__(self):
        count = len(self.ids)
        if self.type_ids is None:
            self.type_ids = [0] * count
        if self.special_tokens_mask is None:
            self.special_tokens_mask = [0] * count
        if self.attention_mask is None:
            self.attention_mask = [1] * count
        if self.sequence_ids is None:
            self.sequence_ids = [0] * count

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, end: int) -> "Encoding":
        return Encoding(
            self.ids[start:end],
            self.offsets[start:end],
            self.word_ids[start:end],
            self.type_ids[start:end],
            self.special_tokens_mask[start:end],
            self.attention_mask[start:end],
            self.sequence_ids[start:end],
        )


# --- truncation


def truncate(encoding: Encoding, max_length: int, stride: int, side: str = "right") -> Encoding:
    """Keep `max_length` tokens; the rest goes to `overflowing` in windows of `max_length` that
    overlap the one before by `stride` tokens."""
    if max_length >= len(encoding):
        return encoding
    if max_length == 0:
        empty = encoding.slice(0, 0)
        empty.overflowing = [encoding.slice(0, len(encoding))]
        return empty
    if stride >= max_length:
        raise ValueError(f"stride ({stride}) must be smaller than the length to truncate to ({max_length}).")
    step, total = max_length - stride, len(encoding)
    windows = []
    for start in range(0, total, step):
        if side == "right":
            windows.append((start, min(start + max_length, total)))
        else:  # the same windows, counted from the end
            windows.append((max(total - start - max_length, 0), total - start))
        if start + max_length >= total:
            break
    first, *rest = [encoding.slice(start, end) for start, end in windows]
    first.overflowing = rest
    return first


def truncate_sequences(
    encodings: list[Encoding], max_length: int, strategy: str, stride: int, side: str
) -> list[Encoding]:
    """Truncate one sequence or a pair so that together they have at most `max_length` tokens."""
    total = sum(len(encoding) for encoding in encodings)
    if total <= max_length:
        return encodings
    excess = total - max_length
    if strategy == "longest_first":
        if len(encodings) == 1:
            return [truncate(encodings[0], max_length, stride, side)]
        first, second = encodings
        # The shorter keeps all it can; when both are long, each gets half (the second the odd token).
        short, long = sorted((len(first), len(second)))
        long = short if short > max_length else max(short, max_length - short)
        if short + long > max_length:
            short = max_length // 2
            long = short + max_length % 2
        first_length, second_length = (short, long) if len(first) <= len(second) else (long, short)
        return [truncate(first, first_length, stride, side), truncate(second, second_length, stride, side)]
    index = 0 if strategy == "only_first" else 1
    if index >= len(encodings):
        raise ValueError('truncation="only_second" needs a pair of sequences (text_pair).')
    target = encodings[index]
    if len(target) <= excess:
        raise ValueError(
            f"Cannot truncate to max_length={max_length} with truncation={strategy!r}: the sequence to truncate has "
            f"{len(target)} tokens but {excess} would have to go. "
            "Use truncation='longest_first' or a larger max_length."
        )
    truncated = list(encodings)
    truncated[index] = truncate(target, len(target) - excess, stride, side)
    return truncated


# --- the post-processor's template


def _apply_template(encodings: list[Encoding], template: Template, add_special_tokens: bool) -> Encoding:
    merged = Encoding([], [], [], [], [], [], [])
    for item, type_id in template:
        if isinstance(item, str):
            part = encodings[0 if item == "A" else 1]
            sequence_id = 0 if item == "A" else 1
            merged.ids += part.ids
            merged.offsets += part.offsets
            merged.word_ids += part.word_ids
            merged.special_tokens_mask += [0] * len(part)
            merged.sequence_ids += [sequence_id] * len(part)
            merged.type_ids += [type_id] * len(part)
        elif add_special_tokens:
            merged.ids += item
            merged.offsets += [(0, 0)] * len(item)
            merged.word_ids += [None] * len(item)
            merged.special_tokens_mask += [1] * len(item)
            merged.sequence_ids += [None] * len(item)
            merged.type_ids += [type_id] * len(item)
    merged.attention_mask = [1] * len(merged.ids)
    merged.n_sequences = len(encodings)
    return merged


def apply_template(encodings: list[Encoding], template: Template, add_special_tokens: bool) -> Encoding:
    """Lay out one sequence or a pair by `template`, overflowing windows included: each window of the
    first sequence with the second and each of its windows, then the first with each window of the second."""
    result = _apply_template(encodings, template, add_special_tokens)
    if len(encodings) == 1:
        windows = encodings[0].overflowing
        result.overflowing = [_apply_template([window], template, add_special_tokens) for window in windows]
        return result
    first, second = encodings
    seconds = [second, *second.overflowing]
    combinations = [(window, other) for window in first.overflowing for other in seconds]
    combinations += [(first, window) for window in second.overflowing]
    result.overflowing = [_apply_template(list(pair), template, add_special_tokens) for pair in combinations]
    return result


# --- padding


def pad(encoding: Encoding, length: int, pad_id: int, side: str, pad_type_id: int = 0) -> Encoding:
    fill = length - len(encoding)
    if fill <= 0:
        return encoding

    def padded(values: list, value) -> list:
        return [value] * fill + values if side == "left" else values + [value] * fill

    return Encoding(
        padded(encoding.ids, pad_id),
        padded(encoding.offsets, (0, 0)),
        padded(encoding.word_ids, None),
        padded(encoding.type_ids, pad_type_id),
        padded(encoding.special_tokens_mask, 1),
        padded(encoding.attention_mask, 0),
        padded(encoding.sequence_ids, None),
        n_sequences=encoding.n_sequences,
    )


# --- what `tokenizer(...)` returns


class CharSpan(NamedTuple):
    """Characters [start, end) of the text a token or word came from."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Tokens [start, end) of an encoded row."""

    start: int
    end: int


class BatchEncoding(dict):
    """What `tokenizer(...)` returns: a dict of `input_ids`, `attention_mask` and the rest, also readable
    as attributes. For each row, `tokens(i)`, `word_ids(i)` and `sequence_ids(i)` tell where each token
    came from, and `char_to_token`, `token_to_chars`, `word_to_tokens`... map between characters,
    words and tokens, as the reference's do.

    The lookups take `(batch_index, index)`, or `(index)` alone for row 0.
    """

    # No per-object __dict__, and the source kept as tuples: few objects for the garbage collector to walk
    # (results are often kept by the million, as with `dataset.map`).
    __slots__ = ("_encodings", "_pipeline", "_source", "_n_sequences")

    def __init__(
        self,
        data=None,
        encodings: list[Encoding] | None = None,
        tensor_type=None,
        prepend_batch_axis: bool = False,
        n_sequences: int | None = None,
        *,
        pipeline=None,
        source: tuple | None = None,
    ):
        """`encodings` are the rows with offsets. Or they are made when first asked for, by `pipeline` (the
        tokenizer's, which also spells the tokens) from `source`: `(items, add_special_tokens, padding)`, the
        `(text, pair)` of each row and how they were encoded, padding `(length, pad id, side)` or None.
        As in the reference, `tensor_type` ("pt" or "np") turns the values into tensors
        (`prepend_batch_axis`: one row into a batch of one); `n_sequences` (1, or 2 for pairs) is otherwise
        read from the rows."""
        super().__init__(data or {})
        self._encodings = encodings
        self._pipeline = pipeline
        self._source = source
        self._n_sequences = n_sequences
        self.convert_to_tensors(tensor_type, prepend_batch_axis)

    @property
    def encodings(self) -> list[Encoding] | None:
        if self._encodings is None and self._source is not None:
            items, add_special_tokens, padding = self._source
            rows = [self._pipeline.encode_aligned(text, pair, add_special_tokens) for text, pair in items]
            self._encodings = [pad(row, *padding) for row in rows] if padding else rows
        return self._encodings

    def __getattr__(self, name):
        if name.startswith("_"):  # not a key: an attribute missing while unpickling or copying
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"'BatchEncoding' object has no attribute {name!r}: it is neither a method nor one of its keys "
                f"{sorted(self)}."
            ) from None

    def __getitem__(self, item):
        """A key's values; or, as in the reference, with an int the Encoding of that row, and with a
        slice the values of those rows."""
        if isinstance(item, str):
            return super().__getitem__(item)
        if isinstance(item, int):
            if not self.encodings:
                raise KeyError(f"BatchEncoding rows are read by key ({sorted(self)}); this one has no encodings.")
            return self.encodings[item]
        if isinstance(item, slice):
            return {key: value[item] for key, value in self.items()}
        raise KeyError(f"BatchEncoding keys are strings, got {item!r}.")

    @property
    def is_fast(self) -> bool:
        """True: the token positions (offsets, word ids) are available, as with the reference's fast tokenizers."""
        return self._pipeline is not None or self._encodings is not None

    def convert_to_tensors(self, tensor_type=None, prepend_batch_axis: bool = False) -> "BatchEncoding":
        """Turn the values into tensors ("pt") or arrays ("np"), in place; None leaves them as they are.
        `prepend_batch_axis` makes one row into a batch of one."""
        if tensor_type is None:
            return self
        tensor_type = TensorType(tensor_type)
        if tensor_type not in (TensorType.PYTORCH, TensorType.NUMPY):
            raise ValueError(f'tensor_type={tensor_type.value!r} is not supported; use "pt" (torch) or "np" (numpy).')
        for key, value in list(self.items()):
            if prepend_batch_axis:
                value = [value]
            self[key] = _as_tensor(value, tensor_type.value, key)
        return self

    @property
    def n_sequences(self) -> int | None:
        """1 for single texts, 2 for pairs (None when this was not made by a tokenizer call)."""
        if self._n_sequences is not None:
            return self._n_sequences
        return self.encodings[0].n_sequences if self.encodings else None

    def _encoding(self, batch_index: int) -> Encoding:
        if not self.encodings:
            raise ValueError("This BatchEncoding was not made by a tokenizer call, so it has no token positions.")
        if not -len(self.encodings) <= batch_index < len(self.encodings):
            raise IndexError(f"batch_index {batch_index} is out of range: the batch has {len(self.encodings)} rows.")
        return self.encodings[batch_index]

    def _row_and_index(self, batch_or_index: int, index: int | None) -> tuple[Encoding, int]:
        if index is None:
            return self._encoding(0), batch_or_index
        return self._encoding(batch_or_index), index

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The token strings of row `batch_index`, special and padding tokens included."""
        row = self._encoding(batch_index)
        if row.tokens is not None:
            return list(row.tokens)
        if self._pipeline is None:
            raise ValueError("This BatchEncoding was not made by a tokenizer call, so it has no tokens.")
        return [self._pipeline.id_to_token(token_id) for token_id in row.ids]

    def __reduce__(self):
        """Pickled (for DataLoader workers, copies) as the values and the rows with their token strings,
        without the tokenizer; the rows worked out lazily are worked out now."""
        rows = None
        if self.encodings:
            rows = [replace(row, tokens=self.tokens(index)) for index, row in enumerate(self.encodings)]
        return _restore_batch_encoding, (dict(self), rows, self._n_sequences)

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token of row `batch_index`, the index of the word it belongs to (None for special tokens)."""
        return list(self._encoding(batch_index).word_ids)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, 0 for the first text, 1 for the pair, None for special tokens."""
        return list(self._encoding(batch_index).sequence_ids)

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        row, token = self._row_and_index(batch_or_token_index, token_index)
        return row.sequence_ids[token]

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        row, token = self._row_and_index(batch_or_token_index, token_index)
        return row.word_ids[token] if row.sequence_ids[token] is not None else None

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        """The characters a token came from, in its own text; None for special and padding tokens."""
        row, token = self._row_and_index(batch_or_token_index, token_index)
        return CharSpan(*row.offsets[token]) if row.sequence_ids[token] is not None else None

    def char_to_token(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        """The first token whose characters include `char_index` of text `sequence_index` (0, or 1 for the pair)."""
        return _char_to_token(*self._row_and_index(batch_or_char_index, char_index), sequence_index)

    def char_to_word(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        row, char = self._row_and_index(batch_or_char_index, char_index)
        token = _char_to_token(row, char, sequence_index)
        return None if token is None else row.word_ids[token]

    def word_to_tokens(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> TokenSpan | None:
        """The tokens of word `word_index` of text `sequence_index`, or None if it has none."""
        return _word_to_tokens(*self._row_and_index(batch_or_word_index, word_index), sequence_index)

    def word_to_chars(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> CharSpan | None:
        row, word = self._row_and_index(batch_or_word_index, word_index)
        span = _word_to_tokens(row, word, sequence_index)
        return None if span is None else CharSpan(row.offsets[span.start][0], row.offsets[span.end - 1][1])

    def to(self, device, *, non_blocking: bool = False) -> "BatchEncoding":
        """Move the tensors to `device` (a device, a string or an index), or cast floating ones to a dtype
        (as the reference does); needs return_tensors="pt"."""
        import torch

        if isinstance(device, torch.dtype):  # only floating tensors take a dtype; the ids stay integers
            for key, value in self.items():
                if isinstance(value, torch.Tensor) and torch.is_floating_point(value):
                    self[key] = value.to(device)
            return self
        if not isinstance(device, (str, int, torch.device)):
            raise TypeError(f"BatchEncoding.to takes a device (str, int or torch.device), got {type(device).__name__}.")
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device, non_blocking=non_blocking)
        return self


def _as_tensor(value, tensor_type: str, key: str):
    """A value of a BatchEncoding as a tensor or array; rows of different lengths are an error that says to pad."""
    import numpy as np

    if tensor_type == "pt":
        import torch

        if isinstance(value, torch.Tensor):
            return value
    elif isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except ValueError:
        array = None
    if array is None or array.dtype == object:
        raise ValueError(
            f"Cannot make one tensor of {key!r}: its rows have different lengths. Pass padding=True (and "
            "truncation=True for rows that are too long)."
        )
    if tensor_type == "np":
        return array
    import torch

    return torch.from_numpy(array.copy()) if array.dtype != np.float64 else torch.tensor(array)


def _restore_batch_encoding(data: dict, rows: list[Encoding] | None, n_sequences: int | None) -> BatchEncoding:
    return BatchEncoding(data, rows, n_sequences=n_sequences)


def _in_sequence(row: Encoding, sequence_index: int) -> list[bool]:
    """Which tokens belong to text `sequence_index`; as in the reference, all of them when the row has
    no such text (asking for sequence 1 of a single text looks in the whole row)."""
    if not 0 <= sequence_index < row.n_sequences:
        return [True] * len(row)
    return [sequence == sequence_index for sequence in row.sequence_ids]


def _char_to_token(row: Encoding, char: int, sequence_index: int) -> int | None:
    for token, ((start, end), inside) in enumerate(zip(row.offsets, _in_sequence(row, sequence_index))):
        if inside and start <= char < end:
            return token
    return None


def _word_to_tokens(row: Encoding, word: int, sequence_index: int) -> TokenSpan | None:
    tokens = [
        token
        for token, (word_id, inside) in enumerate(zip(row.word_ids, _in_sequence(row, sequence_index)))
        if inside and word_id == word
    ]
    return TokenSpan(tokens[0], tokens[-1] + 1) if tokens else None
