"""State dicts in and out: safetensors, PyTorch `.bin` and GGUF files.

This module knows no architecture. It reads tensors under the names a file gives them, renames them
with the table a model file hands it, and writes safetensors that Hugging Face transformers loads.
Everything it can is memory-mapped: a tensor is read from disk when it is first used.
GGUF blocks are dequantized with whole-tensor torch operations, one call per tensor.
"""

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

# Where a Hugging Face model folder keeps its weights, in the order they are looked for.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def find_weights(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder} has a config.json but no weights. Looked for {', '.join(WEIGHT_FILES)} (or pass gguf_file=NAME "
        f"for a GGUF file)."
    )


def load_weights(path: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors or `.bin` file, or of all the shards an `*.index.json` lists."""
    if not path.is_file():
        raise FileNotFoundError(f"No such weights file: {path}.")
    if path.name.endswith(".index.json"):
        state_dict = {}
        for shard in _shards(path):
            state_dict.update(_load_file(shard))
    else:
        state_dict = _load_file(path)
    return cast(state_dict, dtype)


def _shards(index_path: Path) -> list[Path]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{index_path} is not a shard index: expected JSON with a 'weight_map' object.") from error
    shards = [index_path.parent / name for name in sorted(set(weight_map.values()))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{index_path} lists shards that are not in {index_path.parent}: {', '.join(missing)}. "
            "Download the missing files again."
        )
    return shards


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if path.suffix == ".bin":
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # Files saved before PyTorch 1.6 (not zip archives) cannot be memory-mapped; read them whole.
            return torch.load(path, map_location="cpu", weights_only=True)
    raise ValueError(f"{path} is not a weights file openformers reads: expected .safetensors, .bin or .gguf.")


def cast(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Cast the floating-point tensors to `dtype` (None keeps them as stored); integer tensors stay as they are."""
    if dtype is None:
        return state_dict
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state_dict.items()}


def rename(state_dict: dict[str, torch.Tensor], table: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rename each dot-separated part of every key that `table` lists ("blk.0.attn_q.weight" -> ...)."""
    return {".".join(table.get(part, part) for part in name.split(".")): t for name, t in state_dict.items()}


def save_safetensors(state_dict: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write model.safetensors, or numbered shards and model.safetensors.index.json past `max_shard_bytes`."""
    from safetensors.torch import save_file

    shards, current, current_bytes = [], {}, 0
    for name, tensor in state_dict.items():
        size = tensor.numel() * tensor.element_size()
        if current and current_bytes + size > max_shard_bytes:
            shards.append(current)
            current, current_bytes = {}, 0
        current[name] = tensor.detach().contiguous().cpu()
        current_bytes += size
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], folder / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map, total = {}, 0
    for number, shard in enumerate(shards, start=1):
        filename = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / filename, metadata={"format": "pt"})
        for name, tensor in shard.items():
            weight_map[name] = filename
            total += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


# GGUF --------------------------------------------------------------------------------------------------------


