"""Pre-tokenizers: the second slot, cutting normalized text into the pieces the model tokenizes one by one.

Each has `pre_tokenize(text) -> [(piece, (start, end))]`, where start and end are character offsets
into `text`. `ByteLevel` also respells each piece in GPT-2's byte alphabet, so its pieces are longer
than their spans; it comes last in every pipeline that uses it.

The common ones also have `split(text) -> [piece]`, the same pieces without offsets, which is what
encoding to ids needs and takes a fraction of the time (see `split_pieces`).
"""

import regex

from .models import WordCache

Piece = tuple[str, tuple[int, int]]

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


def split_pieces(pre_tokenizer, text: str) -> list[str]:
    """The pieces of `text`, without offsets: through `split` where the pre-tokenizer has one."""
    split = getattr(pre_tokenizer, "split", None)
    if callable(split):  # (Metaspace's `split` is a setting, not this method)
        return split(text)
    return [piece for piece, _ in pre_tokenizer.pre_tokenize(text)]


class Split:
    """Split on a literal string or a regex; `behavior` (one of SPLIT_BEHAVIORS) says where delimiters go."""

    def __init__(self, pattern: str, behavior: str, *, is_regex: bool = True, invert: bool = False):
        if behavior not in SPLIT_BEHAVIORS:
            raise ValueError(f"Split behavior must be one of {SPLIT_BEHAVIORS}, got {behavior!r}.")
        self.pattern = regex.compile(pattern if is_regex else regex.escape(pattern))
        self.behavior = behavior
        self.invert = invert

    def pre_tokenize(self, text: str) -> list[Piece]:
        if self.behavior == "isolated" and not self.invert:  # the common case, in one pass
            return _isolated(self.pattern, text)
        spans = _apply_behavior(_spans(self.pattern, text, self.invert), self.behavior)
        return [(text[start:end], (start, end)) for start, end in spans]

    def split(self, text: str) -> list[str]:
        if self.behavior == "isolated" and not self.invert and not self.pattern.groups:
            # Patterns like GPT-2's match every character, so the matches alone are the pieces;
            # when their lengths add up to the text's, nothing fell between them (empty matches don't count).
            pieces = self.pattern.findall(text)
            if sum(map(len, pieces)) == len(text) and "" not in pieces:
                return pieces
        return [piece for piece, _ in self.pre_tokenize(text)]


def _isolated(pattern: regex.Pattern, text: str) -> list[Piece]:
    """Each match, and each stretch between matches, as a piece."""
    pieces, previous_end = [], 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start == end:
            continue
        if previous_end < start:
            pieces.append((text[previous_end:start], (previous_end, start)))
        pieces.append((match.group(), (start, end)))
        previous_end = end
    if previous_end < len(text):
        pieces.append((text[previous_end:], (previous_end, len(text))))
    return pieces


class Digits:
    """Cut numbers out of the text: each digit alone with `individual_digits`, else runs of digits."""

    def __init__(self, individual_digits: bool = False):
        self.individual_digits = individual_digits
        self._split = Split(r"\p{N}", "isolated" if individual_digits else "contiguous")

    def pre_tokenize(self, text: str) -> list[Piece]:
        return self._split.pre_tokenize(text)


class ByteLevel:
    """GPT-2's pre-tokenizer: optionally split with GPT2_PATTERN, then spell each piece's UTF-8 bytes
    in the byte alphabet. `add_prefix_space` puts a space before text that does not start with one,
    so the first word is tokenized like the others."""

    def __init__(self, add_prefix_space: bool = False, use_regex: bool = True):
        self.add_prefix_space = add_prefix_space
        self.use_regex = use_regex
        self._split = Split(GPT2_PATTERN, "isolated") if use_regex else None
        self._respelled = WordCache()

    @property
    def only_respells(self) -> bool:
        """Whether this splits nothing and adds nothing: then it maps each piece to its respelling."""
        return not self.use_regex and not self.add_prefix_space

    def respell(self, pieces: list[str]) -> list[str]:
        respelled = self._respelled
        # Respelling a piece seen before is a dict lookup.
        return [respelled.get(piece) or respelled.remember(piece, to_byte_alphabet(piece)) for piece in pieces]

    def split(self, text: str) -> list[str]:
        if self.add_prefix_space and text and not text.startswith(" "):
            text = " " + text
        return self.respell(self._split.split(text) if self._split else [text] if text else [])

    def pre_tokenize(self, text: str) -> list[Piece]:
        shift = 0
        if self.add_prefix_space and text and not text.startswith(" "):
            text, shift = " " + text, 1
        pieces = self._split.pre_tokenize(text) if self._split else [(text, (0, len(text)))] if text else []
        return [
            (to_byte_alphabet(piece), (max(start - shift, 0), end - shift)) for piece, (start, end) in pieces
        ]


