"""State dicts in and out: safetensors, PyTorch `.bin` and GGUF files.

This module knows no architecture. It reads tensors under the names a file gives them, renames them
with the table a model file hands it, and writes safetensors that Hugging Face transformers loads.
Everything it can is memory-mapped: a tensor is read from disk when it is first used.
GGUF blocks are dequantized with whole-tensor torch operations, one call per tensor, or for a quantized load
packed straight into the kernels' int8 and int4 layouts where those hold them (GGUF_PACKERS).
"""

import json
import math
import os
import pickle
import struct
from pathlib import Path

import torch

from .gguf_reader import GGUFReader

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
    except (ValueError, KeyError, TypeError) as error:  # ValueError: not JSON, or not UTF-8
        raise ValueError(f"{index_path} is not a shard index: expected JSON with a 'weight_map' object.") from error
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path}: 'weight_map' is a {type(weight_map).__name__}; expected an object.")
    if not all(isinstance(name, str) for name in weight_map.values()):
        raise ValueError(f"{index_path}: every 'weight_map' value must be a shard's file name (a string).")
    names = sorted(set(weight_map.values()))
    for name in names:
        # Checked by its parts, not resolved: in the Hub cache every shard is a symbolic link into the blobs folder.
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(
                f"{index_path} names the shard {name!r}, which is not a file inside {index_path.parent}; "
                "an index may only name files in its own folder."
            )
    shards = [index_path.parent / name for name in names]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{index_path} lists shards that are not in {index_path.parent}: {', '.join(missing)}. "
            "Download the missing files again."
        )
    return shards


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as error:
            raise ValueError(f"{path} is not a readable safetensors file ({error}); download it again.") from None
    if path.suffix == ".bin":
        state_dict = _load_bin(path)
        if not isinstance(state_dict, dict) or not all(isinstance(t, torch.Tensor) for t in state_dict.values()):
            raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors.")
        return state_dict
    raise ValueError(f"{path} is not a weights file openformers reads: expected .safetensors, .bin or .gguf.")


def _load_bin(path: Path):
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # Files saved before PyTorch 1.6 (not zip archives) cannot be memory-mapped; read them whole.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} holds Python objects other than tensors, which openformers never unpickles (torch.load with "
            "weights_only=True): a .bin file can run code when loaded. Use the model's safetensors files instead."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, struct.error) as error:
        raise ValueError(f"{path} is not a readable PyTorch weights file ({type(error).__name__}: "
                         f"{str(error)[:200]}); download it again.") from None


