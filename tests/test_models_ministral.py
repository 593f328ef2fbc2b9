"""Ministral (model_type "ministral") against the reference, on tiny random models it makes and saves.

A class over test_models_llama_variants.LlamaVariantTests (decoder_suite's common tests: every head the reference has
on a padded batch with labels, cached decoding, left padding, greedy and beam generation, a static cache, hidden
states, a training step, saving both ways; the config's defaults and refusals, bfloat16, the Auto classes) with what is
Ministral's own: layers of both kinds in either order under a window shorter than the inputs (9-12 tokens through a
window of 3 or 4), so that a layer given the other kind's mask moves the logits, and the CPU kernel's decoding step,
which takes these layers with their per-layer windows. llama.cpp has no architecture for Ministral (its converter
writes the released checkpoint as a "llama" file without the layer pattern), so there is no GGUF round here.
"""

import pytest
import torch

import openformers
from decoder_parity import assert_decoding_step_gives_the_references_logits, load_quietly
from test_models_llama_variants import SIZES, LlamaVariantTests, _decoder_heads

transformers = pytest.importorskip("transformers")


class TestMinistral(LlamaVariantTests):
    REFERENCE_CONFIG = "MinistralConfig"
    MODEL_TYPE = "ministral"
    TINY = dict(SIZES, head_dim=16, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    VARIANTS = {
        "sliding-then-full": {},
        "full-then-sliding-tied-gqa-1": dict(layer_types=["full_attention", "sliding_attention"], sliding_window=3,
                                             tie_word_embeddings=True, num_key_value_heads=1),
    }
    HEADS = _decoder_heads("Ministral")
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "sliding_window", "layer_types", "rope_parameters")
    # head_dim left out: the reference's default is None (hidden_size / heads when the model is built), ours 128
    DEFAULT_FIELDS = ("sliding_window", "layer_types")
    REFUSALS = [
        (dict(layer_types=["sliding_attention"]), "layer_types=\\['sliding_attention'\\]"),
        (dict(layer_types=["sliding_attention", "local"]), "layer_types=\\['sliding_attention', 'local'\\]"),
        (dict(sliding_window=None), "layer_types=\\['sliding_attention', 'full_attention'\\]"),
        (dict(sliding_window=0), "sliding_window=0"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(attention_dropout=1.0), "attention_dropout=1.0"),
    ]
    # The step takes Ministral (below); the refusal that the other Llama variants check does not apply.
    test_the_cpu_kernel_refuses_the_family_and_generation_runs_the_layers = None

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_through_the_per_layer_windows(self, tiny):
        """from_pretrained gives the model the kernel's decoding step, whose steps past the window give the
        reference's logits; generation with it gives the reference's tokens."""
        folder, reference, _ = tiny
        model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, folder)
        ids = self.ids(1, 12, seed=9)
        assert_decoding_step_gives_the_references_logits(model, reference, ids)
        settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()


def test_config_default_layer_types_follow_the_window_as_the_reference():
    for values in (dict(num_hidden_layers=3), dict(num_hidden_layers=3, sliding_window=None)):
        ours, theirs = openformers.MinistralConfig(**values), transformers.MinistralConfig(**values)
        assert ours.layer_types == theirs.layer_types