class Sequence:
    def __init__(self, pre_tokenizers: list):
        self.pre_tokenizers = list(pre_tokenizers)
        # A part that treats the start of the text apart (Metaspace's "first") needs to know where it is.
        self.takes_position = any(getattr(part, "takes_position", False) for part in self.pre_tokenizers)

    def split(self, text: str) -> list[str]:
        pieces = [text]
        for pre_tokenizer in self.pre_tokenizers:
            if getattr(pre_tokenizer, "only_respells", False):  # a byte-level step after a split: all at once
                pieces = pre_tokenizer.respell(pieces)
            else:
                pieces = [sub_piece for piece in pieces for sub_piece in split_pieces(pre_tokenizer, piece)]
        return pieces

    def pre_tokenize(self, text: str, starts_text: bool = True) -> list[Piece]:
        pieces = [(text, (0, len(text)))]
        for pre_tokenizer in self.pre_tokenizers:
            if getattr(pre_tokenizer, "only_respells", False):
                respelled = pre_tokenizer.respell([piece for piece, _ in pieces])
                pieces = [(piece, span) for piece, (_, span) in zip(respelled, pieces)]
                continue
            if getattr(pre_tokenizer, "takes_position", False):  # only the piece at the text's start starts it
                split = lambda piece, start: pre_tokenizer.pre_tokenize(piece, starts_text and start == 0)  # noqa: E731
            else:
                split = lambda piece, start: pre_tokenizer.pre_tokenize(piece)  # noqa: E731
            pieces = [
                (sub_piece, (start + sub_start, start + sub_end))
                for piece, (start, _) in pieces
                for sub_piece, (sub_start, sub_end) in split(piece, start)
            ]
        return pieces


# Punctuation as BERT sees it: ASCII symbols (so "$", "+", "^", "`" count) and every Unicode P* category.
_PUNCTUATION = r"""[!-/:-@\[-`{-~\p{P}]"""
_WHITESPACE = r"\p{White_Space}"


class BertPreTokenizer:
    """Split on whitespace (dropped) and on each punctuation character (kept alone)."""

    def __init__(self):
        self._pattern = regex.compile(rf"[^{_WHITESPACE}!-/:-@\[-`{{-~\p{{P}}]+|{_PUNCTUATION}")

    def pre_tokenize(self, text: str) -> list[Piece]:
        return [(match.group(), match.span()) for match in self._pattern.finditer(text)]

    def split(self, text: str) -> list[str]:
        return self._pattern.findall(text)


class Whitespace:
    """Runs of word characters, and runs of other non-space characters: `\\w+|[^\\w\\s]+`."""

    def __init__(self):
        self._pattern = regex.compile(r"\w+|[^\w\s]+")

    def pre_tokenize(self, text: str) -> list[Piece]:
        return [(match.group(), match.span()) for match in self._pattern.finditer(text)]

    def split(self, text: str) -> list[str]:
        return self._pattern.findall(text)


class WhitespaceSplit:
    """Split on whitespace, which is dropped."""

    def __init__(self):
        self._pattern = regex.compile(rf"[^{_WHITESPACE}]+")

    def pre_tokenize(self, text: str) -> list[Piece]:
        return [(match.group(), match.span()) for match in self._pattern.finditer(text)]

    def split(self, text: str) -> list[str]:
        return self._pattern.findall(text)


class Punctuation:
    """Split off punctuation characters; `behavior` (one of SPLIT_BEHAVIORS) says where they go."""

    def __init__(self, behavior: str = "isolated"):
        self._split = Split(_PUNCTUATION, behavior)

    def pre_tokenize(self, text: str) -> list[Piece]:
        return self._split.pre_tokenize(text)


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

    def pre_tokenize(self, text: str, starts_text: bool = True) -> list[Piece]:
        spelled = text.replace(" ", self.replacement)
        prepend = self.prepend_scheme == "always" or (self.prepend_scheme == "first" and starts_text)
        if prepend and spelled and not spelled.startswith(self.replacement):
            spelled = self.replacement + spelled
        if not spelled:
            return []
        shift = len(spelled) - len(text)  # the prepended marker, which belongs to the first character
        if not self.split:
            return [(spelled, (0, len(text)))]
        return [
            (piece, (max(start - shift, 0), end - shift)) for piece, (start, end) in self._split.pre_tokenize(spelled)
        ]
