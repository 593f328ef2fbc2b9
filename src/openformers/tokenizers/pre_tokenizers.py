"""Pre-tokenizers: the second slot, cutting normalized text into the pieces the model tokenizes one by one.

Each has one method, `pre_tokenize(text, spans=None) -> (pieces, spans of each piece)`. As for the
normalizers, `spans[i]` is the (start, end) in the original text of character i; each piece comes with
the spans of its own characters, so a token's offsets are those of its first and last characters.
Without `spans` (encoding to ids alone) none are worked out and None comes back, which is the fast path.
`ByteLevel` respells each piece in GPT-2's byte alphabet (a character per UTF-8 byte); it comes last in
every pipeline that uses it.
"""

import re

import regex

from .bert_chars import PUNCTUATION
from .models import WordCache

Spans = list[tuple[int, int]]
Pieces = tuple[list[str], list[Spans] | None]  # the pieces, and the spans of each piece's characters

# GPT-2's split: contractions, letters, numbers, other symbols, each with one optional leading space;
# then runs of whitespace, leaving the last space of a run to the word that follows it.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

SPLIT_BEHAVIORS = ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous")


def _byte_alphabet() -> list[str]:
    """The character that stands for each byte in byte-level vocabularies (GPT-2's `bytes_to_unicode`).

    Printable Latin-1 bytes stand for themselves; the rest (controls, space, soft hyphen...) move, in
    byte order, to the characters from U+0100 on, so every token is a printable string.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    alphabet, moved = [], 0
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + moved))
            moved += 1
    return alphabet


BYTE_ALPHABET = _byte_alphabet()
CHAR_TO_BYTE = {char: byte for byte, char in enumerate(BYTE_ALPHABET)}
# For str.translate on text decoded as Latin-1, where character i is byte i.
_LATIN1_TO_ALPHABET = dict(enumerate(BYTE_ALPHABET))


def to_byte_alphabet(text: str) -> str:
    return text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_ALPHABET)


# Code points assigned in Unicode 17 or 18 as letters, numbers or marks, which the `regex` module knows and the
# reference's regex engines (Oniguruma for Split and ByteLevel, Rust's regex crate for Whitespace) do not yet:
# unassigned to them, they split as symbols.
NEWER_THAN_REFERENCE_REGEX = (
    (0x558, 0x558), (0x58B, 0x58C), (0x5C8, 0x5C9), (0x88F, 0x88F), (0xB53, 0xB54), (0xC5C, 0xC5C),
    (0xCDC, 0xCDC), (0x1ACF, 0x1AF0), (0x208F, 0x208F), (0x209D, 0x209F), (0xA7CE, 0xA7CF), (0xA7D2, 0xA7D2),
    (0xA7D4, 0xA7D4), (0xA7DD, 0xA7DD), (0xA7E2, 0xA7E2), (0xA7F1, 0xA7F1), (0xAB6C, 0xAB6D), (0x107BB, 0x107BF),
    (0x10940, 0x10959), (0x10EC5, 0x10EC7), (0x10ECB, 0x10ECF), (0x10ED9, 0x10EEE), (0x10EF0, 0x10EFB),
    (0x11B0A, 0x11B0A), (0x11B60, 0x11B67), (0x11DB0, 0x11DDB), (0x11DE0, 0x11DE9), (0x11DF0, 0x11DF1),
    (0x1246F, 0x1246F), (0x12475, 0x1247F), (0x12550, 0x12686), (0x16EA0, 0x16EB8), (0x16EBB, 0x16ED3),
    (0x16FF2, 0x16FF6), (0x187F8, 0x187FF), (0x18CD6, 0x18CDA), (0x18D09, 0x18D20), (0x18D80, 0x18DF2),
    (0x18E00, 0x19191), (0x191A0, 0x191D2), (0x1B123, 0x1B128), (0x1B168, 0x1B168), (0x1D127, 0x1D128),
    (0x1D250, 0x1D252), (0x1D25B, 0x1D25C), (0x1D25F, 0x1D25F), (0x1D280, 0x1D281), (0x1D6A6, 0x1D6A6),
    (0x1DF1F, 0x1DF24), (0x1DF2B, 0x1DF81), (0x1DF90, 0x1DF96), (0x1DFCD, 0x1DFFF), (0x1E6C0, 0x1E6DE),
    (0x1E6E0, 0x1E6F5), (0x1E6FE, 0x1E6FF), (0x2B73A, 0x2B73F), (0x2B81E, 0x2B81E), (0x2CEA2, 0x2CEAD),
    (0x323B0, 0x33479), (0x3D000, 0x3FC3F),
)
_NEWER_THAN_REFERENCE_REGEX = re.compile(
    "[" + "".join(f"{chr(first)}-{chr(last)}" for first, last in NEWER_THAN_REFERENCE_REGEX) + "]"
)


def as_reference_regex_sees(text: str) -> str:
    """`text` with each code point the reference's regex engines do not know yet replaced by U+0378 (unassigned
    in every Unicode version), so that a pattern matched on it splits where the reference's does; the length stays
    the same."""
    if text.isascii() or _NEWER_THAN_REFERENCE_REGEX.search(text) is None:
        return text
    return _NEWER_THAN_REFERENCE_REGEX.sub("\u0378", text)


def _spans(pattern: regex.Pattern, text: str, invert: bool) -> list[tuple[int, int, bool]]:
    """`(start, end, is_delimiter)` for the matches of `pattern` and the gaps between them, covering `text`.

    With `invert`, the gaps are the delimiters and the matches the content.
    """
    spans, previous_end = [], 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start == end:
            continue
        if previous_end < start:
            spans.append((previous_end, start, invert))
        spans.append((start, end, not invert))
        previous_end = end
    if previous_end < len(text):
        spans.append((previous_end, len(text), invert))
    return spans


def _apply_behavior(spans: list[tuple[int, int, bool]], behavior: str) -> list[tuple[int, int]]:
    """What to do with each delimiter: drop it, keep it alone, glue it to a neighbour, or glue runs together."""
    if behavior == "removed":
        return [(start, end) for start, end, is_delimiter in spans if not is_delimiter]
    if behavior == "isolated":
        return [(start, end) for start, end, _ in spans]
    if behavior == "merged_with_next":
        # The same as merged_with_previous, read from the right.
        mirrored = [(-end, -start, is_delimiter) for start, end, is_delimiter in reversed(spans)]
        return [(-end, -start) for start, end in reversed(_apply_behavior(mirrored, "merged_with_previous"))]
    merged, previous_is_delimiter = [], False
    for start, end, is_delimiter in spans:
        if behavior == "merged_with_previous":
            # A delimiter joins the piece before it, unless that piece is itself a delimiter.
            glue = is_delimiter and not previous_is_delimiter
        else:  # contiguous: runs of delimiters, and runs of the rest, become one piece each
            glue = is_delimiter == previous_is_delimiter
        if glue and merged:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
        previous_is_delimiter = is_delimiter
    return merged


def _cut(text: str, spans: Spans | None, bounds: list[tuple[int, int]]) -> Pieces:
    """The pieces text[start:end] for each of `bounds`, with their spans when there are spans."""
    pieces = [text[start:end] for start, end in bounds]
    return pieces, None if spans is None else [spans[start:end] for start, end in bounds]


class Split:
    """Split on a literal string or a regex; `behavior` (one of SPLIT_BEHAVIORS) says where delimiters go.

    A regex matches as the reference's engine, Oniguruma, does (`as_reference_regex_sees`): letters, numbers and
    marks of a newer Unicode than it knows count as unassigned, unless `as_oniguruma=False` (for the reference's
    parts that class characters with Rust's own, newer, tables: Digits)."""

    def __init__(
        self, pattern: str, behavior: str, *, is_regex: bool = True, invert: bool = False, as_oniguruma: bool = True
    ):
        if behavior not in SPLIT_BEHAVIORS:
            raise ValueError(f"Split behavior must be one of {SPLIT_BEHAVIORS}, got {behavior!r}.")
        self.pattern = oniguruma_regex(pattern) if is_regex else regex.compile(regex.escape(pattern))
        self.behavior = behavior
        self.invert = invert
        self._matches_alone = behavior == "isolated" and not invert and not self.pattern.groups
        self._as_oniguruma = is_regex and as_oniguruma

    def pre_tokenize(self, text: str, spans: Spans | None = None) -> Pieces:
        matched = as_reference_regex_sees(text) if self._as_oniguruma else text
        if spans is None and self._matches_alone and matched is text:
            # Patterns like GPT-2's match every character, so the matches alone are the pieces;
            # when their lengths add up to the text's, nothing fell between them (empty matches don't count).
            pieces = self.pattern.findall(text)
            if sum(map(len, pieces)) == len(text) and "" not in pieces:
                return pieces, None
        if self.behavior == "isolated" and not self.invert:  # the common case, in one pass
            return _cut(text, spans, _isolated(self.pattern, matched))
        return _cut(text, spans, _apply_behavior(_spans(self.pattern, matched, self.invert), self.behavior))


def oniguruma_regex(pattern: str) -> regex.Pattern:
    """`pattern` compiled to match as Oniguruma (the reference's engine) reads it. A `[` inside a character class
    opens a nested class there, united with the rest (BLOOM's split, `[^(\\s|[.,!?])]`), which version 1 of
    `regex`'s syntax reads alike; version 0, for every other pattern, reads that `[` as itself."""
    return regex.compile(pattern, regex.V1 if _has_nested_class(pattern) else 0)


def _has_nested_class(pattern: str) -> bool:
    inside, i = False, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            if inside:
                return True
            inside = True
            first = i + 1 + (pattern[i + 1 : i + 2] == "^")
            if pattern[first : first + 1] == "]":  # a `]` first in a class is itself
                i = first
        elif c == "]":
            inside = False
        i += 1
    return False


def _isolated(pattern: regex.Pattern, text: str) -> list[tuple[int, int]]:
    """Each match, and each stretch between matches, as (start, end)."""
    bounds, previous_end = [], 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start == end:
            continue
        if previous_end < start:
            bounds.append((previous_end, start))
        bounds.append((start, end))
        previous_end = end
    if previous_end < len(text):
        bounds.append((previous_end, len(text)))
    return bounds


class Digits:
    """Cut numbers out of the text: each digit alone with `individual_digits`, else runs of digits."""

    def __init__(self, individual_digits: bool = False):
        self.individual_digits = individual_digits
        self._split = Split(r"\p{N}", "isolated" if individual_digits else "contiguous", as_oniguruma=False)

    def pre_tokenize(self, text: str, spans: Spans | None = None) -> Pieces:
        return self._split.pre_tokenize(text, spans)


class ByteLevel:
    """GPT-2's pre-tokenizer: optionally split with GPT2_PATTERN, then spell each piece's UTF-8 bytes
    in the byte alphabet (each byte's character has the span of the character it is part of).
    `add_prefix_space` puts a space before text that does not start with one, so the first word is
    tokenized like the others; the space has the span of the first character."""

    def __init__(self, add_prefix_space: bool = False, use_regex: bool = True):
        self.add_prefix_space = add_prefix_space
        self.use_regex = use_regex
        self._split = Split(GPT2_PATTERN, "isolated") if use_regex else None
        self._respelled = WordCache()

    @property
    def only_respells(self) -> bool:
        """Whether this splits nothing and adds nothing: then it maps each piece to its respelling."""
        return not self.use_regex and not self.add_prefix_space

    def respell(self, pieces: list[str], spans: list[Spans] | None = None) -> Pieces:
        """Each piece in the byte alphabet (a piece seen before is a dict lookup)."""
        respelled = self._respelled
        spelled = [respelled.get(piece) or respelled.remember(piece, to_byte_alphabet(piece)) for piece in pieces]
        if spans is None:
            return spelled, None
        byte_spans = [
            [span for char, span in zip(piece, piece_spans) for _ in char.encode("utf-8")]
            for piece, piece_spans in zip(pieces, spans)
        ]
        return spelled, byte_spans

    def pre_tokenize(self, text: str, spans: Spans | None = None) -> Pieces:
        if self.add_prefix_space and text and not text.startswith(" "):
            text, spans = " " + text, None if spans is None else [spans[0], *spans]
        if self._split is not None:
            return self.respell(*self._split.pre_tokenize(text, spans))
        return self.respell([text] if text else [], None if spans is None else [spans] if text else [])


class Sequence:
    def __init__(self, pre_tokenizers: list):
        self.pre_tokenizers = list(pre_tokenizers)
        # A part that treats the start of the text apart (Metaspace's "first") needs to know where it is.
        self.takes_position = any(getattr(part, "takes_position", False) for part in self.pre_tokenizers)

    def pre_tokenize(self, text: str, spans: Spans | None = None, starts_text: bool = True) -> Pieces:
        pieces, piece_spans = [text], None if spans is None else [spans]
        for part in self.pre_tokenizers:
            if getattr(part, "only_respells", False):  # a byte-level step after a split: all at once
                pieces, piece_spans = part.respell(pieces, piece_spans)
                continue
            takes_position = getattr(part, "takes_position", False)
            if piece_spans is None and not takes_position:  # the ids-only path, once per piece in one expression
                pre_tokenize = part.pre_tokenize
                pieces = [sub_piece for piece in pieces for sub_piece in pre_tokenize(piece)[0]]
                continue
            cut, cut_spans = [], None if piece_spans is None else []
            for index, piece in enumerate(pieces):
                given = None if piece_spans is None else piece_spans[index]
                if takes_position:  # only the first piece starts the text
                    sub_pieces, sub_spans = part.pre_tokenize(piece, given, starts_text and index == 0)
                else:
                    sub_pieces, sub_spans = part.pre_tokenize(piece, given)
                cut += sub_pieces
                if cut_spans is not None:
                    cut_spans += sub_spans
            pieces, piece_spans = cut, cut_spans
        return pieces, piece_spans


# Punctuation as BERT sees it (bert_chars.PUNCTUATION, a set of version 1 of `regex`'s syntax).
_PUNCTUATION = "(?V1)" + PUNCTUATION
_WHITESPACE = r"\p{White_Space}"


def _matches(pattern: regex.Pattern, text: str, spans: Spans | None) -> Pieces:
    """The matches of `pattern` as the pieces, the rest dropped."""
    if spans is None:
        return pattern.findall(text), None
    return _cut(text, spans, [match.span() for match in pattern.finditer(text)])


class BertPreTokenizer:
    """Split on whitespace (dropped) and on each punctuation character (kept alone)."""

    def __init__(self):
        self._pattern = regex.compile(rf"[[^{_WHITESPACE}]--{PUNCTUATION}]+|{PUNCTUATION}", regex.V1)

    def pre_tokenize(self, text: str, spans: Spans | None = None) -> Pieces:
        return _matches(self._pattern, text, spans)


class Whitespace:
    """Runs of word characters, and runs of other non-space characters: `\\w+|[^\\w\\s]+`."""

    def __init__(self):
        self._pattern = regex.compile(r"\w+|[^\w\s]+")

    def pre_tokenize(self, text: str, spans: Spans | None = None) -> Pieces:
        matched = as_reference_regex_sees(text)
        if matched is text:
            return _matches(self._pattern, text, spans)
        return _cut(text, spans, [match.span() for match in self._pattern.finditer(matched)])


class WhitespaceSplit:
    """Split on whitespace, which is dropped."""

    def __init__(self):
        self._pattern = regex.compile(rf"[^{_WHITESPACE}]+")

    def pre_tokenize(self, text: str, spans: Spans | None = None) -> Pieces:
        return _matches(self._pattern, text, spans)


class Punctuation:
    """Split off punctuation characters; `behavior` (one of SPLIT_BEHAVIORS) says where they go."""

    def __init__(self, behavior: str = "isolated"):
        self._split = Split(_PUNCTUATION, behavior)

    def pre_tokenize(self, text: str, spans: Spans | None = None) -> Pieces:
        return self._split.pre_tokenize(text, spans)


PREPEND_SCHEMES = ("always", "first", "never")


class Metaspace:
    """SentencePiece's spaces as a pre-tokenizer: spell " " as `replacement` ("▁"), put one in front
    (always, only at the start of the text, or never), and with `split`, cut before each "▁"."""

    takes_position = True  # "first" needs to know whether a piece starts the text

    def __init__(self, replacement: str = "▁", prepend_scheme: str = "always", split: bool = True):
        if prepend_scheme not in PREPEND_SCHEMES:
            raise ValueError(f"Metaspace prepend_scheme must be one of {PREPEND_SCHEMES}, got {prepend_scheme!r}.")
        self.replacement = replacement
        self.prepend_scheme = prepend_scheme
        self.split = split
        self._split = Split(replacement, "merged_with_next", is_regex=False)

    def pre_tokenize(self, text: str, spans: Spans | None = None, starts_text: bool = True) -> Pieces:
        spelled = text.replace(" ", self.replacement)
        prepend = self.prepend_scheme == "always" or (self.prepend_scheme == "first" and starts_text)
        if prepend and spelled and not spelled.startswith(self.replacement):
            # The marker has the span of the character it goes before.
            spelled = self.replacement + spelled
            spans = None if spans is None else [spans[0]] * len(self.replacement) + spans
        if not spelled:
            return [], None if spans is None else []
        if not self.split:
            return [spelled], None if spans is None else [spans]
        return self._split.pre_tokenize(spelled, spans)
