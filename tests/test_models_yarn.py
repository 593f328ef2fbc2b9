"""YaRN rope scaling (rope_type "yarn") in the Llama-style families against the reference, on tiny random models it
makes and saves: Llama, Qwen2, Qwen3, Mistral, and the full-attention layers of Gemma 3 and OLMo 3 (their sliding
layers keep an unscaled rotation of their own base, as the reference's do).

YaRN in three forms: the Qwen model cards' (a factor and the original context; the attention factor derived from the
factor), gpt-oss's (the band of blended pairs set by beta_fast and beta_slow and not rounded to whole pairs, an
attention factor given) and DeepSeek's (the attention factor the ratio of mscale and mscale_all_dim's). The original
context is 8 positions, so every test runs past it: logits and loss over 30 positions, cached decoding, a left-padded
batch, greedy and beam generation (6 + 10 tokens), the CPU kernel's decoding step, saving both ways, and each head.
GGUF files of Qwen2 and Qwen3 with YaRN as llama.cpp's converter writes them. Then the config: the reference's
default original context, the values refused by name, truncate on Gemma 3 and OLMo 3
(which the reference ignores there) and OLMo 3's older layout of config.json (Olmo-3-1025-7B's).
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_cached_decoding_equals_the_full_forward,
    assert_decoding_step_gives_the_references_logits,
    assert_generate_matches,
    assert_head_matches_and_saves_both_ways,
    assert_left_padded_batch_equals_single_rows,
    assert_outputs_close,
    assert_saved_both_ways,
    generation_inputs,
    lm_inputs,
    load_quietly,
    make_reference,
    outputs_of,
    write_gguf,
)
from openformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Olmo3Config
from openformers.models.layers import rope_attention_factor, rope_inverse_frequencies
from test_models_qwen3 import GGUF_NAMES  # llama.cpp's names of a Qwen3 weight's parts; Qwen2's are among them

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=32, rope_theta=100.0, pad_token_id=0,
    initializer_range=0.15,  # weights large enough that a rotation a little off moves the logits past the tolerance
)
SLIDING_THEN_FULL = dict(layer_types=["sliding_attention", "full_attention"], sliding_window=4)
# family -> (the reference's config class, its causal LM, its sequence classifier, config values over TINY)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", "LlamaForSequenceClassification", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", "MistralForSequenceClassification", dict(sliding_window=6)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", "Gemma3TextForSequenceClassification",
               dict(SLIDING_THEN_FULL, rope_local_base_freq=50.0, query_pre_attn_scalar=16)),
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", "Olmo3ForSequenceClassification", SLIDING_THEN_FULL),
}
LAYER_TYPED = ("gemma3", "olmo3")  # rope_parameters per layer type: the reference ignores truncate there
# With heads of 16 and a base of 100, the default band (beta_fast 32, beta_slow 1) keeps pair 0 and slows the rest;
# gpt-oss's here blends pairs 1 and 2 by fractions of the speed (its band ends at pair 2.83, 3 when rounded).
FORMS = {
    "qwen-card": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    "gpt-oss": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "beta_fast": 4.0,
                "beta_slow": 0.25, "truncate": False, "attention_factor": 1.3},
    "deepseek-mscale": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "mscale": 0.9,
                        "mscale_all_dim": 0.5},
}
CASES = [(family, form) for family in FAMILIES for form in FORMS]


def ids_of(*shape, seed=1):
    return torch.randint(1, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def reference_model(family: str, scaling: dict, head: int = 1, **overrides):
    """The reference's tiny random model of `family` with `scaling` as its rope_scaling: its causal LM (head 1) or its
    sequence classifier (head 2)."""
    config_class, *heads, values = FAMILIES[family]
    config = getattr(transformers, config_class)(**{**TINY, **values, **overrides}, rope_scaling=dict(scaling))
    return make_reference(heads[head - 1], config)


def load(family: str, form: str, folder, auto_class: str = "AutoModelForCausalLM"):
    """The model saved in `folder` by openformers' `auto_class`: Gemma 3 and OLMo 3 warn once that gpt-oss's truncate
    is ignored, the other loads say nothing."""
    load = getattr(openformers, auto_class).from_pretrained
    if family in LAYER_TYPED and "truncate" in FORMS[form]:
        with pytest.warns(UserWarning, match="truncate=False is ignored"):
            return load(folder)
    return load_quietly(load, folder)


@pytest.fixture(scope="module", params=CASES, ids=[f"{family}-{form}" for family, form in CASES])
def tiny(request, tmp_path_factory):
    """(family, form, folder, reference, model): the reference's causal LM, saved and loaded by ours."""
    family, form = request.param
    folder = tmp_path_factory.mktemp(f"{family}-{form}")
    reference = reference_model(family, FORMS[form])
    reference.save_pretrained(folder)
    return family, form, folder, reference, load(family, form, folder)


