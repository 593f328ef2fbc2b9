"""Decoders: the fifth slot, turning token strings back into text.

Each has `decode(tokens) -> str`.
"""

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
        words = []
        for index, token in enumerate(tokens):
            if index and token.startswith(self.prefix):
                token = token[len(self.prefix) :]
            elif index:
                token = " " + token
            # Cleaned token by token, as the reference does, so only a space the token begins with goes.
            words.append(cleanup_spaces(token) if self.cleanup else token)
        return "".join(words)


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

    def __init__(self, control_tokens: set[str], unk_token: str, *, add_dummy_prefix: bool = True, byte_fallback: bool = False):
        self.control_tokens = set(control_tokens)
        self.unk_token = unk_token
        self.add_dummy_prefix = add_dummy_prefix
        self.byte_pieces = self.BYTE_PIECES if byte_fallback else {}

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
            if token == self.unk_token:
                out.append(" \u2047 ")
                continue
            if self.add_dummy_prefix and not any(out):
                token = token.removeprefix("▁")
            out.append(token.replace("▁", " "))
        if pending:
            out.append(decode_utf8_per_byte(bytes(pending)))
        return "".join(out)
