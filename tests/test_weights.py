"""Reading and writing state dicts: GGUF dequantization against gguf-py's numpy reference, shards, errors."""

import json

import gguf
import numpy as np
import pytest
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from decoder_parity import finish_gguf
from openformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
from openformers.gguf_reader import read_gguf_metadata
from openformers.weights import GGUFFile, TensorReader, load_weights, rename, save_safetensors

QUANTIZABLE = ["BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]  # gguf.quants can make these blocks
# gguf.quants only reads these: random blocks, with every float16 scale made finite: (offset, count) in a block.
RANDOM_BLOCKS = {"Q4_K": [(0, 2)], "Q5_K": [(0, 2)], "Q6_K": [(208, 1)]}
SHAPE = (6, 512)  # rows of two 256-value super-blocks


def _random_blocks(kind: str, rows: int, columns: int, rng) -> np.ndarray:
    block_values, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
    n_blocks = rows * columns // block_values
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for offset, count in RANDOM_BLOCKS[kind]:
        scales = rng.uniform(-0.1, 0.1, size=(n_blocks, count)).astype(np.float16)
        blocks[:, offset : offset + 2 * count] = scales.view(np.uint8)
    return blocks.reshape(rows, -1)


@pytest.fixture(scope="module")
def gguf_of_every_type(tmp_path_factory):
    """One tensor per supported type (plus F32, F16 and an unsupported Q2_K), written with gguf.GGUFWriter."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "types.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    values = rng.standard_normal(SHAPE).astype(np.float32)
    writer.add_tensor("F32", values)
    writer.add_tensor("F16", values.astype(np.float16))
    for kind in QUANTIZABLE:
        qtype = GGMLQuantizationType[kind]
        writer.add_tensor(kind, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    for kind in RANDOM_BLOCKS:
        writer.add_tensor(kind, _random_blocks(kind, *SHAPE, rng), raw_dtype=GGMLQuantizationType[kind])
    writer.add_tensor("Q2_K", rng.integers(0, 256, size=(6, 168), dtype=np.uint8), raw_dtype=GGMLQuantizationType.Q2_K)
    finish_gguf(writer)
    return GGUFFile(path)


@pytest.mark.parametrize("kind", ["F32", "F16", *QUANTIZABLE, *RANDOM_BLOCKS])
def test_dequantization_equals_the_numpy_reference(gguf_of_every_type, kind):
    info = gguf_of_every_type.tensors[kind]
    expected = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(info.data, info.tensor_type)))
    ours = gguf_of_every_type.tensor(kind)
    assert ours.shape == SHAPE and ours.dtype == torch.float32
    assert torch.equal(ours, expected.reshape(SHAPE))
    assert gguf_of_every_type.tensor(kind, torch.bfloat16).dtype == torch.bfloat16


def test_the_tests_q6_k_blocks_are_read_back_by_the_numpy_reference():
    # tests/decoder_parity.py makes Q6_K blocks for the tests' GGUF files, as gguf.quants cannot.
    from decoder_parity import q6_k_blocks

    values = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32) * np.linspace(0.1, 3, 512)
    back = gguf.quants.dequantize(q6_k_blocks(values), GGMLQuantizationType.Q6_K)
    assert back.shape == values.shape
    # 6-bit steps of each 16's largest magnitude / 31: an error of about 2% of the values' size (root mean square);
    # a step's bits in the wrong place would move it by a good part of its range
    error = np.sqrt(np.square(back - values).mean() / np.square(values).mean())
    assert 0 < error < 0.03, error


def test_an_unsupported_gguf_type_is_named(gguf_of_every_type):
    with pytest.raises(ValueError, match=r"'Q2_K' in .*types\.gguf is stored as Q2_K.*Supported GGUF types"):
        gguf_of_every_type.tensor("Q2_K")


def test_gguf_metadata(gguf_of_every_type):
    assert gguf_of_every_type.get("general.architecture") == "llama"
    assert gguf_of_every_type.get("llama.block_count", 7) == 7


def test_gguf_reader_reads_what_gguf_py_reads(tmp_path, gguf_of_every_type):
    # Every metadata value (scalars, strings, arrays of both) and every tensor's bytes, shape and type.
    path = tmp_path / "metadata.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 3)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_token_list(["<s>", "héllo", "🤗", ""])
    writer.add_token_scores([0.0, -1.5, -2.0, 0.25])
    writer.add_tensor("F32", np.arange(12, dtype=np.float32).reshape(3, 4))
    finish_gguf(writer)
    for ours in (GGUFFile(path), gguf_of_every_type):
        reference = gguf.GGUFReader(ours.path)
        for key, field in reference.fields.items():
            if not key.startswith("GGUF."):  # the header's own counts, which gguf-py lists as fields
                assert ours.get(key) == field.contents(), key
        assert list(ours.tensors) == [tensor.name for tensor in reference.tensors]
        for tensor in reference.tensors:
            mine = ours.tensors[tensor.name]
            assert mine.tensor_type == tensor.tensor_type and mine.shape == tuple(int(n) for n in tensor.shape)
            assert mine.data.shape == tensor.data.shape and np.array_equal(mine.data, tensor.data), tensor.name
    assert GGUFFile(path).array_length("tokenizer.ggml.tokens") == 4
    assert read_gguf_metadata(path) == {
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.tokens": ["<s>", "héllo", "🤗", ""],
        "tokenizer.ggml.scores": [0.0, -1.5, -2.0, 0.25],
    }


def test_a_truncated_gguf_file_is_named(tmp_path, gguf_of_every_type):
    data = gguf_of_every_type.path.read_bytes()
    for size, message in ((10, "not a GGUF file"), (200, "header"), (len(data) - 100, "runs past the end")):
        (tmp_path / "cut.gguf").write_bytes(data[:size])
        with pytest.raises(ValueError, match=rf"cut\.gguf.*{message}"):
            GGUFFile(tmp_path / "cut.gguf")


def test_sharded_safetensors_round_trip(tmp_path):
    state_dict = {f"layer{i}.weight": torch.randn(16, 16) for i in range(5)}
    save_safetensors(state_dict, tmp_path, max_shard_bytes=1500)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 5 and index["metadata"]["total_size"] == 5 * 16 * 16 * 4
    loaded = load_weights(tmp_path / "model.safetensors.index.json")
    assert loaded.keys() == state_dict.keys() and all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)
    halves = load_weights(tmp_path / "model.safetensors.index.json", torch.float16)
    assert halves["layer0.weight"].dtype == torch.float16


def test_sharded_bin_loads(tmp_path):
    parts = [{"a": torch.randn(3), "b": torch.arange(4)}, {"c": torch.randn(2, 2)}]
    weight_map = {}
    for number, part in enumerate(parts, start=1):
        name = f"pytorch_model-0000{number}-of-00002.bin"
        torch.save(part, tmp_path / name)
        weight_map.update(dict.fromkeys(part, name))
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = load_weights(tmp_path / "pytorch_model.bin.index.json", torch.float16)
    assert loaded["a"].dtype == torch.float16 and loaded["b"].dtype == torch.int64
    assert torch.equal(loaded["c"], parts[1]["c"].half())


def test_a_missing_shard_is_named(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="model-00002.safetensors"):
        load_weights(tmp_path / "model.safetensors.index.json")


def test_rename_maps_each_name_part():
    renamed = rename({"blk.3.attn_q.weight": 1, "output.weight": 2}, {"blk": "model.layers", "attn_q": "q",
                                                                     "output": "lm_head"})
    assert renamed == {"model.layers.3.q.weight": 1, "lm_head.weight": 2}


# from_pretrained's errors: each names the file and what does not fit.

TINY = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2)


@pytest.fixture
def tiny_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(tmp_path)
    return tmp_path


def _edit_weights(folder, edit):
    from safetensors.torch import load_file, save_file

    state_dict = load_file(folder / "model.safetensors")
    edit(state_dict)
    save_file(state_dict, folder / "model.safetensors", metadata={"format": "pt"})


def test_unexpected_and_missing_keys_are_listed_with_the_file(tiny_folder):
    def edit(state_dict):
        state_dict["model.layers.0.extra.weight"] = torch.zeros(1)
        del state_dict["model.norm.weight"]

    _edit_weights(tiny_folder, edit)
    with pytest.raises(ValueError, match=r"model\.safetensors.*missing \(1\): model\.norm\.weight.*"
                                         r"unexpected \(1\): model\.layers\.0\.extra\.weight"):
        AutoModelForCausalLM.from_pretrained(tiny_folder)


def test_a_shape_mismatch_is_listed(tiny_folder):
    _edit_weights(tiny_folder, lambda sd: sd.update({"model.norm.weight": torch.ones(8)}))
    with pytest.raises(ValueError, match=r"wrong shape.*model\.norm\.weight: checkpoint \(8,\), model \(16,\)"):
        AutoModelForCausalLM.from_pretrained(tiny_folder)


def test_a_folder_without_weights_says_what_was_looked_for(tiny_folder):
    (tiny_folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors, model.safetensors.index.json, pytorch_model.bin"):
        AutoModelForCausalLM.from_pretrained(tiny_folder)


def test_a_folder_without_config_says_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json.*\*\.gguf"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.gguf"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "nothing.gguf")
    with pytest.raises(FileNotFoundError, match="nothing.gguf"):
        GGUFFile(tmp_path / "nothing.gguf")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_weights(tmp_path / "model.safetensors")


def test_an_unsupported_gguf_architecture_is_named(tmp_path):
    path = tmp_path / "rwkv6.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv6")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    finish_gguf(writer)
    with pytest.raises(ValueError, match=r"rwkv6\.gguf holds a 'rwkv6' model.*supported GGUF architectures: .*\bllama\b"):
        AutoModelForCausalLM.from_pretrained(path)


def test_an_unknown_model_type_lists_the_supported_ones(tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    (tiny_folder / "config.json").write_text(json.dumps({**config, "model_type": "rwkv"}))
    with pytest.raises(ValueError, match=r"model_type='rwkv'.*supported model types: .*\bbert\b.*\bgpt2\b.*\bllama\b"):
        AutoModelForCausalLM.from_pretrained(tiny_folder)


def test_bin_checkpoints_load(tiny_folder):
    from safetensors.torch import load_file

    state_dict = load_file(tiny_folder / "model.safetensors")
    (tiny_folder / "model.safetensors").unlink()
    torch.save(state_dict, tiny_folder / "pytorch_model.bin")
    model = AutoModelForCausalLM.from_pretrained(tiny_folder)
    assert torch.equal(model.model.norm.weight, state_dict["model.norm.weight"])


@pytest.mark.parametrize("shard", ["../outside/model-00001.safetensors", "/etc/model.safetensors", ""])
def test_a_shard_index_naming_a_file_outside_its_folder_is_refused(tmp_path, shard):
    folder, outside = tmp_path / "model", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    save_safetensors({"a.weight": torch.ones(2)}, outside)
    (outside / "model.safetensors").rename(outside / "model-00001.safetensors")
    index = {"weight_map": {"a.weight": shard}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"index\.json names the shard .*not a file inside"):
        load_weights(folder / "model.safetensors.index.json")


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b'{"weight_map": ["a"]}', b'{"weight_map": {"a": 3}}'])
def test_a_malformed_shard_index_is_named(tmp_path, content):
    (tmp_path / "model.safetensors.index.json").write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json"):
        load_weights(tmp_path / "model.safetensors.index.json")


def test_a_config_asking_for_more_layers_than_the_weights_hold_is_refused_before_building(tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    (tiny_folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**6}))
    stored = config["num_hidden_layers"]
    with pytest.raises(ValueError, match=rf"num_hidden_layers=1000000, but the checkpoint holds weights for only {stored}"):
        AutoModelForCausalLM.from_pretrained(tiny_folder)


TINY_FAMILIES = {
    "t5": dict(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2),
    "bart": dict(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64),
    "mixtral": dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=2,
                    num_hidden_layers=2, max_position_embeddings=64, num_local_experts=4, num_experts_per_tok=2),
}


@pytest.mark.parametrize("family, field", [("t5", "num_decoder_layers"), ("bart", "decoder_layers"),
                                           ("bart", "encoder_layers"), ("mixtral", "num_local_experts")])
def test_a_config_asking_for_more_of_any_stack_or_experts_than_the_weights_hold_is_refused_at_once(
        tmp_path, family, field):
    """A million decoder layers or experts against weights for a few: refused before a module is built (it took a
    minute and 2 GB to build 20,000 before)."""
    import time

    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(family, **TINY_FAMILIES[family])
    auto = transformers.AutoModelForCausalLM if family == "mixtral" else transformers.AutoModelForSeq2SeqLM
    torch.manual_seed(0)
    auto.from_config(config).save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**values, field: 10**6}))
    ours = AutoModelForCausalLM if family == "mixtral" else AutoModelForSeq2SeqLM
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"model\.safetensors: the config asks for \w+=1000000, but the checkpoint "
                                         rf"holds weights for only [24] (layers|experts)"):
        ours.from_pretrained(tmp_path)
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize("architecture", ["llama", "qwen3moe"])
def test_a_gguf_asking_for_more_experts_than_its_stacked_tensors_hold_is_refused_at_once(tmp_path, architecture):
    """llama.cpp stacks a layer's experts in one tensor: 2**31 experts against tensors of 4 is refused before a
    module is built (20,000 took 10 s to build before the weights were found missing)."""
    import time

    path = tmp_path / "experts.gguf"
    writer = gguf.GGUFWriter(str(path), architecture)
    sizes = {"block_count": 1, "context_length": 64, "embedding_length": 8, "feed_forward_length": 16,
             "expert_count": 2**31 - 1, "expert_used_count": 2, "expert_feed_forward_length": 16,
             "attention.head_count": 2, "attention.head_count_kv": 2}
    for key, value in sizes.items():
        writer.add_uint32(f"{architecture}.{key}", value)
    writer.add_float32(f"{architecture}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_token_list(["a", "b", "c", "d"])
    shapes = {"token_embd.weight": (4, 8), "blk.0.attn_q.weight": (8, 8), "blk.0.ffn_gate_inp.weight": (4, 8),
              "blk.0.ffn_gate_exps.weight": (4, 16, 8), "blk.0.ffn_up_exps.weight": (4, 16, 8),
              "blk.0.ffn_down_exps.weight": (4, 8, 16)}
    for name, shape in shapes.items():
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    finish_gguf(writer)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"experts\.gguf: the config asks for \w+=2147483647, but the checkpoint holds "
                                         r"weights for only 4 experts"):
        AutoModelForCausalLM.from_pretrained(path)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("architecture", ["llama", "qwen3"])
def test_a_gguf_with_an_absurd_block_count_is_refused_at_once(tmp_path, architecture):
    path = tmp_path / "blocks.gguf"
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(2**31)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_token_list(["a", "b", "c", "d"])
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((8, 8), dtype=np.float32))
    finish_gguf(writer)
    with pytest.raises(ValueError, match=r"blocks\.gguf.*num_hidden_layers"):
        AutoModelForCausalLM.from_pretrained(path)


def _malformed_weights(tmp_path):
    save_safetensors({"a.weight": torch.ones(4, 4)}, tmp_path)
    good = (tmp_path / "model.safetensors").read_bytes()
    torch.save({"a.weight": torch.ones(4)}, tmp_path / "good.bin")
    good_bin = (tmp_path / "good.bin").read_bytes()
    return {
        "cut.safetensors": good[:40], "empty.safetensors": b"", "huge-header.safetensors": (2**60).to_bytes(8, "little"),
        "offsets.safetensors": good.replace(b"[0,64]", b"[0,999]"), "text.safetensors": b"not a safetensors file",
        "cut.bin": good_bin[:50], "empty.bin": b"", "text.bin": b"hello",
    }


def test_malformed_weight_files_are_named_with_what_is_wrong(tmp_path):
    for name, content in _malformed_weights(tmp_path).items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}.* is not a readable (safetensors|PyTorch weights) file"):
            load_weights(tmp_path / name)
    torch.save([torch.ones(2)], tmp_path / "list.bin")
    with pytest.raises(ValueError, match=r"list\.bin holds a list, not a state dict of tensors"):
        load_weights(tmp_path / "list.bin")


def test_random_byte_changes_in_a_safetensors_header_end_in_an_error_naming_the_file(tmp_path):
    """Changed bytes in the length prefix and the JSON header (names, dtypes, shapes, offsets) either still load or
    raise a ValueError naming the file: never another exception, a hang or an allocation the file does not hold."""
    import random

    from safetensors.torch import save_file

    save_file({"a.weight": torch.randn(4, 8), "b.bias": torch.arange(6)}, tmp_path / "good.safetensors")
    good = (tmp_path / "good.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    chooser = random.Random(0)
    for attempt in range(300):
        changed = bytearray(good)
        for _ in range(chooser.randint(1, 4)):
            changed[chooser.randrange(header_end)] = chooser.randrange(256)
        path = tmp_path / f"changed-{attempt}.safetensors"
        path.write_bytes(bytes(changed))
        try:
            load_weights(path)
        except ValueError as error:
            assert str(path) in str(error)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_bin_file_holding_code_is_refused_without_running_it(tmp_path):
    import pickle

    marker = tmp_path / "ran"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"a.weight": _Payload(marker)}))
    with pytest.raises(ValueError, match=r"pytorch_model\.bin holds Python objects other than tensors"):
        load_weights(tmp_path / "pytorch_model.bin")
    assert not marker.exists()


def test_an_integer_tensor_for_a_floating_point_weight_is_cast_as_the_reference_casts_it(tiny_folder):
    _edit_weights(tiny_folder, lambda state_dict: state_dict.update(
        {"model.norm.weight": state_dict["model.norm.weight"].round().to(torch.int32)}))
    model = AutoModelForCausalLM.from_pretrained(tiny_folder)
    reference = pytest.importorskip("transformers").AutoModelForCausalLM.from_pretrained(tiny_folder)
    assert model.model.norm.weight.dtype == torch.float32
    torch.testing.assert_close(model.model.norm.weight, reference.model.norm.weight)


def test_tensor_reader_reads_each_tensor_of_sharded_safetensors_as_load_weights(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(6, dtype=torch.int64),
               "d": torch.tensor(2.5, dtype=torch.float16)}
    save_safetensors(tensors, tmp_path, max_shard_bytes=40)
    index = tmp_path / "model.safetensors.index.json"
    reader = TensorReader(index)
    assert set(reader.locations) == set(tensors) and len({file for file, *_ in reader.locations.values()}) > 1
    for name, tensor in load_weights(index).items():
        read = reader.read(name)
        assert read.dtype == tensor.dtype and torch.equal(read, tensor), name


def test_tensor_reader_names_a_file_cut_after_it_was_opened(tmp_path):
    save_safetensors({"a": torch.randn(64)}, tmp_path)
    path = tmp_path / "model.safetensors"
    reader = TensorReader(path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"model\.safetensors ends inside tensor 'a' \(read 246 of 256 bytes\)"):
        reader.read("a")


def _lying_header(header: dict, data: bytes = bytes(64), length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return (len(text) if length is None else length).to_bytes(8, "little") + text + data


LYING_HEADERS = {
    "length past the file": (_lying_header({}, length=2**62), "header length 4611686018427387904 is more than"),
    "cut in the length": (b"\x10\x00", "shorter than the 8-byte header length"),
    "not JSON": (b"\x04" + bytes(7) + b"{{{{", "header is not UTF-8 JSON"),
    "a list": (_lying_header([], bytes(0)), "header is a JSON list"),
    "offsets past the end": (_lying_header({"a": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}),
                             r"'a' has the data_offsets \[0, 4398046511104\]; expected \[start, end\] within the 64"),
    "shape and size disagree": (_lying_header({"a": {"dtype": "F32", "shape": [2**62, 4], "data_offsets": [0, 64]}}),
                                r"'a' of shape \[4611686018427387904, 4\] and dtype F32 takes 64 bytes"),
    "negative dimension": (_lying_header({"a": {"dtype": "F32", "shape": [-16], "data_offsets": [0, 64]}}),
                           r"'a' has the shape \[-16\]; expected a list of non-negative integers"),
    "overlap": (_lying_header({"a": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]},
                               "b": {"dtype": "F32", "shape": [8], "data_offsets": [32, 64]}}),
                r"'b' starts at data byte 32, where the tensors before it end at 64"),
    "gap at the end": (_lying_header({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}),
                       r"its tensors end at data byte 32, but the file holds 64"),
    "unknown dtype": (_lying_header({"a": {"dtype": "F128", "shape": [4], "data_offsets": [0, 64]}}),
                      r"'a' has the dtype 'F128'"),
    "missing field": (_lying_header({"a": {"dtype": "F32", "shape": [16]}}),
                      r"the entry of 'a' is not an object of 'dtype', 'shape' and 'data_offsets'"),
}


@pytest.mark.parametrize("content, message", LYING_HEADERS.values(), ids=LYING_HEADERS.keys())
def test_tensor_reader_checks_a_safetensors_header_itself_before_allocating(tmp_path, content, message):
    """TensorReader may be the first to open a file: a header safetensors would refuse is refused here too, by
    name, before any tensor is allocated from what it claims."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = tmp_path / "lying.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorError):
        load_file(path)
    with pytest.raises(ValueError, match=rf"lying\.safetensors is not a readable safetensors file: .*{message}"):
        TensorReader(path)


