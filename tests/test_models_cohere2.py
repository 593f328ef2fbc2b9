"""Cohere 2 (model_type "cohere2": Command R7B, Command A) against the reference, on tiny random models it makes and
saves.

The variants: Command R7B's layout over two layers (a sliding layer with rotary positions and a window shorter than
the inputs, then a full-attention layer with no positional encoding), the layer kinds derived from
sliding_window_pattern with biases on the attention, and an untied head with linear rope scaling. Both heads the
reference has, on a right- and a left-padded row; cached decoding, left padding, greedy and beam generation, a static
cache, hidden states and attention weights, a training step; saving both ways; the config's defaults and refusals;
GGUF files written as llama.cpp's converter writes a "cohere2" checkpoint; and the tokenizer the reference picks for a
Cohere 2 folder.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_bfloat16_matches_the_reference,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    outputs_of,
    padded_batch,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, Cohere2Config, Cohere2ForCausalLM
from test_models_cohere import GGUF_NAMES, _cohere_tokenizer_folder

transformers = pytest.importorskip("transformers")

R7B_LAYERS = ["sliding_attention", "full_attention"]


class TestCohere2(DecoderFamilyTests):
    REFERENCE_CONFIG = "Cohere2Config"
    TINY = dict(
        vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.15, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, logit_scale=0.5, sliding_window=4,  # shorter than every input: the window shows
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        layer_norm_eps=0.1,  # large, so that the norms' own epsilon shows in the logits
    )
    VARIANTS = {
        "command-r7b": dict(layer_types=R7B_LAYERS),
        "pattern-biases": dict(sliding_window_pattern=2, attention_bias=True),  # layer_types derived: the same kinds
        "untied-linear-rope": dict(layer_types=R7B_LAYERS, tie_word_embeddings=False, logit_scale=2.0,
                                   rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}),
    }
    HEADS = {"Cohere2Model": "AutoModel", "Cohere2ForCausalLM": "AutoModelForCausalLM"}
    LOWEST_ID = 3
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = TRAINING_VARIANTS = ["pattern-biases"]
    HEAD_OVERRIDES = {}
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "num_key_value_heads", "tie_word_embeddings", "rope_parameters",
                               "layer_norm_eps", "logit_scale", "sliding_window", "layer_types")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == reference.config.tie_word_embeddings
        assert [layer.self_attn.rotates for layer in model.model.layers] == [True, False]

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """The LayerNorms (weight included) and the rotation in float32, the tables rounded to bfloat16 first, as
        the reference's: the same bits."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_and_generates_as_the_reference(self, tiny):
        """from_pretrained gives Cohere 2 the kernel's decoding step (Cohere's layers, the sliding ones windowed and
        rotated, the full ones unrotated), whose steps give the reference's logits and whose greedy tokens are the
        reference's."""
        folder, reference, _ = tiny
        model = load_quietly(AutoModelForCausalLM.from_pretrained, folder)
        assert_kernel_steps_and_generates_as_the_reference(model, reference, _ids(1, 12, seed=9))

    def test_auto_classes_pick_the_cohere2_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is Cohere2Config
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "Cohere2Model"
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is Cohere2ForCausalLM
        with pytest.raises(ValueError, match="no sequence-classification class for 'cohere2'"):
            openformers.AutoModelForSequenceClassification.from_pretrained(folder)


TINY, VARIANTS = TestCohere2.TINY, TestCohere2.VARIANTS
_reference, _ids, _inputs = TestCohere2.reference, TestCohere2.ids, TestCohere2.inputs


@torch.inference_mode()
def test_four_layers_of_the_default_pattern_match_the_reference(tmp_path):
    """The reference's default: three sliding layers, then one of full attention; a window of 3 over 9 tokens."""
    reference = _reference(num_hidden_layers=4, sliding_window=3)
    assert reference.config.layer_types == ["sliding_attention"] * 3 + ["full_attention"]
    reference.save_pretrained(tmp_path)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.config.layer_types == reference.config.layer_types
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "four layers")


def test_config_defaults_match_the_reference():
    ours, theirs = Cohere2Config(), transformers.Cohere2Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "logit_scale", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "layer_norm_eps",
        "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias", "attention_dropout",
        "sliding_window", "layer_types", "head_dim",
    ))
    assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}
    assert "use_qk_norm" not in ours.to_dict()
    for pattern in (1, 3):  # every layer full; two sliding, one full
        values = dict(num_hidden_layers=6, sliding_window_pattern=pattern)
        assert Cohere2Config.from_dict(values).layer_types == transformers.Cohere2Config(**values).layer_types


@pytest.mark.parametrize("values, message", [
    (dict(sliding_window=0), "sliding_window=0"),
    (dict(layer_types=["sliding_attention"]), "layer_types="),
    (dict(layer_types=["sliding_attention", "chunked_attention"]), "layer_types="),
    (dict(layer_types=None, sliding_window_pattern=0), "sliding_window_pattern=0"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    (dict(logit_scale=0), "logit_scale=0"),
    (dict(rope_parameters={"rope_type": "proportional", "factor": 2.0, "rope_theta": 10.0}), "'proportional'"),
])
def test_config_refuses_what_it_does_not_implement(values, message):
    with pytest.raises(ValueError, match=message):
        Cohere2Config.from_dict({**TINY, "layer_types": R7B_LAYERS, **values})


def test_a_bad_config_json_value_names_the_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "cohere2", **TINY, "sliding_window": -2}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: sliding_window=-2"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "cohere2" checkpoint (convert_hf_to_gguf.py's Cohere2Model): Cohere's
# tensor names and rows as they are, no attention biases (it refuses non-zero ones), no output tensor for the tied
# head; the logit scale, the LayerNorms' epsilon, the window and the rotated width in its metadata. llama.cpp attends to
# everything in every fourth layer, so the file's model has the reference's default four-layer pattern.


@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    reference = _reference(num_hidden_layers=4, sliding_window=3)
    config = reference.config
    write_gguf(tmp_path / "cohere2.gguf", "cohere2", reference, GGUF_NAMES, logit_scale=config.logit_scale,
               layer_norm_eps=config.layer_norm_eps, sliding_window=config.sliding_window,
               rope_dimension_count=config.head_dim)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "cohere2.gguf")
    assert isinstance(model, Cohere2ForCausalLM) and model.generation_config.eos_token_id == 2
    assert_same_attributes(model.config, config, ("num_key_value_heads", "tie_word_embeddings", "sliding_window",
                                                  "layer_types", "attention_bias"))
    assert model.config.logit_scale == pytest.approx(config.logit_scale)
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "GGUF")


def test_gguf_without_the_window_is_refused(tmp_path):
    reference = _reference(layer_types=R7B_LAYERS)
    write_gguf(tmp_path / "bad.gguf", "cohere2", reference, GGUF_NAMES, logit_scale=0.5, layer_norm_eps=0.1)
    with pytest.raises(ValueError, match="cohere2.attention.sliding_window"):
        openformers.AutoConfig.from_pretrained(tmp_path / "bad.gguf")


def test_tokenizer_of_a_cohere2_folder_is_the_references(tmp_path):
    """The reference registers CohereTokenizer for cohere2, as for cohere: a Command R7B folder (naming
    CohereTokenizer) reads as that class, with its ids."""
    folder = _cohere_tokenizer_folder(tmp_path / "command-r7b", "CohereTokenizer", True)
    (folder / "config.json").write_text(json.dumps({"model_type": "cohere2"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "CohereTokenizer"
    text = "Command R7B, 2024: <|START_OF_TURN_TOKEN|>café"
    assert ours(text)["input_ids"] == reference(text)["input_ids"]