class GGUFFile:
    """An opened GGUF file: its metadata (`get`, `metadata`) and its tensors, dequantized on request (`tensor`,
    `state_dict`).

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
        with open(self.path, "rb") as file:
            # Copy-on-write: tensors are writable arrays (torch.from_numpy takes them without a warning), and
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
        tensor_count, field_count = header.scalar("<Q"), header.scalar("<Q")
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
        cursor.scalar("<I")  # the item type
        return cursor.scalar("<Q")

    def _view(self, name: str, dims: list[int], kind: GGMLQuantizationType, offset: int) -> "GGUFTensor":
        """A tensor's bytes as an array over the mapping, shaped as gguf.GGUFReader shapes them: float and
        integer types element by element, quantized types as rows of bytes."""
        count = int(np.prod(dims))
        shape = tuple(reversed(dims))
        if kind in _PLAIN_TYPES:
            dtype = _PLAIN_TYPES[kind]
        else:
            block_size, type_size = GGML_QUANT_SIZES[kind]
            dtype, count = np.uint8, count * type_size // block_size
            shape = (*shape[:-1], shape[-1] // block_size * type_size)
        if offset + count * np.dtype(dtype).itemsize > len(self._data):
            raise ValueError(f"{self.path}: tensor {name!r} runs past the end of the file; the file may be truncated.")
        data = np.frombuffer(self._data, dtype=dtype, count=count, offset=offset).reshape(shape)
        return GGUFTensor(name, kind, tuple(dims), data)

    def tensor(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The tensor `name`, dequantized, in PyTorch's shape order (GGUF lists dimensions the other way round)."""
        info = self.tensors[name]
        shape = tuple(reversed(info.shape))
        kind = info.tensor_type.name
        raw = torch.from_numpy(info.data)
        if kind == "F32":
            values = raw
        elif kind == "F16":
            values = raw.float()
        elif kind == "BF16":
            values = raw.reshape(-1).view(torch.bfloat16).float()
        elif kind in _DEQUANTIZERS:
            block_bytes = _BLOCK_BYTES[kind]
            values = _DEQUANTIZERS[kind](raw.reshape(-1, block_bytes))
        else:
            raise ValueError(
                f"Tensor {name!r} in {self.path} is stored as {kind}, which openformers cannot dequantize yet. "
                f"Supported GGUF types: F32, F16, BF16, {', '.join(_DEQUANTIZERS)}."
            )
        return values.reshape(shape).to(dtype)

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        return {name: self.tensor(name, dtype) for name in self.tensors}


def read_gguf_metadata(path: str | os.PathLike, prefixes: tuple[str, ...] = ("tokenizer.",)) -> dict:
    """The metadata values of a GGUF file whose keys start with one of `prefixes` (the tokenizer's, by default)."""
    return GGUFFile(path, decode=prefixes).metadata(prefixes)


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


class _Cursor:
    """Reads GGUF's little-endian values at a position in the file, moving past each; `keep=False` only
    moves past a value (for a string array, one length at a time), without decoding it."""

    def __init__(self, data: mmap.mmap, path: Path, offset: int = 0):
        self.data, self.path, self.offset = data, path, offset

    def scalar(self, fmt: str):
        try:
            (value,) = struct.unpack_from(fmt, self.data, self.offset)
        except struct.error:
            raise ValueError(f"{self.path} ends in the middle of its header; the file may be truncated.") from None
        self.offset += struct.calcsize(fmt)
        return value

    def string(self, keep: bool = True) -> str | None:
        length = self.scalar("<Q")
        start, self.offset = self.offset, self.offset + length
        if not keep:
            return None
        try:
            return self.data[start : self.offset].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path} has a metadata string at byte {start} that is not UTF-8.") from None

    def value(self, value_type: int, keep: bool):
        if value_type == GGUFValueType.STRING:
            return self.string(keep)
        if value_type == GGUFValueType.ARRAY:
            return self.array(keep)
        if value_type not in _SCALAR_FORMATS:
            raise ValueError(f"{self.path} has a metadata value of unknown type {value_type}; the file may be damaged.")
        return self.scalar(_SCALAR_FORMATS[value_type])

    def array(self, keep: bool) -> list | None:
        item_type, count = self.scalar("<I"), self.scalar("<Q")
        if item_type in _SCALAR_FORMATS:  # fixed width: read all at once, or jump over
            dtype = np.dtype(_SCALAR_FORMATS[item_type])
            items = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset).tolist() if keep else None
            self.offset += dtype.itemsize * count
            return items
        items = [self.value(item_type, keep) for _ in range(count)]
        return items if keep else None


def _tensor_info(header: _Cursor) -> tuple[str, list[int], GGMLQuantizationType, int]:
    """(name, dimensions, type, offset in the data section) of the next tensor the header describes."""
    name = header.string()
    dims = [header.scalar("<Q") for _ in range(header.scalar("<I"))]
    kind = header.scalar("<I")
    try:
        kind = GGMLQuantizationType(kind)
    except ValueError:
        message = f"{header.path}: tensor {name!r} has an unknown type {kind}; the file may be damaged."
        raise ValueError(message) from None
    return name, dims, kind, header.scalar("<Q")


