"""Decoders: the fifth slot, turning token strings back into text.

Each has `decode(tokens) -> str`.
"""

import regex

from .pre_tokenizers import CHAR_TO_BYTE

# For str.translate: each alphabet character becomes the Latin-1 character of its byte, so that
# .encode("latin-1") gives the bytes. Latin-1 characters outside the alphabet become U+FFFF, which
# .encode("latin-1") refuses, so they cannot pass for bytes.
_ALPHABET_TO_LATIN1 = {code: "\uffff" for code in range(256)}
_ALPHABET_TO_LATIN1.update({ord(char): byte for char, byte in CHAR_TO_BYTE.items()})


class ByteLevel:
    """Undo the byte alphabet: map each character back to its byte and read the bytes as UTF-8.

    Bytes that are not valid UTF-8 (a character cut between tokens) become U+FFFD. A token with a
    character outside the alphabet (an added token such as "<think>" spelled in plain text) is
    taken as its own UTF-8 bytes, as the reference does.
    """

    def decode_chain(self, tokens: list[str]) -> list[str]:
        return [self.decode(tokens)]

    def decode(self, tokens: list[str]) -> str:
        try:  # the usual case, every character in the alphabet, in one pass
            data = "".join(tokens).translate(_ALPHABET_TO_LATIN1).encode("latin-1")
        except UnicodeEncodeError:
            data = b"".join(_token_bytes(token) for token in tokens)
        return data.decode("utf-8", errors="replace")