def test_tensor_reader_and_safetensors_agree_on_random_header_changes(tmp_path):
    """Each of 300 files with bytes changed in the header is refused by both, naming the file here, or read by
    both into the same tensors."""
    import random

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    save_safetensors({"a.weight": torch.randn(4, 8), "b.bias": torch.arange(6), "c": torch.ones(3).half()}, tmp_path)
    good = (tmp_path / "model.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    chooser = random.Random(1)
    refused = 0
    for attempt in range(300):
        changed = bytearray(good)
        for _ in range(chooser.randint(1, 3)):
            changed[chooser.randrange(header_end)] = chooser.randrange(256)
        path = tmp_path / f"changed-{attempt}.safetensors"
        path.write_bytes(bytes(changed))
        try:
            expected = load_file(path)
        except SafetensorError:
            expected = None
        try:
            reader = TensorReader(path)
        except ValueError as error:
            assert expected is None and str(path) in str(error), (attempt, error)
            refused += 1
            continue
        assert expected is not None, (attempt, bytes(changed[:header_end]))
        assert set(reader.locations) == set(expected)
        for name, tensor in expected.items():
            assert torch.equal(reader.read(name), tensor)
    assert refused > 100


@pytest.mark.parametrize("layout, kind", [("int8", "Q8_0"), ("int8", "Q6_K"), ("int8", "Q5_0"), ("int8", "Q4_0"),
                                          ("int4", "Q4_0"), ("int4", "Q4_1"), ("int4", "Q4_K")])
def test_gguf_blocks_pack_straight_into_the_layouts_that_quantizing_their_weights_gives(gguf_of_every_type, layout,
                                                                                         kind):
    # A quantized load packs these blocks without a float round trip (weights.GGUF_PACKERS) into the weights that
    # quantizing the dequantized floats gives: the file's own, or for Q4_K each step kept with the sub-block's
    # d * scale and -dmin * min rounded to float16. Q6_K's keep a scale per 16 weights, which quantizing floats
    # (a scale per 32) does not give: only its blocks make them.
    from openformers import kernels
    from openformers.kernels import Linear

    info = gguf_of_every_type.tensors[kind]
    floats = gguf_of_every_type.tensor(kind)
    linear = torch.nn.Linear(SHAPE[1], SHAPE[0], bias=False)
    linear.weight.data = floats
    packed_layer = Linear.from_gguf_rows(linear, kind, torch.from_numpy(info.data), layout)
    packed = packed_layer.dequantized(torch.float32)
    quantized = Linear.from_linear(linear, layout).dequantized(torch.float32)
    if kind == "Q4_K":
        assert (packed - floats).square().mean().sqrt() < 1e-3 * floats.square().mean().sqrt()
        torch.testing.assert_close(packed, quantized, rtol=0, atol=1e-3 * floats.abs().max().item())
    elif kind == "Q6_K":
        assert packed_layer.scale.shape == (SHAPE[0], SHAPE[1] // 16) and torch.equal(packed, floats)
        assert kernels.build() and torch.equal(packed_layer.float_weight(torch.float32), floats)  # the kernel's too
        assert not torch.equal(quantized, floats)
    else:
        assert torch.equal(packed, floats) and torch.equal(quantized, floats)
    other = "int4" if layout == "int8" else "int8"
    if kind not in ("Q4_0",):
        assert Linear.from_gguf_rows(linear, kind, torch.from_numpy(info.data), other) is None
    assert Linear.from_gguf_rows(linear, "Q5_K", torch.from_numpy(gguf_of_every_type.tensors["Q5_K"].data), layout) is None


def test_a_layer_reader_reads_each_matrix_converted_alone_and_refuses_a_converter_that_splits_one(gguf_of_every_type):
    # A quantized GGUF load reads each matrix when its layer is quantized, through the family's converter applied
    # to that matrix alone; a converter that made two tensors of one matrix could not be read that way.
    from openformers.weights import GGUFLayerReader

    def reverse_rows(tensors):  # renames, and regroups rows as the families' converters do
        return {f"model.{name}": tensor.flip(0) for name, tensor in tensors.items()}

    reader = GGUFLayerReader(gguf_of_every_type, reverse_rows)
    assert "model.Q8_0" in reader and "Q8_0" not in reader
    assert torch.equal(reader.read("model.Q8_0"), gguf_of_every_type.tensor("Q8_0").flip(0))
    kind, rows = reader.stored_rows("model.Q4_1")
    assert kind == "Q4_1" and torch.equal(rows, torch.from_numpy(gguf_of_every_type.tensors["Q4_1"].data).flip(0))
    assert reader.stored_rows("model.F16") == ("F16", None)
    with pytest.raises(ValueError, match="converts to 2 tensors; a matrix read alone must convert to one"):
        GGUFLayerReader(gguf_of_every_type, lambda tensors: {**tensors, **reverse_rows(tensors)})
