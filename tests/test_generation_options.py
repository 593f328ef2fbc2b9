"""The options table: every reader agrees with it, and it agrees with the reference's GenerationConfig."""

import re
import warnings

import pytest
import torch

from openformers import AutoModelForCausalLM, GenerationConfig, generation
from openformers.generation import options, stopping_criteria, watermarking
from openformers.generation.options import OPTIONS, OPTIONS_BY_NAME, Kind

transformers = pytest.importorskip("transformers")


def test_the_table_holds_every_option_of_the_reference_once():
    names = [option.name for option in OPTIONS]
    assert len(names) == len(set(names))
    reference = set(transformers.GenerationConfig().to_dict()) - {"transformers_version", "_from_model_config"}
    assert reference <= set(names)
    assert GenerationConfig.option_names() == names


def test_defaults_are_the_reference_library_defaults():
    reference = transformers.GenerationConfig._get_default_generation_params()
    for name, value in reference.items():
        assert OPTIONS_BY_NAME[name].default == value, name


def test_every_checked_option_says_what_it_expects_and_refuses_in_its_words():
    for option in OPTIONS:
        if option.check is None:
            continue
        assert option.expected, option.name
        assert option.is_possible(option.default) or option.default is None, option.name
    with pytest.raises(ValueError, match=re.escape("top_p must be a number in (0, 1]")):
        GenerationConfig(top_p=2.0)


def test_feeds_names_a_class_that_exists():
    homes = (generation, stopping_criteria, watermarking)
    for option in OPTIONS:
        named = re.match(r"[A-Z]\w+(Processor|Warper|Criteria|Penalty|Normalization|Output|Generator)\b", option.feeds)
        if named:
            assert any(hasattr(home, named.group()) for home in homes), (option.name, option.feeds)
    assert sum(bool(re.match(r"[A-Z]\w+Processor\b", option.feeds)) for option in OPTIONS) >= 15


ASKING_VALUES = {"num_beam_groups": 2, "penalty_alpha": 0.6, "dola_layers": "high", "constraints": [1],
                 "force_words_ids": [[1]], "assistant_early_exit": 2, "use_mtp": True, "token_healing": True}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, eos_token_id=2)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder)


def test_options_that_ask_for_a_strategy_not_run_are_refused_by_generate(tiny_model):
    refused = {option.name for option in OPTIONS if option.refused_if is not None}
    assert refused == set(ASKING_VALUES)
    for name, value in ASKING_VALUES.items():
        with warnings.catch_warnings(), pytest.raises(ValueError, match=name):
            warnings.simplefilter("ignore")
            tiny_model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=2, **{name: value})
    assert tiny_model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=2, use_mtp=False).shape == (1, 5)


def test_sampling_kind_is_what_the_warpers_read():
    # Each sampling option, set away from its neutral value, adds a warper only when sampling.
    values = {"temperature": 0.5, "top_k": 3, "top_p": 0.5, "min_p": 0.1, "top_h": 0.5, "typical_p": 0.5,
              "epsilon_cutoff": 0.1, "eta_cutoff": 0.1}
    assert set(options.names_of_kind(Kind.SAMPLING)) == set(values)
    build = generation.processors.build_processors
    for name, value in values.items():
        assert len(build(GenerationConfig(do_sample=True, **{name: value}), 4)) == 1, name
        with pytest.warns(UserWarning, match=name):
            assert len(build(GenerationConfig(do_sample=False, **{name: value}), 4)) == 0, name


def test_server_options_are_checked_options():
    for option in options.server_options():
        assert option.check is not None, option.name