class TensorReader:
    """Reads one tensor at a time out of safetensors files (a file, or the shards of an index) with plain file
    reads, into memory of its own.

    load_weights maps the files, so a tensor costs nothing until it is used; but every page read through a
    mapping stays in the process's resident memory until all the tensors of that file are freed. Quantizing a
    checkpoint as it loads (from_pretrained(..., quantization=...)) reads each float weight once and then drops
    it: read through the mapping, a whole shard (a whole bf16 7B model for a one-file checkpoint) would stay
    resident beside the quantized model; read here, only the tensor being quantized is in memory.
    """

    def __init__(self, path: Path):
        files = _shards(path) if path.name.endswith(".index.json") else [path]
        # name -> (file, dtype, shape, first byte, end byte)
        self.locations: dict[str, tuple[Path, torch.dtype, list[int], int, int]] = {}
        for file in files:
            for name, (dtype, shape, start, end) in safetensors_header(file).items():
                if dtype in _SAFETENSORS_DTYPES:
                    self.locations[name] = (file, _SAFETENSORS_DTYPES[dtype], shape, start, end)

    def __contains__(self, name: str) -> bool:
        return name in self.locations

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Tensor `name`, in new memory or into `out` (contiguous, of its dtype and shape), which it returns."""
        file, dtype, shape, start, end = self.locations[name]
        if out is not None and not (out.dtype == dtype and list(out.shape) == list(shape) and out.is_contiguous()):
            raise ValueError(f"out must be a contiguous {dtype} tensor of shape {tuple(shape)} to read {name!r} into, "
                             f"got {out.dtype} {tuple(out.shape)}")
        tensor = torch.empty(shape, dtype=dtype) if out is None else out
        with open(file, "rb") as stream:
            stream.seek(start)
            count = stream.readinto(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
        if count != end - start:
            raise ValueError(f"{file} ends inside tensor {name!r} (read {count} of {end - start} bytes); download "
                             "the file again.")
        return tensor


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
# Bytes per value of every dtype the safetensors format defines (TensorReader reads those above; the others are
# still checked, so that a header is refused or taken whole, as safetensors itself takes it).
_SAFETENSORS_ITEM_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2,
    "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}
# safetensors refuses longer headers (its MAX_HEADER_SIZE); a length past it is damage, and reading it would
# allocate whatever the first 8 bytes say.
_LARGEST_SAFETENSORS_HEADER = 100_000_000


def safetensors_header(path: Path) -> dict[str, tuple[str, list[int], int, int]]:
    """name -> (dtype, shape, first byte, end byte in the file) of every tensor of a safetensors file, with the
    header checked as safetensors checks it before anything is allocated from it: a length the file holds, a
    JSON object of entries, shapes of non-negative integers, and data offsets that lay the tensors end to end over
    exactly the rest of the file, each as long as its shape and dtype make it. A ValueError names the file and the
    entry otherwise."""

    def refuse(what: str):
        raise ValueError(f"{path} is not a readable safetensors file: {what}; download it again.")

    size = path.stat().st_size
    with open(path, "rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            refuse(f"{size} bytes, shorter than the 8-byte header length")
        (header_bytes,) = struct.unpack("<Q", prefix)
        if header_bytes > min(size - 8, _LARGEST_SAFETENSORS_HEADER):
            refuse(f"its header length {header_bytes} is more than the {size - 8} bytes after it hold (or over "
                   f"{_LARGEST_SAFETENSORS_HEADER})")
        text = stream.read(header_bytes)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        refuse("its header is not UTF-8 JSON")
    if not isinstance(header, dict):
        refuse(f"its header is a JSON {type(header).__name__}, not an object")
    data_bytes = size - 8 - header_bytes
    entries, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                refuse("'__metadata__' is not an object of strings")
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            refuse(f"the entry of {name!r} is not an object of 'dtype', 'shape' and 'data_offsets'")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _SAFETENSORS_ITEM_BYTES:
            refuse(f"{name!r} has the dtype {dtype!r}; expected one of {', '.join(_SAFETENSORS_ITEM_BYTES)}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            refuse(f"{name!r} has the shape {shape!r}; expected a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_bytes):
            refuse(f"{name!r} has the data_offsets {offsets!r}; expected [start, end] within the "
                   f"{data_bytes} data bytes")
        if math.prod(shape) * _SAFETENSORS_ITEM_BYTES[dtype] != offsets[1] - offsets[0]:
            refuse(f"{name!r} of shape {shape} and dtype {dtype} takes {offsets[1] - offsets[0]} bytes "
                   f"(data_offsets {offsets}), not {math.prod(shape) * _SAFETENSORS_ITEM_BYTES[dtype]}")
        spans.append((offsets[0], offsets[1], name))
        entries[name] = (dtype, shape, 8 + header_bytes + offsets[0], 8 + header_bytes + offsets[1])
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            refuse(f"{name!r} starts at data byte {start}, where the tensors before it end at {end} (tensors must "
                   "be laid end to end, without overlap or gap)")
        end = stop
    if end != data_bytes:
        refuse(f"its tensors end at data byte {end}, but the file holds {data_bytes}")
    return entries


def tensor_reader(path: Path) -> TensorReader | None:
    """A TensorReader for safetensors weights; None for the other formats (read through their mapping only)."""
    name = path.name.removesuffix(".index.json")
    return TensorReader(path) if name.endswith(".safetensors") else None


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


class GGUFFile(GGUFReader):
    """An opened GGUF file (gguf_reader.GGUFReader: metadata and tensors' bytes), with its tensors dequantized to
    torch on request (`tensor`, `state_dict`)."""

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

    def state_dict_to_quantize(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """state_dict for a quantized load: the matrices (2-D tensors) as float32 placeholders on the meta device,
        read one layer at a time later (GGUFLayerReader), the rest read now in `dtype`."""
        return {name: _placeholder(info) if len(info.shape) == 2 else self.tensor(name, dtype)
                for name, info in self.tensors.items()}

    def mixes_widths(self) -> bool:
        """Whether the file stores some of its layers' matrices in 4 bits and others in 5-8, as llama.cpp's
        Q4_K_M does (Q5_0, Q6_K or Q8_0 beside Q4_K; the embedding and output matrices aside)."""
        types = {info.tensor_type.name for name, info in self.tensors.items()
                 if len(info.shape) == 2 and name not in ("token_embd.weight", "output.weight")}
        return bool(types & FOUR_BIT_TYPES) and bool(types & WIDER_QUANTIZED_TYPES)


def _placeholder(info) -> torch.Tensor:
    """A float32 tensor of a GGUF tensor's shape (in PyTorch's order) on the meta device: no memory, no data."""
    return torch.empty(tuple(reversed(info.shape)), device="meta")


class GGUFLayerReader:
    """A GGUF file's matrices read one at a time under the names the family's converter gives them (`convert`,
    a dict -> dict function that renames tensors and regroups their rows), for a quantized load: each matrix is
    dequantized (`read`) or handed over as its stored rows (`stored_rows`, for a layout that holds its blocks as
    they are) only when its layer is quantized, so loading never holds the whole model in float32 (28 GB for a
    7B file). Each matrix is converted alone, as it is read: the converters touch a matrix's rows only, so its
    stored rows (bytes) regroup as its floats do."""

    def __init__(self, gguf: GGUFFile, convert):
        self.gguf, self.convert = gguf, convert
        self.names = {}  # converted name -> the file's
        for name, info in gguf.tensors.items():
            if len(info.shape) == 2:
                converted = list(convert({name: _placeholder(info)}))
                if len(converted) > 1:
                    raise ValueError(f"{gguf.path}: matrix {name!r} converts to {len(converted)} tensors; a matrix "
                                     "read alone must convert to one (or none, when the model has no use for it).")
                self.names.update({converted_name: name for converted_name in converted})

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def read(self, name: str) -> torch.Tensor:
        """Matrix `name` (a converted name) dequantized to float32."""
        stored = self.names[name]
        return self.convert({stored: self.gguf.tensor(stored)})[name]

    def stored_rows(self, name: str) -> tuple[str, torch.Tensor | None]:
        """Matrix `name`'s type and, for a type of blocks, its rows as stored, (rows, bytes per row) uint8, in the
        converted order."""
        stored = self.names[name]
        info = self.gguf.tensors[stored]
        kind = info.tensor_type.name
        if kind not in _BLOCK_BYTES:
            return kind, None
        return kind, self.convert({stored: torch.from_numpy(info.data)})[name]


# The block types of 4 bits a weight, and of 5-8 (GGUFFile.mixes_widths).
FOUR_BIT_TYPES = {"Q4_0", "Q4_1", "Q4_K"}
WIDER_QUANTIZED_TYPES = {"Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"}

# GGUF block layouts. Each dequantizer takes (n_blocks, block_bytes) uint8 and returns (n_blocks, values) float32,
# with the same float32 operations in the same order as gguf.quants (the numpy reference), so results match
# exactly; they work in place on the one float32 buffer, since fresh memory is what dequantizing costs most.
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210,
                "MXFP4": 17}
# The 16 values of an FP4 (e2m1) code of MXFP4 blocks (gpt-oss): sign bit, two exponent bits, one mantissa bit.
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


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


# The signed steps of the blocks whose weights are d * step: the int8 layout holds them as they are (_int8_from_blocks).
def _q8_0_steps(blocks):
    return blocks[:, 2:].contiguous().view(torch.int8)


def _q4_0_steps(blocks):
    return _nibbles(blocks[:, 2:]).to(torch.int8) - 8


def _q5_0_steps(blocks):
    return (_nibbles(blocks[:, 6:]) | (_bits(blocks[:, 2:6], 32) << 4)).to(torch.int8) - 16


def _q8_0(blocks):
    return _q8_0_steps(blocks).float().mul_(_half(blocks, 0))


def _q4_0(blocks):
    return _q4_0_steps(blocks).float().mul_(_half(blocks, 0))


def _q4_1(blocks):
    return _nibbles(blocks[:, 4:]).float().mul_(_half(blocks, 0)).add_(_half(blocks, 2))


def _q5_0(blocks):
    return _q5_0_steps(blocks).float().mul_(_half(blocks, 0))


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
    """Shared tail of Q4_K and Q5_K: q (n, 8, k) unsigned, k steps of each sub-block (all 32 of them, or some) ->
    d * scale * q - dmin * min, (n, 8 * k)."""
    n = blocks.shape[0]
    scales, mins = _k_scales(blocks[:, 4:16])
    d = (_half(blocks, 0) * scales)[:, :, None]
    dm = (_half(blocks, 2) * mins)[:, :, None]
    return q.float().mul_(d).sub_(dm).reshape(n, -1)


def _q4_k_steps(blocks: torch.Tensor) -> torch.Tensor:
    """(n, 8, 32): each sub-block's 32 unsigned steps (sub-blocks 2i and 2i + 1 share 32 bytes' low and high
    nibbles)."""
    packed = blocks[:, 16:].reshape(-1, 4, 1, 32)
    return ((packed >> torch.tensor([0, 4], dtype=torch.uint8)[:, None]) & 0x0F).reshape(-1, 8, 32)


def _q4_k(blocks):
    return _k_dequantize(blocks, _q4_k_steps(blocks))


def _q5_k(blocks):
    n = blocks.shape[0]
    packed = blocks[:, 48:].reshape(n, 4, 1, 32)
    low = ((packed >> torch.tensor([0, 4], dtype=torch.uint8)[:, None]) & 0x0F).reshape(n, 8, 32)
    high = (blocks[:, 16:48].reshape(n, 1, 32) >> torch.arange(8, dtype=torch.uint8)[:, None]) & 1  # (n, 8, 32)
    return _k_dequantize(blocks, low | (high << 4))


def _q6_k_steps(blocks: torch.Tensor) -> torch.Tensor:
    """(n, 256) signed steps, -32..31: four low bits from the first 128 bytes, two high bits from the next 64."""
    n = blocks.shape[0]
    low = blocks[:, :128].reshape(n, 2, 1, 64) >> torch.tensor([0, 4], dtype=torch.uint8)[:, None]
    low = (low & 0x0F).reshape(n, 8, 32)
    high = blocks[:, 128:192].reshape(n, 2, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8)[:, None]
    high = (high & 0x03).reshape(n, 8, 32)
    return ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 256)


def _q6_k_scales(blocks: torch.Tensor) -> torch.Tensor:
    """(n, 16) float32: d times each 16 weights' signed 8-bit scale, exact (at most 11 + 7 significant bits)."""
    return _half(blocks, 208) * blocks[:, 192:208].contiguous().view(torch.int8).float()


