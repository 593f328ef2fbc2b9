"""GenerationConfig against the reference's: every field, files both ways, extra keys, modes and defaults."""

import json
import warnings

import pytest
import torch

from openformers import GenerationConfig, GenerationMode
from openformers.generation.config import resolve_generation_config

transformers = pytest.importorskip("transformers")
GenerationModeOfReference = pytest.importorskip("transformers.generation.configuration_utils").GenerationMode

METADATA = {"transformers_version", "_from_model_config"}

# A value for every field the reference's GenerationConfig has, each different from its default.
EVERY_FIELD = dict(
    max_length=40, max_new_tokens=12, min_length=2, min_new_tokens=3, early_stopping="never", max_time=5.5,
    stop_strings=["\n\n", "END"], do_sample=True, num_beams=3, use_mtp=False, use_cache=True,
    cache_implementation="static", cache_config={"max_batch_size": 2}, max_cache_len=64, temperature=0.7,
    top_k=11, top_p=0.9, min_p=0.05, top_h=0.5, typical_p=0.95, epsilon_cutoff=0.001, eta_cutoff=0.002,
    repetition_penalty=1.1, encoder_repetition_penalty=1.2, length_penalty=0.8, no_repeat_ngram_size=3,
    bad_words_ids=[[5], [6, 7]], renormalize_logits=True, forced_bos_token_id=1, forced_eos_token_id=[2, 3],
    remove_invalid_values=True, exponential_decay_length_penalty=[5, 1.5], suppress_tokens=[8, 9],
    begin_suppress_tokens=[10], sequence_bias=[[[4], -1.5], [[5, 6], 2.0]], token_healing=False,
    guidance_scale=1.5, num_return_sequences=2, output_attentions=True,
    output_hidden_states=True, output_scores=True, output_logits=True, return_dict_in_generate=True,
    pad_token_id=0, bos_token_id=1, eos_token_id=[2, 3], encoder_no_repeat_ngram_size=2, decoder_start_token_id=1,
    is_assistant=True, num_assistant_tokens=7, num_assistant_tokens_schedule="heuristic",
    assistant_confidence_threshold=0.3, prompt_lookup_num_tokens=4, max_matching_ngram_size=2,
    assistant_early_exit=3, assistant_lookbehind=5, target_lookbehind=6, assistant_ensemble_weight=0.5,
    speculation_type="draft", disable_compile=True, low_memory=True, penalty_alpha=0.6,
    dola_layers="low", diversity_penalty=0.5, num_beam_groups=3, force_words_ids=[[3]],
    prefill_chunk_size=128,
)


def test_every_field_of_the_reference_exists_with_its_default():
    reference_fields = set(transformers.GenerationConfig().to_dict()) - METADATA
    ours = GenerationConfig()
    missing = [name for name in reference_fields if name not in GenerationConfig.option_names()]
    assert missing == []
    assert all(getattr(ours, name) is None for name in reference_fields)
    assert set(ours.to_dict()) >= reference_fields
    untested = reference_fields - set(EVERY_FIELD) - {"watermarking_config", "compile_config", "constraints",
                                                      "continuous_batching_config"}
    assert untested == set(), "give the new field a value in EVERY_FIELD"


@pytest.mark.filterwarnings("ignore")
def test_a_file_with_every_field_round_trips_both_ways(tmp_path):
    ours = GenerationConfig(**EVERY_FIELD, my_custom_key={"a": 1})
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path / "ours")
    for name, value in EVERY_FIELD.items():
        assert getattr(theirs, name) == value, name
    assert theirs.my_custom_key == {"a": 1}

    theirs.save_pretrained(tmp_path / "theirs")
    back = GenerationConfig.from_pretrained(tmp_path / "theirs")
    for name, value in EVERY_FIELD.items():
        assert getattr(back, name) == value, name
    assert back.my_custom_key == {"a": 1}
    assert back == ours  # equality ignores the metadata (transformers_version)
    ours_json = json.loads(ours.to_json_string(use_diff=False))
    theirs_json = json.loads(theirs.to_json_string(use_diff=False))
    assert {k: v for k, v in ours_json.items() if k not in METADATA} == {
        k: v for k, v in theirs_json.items() if k not in METADATA}


