"""GenerationConfig: precedence, validation, files; checked against HF transformers where it reads the same files."""

import json
import warnings

import pytest
import torch

from openformers import AutoModelForCausalLM, GenerationConfig
from openformers.generation.config import DEFAULTS, resolve_generation_config

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(folder)
    return folder


def test_unset_options_are_none_and_resolve_to_the_reference_defaults():
    config = GenerationConfig()
    assert config.max_length is None and config.to_diff_dict() == {}
    assert set(config.to_dict()) >= set(transformers.GenerationConfig().to_dict()) - {"transformers_version"}
    resolved, unknown = resolve_generation_config(None, None, {})
    assert unknown == {}
    reference = transformers.GenerationConfig._get_default_generation_params()
    for name, value in DEFAULTS.items():
        if name in reference:
            assert getattr(resolved, name) == reference[name], name


def test_precedence_kwargs_over_passed_config_over_model_config_over_defaults():
    model_config = GenerationConfig(max_new_tokens=7, top_k=3, do_sample=True, eos_token_id=2)
    with pytest.warns(UserWarning, match="top_k=5"):
        passed = GenerationConfig(top_k=5, num_beams=2, do_sample=False)
    with pytest.warns(UserWarning, match="top_k=5"):
        config, _ = resolve_generation_config(model_config, passed, {"num_beams": 4, "top_k": 5})
    assert (config.num_beams, config.top_k, config.max_new_tokens, config.eos_token_id) == (4, 5, 7, 2)
    assert config.do_sample is False
    assert config.top_p == 1.0  # nobody set it: the library default
    # an explicit None in the keyword arguments turns a filter off, as in the reference
    config, _ = resolve_generation_config(model_config, None, {"top_k": None})
    assert config.top_k is None
    # ...but never leaves the loop without a value it needs
    config, _ = resolve_generation_config(model_config, None, {"num_beams": None, "max_length": None})
    assert (config.num_beams, config.max_length) == (1, 20)


def test_generation_config_json_over_config_json(folder, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == (1, 2)
    GenerationConfig(max_new_tokens=3, eos_token_id=[7, 8], temperature=0.5, do_sample=True).save_pretrained(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder)
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder)
    finally:
        (folder / "generation_config.json").unlink()
    assert model.generation_config.eos_token_id == reference.generation_config.eos_token_id == [7, 8]
    ids = torch.tensor([[1, 5, 6]])
    assert model.generate(ids, do_sample=False).shape == (1, 6)  # max_new_tokens=3 from the file
    assert model.generate(ids, do_sample=False, max_new_tokens=5, eos_token_id=None).shape == (1, 8)


def test_from_model_config_reads_token_ids_and_legacy_options(folder):
    from openformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    config.extra["max_length"] = 33
    generation = GenerationConfig.from_model_config(config)
    expected = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "max_length": 33}
    assert generation.to_dict().items() >= expected.items()
    assert "hidden_size" not in generation.to_dict() and "hidden_size" not in generation.extra


def test_legacy_options_in_config_json_are_the_models_generation_config(tmp_path):
    """No generation_config.json, generation options in config.json: the model generates with them, as in HF."""
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    values = json.loads((tmp_path / "config.json").read_text())
    values.update(max_length=9, no_repeat_ngram_size=2, do_sample=True, temperature=0.5)
    (tmp_path / "config.json").write_text(json.dumps(values))
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    for name in ("max_length", "no_repeat_ngram_size", "do_sample", "temperature", "eos_token_id", "pad_token_id"):
        assert getattr(model.generation_config, name) == getattr(reference.generation_config, name), name
    ids = torch.tensor([[1, 5, 6]])
    ours = model.generate(ids, do_sample=False)
    assert ours.shape == (1, 9)  # max_length from config.json
    assert ours.tolist() == reference.generate(ids, do_sample=False).tolist()


def test_files_round_trip_with_the_reference(tmp_path):
    ours = GenerationConfig(max_new_tokens=9, do_sample=True, top_p=0.9, eos_token_id=[2, 3], stop_strings=["\n\n"])
    ours.extra["transformers_version"] = "5.0.0"
    ours.save_pretrained(tmp_path)
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert (theirs.max_new_tokens, theirs.do_sample, theirs.top_p, theirs.eos_token_id) == (9, True, 0.9, [2, 3])
    assert theirs.stop_strings == ["\n\n"]

    theirs = transformers.GenerationConfig(num_beams=4, length_penalty=0.8, early_stopping="never", pad_token_id=0)
    theirs.save_pretrained(tmp_path / "hf")
    loaded = GenerationConfig.from_pretrained(tmp_path / "hf", num_beams=2)
    assert (loaded.num_beams, loaded.length_penalty, loaded.early_stopping, loaded.pad_token_id) == (2, 0.8, "never", 0)
    assert loaded.extra["transformers_version"] == transformers.__version__  # unknown keys are kept
    assert json.loads(loaded.to_json_string())["transformers_version"] == transformers.__version__


def test_from_pretrained_without_the_file_is_explained(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="No generation_config.json in"):
        GenerationConfig.from_pretrained(tmp_path)


def test_a_broken_file_is_named(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"top_p": 3}')
    with pytest.raises(ValueError, match=r"generation_config.json: top_p must be a number in \(0, 1\]"):
        GenerationConfig.from_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text("[1]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        GenerationConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        (dict(max_length=2.5), "max_length must be an integer >= 1, got 2.5"),
        (dict(num_beams=True), "num_beams must be an integer >= 1"),
        (dict(temperature=-1), "temperature must be a number >= 0"),
        (dict(top_p=0), r"top_p must be a number in \(0, 1\]"),
        (dict(top_k=-2), "top_k must be an integer >= 0"),
        (dict(do_sample="yes"), "do_sample must be True or False"),
        (dict(early_stopping=1), "early_stopping must be True, False or 'never'"),
        (dict(eos_token_id=[]), "eos_token_id must be a token id or a non-empty list"),
        (dict(bad_words_ids=[3]), "bad_words_ids must be a non-empty list of non-empty lists"),
        (dict(stop_strings=[""]), "stop_strings must be"),
    ],
)
def test_impossible_values_raise_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**options)
    config = GenerationConfig()
    with pytest.raises(ValueError, match=message):
        config.update(**options)


def test_sampling_options_without_do_sample_warn_but_work():
    with pytest.warns(UserWarning, match=r"do_sample is not True.*top_p=0.5"):
        GenerationConfig(top_p=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig(top_p=0.5, do_sample=True)
        GenerationConfig.from_dict({"top_p": 0.5})  # a file's options are the model's, not the caller's choice


def test_update_returns_what_is_not_an_option():
    config = GenerationConfig()
    assert config.update(max_new_tokens=4, foo=1) == {"foo": 1}
    assert config.max_new_tokens == 4
