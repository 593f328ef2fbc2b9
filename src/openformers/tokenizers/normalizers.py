"""Normalizers: the first slot of the pipeline, text -> text before it is split.

Each has one method, `normalize(text, spans=None) -> (text, spans)`. `spans[i]` is the (start, end) of
the original characters that character i came from, and the normalizer says where each character of its
result came from, so a token's offsets in the original text are known after normalization. Without
`spans` (encoding to ids alone) none are worked out and None comes back, which is the fast path.
"""

import re
import struct
import unicodedata

import regex

from . import bert_chars, reference_unicode
from .models import WordCache

Spans = list[tuple[int, int]]


def _char_class(codes) -> str:
    """The inside of a regex character class holding the (first, last) ranges or single code points `codes`."""
    return "".join(
        f"\\U{code[0]:08X}-\\U{code[1]:08X}" if isinstance(code, tuple) else f"\\U{code:08X}" for code in codes
    )


# Characters assigned after the reference's Unicode 9.0 that a newer Unicode would decompose, reorder, compose
# or strip (reference_unicode): unassigned to the reference, so it leaves each one as it is. A set: testing a text
# against it costs a twentieth of a regex class of these 136 ranges.
_NEWER_THAN_REFERENCE = frozenset(
    chr(code) for first, last in reference_unicode.NEWER_THAN_REFERENCE for code in range(first, last + 1)
)
# Marks as the reference's StripAccents sees them: Mn, Mc and Me of Unicode 9.0.
_REFERENCE_MARK = regex.compile(
    rf"[[\p{{M}}{_char_class(reference_unicode.MARKS_THEN)}]"
    rf"--[{_char_class(reference_unicode.NOT_MARKS_THEN)}{_char_class(reference_unicode.NEWER_THAN_REFERENCE)}]]",
    regex.V1,
)


def _map_chars(spans: Spans | None, mapped: list[str]) -> tuple[str, Spans | None]:
    """Text and spans after character i became the string mapped[i] (empty: removed)."""
    if spans is None:
        return "".join(mapped), None
    out_spans = []
    for span, replacement in zip(spans, mapped):
        out_spans.extend([span] * len(replacement))
    return "".join(mapped), out_spans


class UnicodeNormalizer:
    """One of the four Unicode normal forms: "NFC", "NFD", "NFKC" or "NFKD", by the reference's Unicode 9.0
    (Python's `unicodedata` is newer: see reference_unicode)."""

    def __init__(self, form: str):
        if form not in ("NFC", "NFD", "NFKC", "NFKD"):
            raise ValueError(f"Unicode normal form must be NFC, NFD, NFKC or NFKD, got {form!r}.")
        self.form = form

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        # Normalized by Python's newer Unicode is normalized by the reference's too: its older tables only
        # decompose, reorder and compose less.
        if unicodedata.is_normalized(self.form, text):
            return text, spans
        if _NEWER_THAN_REFERENCE.isdisjoint(text):
            return self._normalize(text, spans)
        # To the reference such a character is unassigned: a starter that composes with nothing and stops the
        # reordering of marks, so the text on each side of it normalizes on its own.
        parts, start = [], 0
        for index, char in enumerate(text):
            if char in _NEWER_THAN_REFERENCE:
                parts.append(self._normalize(text[start:index], None if spans is None else spans[start:index]))
                parts.append((char, None if spans is None else [spans[index]]))
                start = index + 1
        parts.append(self._normalize(text[start:], None if spans is None else spans[start:]))
        normalized = "".join(part for part, _ in parts)
        return normalized, None if spans is None else [span for _, part_spans in parts for span in part_spans]

    def _normalize(self, text: str, spans: Spans | None) -> tuple[str, Spans | None]:
        """`normalize` for text without characters newer than the reference's Unicode."""
        if spans is None:
            return _normal_form(self.form, text), None
        # Normalize each base character with the marks that combine with it; where that changes it,
        # align the run as the reference does (see _align_run).
        out, out_spans, start = [], [], 0
        for end in range(1, len(text) + 1):
            if end < len(text) and _combines_backward(text[end]):
                continue
            run = text[start:end]
            normalized = _normal_form(self.form, run)
            if normalized == run:
                out_spans.extend(spans[start:end])
            else:
                out_spans.extend(spans[start + index] for index in _align_run(run, normalized, self.form))
            out.append(normalized)
            start = end
        return "".join(out), out_spans