def test_extra_attributes_behave_as_the_reference():
    for cls in (GenerationConfig, transformers.GenerationConfig):
        config = cls(foo="bar")
        config.baz = 3
        assert (config.foo, config.baz) == ("bar", 3)
        assert config.to_dict()["foo"] == "bar" and config.to_diff_dict()["baz"] == 3
        assert config.update(foo="qux", unknown=1) == {"unknown": 1} and config.foo == "qux"
        assert config.update(new=2, allow_custom_entries=True) == {} and config.new == 2
        config.update(foo="ignored", top_k=7, defaults_only=True)
        assert (config.foo, config.top_k) == ("qux", 7)
        with pytest.raises(AttributeError):
            config.not_there
        assert not hasattr(config, "not_there")


def test_json_string_and_dicts_match_the_reference():
    options = dict(max_new_tokens=5, do_sample=True, top_p=0.8, eos_token_id=[1, 2])
    ours, theirs = GenerationConfig(**options), transformers.GenerationConfig(**options)
    assert ours.to_json_string(ignore_metadata=True) == theirs.to_json_string(ignore_metadata=True)
    assert ours.to_json_string(use_diff=False, ignore_metadata=True) == theirs.to_json_string(
        use_diff=False, ignore_metadata=True)
    theirs_dict = {k: v for k, v in theirs.to_dict().items() if k not in METADATA}
    assert {k: v for k, v in ours.to_dict().items() if k not in METADATA} == theirs_dict
    assert repr(ours).startswith("GenerationConfig {")
    assert ours == GenerationConfig(**options) and ours != GenerationConfig(max_new_tokens=6)
    assert hash(ours) == hash(GenerationConfig(**options))
    config, unused = GenerationConfig.from_dict({"top_k": 3}, return_unused_kwargs=True, num_beams=2)
    assert (config.top_k, config.num_beams, unused) == (3, 2, {})


def test_generation_mode_values_are_the_references():
    assert {mode.name: mode.value for mode in GenerationMode} == {
        mode.name: mode.value for mode in GenerationModeOfReference}
    assert GenerationMode("sample") is GenerationMode.SAMPLE and GenerationMode.SAMPLE == "sample"
    with pytest.raises(ValueError, match="not a GenerationMode"):
        GenerationMode("nucleus")


MODE_CASES = [
    {}, dict(do_sample=True), dict(num_beams=4), dict(num_beams=4, do_sample=True),
    dict(num_beams=4, num_beam_groups=2), dict(top_k=4, penalty_alpha=0.6), dict(constraints=[1]),
    dict(force_words_ids=[[1]]), dict(prompt_lookup_num_tokens=3), dict(do_sample=True, prompt_lookup_num_tokens=3),
    dict(assistant_early_exit=2), dict(dola_layers="high"), dict(num_beams=2, prompt_lookup_num_tokens=3),
    dict(num_beams=1, do_sample=False), dict(use_mtp=True),
]


@pytest.mark.parametrize("options", MODE_CASES)
@pytest.mark.parametrize("assistant", [None, "a model"])
def test_get_generation_mode_matches_reference(options, assistant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GenerationConfig(**options).get_generation_mode(assistant)
        theirs = transformers.GenerationConfig(**options).get_generation_mode(assistant)
    assert ours.value == theirs.value


def test_without_a_length_generate_makes_twenty_new_tokens():
    config, _ = resolve_generation_config(None, None, {})
    assert config.max_new_tokens == 20
    assert resolve_generation_config(GenerationConfig(max_length=9), None, {})[0].max_new_tokens is None
    assert resolve_generation_config(None, GenerationConfig(max_length=9), {})[0].max_new_tokens is None
    assert resolve_generation_config(None, None, {"max_length": 9})[0].max_new_tokens is None
    assert resolve_generation_config(GenerationConfig(max_new_tokens=4), None, {})[0].max_new_tokens == 4


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(epsilon_cutoff=1.0), r"epsilon_cutoff must be a number in \[0, 1\)"),
        (dict(top_h=0), r"top_h must be a number in \(0, 1\]"),
        (dict(forced_bos_token_id=-1), "forced_bos_token_id must be a token id"),
        (dict(exponential_decay_length_penalty=5), "exponential_decay_length_penalty must be a pair"),
        (dict(renormalize_logits="yes"), "renormalize_logits must be True or False"),
    ],
)
def test_impossible_new_values_raise_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**options)


def test_strict_validation_turns_ignored_options_into_errors():
    with pytest.warns(UserWarning):
        config = GenerationConfig(top_p=0.5)
    with pytest.raises(ValueError, match="GenerationConfig is invalid: do_sample is not True"):
        config.validate(strict=True)
    GenerationConfig(top_p=0.5, do_sample=True).validate(strict=True)