# GGUF block layouts. Each dequantizer takes (n_blocks, block_bytes) uint8 and returns (n_blocks, values) float32,
# with the same float32 operations in the same order as gguf.quants (the numpy reference), so results match
# exactly; they work in place on the one float32 buffer, since fresh memory is what dequantizing costs most.
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}


def _half(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The float16 at byte `start` of every block, as a float32 column."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(..., n) bytes -> (..., 2n): the low nibbles of all bytes, then the high nibbles."""
    return torch.cat([packed & 0x0F, packed >> 4], dim=-1)


def _bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """(n, count // 8) bytes -> (n, count) bits, little-endian within each byte."""
    shifts = torch.arange(8, dtype=torch.uint8)
    return ((packed[:, :, None] >> shifts) & 1).reshape(packed.shape[0], count)


def _q8_0(blocks):
    return blocks[:, 2:].contiguous().view(torch.int8).float().mul_(_half(blocks, 0))


def _q4_0(blocks):
    return (_nibbles(blocks[:, 2:]).to(torch.int8) - 8).float().mul_(_half(blocks, 0))


def _q4_1(blocks):
    return _nibbles(blocks[:, 4:]).float().mul_(_half(blocks, 0)).add_(_half(blocks, 2))


def _q5_0(blocks):
    high = _bits(blocks[:, 2:6], 32) << 4
    return ((_nibbles(blocks[:, 6:]) | high).to(torch.int8) - 16).float().mul_(_half(blocks, 0))


def _q5_1(blocks):
    high = _bits(blocks[:, 4:8], 32) << 4
    return (_nibbles(blocks[:, 8:]) | high).float().mul_(_half(blocks, 0)).add_(_half(blocks, 2))


def _k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and 8 six-bit mins that Q4_K and Q5_K pack into 12 bytes."""
    low, high, mixed = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat([low & 0x3F, (mixed & 0x0F) | ((low >> 2) & 0x30)], dim=-1)
    mins = torch.cat([high & 0x3F, (mixed >> 4) | ((high >> 2) & 0x30)], dim=-1)
    return scales.float(), mins.float()


def _k_dequantize(blocks: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Shared tail of Q4_K and Q5_K: q (n, 8, 32) unsigned -> d * scale * q - dmin * min."""
    n = blocks.shape[0]
    scales, mins = _k_scales(blocks[:, 4:16])
    d = (_half(blocks, 0) * scales)[:, :, None]
    dm = (_half(blocks, 2) * mins)[:, :, None]
    return q.float().mul_(d).sub_(dm).reshape(n, 256)


def _q4_k(blocks):
    n = blocks.shape[0]
    packed = blocks[:, 16:].reshape(n, 4, 1, 32)
    q = (packed >> torch.tensor([0, 4], dtype=torch.uint8)[:, None]) & 0x0F  # (n, 4, 2, 32)
    return _k_dequantize(blocks, q.reshape(n, 8, 32))


def _q5_k(blocks):
    n = blocks.shape[0]
    packed = blocks[:, 48:].reshape(n, 4, 1, 32)
    low = ((packed >> torch.tensor([0, 4], dtype=torch.uint8)[:, None]) & 0x0F).reshape(n, 8, 32)
    high = (blocks[:, 16:48].reshape(n, 1, 32) >> torch.arange(8, dtype=torch.uint8)[:, None]) & 1  # (n, 8, 32)
    return _k_dequantize(blocks, low | (high << 4))


def _q6_k(blocks):
    n = blocks.shape[0]
    low = blocks[:, :128].reshape(n, 2, 1, 64) >> torch.tensor([0, 4], dtype=torch.uint8)[:, None]
    low = (low & 0x0F).reshape(n, 8, 32)
    high = blocks[:, 128:192].reshape(n, 2, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8)[:, None]
    high = (high & 0x03).reshape(n, 8, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16).float()
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float()
    d = (_half(blocks, 208) * scales)[:, :, None]
    return q.mul_(d).reshape(n, 256)


_DEQUANTIZERS = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0,
    "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
}