# Runs of more non-starters than a stream-safe text holds (30), or of the characters that decompose into them.
_LONG_RUN_OF_MARKS = regex.compile(r"[\P{ccc=0}\u0f73\u0f75\u0f81\uff9e\uff9f]{31,}")


def _normal_form(form: str, text: str) -> str:
    """unicodedata.normalize(form, text), in time n log n where marks run long.

    CPython puts each run of marks in canonical order by insertion sort, so 150,000 marks of two alternating
    classes took 77 s. In such text each character is decomposed on its own and each run of non-starters
    sorted here (stably, by class, as canonical ordering does); text already in order is normalized in one pass."""
    if _LONG_RUN_OF_MARKS.search(text) is None:
        return unicodedata.normalize(form, text)
    decompose = "NFD" if form in ("NFC", "NFD") else "NFKD"
    chars = [part for char in text for part in unicodedata.normalize(decompose, char)]
    start = 0
    while start < len(chars):
        if unicodedata.combining(chars[start]) == 0:
            start += 1
            continue
        end = start
        while end < len(chars) and unicodedata.combining(chars[end]):
            end += 1
        chars[start:end] = sorted(chars[start:end], key=unicodedata.combining)
        start = end
    return unicodedata.normalize(form, "".join(chars))


def _combines_backward(char: str) -> bool:
    """Whether normalization may join `char` to the character before it: a combining mark, a Hangul
    medial vowel or final consonant (jamo that compose into a syllable), or a character whose decomposition
    starts with one (Tibetan U+0F73, which canonical ordering may move in front of marks before it; the
    compatibility jamo U+314F, which NFKC joins to a leading consonant before it)."""
    first = unicodedata.normalize("NFKD", char)[0] if char > "\u0343" else char
    return unicodedata.combining(first) != 0 or "\u1160" <= first <= "\u11ff"


def _align_run(run: str, normalized: str, form: str) -> list[int]:
    """For each character of `normalized`, the character of `run` it stands for, the way the reference
    counts: decomposing marks each extra character +1 (it stands for the character before it), canonical
    reordering carries the marks along, and composing two characters adds their marks less one (a
    composed "é" stands for its "e" and swallows the accent's position)."""
    decompose = "NFD" if form in ("NFC", "NFD") else "NFKD"
    chars = [
        [char, 0 if index == 0 else 1]
        for original in run
        for index, char in enumerate(unicodedata.normalize(decompose, original))
    ]
    # Canonical ordering: each run of non-starters sorted by combining class (a stable sort).
    index = 0
    while index < len(chars):
        if unicodedata.combining(chars[index][0]):
            end = index
            while end < len(chars) and unicodedata.combining(chars[end][0]):
                end += 1
            chars[index:end] = sorted(chars[index:end], key=lambda item: unicodedata.combining(item[0]))
            index = end
        else:
            index += 1
    if form in ("NFC", "NFKC"):
        chars = _compose(chars)
    if "".join(char for char, _ in chars) != normalized:  # a case the model above does not cover
        return [min(index, len(run) - 1) for index in range(len(normalized))]
    aligned, offset = [], 0
    for _, change in chars:
        if change > 0:
            aligned.append(max(offset - 1, 0))
        else:
            aligned.append(offset)
            offset += 1 - change
    return [min(index, len(run) - 1) for index in aligned]


def _compose(chars: list[list]) -> list[list]:
    """Canonical composition of decomposed `[char, change]` items: a mark not blocked from the last
    starter joins it when the two have a composed form."""
    out, starter = [], None
    for char, change in chars:
        combining = unicodedata.combining(char)
        if starter is not None:
            anything_between = len(out) > starter + 1  # only the last one between can block (the marks are ordered)
            blocked = anything_between and (unicodedata.combining(out[-1][0]) >= combining or combining == 0)
            joined = unicodedata.normalize("NFC", out[starter][0] + char)
            if not blocked and len(joined) == 1 and (combining or not anything_between):
                out[starter] = [joined, out[starter][1] + change - 1]
                continue
        if combining == 0:
            starter = len(out)
        out.append([char, change])
    return out


