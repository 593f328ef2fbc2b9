"""Decoders: the fifth slot, turning token strings back into text.

Each has `decode(tokens) -> str`.
"""

from .pre_tokenizers import CHAR_TO_BYTE


class ByteLevel:
    """Undo the byte alphabet: map each character back to its byte and read the bytes as UTF-8.

    Bytes that are not valid UTF-8 (a character cut between tokens) become U+FFFD. A token with a
    character outside the alphabet (an added token such as "<think>" spelled in plain text) is
    taken as its own UTF-8 bytes, as the reference does.
    """

    def decode(self, tokens: list[str]) -> str:
        data = bytearray()
        for token in tokens:
            try:
                data += bytes([CHAR_TO_BYTE[char] for char in token])
            except KeyError:
                data += token.encode("utf-8")
        return data.decode("utf-8", errors="replace")
