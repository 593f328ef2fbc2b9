"""Normalizers: the first slot of the pipeline, text -> text before it is split.

Byte-level tokenizers mostly have none; the ones here are those their tokenizer.json files use.
"""

import unicodedata

import regex


class UnicodeNormalizer:
    """One of the four Unicode normal forms: "NFC", "NFD", "NFKC" or "NFKD"."""

    def __init__(self, form: str):
        if form not in ("NFC", "NFD", "NFKC", "NFKD"):
            raise ValueError(f"Unicode normal form must be NFC, NFD, NFKC or NFKD, got {form!r}.")
        self.form = form

    def normalize(self, text: str) -> str:
        return unicodedata.normalize(self.form, text)


class Lowercase:
    def normalize(self, text: str) -> str:
        return text.lower()


class Replace:
    """Replace every match of a literal string or a regex with `content`."""

    def __init__(self, pattern: str, content: str, *, is_regex: bool = False):
        self.pattern = regex.compile(pattern if is_regex else regex.escape(pattern))
        self.content = content

    def normalize(self, text: str) -> str:
        # A function as the replacement keeps backslashes in `content` literal.
        return self.pattern.sub(lambda _: self.content, text)


class Prepend:
    """Put `prepend` in front of non-empty text (SentencePiece's leading "▁")."""

    def __init__(self, prepend: str):
        self.prepend = prepend

    def normalize(self, text: str) -> str:
        return self.prepend + text if text else text


class Sequence:
    def __init__(self, normalizers: list):
        self.normalizers = list(normalizers)

    def normalize(self, text: str) -> str:
        for normalizer in self.normalizers:
            text = normalizer.normalize(text)
        return text