# Capital letters newer than Python's `str.lower` may know, which the reference lowercases (bert_chars).
_NEWER_CAPITALS = re.compile("[" + "".join(map(chr, bert_chars.NEWER_LOWERCASE)) + "]")


class Lowercase:
    """Lowercase each character on its own, as the reference does (so a final "Σ" becomes "σ", not "ς"), with
    the reference's newer Unicode for letters `str.lower` may not know yet."""

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        if not text.isascii() and _NEWER_CAPITALS.search(text) is not None:
            text = text.translate(bert_chars.NEWER_LOWERCASE)  # one character for one: spans stay
        if spans is None and "Σ" not in text:  # the same characters, in one call
            return text.lower(), None
        return _map_chars(spans, [char.lower() for char in text])


class StripAccents:
    """Drop every combining mark (categories Mn, Mc and Me, of the reference's Unicode 9.0: a mark assigned since
    is kept) as tokenizers' StripAccents does, without decomposing first: it follows an NFD or NFKD normalizer
    ("café" decomposed -> "cafe"; the keycap in "9️⃣" goes too)."""

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        if spans is None:
            return _REFERENCE_MARK.sub("", text), None
        return _map_chars(spans, ["" if _REFERENCE_MARK.match(char) else char for char in text])


class Strip:
    """Remove whitespace at the left and/or right end."""

    def __init__(self, left: bool = True, right: bool = True):
        self.left, self.right = left, right

    def _bounds(self, text: str) -> tuple[int, int]:
        start, end = 0, len(text)
        while self.left and start < end and text[start].isspace():
            start += 1
        while self.right and end > start and text[end - 1].isspace():
            end -= 1
        return start, end

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        start, end = self._bounds(text)
        return text[start:end], None if spans is None else spans[start:end]


class Replace:
    """Replace every match of a literal string or a regex with `content`."""

    def __init__(self, pattern: str, content: str, *, is_regex: bool = False):
        self.pattern = regex.compile(pattern if is_regex else regex.escape(pattern))
        self.content = content

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        if spans is None:
            # A function as the replacement keeps backslashes in `content` literal.
            return self.pattern.sub(lambda _: self.content, text), None
        out, out_spans, position = [], [], 0
        for match in self.pattern.finditer(text):
            start, end = match.span()
            out.append(text[position:start])
            out_spans.extend(spans[position:start])
            if start < end:  # the replacement stands where the last replaced character stood, as in the reference
                covered = spans[end - 1]
            else:
                covered = spans[start] if start < len(spans) else spans[-1] if spans else (0, 0)
            out.append(self.content)
            out_spans.extend([covered] * len(self.content))
            position = end
        out.append(text[position:])
        out_spans.extend(spans[position:])
        return "".join(out), out_spans


class Prepend:
    """Put `prepend` in front of non-empty text (SentencePiece's leading "▁")."""

    def __init__(self, prepend: str):
        self.prepend = prepend

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        if not text:
            return text, spans
        return self.prepend + text, None if spans is None else [spans[0]] * len(self.prepend) + spans


# BERT's idea of Chinese characters: the CJK Unified Ideographs blocks and their compatibility forms.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),  # not 0x2B820: BERT's list skips 256 characters there, and the reference keeps that
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


_NFD = UnicodeNormalizer("NFD")


