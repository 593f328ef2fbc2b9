"""Ministral 3 (model_type "ministral3") against the reference, on tiny random models it makes and saves.

A class over test_models_llama_variants.LlamaVariantTests (decoder_suite's common tests: every head the reference has
on a padded batch with labels, cached decoding, left padding, greedy and beam generation, a static cache, hidden
states, a training step, saving both ways; the config's defaults and refusals, bfloat16, the Auto classes, the CPU
kernel's refusal) with what is Ministral 3's own: the queries' scale by position, made to show by a YaRN context of 4
positions (the 9-12 token rows cross three of its steps) and a large llama_4_scaling_beta, with and without a sliding
window shorter than the rows. The released folders are Mistral 3's image-and-text wrappers ("mistral3"), which the
reference's AutoModelForCausalLM refuses too, and llama.cpp reads them as its "mistral3" architecture: no GGUF round.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import assert_outputs_close, assert_same_attributes, load_saved, outputs_of
from test_models_llama_variants import DEFAULT_FIELDS, SIZES, LlamaVariantTests, _decoder_heads

transformers = pytest.importorskip("transformers")

YARN = {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 4, "beta_fast": 32.0,
        "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.6, "rope_theta": 500.0}


class TestMinistral3(LlamaVariantTests):
    REFERENCE_CONFIG = "Ministral3Config"
    MODEL_TYPE = "ministral3"
    TINY = dict(SIZES, head_dim=16, rope_parameters=YARN)
    VARIANTS = {
        "yarn-query-scale": {},
        "window-tied-gqa-1": dict(sliding_window=3, tie_word_embeddings=True, num_key_value_heads=1,
                                  rope_parameters={**YARN, "llama_4_scaling_beta": 0.3, "factor": 4.0}),
    }
    HEADS = _decoder_heads("Ministral3")
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "sliding_window", "rope_parameters")
    DEFAULT_FIELDS = ("head_dim", "sliding_window")
    REFUSALS = [
        (dict(rope_parameters={"rope_type": "default", "rope_theta": 500.0}), "rope_scaling=None"),
        (dict(rope_parameters={**YARN, "llama_4_scaling_beta": None}), "rope_scaling.llama_4_scaling_beta=None"),
        (dict(sliding_window=0), "sliding_window=0"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(attention_dropout=1.5), "attention_dropout=1.5"),
    ]

    def test_config_defaults_match_the_reference(self):
        """The reference's defaults, its YaRN rope scaling with llama_4_scaling_beta among them (the reference also
        writes max_position_embeddings and the older "type" key into it, which no computation reads)."""
        ours, theirs = openformers.Ministral3Config(), transformers.Ministral3Config()
        assert_same_attributes(ours, theirs, DEFAULT_FIELDS + self.DEFAULT_FIELDS)
        unread = ("type", "max_position_embeddings")
        expected = {key: value for key, value in theirs.rope_parameters.items() if key not in unread}
        assert ours.to_dict()["rope_parameters"] == expected

    def test_config_refuses_bad_values_by_name(self, refusal, tmp_path):
        """The refusals as config.json gives them (rope_parameters is read from files)."""
        values, message = refusal
        (tmp_path / "config.json").write_text(json.dumps({"model_type": self.MODEL_TYPE, **self.TINY, **values}))
        with pytest.raises(ValueError, match=f"config.json: Invalid config: {message}"):
            openformers.AutoConfig.from_pretrained(tmp_path)



@torch.inference_mode()
def test_the_query_scale_moves_the_logits(tmp_path):
    """Scaled (beta 0.6) and unscaled (beta 0), ours gives the reference's logits, which differ: the factor is
    computed, not ignored."""
    inputs = {"input_ids": TestMinistral3.ids(1, 12, seed=4)}
    logits = []
    for beta in (0.6, 0.0):
        reference = TestMinistral3.reference(rope_parameters={**YARN, "llama_4_scaling_beta": beta})
        ours = outputs_of(load_saved(reference, tmp_path / str(beta)), inputs)
        assert_outputs_close(ours, outputs_of(reference, inputs), f"beta {beta}")
        logits.append(ours["logits"])
    assert (logits[0] - logits[1]).abs().max() > 1e-2
