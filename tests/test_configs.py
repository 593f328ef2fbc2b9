"""Configs: config.json round trips, both rope layouts, named validation errors, AutoConfig."""

import json
import time

import pytest

from openformers import AutoConfig, LlamaConfig, PretrainedConfig

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)


def test_config_json_round_trip_keeps_unknown_keys(tmp_path):
    written = {**TINY, "model_type": "llama", "num_key_value_heads": 2, "rope_theta": 5000.0,
               "torch_dtype": "bfloat16", "some_future_key": {"nested": [1, 2]}, "transformers_version": "4.45.0"}
    (tmp_path / "config.json").write_text(json.dumps(written))
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, LlamaConfig) and isinstance(config, PretrainedConfig)
    assert config.head_dim == 16 and config.dtype == "bfloat16" and config.rope_theta == 5000.0
    assert config.some_future_key == {"nested": [1, 2]}

    config.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    del written["torch_dtype"]  # written back under its transformers 5 name
    assert again["dtype"] == "bfloat16"
    assert {k: again[k] for k in written} == written
    assert LlamaConfig.from_json_file(tmp_path / "again" / "config.json") == config


def test_transformers_5_rope_parameters_are_read(tmp_path):
    values = {**TINY, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}}
    config = LlamaConfig.from_dict(values)
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    default = LlamaConfig.from_dict({**TINY, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})
    assert default.rope_scaling is None
    legacy = LlamaConfig.from_dict({**TINY, "rope_scaling": {"type": "linear", "factor": 4.0}})
    assert legacy.rope_scaling["rope_type"] == "linear"


def test_the_reference_reads_what_we_write(tmp_path):
    transformers = pytest.importorskip("transformers")
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 1024}
    LlamaConfig(**TINY, num_key_value_heads=2, rope_theta=123.0, rope_scaling=scaling).save_pretrained(tmp_path)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert theirs.rope_parameters == {**scaling, "rope_theta": 123.0}
    assert (theirs.num_key_value_heads, theirs.head_dim, theirs.vocab_size) == (2, 16, 128)


def test_the_reference_config_reads_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.LlamaConfig(**TINY, num_key_value_heads=1, tie_word_embeddings=True).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.num_key_value_heads, config.tie_word_embeddings, config.rope_theta) == (1, True, 10000.0)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"num_key_value_heads": 3}, "num_key_value_heads=3"),
        ({"vocab_size": 0}, "vocab_size=0"),
        ({"hidden_size": 66}, "hidden_size=66"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"rms_norm_eps": -1.0}, "rms_norm_eps=-1.0"),
        ({"rope_scaling": {"rope_type": "linear"}}, "rope_scaling.factor=None"),
        ({"num_hidden_layers": 2.5}, "num_hidden_layers=2.5"),
    ],
)
def test_validation_errors_name_the_field_and_value(values, field):
    with pytest.raises(ValueError, match=f"Invalid config: {field}"):
        LlamaConfig(**{**TINY, **values})


def test_an_unsupported_rope_type_is_named():
    with pytest.raises(ValueError, match="rope_type='proportional'; openformers implements the rope types"):
        LlamaConfig(**TINY, rope_scaling={"rope_type": "proportional", "factor": 2.0})


def test_unknown_model_type_and_missing_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "rwkv"}))
    with pytest.raises(ValueError, match=r"model_type='rwkv'.*supported model types: .*\bbert, .*\bgpt2, .*\bllama\b"):
        AutoConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        AutoConfig.from_pretrained(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        AutoConfig.from_pretrained(tmp_path / "empty")


def test_config_from_gguf_metadata(smollm2_gguf):
    config = AutoConfig.from_pretrained(smollm2_gguf)
    assert isinstance(config, LlamaConfig)
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert (config.vocab_size, config.max_position_embeddings, config.rope_theta) == (49152, 8192, 100000.0)
    assert config.tie_word_embeddings and (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 2)
    assert config.rms_norm_eps == pytest.approx(1e-5)


def test_for_model_builds_the_config_the_reference_builds():
    transformers = pytest.importorskip("transformers")
    for model_type, values in [("gpt2", {"n_layer": 3, "n_embd": 48}), ("bert", {"hidden_size": 48}),
                               ("qwen2", {**TINY, "num_key_value_heads": 2})]:
        ours = AutoConfig.for_model(model_type, **values)
        theirs = transformers.AutoConfig.for_model(model_type, **values)
        assert type(ours).__name__ == type(theirs).__name__
        for name, value in values.items():
            assert getattr(ours, name) == getattr(theirs, name) == value
    with pytest.raises(ValueError, match="model_type='rwkv'.*supported model types"):
        AutoConfig.for_model("rwkv")
    with pytest.raises(ValueError):
        transformers.AutoConfig.for_model("no-such-model")


def test_gguf_architectures_are_read_by_the_model_file(smollm2_gguf):
    from openformers.configs import GGUF_CONFIG_READERS
    from openformers.models import llama, mixtral
    from openformers.weights import GGUFFile

    assert GGUF_CONFIG_READERS["qwen2"] is llama.config_from_gguf
    # Mixtral's files say "llama" too: its reader reads those with experts, and hands the others to llama.py's.
    assert GGUF_CONFIG_READERS["llama"] is mixtral.config_from_gguf
    for read in (llama.config_from_gguf, mixtral.config_from_gguf):
        config = read(GGUFFile(smollm2_gguf), num_hidden_layers=2)
        assert type(config) is LlamaConfig and config.architectures == ["LlamaForCausalLM"]
        assert config.num_hidden_layers == 2


def test_a_config_json_that_is_not_utf8_or_nests_without_end_is_named(tmp_path):
    for content in (b'{"model_type": "llama", "name": "\xff"}', b"[" * 100_000 + b"]" * 100_000):
        (tmp_path / "config.json").write_bytes(content)
        with pytest.raises(ValueError, match=r"config\.json is not (UTF-8|valid JSON)"):
            AutoConfig.from_pretrained(tmp_path)


def test_an_invalid_value_in_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2**40}))
    with pytest.raises(ValueError, match=r"config\.json: Invalid config: num_hidden_layers=1099511627776"):
        AutoConfig.from_pretrained(tmp_path)


def _odd_value(chooser):
    return chooser.choice([
        None, True, -1, 0, 2**31, 2**63, 1.5, float("nan"), float("inf"), "", "text", [], [1, "a"], {},
        {"rope_type": "llama3"}, {"rope_type": "unknown", "factor": -2}, {"type": "linear", "factor": "x"},
    ])


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gemma2", "phi3", "gpt2", "bert", "mixtral", "t5", "bart"])
def test_random_values_in_config_json_are_read_or_refused_naming_the_file(tmp_path, model_type):
    import random

    chooser = random.Random(model_type)
    fields = list(AutoConfig.for_model(model_type).to_dict())
    start = time.perf_counter()
    for attempt in range(150):
        values = {"model_type": model_type}
        for name in chooser.sample(fields, min(len(fields), chooser.randrange(1, 4))):
            values[name] = _odd_value(chooser)
        (tmp_path / "config.json").write_text(json.dumps(values))
        try:
            AutoConfig.from_pretrained(tmp_path)
        except ValueError as error:
            assert "config.json" in str(error), (values, error)
    assert time.perf_counter() - start < 30
