"""One encoded sequence with everything the reference returns beside the ids, and what is done to it
after the pipeline: truncation (with overflowing windows), the post-processor's template, padding.

Offsets are (start, end) character positions in the text that was passed in; special tokens and
padding get (0, 0). Word ids count the pre-tokenized pieces (and added tokens) of each sequence.
"""

from dataclasses import dataclass, field

from .processors import Template

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")


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
    )
