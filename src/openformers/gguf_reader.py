"""The one GGUF reader: a file's header, its metadata values and its tensors' bytes, without torch.

The tokenizer loaders read a GGUF file's vocabulary through it without importing torch (which would also give
CPython's garbage collector some 150,000 more objects to walk in every full collection while tokenizing);
`weights.GGUFFile` adds the dequantization to torch tensors.
"""

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType


class GGUFReader:
    """An opened GGUF file: its metadata (`get`, `metadata`) and its tensors' bytes as arrays (`tensors`).

    The file is memory-mapped and its header read once, value by value: a metadata value is decoded when
    asked for, and a tensor's bytes are read when it is used. (gguf.GGUFReader decodes every string of every
    array up front, 0.7-2.3 s for a 49k-token vocabulary; this opens the same file in tens of milliseconds.)
    """

    def __init__(self, path: str | os.PathLike, *, decode: tuple[str, ...] = ()):
        """`decode`: the prefixes of the metadata keys to decode while the header is read, for a caller that
        wants them all (walking a string array a second time costs as much as decoding it)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"No such GGUF file: {self.path}.")
        if self.path.stat().st_size < 24:
            raise ValueError(f"{self.path} is not a GGUF file: {self.path.stat().st_size} bytes, shorter than a header.")
        with open(self.path, "rb") as file:
            # Copy-on-write: tensors are writable arrays (torch.from_numpy takes them without a warning in weights.py), and
            # nothing is ever written back to the file.
            self._data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        header = _Cursor(self._data, self.path)
        if len(self._data) < 24 or header.scalar("<I") != GGUF_MAGIC:
            raise ValueError(f"{self.path} is not a GGUF file (it does not start with the GGUF magic bytes).")
        version = header.scalar("<I")
        if version not in (2, 3):
            raise ValueError(
                f"{self.path} is GGUF version {version}; only versions 2 and 3 (little-endian) can be read. "
                "Convert it again with a recent llama.cpp."
            )
        tensor_count = header.count("tensors", _SMALLEST_TENSOR_INFO)
        field_count = header.count("metadata values", _SMALLEST_FIELD)
        self._fields = {}  # key -> (value type, offset of the value)
        self._decoded = {}
        for _ in range(field_count):
            key, value_type = header.string(), header.scalar("<I")
            self._fields[key] = (value_type, header.offset)
            value = header.value(value_type, keep=key.startswith(decode))
            if key.startswith(decode):
                self._decoded[key] = value
        infos = [_tensor_info(header) for _ in range(tensor_count)]
        alignment = self.get("general.alignment", 32)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or not 0 < alignment <= 2**20:
            raise ValueError(f"{self.path}: general.alignment is {alignment!r}; expected a positive byte count.")
        data_start = -(-header.offset // alignment) * alignment
        self.tensors = {name: self._view(name, dims, kind, data_start + offset) for name, dims, kind, offset in infos}
        self.tensor_names = set(self.tensors)

    def get(self, key: str, default=None):
        """A metadata value as a Python object (lists for arrays), or `default` when the key is absent."""
        if key not in self._fields:
            return default
        if key in self._decoded:
            return self._decoded[key]
        value_type, offset = self._fields[key]
        return _Cursor(self._data, self.path, offset).value(value_type, keep=True)

    def metadata(self, prefixes: tuple[str, ...]) -> dict:
        """The metadata values whose keys start with one of `prefixes`."""
        return {key: self.get(key) for key in self._fields if key.startswith(prefixes)}

    def array_length(self, key: str) -> int | None:
        if key not in self._fields:
            return None
        value_type, offset = self._fields[key]
        if value_type != GGUFValueType.ARRAY:
            raise ValueError(f"{self.path}: the metadata value {key} is not an array.")
        cursor = _Cursor(self._data, self.path, offset)
        return cursor.array_header()[1]

    def _view(self, name: str, dims: list[int], kind: GGMLQuantizationType, offset: int) -> "GGUFTensor":
        """A tensor's bytes as an array over the mapping, shaped as gguf.GGUFReader shapes them: float and
        integer types element by element, quantized types as rows of bytes."""
        count = math.prod(dims)  # Python integers: numpy's product of uint64 dimensions wraps around silently
        shape = tuple(reversed(dims))
        if kind in _PLAIN_TYPES:
            dtype = _PLAIN_TYPES[kind]
        else:
            block_size, type_size = GGML_QUANT_SIZES[kind]
            if not dims or dims[0] % block_size:
                raise ValueError(
                    f"{self.path}: tensor {name!r} of type {kind.name} has rows of {dims[0] if dims else 0} values, "
                    f"not a multiple of its block of {block_size}; the file is damaged."
                )
            dtype, count = np.uint8, count * type_size // block_size
            shape = (*shape[:-1], shape[-1] // block_size * type_size)
        if offset + count * np.dtype(dtype).itemsize > len(self._data):
            raise ValueError(f"{self.path}: tensor {name!r} runs past the end of the file; the file may be truncated.")
        data = np.frombuffer(self._data, dtype=dtype, count=count, offset=offset).reshape(shape)
        return GGUFTensor(name, kind, tuple(dims), data)


def read_gguf_metadata(path: str | os.PathLike, prefixes: tuple[str, ...] = ("tokenizer.",)) -> dict:
    """The metadata values of a GGUF file whose keys start with one of `prefixes` (the tokenizer's, by default)."""
    return GGUFReader(path, decode=prefixes).metadata(prefixes)


@dataclass(frozen=True)
class GGUFTensor:
    """A tensor of a GGUF file as stored: its type, its dimensions in GGUF's order, and its bytes as an array."""

    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]
    data: np.ndarray