class BertNormalizer:
    """BERT's normalization, per character: drop control characters and turn whitespace into " "
    (clean_text), put spaces around Chinese characters, strip accents, lowercase (and where NFD reorders marks
    across characters before accents are stripped, those steps one after the other on the whole text).
    `strip_accents=None` strips them when lowercasing, as BERT's uncased models expect.
    The character classes are the reference's (see bert_chars): an unassigned code point is kept, so the
    word holding it becomes `[UNK]` rather than losing it."""

    def __init__(
        self,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
        strip_accents: bool | None = None,
        lowercase: bool = True,
    ):
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.lowercase = lowercase
        self._cache = WordCache()  # per character
        # Characters whose normalization keeps a mark with a combining class (U+302E, a spacing mark that
        # strip_accents leaves): where one of them stands, NFD may reorder marks across characters.
        self._keeps_combining_marks: set[str] = set()

    def _cleaned(self, char: str) -> str:
        """clean_text and the spaces around Chinese characters."""
        if self.clean_text:
            if bert_chars.WHITESPACE.match(char):
                return " "
            if bert_chars.CONTROL.match(char):
                return ""
        if self.handle_chinese_chars and _is_cjk(char):
            return f" {char} "
        return char

    def _finished(self, text: str) -> str:
        """Accents stripped from decomposed text, then lowercased."""
        if self.strip_accents:
            text = bert_chars.ACCENT.sub("", text)
        if self.lowercase:
            text = text.translate(bert_chars.NEWER_LOWERCASE).lower()
        return text

    def _char(self, char: str) -> str:
        mapped = self._cache.get(char)
        if mapped is None:
            mapped = self._cleaned(char)
            if self.strip_accents:
                mapped = _NFD.normalize(mapped)[0]
            mapped = self._cache.remember(char, self._finished(mapped))
            if self.strip_accents and any(unicodedata.combining(kept) for kept in mapped):
                self._keeps_combining_marks.add(char)
        return mapped

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        if text.isascii() and not self.clean_text:  # nothing to do but lowercase: characters stay where they are
            return text.lower() if self.lowercase else text, spans
        mapped = [self._char(char) for char in text]
        if self._keeps_combining_marks and not self._keeps_combining_marks.isdisjoint(text):
            # Character by character is the reference's result unless its NFD of the whole text reorders a
            # mark that strip_accents keeps across characters (with the offsets, which stay where they were).
            return self._normalize_whole(text, spans)
        return _map_chars(spans, mapped)

    def _normalize_whole(self, text: str, spans: Spans | None) -> tuple[str, Spans | None]:
        """The reference's steps in its order: clean, pad, NFD of the whole text, strip accents, lowercase."""
        text, spans = _map_chars(spans, [self._cleaned(char) for char in text])
        text, spans = _NFD.normalize(text, spans)
        return _map_chars(spans, [self._finished(char) for char in text])


class Sequence:
    def __init__(self, normalizers: list):
        self.normalizers = list(normalizers)

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        for normalizer in self.normalizers:
            text, spans = normalizer.normalize(text, spans)
        return text, spans


# Graphemes longer than this (a base with a run of marks) are rewritten each time rather than cached.
_LONGEST_CACHED_GRAPHEME = 16


