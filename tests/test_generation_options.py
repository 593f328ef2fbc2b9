"""The options table: every reader agrees with it, and it agrees with the reference's GenerationConfig."""

import re

import pytest

from openformers import GenerationConfig, generation
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
        named = re.match(r"[A-Z][A-Za-z]+", option.feeds)
        if named:
            assert any(hasattr(home, named.group()) for home in homes), (option.name, option.feeds)


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