def _token_bytes(token: str) -> bytes:
    try:
        return token.translate(_ALPHABET_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError:
        return token.encode("utf-8")


# The spaces a word-level tokenizer puts before punctuation and English contractions, taken back out.
_CLEANUPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" do not", " don't"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def cleanup_spaces(text: str) -> str:
    for before, after in _CLEANUPS:
        text = text.replace(before, after)
    return text


class WordPiece:
    """Join WordPiece tokens: a token with the prefix ("##") glues to the one before, others get a space."""

    def __init__(self, prefix: str = "##", cleanup: bool = True):
        self.prefix = prefix
        self.cleanup = cleanup

    def decode(self, tokens: list[str]) -> str:
        return "".join(self.decode_chain(tokens))

    def decode_chain(self, tokens: list[str]) -> list[str]:
        words = []
        for index, token in enumerate(tokens):
            if index and token.startswith(self.prefix):
                token = token[len(self.prefix) :]
            elif index:
                token = " " + token
            # Cleaned token by token, as the reference does, so only a space the token begins with goes.
            words.append(cleanup_spaces(token) if self.cleanup else token)
        return words


def decode_utf8_per_byte(data: bytes) -> str:
    """UTF-8 text from bytes, each byte that does not start a valid character becoming U+FFFD
    (one per byte, as `sentencepiece` does, where Python would give one per broken sequence)."""
    out, position = [], 0
    while position < len(data):
        for length in (1, 2, 3, 4):
            try:
                out.append(data[position : position + length].decode("utf-8"))
                position += length
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append("\ufffd")
            position += 1
    return "".join(out)


class SentencePiece:
    """SentencePiece's decoding: "▁" is a space, the space put in front by the normalizer is taken
    off the first piece, `<0xXX>` byte pieces join into UTF-8, control pieces (`<s>`) vanish, and
    the unknown piece reads " ⁇ "."""

    BYTE_PIECES = {f"<0x{byte:02X}>": byte for byte in range(256)}

    def __init__(
        self, control_tokens: set[str], unk_token: str, *, add_dummy_prefix: bool = True, byte_fallback: bool = False,
        pieces: frozenset[str] | None = None,
    ):
        self.control_tokens = set(control_tokens)
        self.unk_token = unk_token
        self.add_dummy_prefix = add_dummy_prefix
        self.byte_pieces = self.BYTE_PIECES if byte_fallback else {}
        # The model's pieces, when tokens from elsewhere may come (Marian decodes a shared vocabulary with one
        # language's model): `sentencepiece` writes a piece it does not know as it is, "▁" and all.
        self.pieces = pieces

    def decode_chain(self, tokens: list[str]) -> list[str]:
        return [self.decode(tokens)]

    def decode(self, tokens: list[str]) -> str:
        out, pending = [], bytearray()
        for token in tokens:
            byte = self.byte_pieces.get(token)
            if byte is not None:
                pending.append(byte)
                continue
            if pending:
                out.append(decode_utf8_per_byte(bytes(pending)))
                pending.clear()
            if token in self.control_tokens:
                continue
            if self.pieces is not None and token not in self.pieces:
                out.append(token)
                continue
            if token == self.unk_token:
                out.append(" \u2047 ")
                continue
            if self.add_dummy_prefix and not any(out):
                token = token.removeprefix("▁")
            out.append(token.replace("▁", " "))
        if pending:
            out.append(decode_utf8_per_byte(bytes(pending)))
        return "".join(out)


class SpecialTokensApart:
    """Marian's and M2M100's decoding: the pieces between special tokens decoded by `pieces` (a SentencePiece
    decoder), each special token written as it is followed by `space_after` (Marian's " ", M2M100's none), then any
    "▁" left read as a space and the ends stripped."""

    def __init__(self, pieces: SentencePiece, special_tokens: frozenset[str], space_after: str = " "):
        self.pieces = pieces
        self.special_tokens = special_tokens
        self.space_after = space_after

    def decode(self, tokens: list[str]) -> str:
        out, run = [], []
        for token in tokens:
            if token in self.special_tokens:
                out += [self.pieces.decode(run), token, self.space_after]
                run = []
            else:
                run.append(token)
        out.append(self.pieces.decode(run))
        return "".join(out).replace("▁", " ").strip()


# --- the decoders of SentencePiece-style tokenizer.json files. Each maps the list of token strings to
# another list (`decode_chain`), so that `Sequence` can chain them; `decode` joins the result.


class _Chained:
    def decode(self, tokens: list[str]) -> str:
        return "".join(self.decode_chain(tokens))


class Metaspace(_Chained):
    """"▁" back to " ", and the space the pre-tokenizer put in front taken off the first token."""

    def __init__(self, replacement: str = "▁", prepend_scheme: str = "always"):
        self.replacement = replacement
        self.prepend_scheme = prepend_scheme

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        for index, token in enumerate(tokens):
            token = token.replace(self.replacement, " ")
            if index == 0 and self.prepend_scheme != "never":
                token = token.removeprefix(" ")
            out.append(token)
        return out


class ByteFallback(_Chained):
    """Runs of `<0xXX>` tokens back into text; bytes that are not valid UTF-8 become one U+FFFD each."""

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out, pending = [], []
        for token in tokens:
            byte = SentencePiece.BYTE_PIECES.get(token)
            if byte is not None:
                pending.append(byte)
                continue
            if pending:
                out.extend(_bytes_as_tokens(pending))
                pending = []
            out.append(token)
        if pending:
            out.extend(_bytes_as_tokens(pending))
        return out


def _bytes_as_tokens(pending: list[int]) -> list[str]:
    try:
        return [bytes(pending).decode("utf-8")]
    except UnicodeDecodeError:
        return ["\ufffd"] * len(pending)


class BPEDecoder(_Chained):
    """For BPE with an `end_of_word_suffix` ("</w>"): the suffix ends a word, so it becomes a space
    (nothing after the last token)."""

    def __init__(self, suffix: str = "</w>"):
        self.suffix = suffix

    def decode_chain(self, tokens: list[str]) -> list[str]:
        last = len(tokens) - 1
        return [token.replace(self.suffix, "" if index == last else " ") for index, token in enumerate(tokens)]


class Fuse(_Chained):
    """All tokens joined into one."""

    def decode_chain(self, tokens: list[str]) -> list[str]:
        return ["".join(tokens)]


class Strip(_Chained):
    """Take up to `start` copies of `content` off the front of each token, and up to `stop` off the end."""

    def __init__(self, content: str = " ", start: int = 0, stop: int = 0):
        self.content, self.start, self.stop = content, start, stop

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        for token in tokens:
            for _ in range(self.start):
                if not token.startswith(self.content):
                    break
                token = token[len(self.content) :]
            for _ in range(self.stop):
                if not token.endswith(self.content) or not self.content:
                    break
                token = token[: -len(self.content)]
            out.append(token)
        return out


class Replace(_Chained):
    """Replace a literal string or regex in each token."""

    def __init__(self, pattern: str, content: str, *, is_regex: bool = False):
        self.pattern = regex.compile(pattern if is_regex else regex.escape(pattern))
        self.content = content

    def decode_chain(self, tokens: list[str]) -> list[str]:
        return [self.pattern.sub(lambda _: self.content, token) for token in tokens]


class Sequence(_Chained):
    def __init__(self, decoders: list):
        self.decoders = list(decoders)

    def decode_chain(self, tokens: list[str]) -> list[str]:
        for decoder in self.decoders:
            tokens = decoder.decode_chain(tokens)
        return tokens