class Precompiled:
    """SentencePiece's compiled normalization rules (`precompiled_charsmap`, e.g. nmt_nfkc): a
    double-array trie over UTF-8 bytes whose leaves point into a blob of NUL-terminated replacements.
    At each position the longest matching rule wins; text no rule matches is kept, a character at a time."""

    def __init__(self, charsmap: bytes):
        if len(charsmap) < 4:
            raise ValueError(f"precompiled_charsmap is {len(charsmap)} bytes; it needs at least the 4-byte trie size.")
        (trie_size,) = struct.unpack_from("<I", charsmap)
        if trie_size % 4 or not 4 <= trie_size <= len(charsmap) - 4:
            raise ValueError(f"precompiled_charsmap declares a {trie_size}-byte trie in {len(charsmap)} bytes; "
                             "expected a positive multiple of 4 that the charsmap holds.")
        self.units = list(struct.unpack_from(f"<{trie_size // 4}I", charsmap, 4))
        self.replacements = charsmap[4 + trie_size :]
        # Every rule's value (a unit with the top bit set) must point at a NUL-terminated replacement: checked
        # here, so that a damaged file is refused where it is loaded rather than while some text is normalized.
        last_nul = self.replacements.rfind(b"\0")
        for unit in self.units:
            if unit >> 31 and (unit & ((1 << 31) - 1)) > last_nul:
                raise ValueError(
                    f"precompiled_charsmap has a rule whose replacement starts at byte {unit & ((1 << 31) - 1)} of "
                    f"{len(self.replacements)}, past the last NUL-terminated replacement."
                )
        self._cache = WordCache()  # per grapheme, the short ones only (see _rewrite)

    def _matches(self, data: bytes, start: int, stop: int) -> list[tuple[int, int]]:
        """(length in bytes, replacement offset) of every rule matching data[start:stop], shortest first."""
        units, found = self.units, []
        unit = units[0]
        position = (unit >> 10) << ((unit & (1 << 9)) >> 6)
        for index in range(start, stop):
            byte = data[index]
            position ^= byte
            if position >= len(units):
                break
            unit = units[position]
            if (unit & ((1 << 31) | 0xFF)) != byte:  # the unit's label is not this byte
                break
            position ^= (unit >> 10) << ((unit & (1 << 9)) >> 6)
            if (unit >> 8) & 1 and position < len(units):  # a rule ends here; its value is in the leaf unit
                found.append((index + 1 - start, units[position] & ((1 << 31) - 1)))
        return found

    def _replacement(self, offset: int) -> str:
        end = self.replacements.find(b"\0", offset)
        try:
            if end < 0:  # a leaf unit without the top bit; a valid trie has none
                raise UnicodeDecodeError("utf-8", b"", 0, 0, "no NUL-terminated replacement")
            return self.replacements[offset:end].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"precompiled_charsmap's replacement at byte {offset} is not NUL-terminated UTF-8 "
                             "text; the tokenizer file is damaged.") from None

    def chunks(self, text: str) -> list[tuple[str, int, int]]:
        """(replacement, start, end) for consecutive stretches of `text`, in characters."""
        data = text.encode("utf-8")
        char_at = {}  # byte offset of each character's first byte -> character index
        byte = 0
        for index, char in enumerate(text):
            char_at[byte] = index
            byte += len(char.encode("utf-8"))
        char_at[byte] = len(text)
        out, position = [], 0
        while position < len(data):
            start_char = char_at[position]
            matches = [match for match in self._matches(data, position, len(data)) if position + match[0] in char_at]
            if matches:
                length, offset = matches[-1]  # the longest rule wins
                out.append((self._replacement(offset), start_char, char_at[position + length]))
                position += length
            else:
                out.append((text[start_char], start_char, start_char + 1))
                position += len(text[start_char].encode("utf-8"))
        return out

    def _rewrite(self, piece: str) -> str | None:
        """What the reference's tokenizer.json Precompiled does with a grapheme or a character: the
        shortest rule matching its start replaces all of it."""
        result = self._cache.get(piece)
        if result is None and piece not in self._cache:
            data = piece.encode("utf-8")
            matches = self._matches(data, 0, len(data))
            result = self._replacement(matches[0][1]) if matches else None
            # A grapheme of a base and thousands of marks is hostile input, not a word that comes back.
            if len(piece) <= _LONGEST_CACHED_GRAPHEME:
                self._cache.remember(piece, result)
        return result

    def normalize(self, text: str, spans: Spans | None = None) -> tuple[str, Spans | None]:
        """As the reference applies it in tokenizer.json: grapheme by grapheme (`sentencepiece` itself
        matches the longest rule instead, see `chunks`).

        Offsets follow the reference's alignment: a replacement's characters stand, in order, where the
        characters it replaced stood, and any beyond them where the one before them stands; characters a
        replacement leaves out count against the character written last (one that was added then stands where
        the first removed one stood), and are forgotten when nothing was written yet (so after "\x1f" at the
        start, "0" stands where "\x1f" stood)."""
        pieces = []  # (replacement, how many characters it replaces)
        for grapheme in _graphemes(text):
            replacement = self._rewrite(grapheme) if len(grapheme.encode("utf-8")) < 6 else None
            if replacement is not None:
                pieces.append((replacement, len(grapheme)))
            else:
                for char in grapheme:
                    replaced = self._rewrite(char)
                    pieces.append((char if replaced is None else replaced, 1))
        normalized = "".join(replacement for replacement, _ in pieces)
        if spans is None:
            return normalized, None
        changes: list[int] = []  # per character written: +1 added, 0 one for one, -n also covers n more
        for replacement, replaced in pieces:
            changes.extend(0 if index < replaced else 1 for index in range(len(replacement)))
            if len(replacement) < replaced and changes:
                changes[-1] -= replaced - len(replacement)
        out_spans, position = [], 0
        for change in changes:
            if change > 0 and out_spans:
                out_spans.append(out_spans[-1])
            else:
                out_spans.append(spans[min(position, len(spans) - 1)])
                position += 1 - min(change, 0)
        return normalized, out_spans