def _q6_k(blocks):
    n = blocks.shape[0]
    return _q6_k_steps(blocks).reshape(n, 16, 16).float().mul_(_q6_k_scales(blocks)[:, :, None]).reshape(n, 256)


def fp4_values(codes: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """FP4 (e2m1) codes as float32 values, times 2 ** exponents (broadcast): exact, each a power of two times a
    code's value."""
    return torch.ldexp(torch.tensor(FP4_VALUES)[codes.long()], exponents.to(torch.int32))


def _mxfp4(blocks):
    # An E8M0 exponent byte, then 32 FP4 codes, the low nibbles first; a code's value times 2 ** (exponent - 127).
    return fp4_values(_nibbles(blocks[:, 1:]), blocks[:, :1].to(torch.int32) - 127)


_DEQUANTIZERS = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0,
    "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k, "MXFP4": _mxfp4,
}


# GGUF blocks straight into the packed layouts of openformers.kernels.Linear, without a float round trip: int8
# (steps (rows, cols) int8, a float32 scale per 32, or per 16 for Q6_K) and int4 (bytes (rows, cols / 2), byte j
# of a group holding steps j and j + 16 in its low and high nibbles as Q4_0 and Q4_1 blocks do; float16 (scale,
# minimum) pairs (rows, cols / 32, 2)). Each takes a matrix's stored rows, (rows, bytes per row) uint8, and returns
# (steps, scales).