@torch.inference_mode()
def test_logits_and_loss_past_the_original_context_match_the_reference(tiny):
    family, form, _, reference, model = tiny
    assert type(model).__name__ == type(reference).__name__
    assert model.config.rope_scaling["rope_type"] == "yarn"
    inputs = lm_inputs(ids_of(2, 30, seed=7))  # a right- and a left-padded row, 30 positions
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), f"{family} {form}")


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(tiny):
    assert_cached_decoding_equals_the_full_forward(tiny[4], ids_of(2, 20))


@torch.inference_mode()
def test_left_padded_batch_equals_single_rows(tiny):
    *_, reference, model = tiny
    assert_left_padded_batch_equals_single_rows(model, ids_of, reference)


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3)], ids=["greedy", "beam"])
@torch.inference_mode()
def test_generation_past_the_original_context_matches_the_reference(tiny, options):
    *_, reference, model = tiny
    assert_generate_matches(model, reference, *generation_inputs(ids_of), **options)  # positions 0-15


@torch.inference_mode()
def test_the_cpu_decoding_step_rotates_as_the_reference(tiny):
    # One call of the compiled step a token, positions 4-23, reading the rotary tables with YaRN's attention factor.
    *_, reference, model = tiny
    assert_decoding_step_gives_the_references_logits(model, reference, ids_of(1, 24, seed=9))


@torch.inference_mode()
def test_saved_yarn_models_load_in_the_reference_and_back(tiny, tmp_path):
    family, form, _, reference, model = tiny
    inputs = lm_inputs(ids_of(2, 20, seed=5))
    saved = assert_saved_both_ways(model, tmp_path, "AutoModelForCausalLM", inputs, outputs_of(reference, inputs))
    scaling = dict(FORMS[form])
    if family in LAYER_TYPED:  # the full layers' entry; truncate dropped, the reference ignoring it there
        scaling.pop("truncate", None)
        assert saved.config.rope_parameters["sliding_attention"]["rope_type"] == "default"
    parameters = saved.config.rope_parameters.get("full_attention", saved.config.rope_parameters)
    assert {key: parameters[key] for key in scaling} == scaling


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_the_base_model_and_the_sequence_classifier_match_the_reference(family, tmp_path):
    # In gpt-oss's form, whose band and attention factor the base model's rotation carries to every head.
    form = "gpt-oss" if family not in LAYER_TYPED else "qwen-card"
    reference = reference_model(family, FORMS[form], head=2, num_labels=3)
    ids = ids_of(2, 20, seed=3)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([2, 0])}
    assert_head_matches_and_saves_both_ways(reference, tmp_path, "AutoModelForSequenceClassification", inputs)
    base = load_quietly(openformers.AutoModel.from_pretrained, tmp_path / "reference")
    theirs = getattr(reference, reference.base_model_prefix)
    torch.testing.assert_close(base(ids).last_hidden_state, theirs(ids).last_hidden_state, atol=1e-4, rtol=1e-4)


def test_each_form_changes_the_rotation():
    # The frequencies and attention factor of each form differ from the plain rotation's and from one another's, so
    # that each of the tests above checks a rotation of its own.
    plain = rope_inverse_frequencies(16, 100.0, None)
    rotations = [(rope_inverse_frequencies(16, 100.0, scaling), rope_attention_factor(scaling))
                 for scaling in FORMS.values()]
    for i, (frequencies, factor) in enumerate(rotations):
        assert not torch.allclose(frequencies, plain) and factor != 1.0
        for other, other_factor in rotations[:i]:
            assert not torch.allclose(frequencies, other) or abs(factor - other_factor) > 0.01