_GRAPHEME = regex.compile(r"\X", regex.DOTALL)
# U+0378 is unassigned in every Unicode: a grapheme of its own, as the reference's rules see these characters.
_AS_REFERENCE_GRAPHEMES_SEE = {
    code: 0x378 for first, last in reference_unicode.NEWER_THAN_REFERENCE_GRAPHEMES for code in range(first, last + 1)
}
_NEWER_THAN_REFERENCE_GRAPHEMES = frozenset(map(chr, _AS_REFERENCE_GRAPHEMES_SEE))


def _graphemes(text: str) -> list[str]:
    """`text` split into graphemes by the reference's Unicode 17 rules (the `regex` module's may be newer)."""
    if _NEWER_THAN_REFERENCE_GRAPHEMES.isdisjoint(text):
        return _GRAPHEME.findall(text)
    seen = text.translate(_AS_REFERENCE_GRAPHEMES_SEE)
    return [text[match.start() : match.end()] for match in _GRAPHEME.finditer(seen)]


class SentencePieceNormalizer:
    """SentencePiece's whole normalization, as its library does it: the precompiled rules (if any),
    then drop leading, trailing and repeated spaces (`remove_extra_whitespaces`), put one space in
    front (`add_dummy_prefix`), and spell spaces as "▁" (`escape_whitespaces`).

    It runs on each stretch of text between special tokens. With `prefix_only_at_start` (the reference's
    `legacy=False` Llama tokenizers), only the stretch at the start of the text gets the dummy prefix,
    not one that follows a special token."""

    SPACE = "▁"
    takes_position = True

    def __init__(
        self,
        precompiled: Precompiled | None,
        *,
        add_dummy_prefix: bool = True,
        remove_extra_whitespaces: bool = True,
        escape_whitespaces: bool = True,
        prefix_only_at_start: bool = False,
    ):
        self.precompiled = precompiled
        self.add_dummy_prefix = add_dummy_prefix
        self.remove_extra_whitespaces = remove_extra_whitespaces
        self.escape_whitespaces = escape_whitespaces
        self.prefix_only_at_start = prefix_only_at_start

    def normalize(
        self, text: str, spans: Spans | None = None, starts_text: bool = True
    ) -> tuple[str, Spans | None]:
        """`starts_text`: whether `text` is the start of the whole text (it follows no special token)."""
        add_dummy_prefix = self.add_dummy_prefix and (starts_text or not self.prefix_only_at_start)
        if self.precompiled is not None:
            chunks = self.precompiled.chunks(text)
        else:
            chunks = [(char, index, index + 1) for index, char in enumerate(text)]
        first = 0
        if self.remove_extra_whitespaces:
            while first < len(chunks) and chunks[first][0] == " ":
                first += 1
        if first == len(chunks):
            return "", None if spans is None else []
        space = self.SPACE if self.escape_whitespaces else " "
        out, sources = [], []  # the characters of `text` each string of `out` came from, as (start, end)
        if add_dummy_prefix:
            out.append(space)
            sources.append((chunks[first][1], None))  # nothing: an empty span where the text starts
        previous_is_space = self.remove_extra_whitespaces
        for replacement, start, end in chunks[first:]:
            if previous_is_space:
                replacement = replacement.lstrip(" ")
            if replacement:
                out.append(replacement.replace(" ", space))
                sources.append((start, end))
                previous_is_space = self.remove_extra_whitespaces and replacement.endswith(" ")
        normalized = "".join(out)
        kept = len(normalized.rstrip(space)) if self.remove_extra_whitespaces else len(normalized)
        if spans is None:
            return normalized[:kept], None
        out_spans = []
        for part, (start, end) in zip(out, sources):
            covered = (spans[start][0], spans[start][0] if end is None else spans[end - 1][1])
            out_spans.extend([covered] * len(part))
        return normalized[:kept], out_spans[:kept]
