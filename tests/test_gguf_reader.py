"""GGUF headers that lie: every count and length is checked against the file before it is used.

A damaged or hostile file is refused quickly with a ValueError that names it, never a loop over a declared
2**62 items, a raw struct or numpy error, or a recursion error; and no byte of a valid file, changed or cut off,
makes the reader do anything else.
"""

import random
import struct
import time

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

from openformers.gguf_reader import GGUFReader


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _file(tmp_path, *, tensor_count=0, fields=b"", field_count=None, tensors=b"", name="lying.gguf"):
    """A GGUF file put together by hand, so that its counts can say what the bytes do not hold."""
    field_count = fields.count(b"key") if field_count is None else field_count
    path = tmp_path / name
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, tensor_count, field_count) + fields + tensors + bytes(64))
    return path


def _field(value_type: int, payload: bytes) -> bytes:
    return _string(b"key") + struct.pack("<I", value_type) + payload


def _refused_quickly(path, words: str):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=words) as error:
        GGUFReader(path)
    assert str(path) in str(error.value)
    assert time.perf_counter() - start < 1.0


def test_an_array_declaring_more_items_than_the_file_holds_is_refused(tmp_path):
    for item_type in (GGUFValueType.UINT8, GGUFValueType.STRING, GGUFValueType.ARRAY):
        payload = struct.pack("<IQ", item_type, 2**62)
        _refused_quickly(_file(tmp_path, fields=_field(GGUFValueType.ARRAY, payload)), f"{2**62} array items")


def test_counts_of_tensors_and_metadata_values_the_file_cannot_hold_are_refused(tmp_path):
    _refused_quickly(_file(tmp_path, tensor_count=2**40), "tensors")
    _refused_quickly(_file(tmp_path, field_count=2**62), "metadata values")


def test_a_string_longer_than_the_file_is_refused(tmp_path):
    _refused_quickly(_file(tmp_path, fields=struct.pack("<Q", 2**63), field_count=1), "bytes of string")
    payload = struct.pack("<Q", 2**40) + b"abc"
    _refused_quickly(_file(tmp_path, fields=_field(GGUFValueType.STRING, payload)), "bytes of string")


def test_arrays_nested_without_end_are_refused_before_recursion_runs_out(tmp_path):
    payload = struct.pack("<IQ", GGUFValueType.ARRAY, 1) * 5000 + struct.pack("<IQ", GGUFValueType.UINT8, 0)
    _refused_quickly(_file(tmp_path, fields=_field(GGUFValueType.ARRAY, payload)), "nests arrays")


def test_a_tensor_with_more_dimensions_than_gguf_has_is_refused(tmp_path):
    tensor = _string(b"w") + struct.pack("<I", 2**31)
    _refused_quickly(_file(tmp_path, tensor_count=1, tensors=tensor), "2147483648 dimensions")


def test_a_tensor_whose_dimensions_overflow_or_run_past_the_end_is_refused(tmp_path):
    huge = _string(b"w") + struct.pack("<I", 2) + struct.pack("<QQ", 2**40, 2**40) + struct.pack("<IQ", 0, 0)
    _refused_quickly(_file(tmp_path, tensor_count=1, tensors=huge), "runs past the end")
    uneven = _string(b"q") + struct.pack("<IQ", 1, 33) + struct.pack("<IQ", GGMLQuantizationType.Q8_0, 0)
    _refused_quickly(_file(tmp_path, tensor_count=1, tensors=uneven), "not a multiple of its block")


def test_an_alignment_of_zero_is_refused(tmp_path):
    alignment = _string(b"general.alignment") + struct.pack("<II", GGUFValueType.UINT32, 0)
    _refused_quickly(_file(tmp_path, fields=alignment, field_count=1), "general.alignment")


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "valid.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_token_list(["<s>", "a", "b", "ab"])
    writer.add_token_scores([0.0, -1.0, -2.0, -3.0])
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_tensor("blk.0.w", np.arange(64, dtype=np.float32).reshape(2, 32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _read_everything(path):
    reader = GGUFReader(path)
    values = reader.metadata(("",))
    return values, {name: tensor.data.sum() for name, tensor in reader.tensors.items()}


def test_every_cut_of_a_valid_file_is_read_or_refused_with_a_value_error(valid_file, tmp_path):
    data = valid_file.read_bytes()
    _read_everything(valid_file)
    for length in range(0, len(data), 7):
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(data[:length])
        try:
            _read_everything(cut)
        except ValueError as error:
            assert str(cut) in str(error)


def test_changed_bytes_in_a_valid_file_are_read_or_refused_with_a_value_error(valid_file, tmp_path):
    data = bytearray(valid_file.read_bytes())
    header_end = len(data) - 64 * 4  # the tensor's bytes follow the header; changing them changes nothing to check
    chooser = random.Random(0)
    start = time.perf_counter()
    for attempt in range(400):
        changed = bytearray(data)
        for _ in range(chooser.randint(1, 4)):
            position = chooser.randrange(4, header_end)
            changed[position] = chooser.choice([0, 0xFF, chooser.randrange(256)])
        path = tmp_path / f"changed{attempt % 2}.gguf"
        path.write_bytes(bytes(changed))
        try:
            _read_everything(path)
        except ValueError as error:
            assert str(path) in str(error)
    assert time.perf_counter() - start < 60