def test_hub_only_strategies_are_refused_with_the_references_reason():
    with pytest.raises(ValueError, match="Contrastive Search .* is no longer part of transformers"):
        resolve_generation_config(None, None, {"penalty_alpha": 0.6, "top_k": 4})
    with pytest.raises(ValueError, match="transformers-community/dola"):
        resolve_generation_config(None, None, {"dola_layers": "high"})


@pytest.mark.parametrize(
    "change",
    [dict(temperature=0.5), dict(num_return_sequences=2), dict(output_scores=True), dict(length_penalty=0.5)],
    ids=["sampling-option", "sequences", "output-flag", "beam-option"],
)
def test_saving_refuses_an_inconsistent_config_as_the_reference(tmp_path, change):
    for cls, folder in ((GenerationConfig, tmp_path / "ours"), (transformers.GenerationConfig, tmp_path / "theirs")):
        config = cls()
        for name, value in change.items():
            setattr(config, name, value)
        with pytest.raises(ValueError, match="Fix these issues to save the configuration"):
            config.save_pretrained(folder)
        assert not folder.exists() or not any(folder.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig().save_pretrained(tmp_path / "fine")
    assert [p.name for p in (tmp_path / "fine").iterdir()] == ["generation_config.json"]


def test_a_loaded_config_saves_back_unchanged_even_when_inconsistent(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"temperature": 0.6, "top_p": 0.9}')
    for cls in (GenerationConfig, transformers.GenerationConfig):
        cls.from_pretrained(tmp_path).save_pretrained(tmp_path / cls.__module__)
    ours = json.loads((tmp_path / GenerationConfig.__module__ / "generation_config.json").read_text())
    assert ours == {"temperature": 0.6, "top_p": 0.9}


@pytest.mark.parametrize(
    "options",
    [dict(logits_processor="foo"), dict(assistant_model="foo"), dict(do_sample=False, num_return_sequences=2),
     dict(do_sample=True, num_beams=2, num_return_sequences=3), dict(suppress_tokens=[2, 3], forced_eos_token_id=2),
     dict(cache_implementation="mine")],
)
def test_impossible_configs_raise_as_in_the_reference(options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            transformers.GenerationConfig(**options)
        with pytest.raises(ValueError):
            GenerationConfig(**options)


def test_warnings_as_the_reference_test_expects():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GenerationConfig()
        GenerationConfig(foo="bar")
    assert caught == []
    for options in (dict(do_sample=False, temperature=0.5), dict(return_dict_in_generate=False, output_scores=True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            GenerationConfig(**options)
        assert len(caught) == 1, options


def test_a_config_rebuilt_from_its_dict_is_equal_and_pickles():
    import pickle

    config = GenerationConfig(max_new_tokens=3, foo=1)
    rebuilt = GenerationConfig(**config.to_dict())
    assert rebuilt == config and rebuilt.to_diff_dict() == {"max_new_tokens": 3, "foo": 1}
    assert pickle.loads(pickle.dumps(config)) == config


def test_validate_warns_about_the_attributes_named_as_set():
    config = GenerationConfig.from_dict({"top_p": 0.5})  # a file's values: no warning
    with pytest.warns(UserWarning, match="top_p=0.5"):
        config.validate(user_set_attributes={"top_p"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config.validate(user_set_attributes={"max_new_tokens"})
        config.validate()


def test_a_saved_model_writes_only_the_set_generation_options(tmp_path):
    from openformers import AutoModelForCausalLM

    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, bos_token_id=1, eos_token_id=2,
    )).save_pretrained(tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    model.generation_config.max_new_tokens = 7
    model.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "generation_config.json").read_text())
    assert None not in saved.values() and saved["max_new_tokens"] == 7
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "ours").max_new_tokens == 7


def test_compile_config_is_kept_but_not_saved_as_in_the_reference(tmp_path):
    from openformers.generation.config import CompileConfig

    ours = CompileConfig(fullgraph=True, mode="max-autotune")
    assert ours.to_dict() == transformers.CompileConfig(fullgraph=True, mode="max-autotune").to_dict()
    config = GenerationConfig(compile_config=ours, max_new_tokens=3)
    assert config.compile_config is ours
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text()) == {"max_new_tokens": 3}