def _blocks_of(rows: torch.Tensor, kind: str) -> torch.Tensor:
    return rows.reshape(-1, _BLOCK_BYTES[kind])


def _int8_from_blocks(rows: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0, Q5_0 and Q4_0 rows as int8 steps, each block's float16 d its scale; Q6_K's steps with a scale per 16
    weights, d times the sub-block's scale: the same weights."""
    blocks, n = _blocks_of(rows, kind), rows.shape[0]
    if kind == "Q6_K":
        return _q6_k_steps(blocks).reshape(n, -1), _q6_k_scales(blocks).reshape(n, -1)
    steps = {"Q8_0": _q8_0_steps, "Q5_0": _q5_0_steps, "Q4_0": _q4_0_steps}[kind](blocks)
    return steps.reshape(n, -1), _half(blocks, 0).reshape(n, -1)


def _int4_from_blocks(rows: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_0, Q4_1 and Q4_K rows as int4 groups: Q4_0's d * (q - 8) as (d, -8 d) and Q4_1's (d, m) exactly; Q4_K's
    steps kept, its sub-blocks' grids rounded to float16 (which cannot hold a float16 d times a six-bit scale)."""
    blocks, n = _blocks_of(rows, kind), rows.shape[0]
    if kind == "Q4_K":
        # As quantizing the dequantized weights does by default (kernels.linear._int4_groups): each group counts
        # its steps from the lowest it uses, whose weight, rounded to float16, is the minimum, and its step spans
        # from there to its highest weight: the roundings then move the weights by less than float16
        # (d * scale, -dmin * min) would (Gemma 3 270M's Q4_K matrices: at most 0.059% against 0.068%, root mean
        # square; quantizing their floats, 0.062%).
        steps = _q4_k_steps(blocks)
        lowest, highest = steps.amin(-1, keepdim=True), steps.amax(-1, keepdim=True)
        weights = _k_dequantize(blocks, torch.cat([lowest, highest], -1)).reshape(-1, 8, 2)
        minimum = weights[..., :1].half().float()
        step = (weights[..., 1:] - minimum) / (highest - lowest).float().clamp(min=1)
        packed = (steps - lowest)[..., :16] | ((steps - lowest)[..., 16:] << 4)
        pairs = torch.cat([step, minimum], dim=-1).half()
        return packed.reshape(n, -1), pairs.reshape(n, -1, 2)
    d = blocks[:, 0:2].contiguous().view(torch.float16)
    if kind == "Q4_1":
        pairs, packed = torch.cat([d, blocks[:, 2:4].contiguous().view(torch.float16)], dim=-1), blocks[:, 4:]
    else:
        pairs, packed = torch.cat([d, d * -8], dim=-1), blocks[:, 2:]
    return packed.reshape(n, -1), pairs.reshape(n, -1, 2)


# The block types each packed layout holds without changing a weight (Q4_K's steps kept, see _int4_from_blocks).
GGUF_PACKERS = {"int8": ({"Q8_0", "Q6_K", "Q5_0", "Q4_0"}, _int8_from_blocks),
                 "int4": ({"Q4_0", "Q4_1", "Q4_K"}, _int4_from_blocks)}