@pytest.mark.parametrize("family", FAMILIES)
def test_the_original_context_defaults_to_max_position_embeddings_as_in_the_reference(family, tmp_path):
    # A config.json given a model card's dict without original_max_position_embeddings (the older layout, as users
    # edit it): the reference reads max_position_embeddings. Qwen2.5's cards name the kind "type"; the reference's
    # Gemma 3 and OLMo 3 read only "rope_type" there (their full layers' entry already has one, "default").
    config_class, causal_lm, _, values = FAMILIES[family]
    model_type = getattr(transformers, config_class).model_type
    kind = "rope_type" if family in LAYER_TYPED else "type"
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": model_type, "architectures": [causal_lm], **TINY, **values,
        "rope_scaling": {kind: "yarn", "factor": 4.0}}))
    ours, theirs = openformers.AutoConfig.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
    assert ours.rope_scaling["original_max_position_embeddings"] == TINY["max_position_embeddings"]
    expected = theirs.rope_parameters.get("full_attention", theirs.rope_parameters)
    written = ours.to_dict()["rope_parameters"]
    assert written.get("full_attention", written) == expected


@pytest.mark.parametrize("config_class", [LlamaConfig, Gemma3TextConfig, Olmo3Config])
@pytest.mark.parametrize("scaling, named", [
    ({"rope_type": "yarn", "factor": 0.0}, "rope_scaling.factor"),
    ({"rope_type": "yarn"}, "rope_scaling.factor"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": "long"},
     "rope_scaling.original_max_position_embeddings"),
], ids=["factor-zero", "no-factor", "context-not-a-number"])
def test_bad_yarn_values_are_refused_by_name(config_class, scaling, named):
    with pytest.raises(ValueError, match=named):
        config_class(**TINY, rope_scaling=scaling)


@pytest.mark.parametrize("config_class", [Gemma3TextConfig, Olmo3Config])
def test_truncate_false_on_the_layer_typed_families_is_dropped_with_a_warning(config_class):
    with pytest.warns(UserWarning, match=f"truncate=False is ignored for a {config_class.model_type} model"):
        config = config_class(**TINY, **SLIDING_THEN_FULL, rope_scaling=FORMS["gpt-oss"])
    assert "truncate" not in config.rope_scaling
    assert config.rope_scaling == {key: value for key, value in FORMS["gpt-oss"].items() if key != "truncate"}


@torch.inference_mode()
def test_olmo3_in_the_older_layout_reads_yarn_as_the_reference(tmp_path):
    # Olmo-3-1025-7B's config.json: a top-level rope_theta and rope_scaling, which are the full layers' only (the
    # sliding layers keep the default base); here at a tiny size, its attention factor given.
    scaling = {"attention_factor": 1.2079441541679836, "beta_fast": 32, "beta_slow": 1, "factor": 8.0,
               "original_max_position_embeddings": 8, "rope_type": "yarn"}
    values = {"model_type": "olmo3", "architectures": ["Olmo3ForCausalLM"], **TINY, **SLIDING_THEN_FULL,
              "max_position_embeddings": 64, "rope_scaling": scaling}
    (tmp_path / "config.json").write_text(json.dumps(values))
    ours, theirs = openformers.AutoConfig.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
    assert ours.to_dict()["rope_parameters"] == theirs.rope_parameters
    assert ours.sliding_rope_theta == theirs.rope_parameters["sliding_attention"]["rope_theta"] == 500000.0
    reference = make_reference("Olmo3ForCausalLM", theirs)
    reference.save_pretrained(tmp_path)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    inputs = lm_inputs(ids_of(2, 30, seed=7))
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "OLMo 3's older layout")



@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
@torch.inference_mode()
def test_gguf_with_yarn_written_like_llama_cpp_matches_the_original(family, tmp_path):
    # llama.cpp's converter writes a Qwen config's YaRN as rope.scaling.type "yarn", its factor and original context
    # (llama.cpp then takes YaRN's default band and the attention factor derived from the factor: the model cards').
    import gguf

    reference = reference_model(family, FORMS["qwen-card"])
    config = reference.config
    write_gguf(tmp_path / "model.gguf", family, reference, GGUF_NAMES, key_length=config.head_dim,
               value_length=config.head_dim, layer_norm_rms_eps=config.rms_norm_eps,
               rope_scaling_type=gguf.RopeScalingType.YARN, rope_scaling_factor=4.0, rope_scaling_orig_ctx_len=8)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "model.gguf")
    assert model.config.model_type == family
    assert model.config.rope_scaling == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}
    inputs = lm_inputs(ids_of(2, 30, seed=7))
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), f"{family} GGUF")
