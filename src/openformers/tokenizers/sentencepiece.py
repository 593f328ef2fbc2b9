"""SentencePiece's `tokenizer.model`: the protobuf file read field by field (no protobuf library), and
the normalizer and models that encode exactly as the `sentencepiece` library does.

The file is a ModelProto: repeated pieces (field 1: piece, score, type), a TrainerSpec (field 2: the
model type, byte fallback, the special token ids) and a NormalizerSpec (field 3: the precompiled
normalization rules and the whitespace options).
"""

import struct
from dataclasses import dataclass, field
from pathlib import Path

from .models import NORMAL

# SentencePiece model types.
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4
MODEL_TYPE_NAMES = {UNIGRAM: "unigram", BPE: "bpe", WORD: "word", CHAR: "char"}


@dataclass
class SentencePieceModel:
    """What a tokenizer.model holds that encoding needs; the defaults are the protobuf's."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    treat_whitespace_as_suffix: bool = False
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


class _WireReader:
    """The protobuf wire format: (field number, wire type, value) triples, read one after the other."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def varint(self) -> int:
        result, shift = 0, 0
        while True:
            if self.offset >= len(self.data):
                raise self._truncated()
            byte = self.data[self.offset]
            self.offset += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError(
                    f"{self.path} has a malformed number at byte {self.offset}; it is not a SentencePiece model."
                )

    def fields(self):
        while self.offset < len(self.data):
            key = self.varint()
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                value = self.varint()
            elif wire_type == 1:
                value = self._take(8)
            elif wire_type == 2:
                value = self._take(self.varint())
            elif wire_type == 5:
                value = self._take(4)
            else:
                raise ValueError(
                    f"{self.path} has a field of wire type {wire_type} at byte {self.offset}; "
                    "it is not a SentencePiece model (a protobuf ModelProto)."
                )
            yield number, wire_type, value

    def _truncated(self) -> ValueError:
        return ValueError(f"{self.path} ends in the middle of a field: it is truncated or not a SentencePiece model.")

    def _take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise self._truncated()
        value, self.offset = self.data[self.offset : end], end
        return value


def _int32(value: int) -> int:
    """A protobuf int32 read as a varint: negative numbers come as 64-bit two's complement."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _text(value: bytes, path: Path) -> str:
    try:
        return value.decode("utf-8")
    except (UnicodeDecodeError, AttributeError):
        raise ValueError(f"{path} has a piece that is not UTF-8 text; it is not a SentencePiece model.") from None


def read_sentencepiece_model(path: str | Path) -> SentencePieceModel:
    """Parse a SentencePiece tokenizer.model; raises ValueError naming the file if it is not one."""
    path = Path(path)
    model = SentencePieceModel()
    for number, wire_type, value in _WireReader(path.read_bytes(), path).fields():
        if number == 1 and wire_type == 2:
            model.pieces.append(_read_piece(value, path))
        elif number == 2 and wire_type == 2:
            _read_trainer_spec(value, model, path)
        elif number == 3 and wire_type == 2:
            _read_normalizer_spec(value, model, path)
    if not model.pieces:
        raise ValueError(f"{path} holds no pieces; it is not a SentencePiece model.")
    return model


def _read_piece(data: bytes, path: Path) -> tuple[str, float, int]:
    piece, score, kind = None, 0.0, NORMAL
    for number, wire_type, value in _WireReader(data, path).fields():
        if number == 1 and wire_type == 2:
            piece = _text(value, path)
        elif number == 2 and wire_type == 5:
            (score,) = struct.unpack("<f", value)
        elif number == 3 and wire_type == 0:
            kind = value
    if piece is None:
        raise ValueError(f"{path} has a piece without text; it is not a SentencePiece model.")
    return piece, score, kind


def _read_trainer_spec(data: bytes, model: SentencePieceModel, path: Path) -> None:
    for number, wire_type, value in _WireReader(data, path).fields():
        if wire_type != 0:
            continue
        if number == 3:
            model.model_type = value
        elif number == 24:
            model.treat_whitespace_as_suffix = bool(value)
        elif number == 35:
            model.byte_fallback = bool(value)
        elif number in (40, 41, 42, 43):
            setattr(model, {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}[number], _int32(value))


def _read_normalizer_spec(data: bytes, model: SentencePieceModel, path: Path) -> None:
    for number, wire_type, value in _WireReader(data, path).fields():
        if number == 1 and wire_type == 2:
            model.normalizer_name = _text(value, path)
        elif number == 2 and wire_type == 2:
            model.precompiled_charsmap = bytes(value)
        elif number in (3, 4, 5) and wire_type == 0:
            name = {3: "add_dummy_prefix", 4: "remove_extra_whitespaces", 5: "escape_whitespaces"}[number]
            setattr(model, name, bool(value))


# --- writing: a tokenizer.model for a SentencePiece tokenizer read from elsewhere (a GGUF file)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 values go out as 64-bit two's complement, as protobuf does
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, value) -> bytes:
    """One field: bytes and str length-delimited, float as fixed 32 bits, int and bool as a varint."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3) + _varint(int(value))


def write_sentencepiece_model(model: SentencePieceModel, path: str | Path) -> None:
    """Write `model` as a tokenizer.model that the `sentencepiece` library (and this module) read back."""
    pieces = b"".join(
        _field(1, _field(1, piece) + _field(2, float(score)) + _field(3, kind)) for piece, score, kind in model.pieces
    )
    trainer = b"".join(
        [
            _field(3, model.model_type),
            _field(4, len(model.pieces)),
            _field(24, model.treat_whitespace_as_suffix),
            _field(35, model.byte_fallback),
            _field(40, model.unk_id),
            _field(41, model.bos_id),
            _field(42, model.eos_id),
            _field(43, model.pad_id),
        ]
    )
    name = model.normalizer_name or ("identity" if not model.precompiled_charsmap else "")
    normalizer = b"".join(
        [
            _field(1, name),
            _field(2, model.precompiled_charsmap),
            _field(3, model.add_dummy_prefix),
            _field(4, model.remove_extra_whitespaces),
            _field(5, model.escape_whitespaces),
        ]
    )
    Path(path).write_bytes(pieces + _field(2, trainer) + _field(3, normalizer))