_PLAIN_TYPES = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F64: np.float64,
    GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16,
    GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}
_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


# The fewest bytes a header entry can take, so that a count the file cannot hold is refused before any loop
# (a declared 2**62 items would otherwise be walked until memory or patience runs out).
_SMALLEST_FIELD = 8 + 4 + 1  # an empty key, a value type, a one-byte value
_SMALLEST_TENSOR_INFO = 8 + 4 + 4 + 8  # an empty name, the number of dimensions, a type, an offset
_SMALLEST_ITEM = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}
MAX_DIMENSIONS = 4  # GGML_MAX_DIMS: no tensor llama.cpp writes or reads has more
MAX_ARRAY_NESTING = 8  # arrays of arrays: none of llama.cpp's keys nest at all


class _Cursor:
    """Reads GGUF's little-endian values at a position in the file, moving past each; `keep=False` only
    moves past a value (for a string array, one length at a time), without decoding it. Every count and
    length is checked against the bytes left in the file before it is used."""

    def __init__(self, data: mmap.mmap, path: Path, offset: int = 0):
        self.data, self.path, self.offset = data, path, offset

    def scalar(self, fmt: str):
        try:
            (value,) = struct.unpack_from(fmt, self.data, self.offset)
        except struct.error:
            raise ValueError(f"{self.path} ends in the middle of its header; the file may be truncated.") from None
        self.offset += struct.calcsize(fmt)
        return value

    def count(self, what: str, smallest: int) -> int:
        """A 64-bit count of items at least `smallest` bytes each, refused if the rest of the file cannot hold them."""
        at, value = self.offset, self.scalar("<Q")
        if value * smallest > len(self.data) - self.offset:
            raise ValueError(
                f"{self.path} declares {value} {what} at byte {at}, more than the {len(self.data) - self.offset} "
                "bytes after it can hold: its header is truncated or damaged."
            )
        return value

    def string(self, keep: bool = True) -> str | None:
        length = self.count("bytes of string", 1)
        start, self.offset = self.offset, self.offset + length
        if not keep:
            return None
        try:
            return self.data[start : self.offset].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path} has a metadata string at byte {start} that is not UTF-8.") from None

    def value(self, value_type: int, keep: bool, depth: int = 0):
        if value_type == GGUFValueType.STRING:
            return self.string(keep)
        if value_type == GGUFValueType.ARRAY:
            if depth >= MAX_ARRAY_NESTING:
                raise ValueError(
                    f"{self.path} nests arrays more than {MAX_ARRAY_NESTING} deep at byte {self.offset}; "
                    "the file is damaged."
                )
            return self.array(keep, depth + 1)
        if value_type not in _SCALAR_FORMATS:
            raise ValueError(f"{self.path} has a metadata value of unknown type {value_type}; the file may be damaged.")
        return self.scalar(_SCALAR_FORMATS[value_type])

    def array_header(self) -> tuple[int, int]:
        """The item type and the item count of the array that starts here."""
        item_type = self.scalar("<I")
        if item_type in _SCALAR_FORMATS:
            smallest = struct.calcsize(_SCALAR_FORMATS[item_type])
        elif item_type in _SMALLEST_ITEM:
            smallest = _SMALLEST_ITEM[item_type]
        else:
            raise ValueError(f"{self.path} has an array of unknown item type {item_type}; the file may be damaged.")
        return item_type, self.count("array items", smallest)

    def array(self, keep: bool, depth: int = 1) -> list | None:
        item_type, count = self.array_header()
        if item_type in _SCALAR_FORMATS:  # fixed width: read all at once, or jump over
            dtype = np.dtype(_SCALAR_FORMATS[item_type])
            items = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset).tolist() if keep else None
            self.offset += dtype.itemsize * count
            return items
        items = [self.value(item_type, keep, depth) for _ in range(count)]
        return items if keep else None


def _tensor_info(header: _Cursor) -> tuple[str, list[int], GGMLQuantizationType, int]:
    """(name, dimensions, type, offset in the data section) of the next tensor the header describes."""
    name = header.string()
    dimension_count = header.scalar("<I")
    if dimension_count > MAX_DIMENSIONS:
        raise ValueError(
            f"{header.path}: tensor {name!r} declares {dimension_count} dimensions; GGUF tensors have at most "
            f"{MAX_DIMENSIONS}. The file is damaged."
        )
    dims = [header.scalar("<Q") for _ in range(dimension_count)]
    kind = header.scalar("<I")
    try:
        kind = GGMLQuantizationType(kind)
    except ValueError:
        message = f"{header.path}: tensor {name!r} has an unknown type {kind}; the file may be damaged."
        raise ValueError(message) from None
    return name, dims, kind, header.scalar("<Q")
