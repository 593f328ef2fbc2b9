"""PhiMoE against the reference: tiny random models made by transformers, saved and loaded both ways.

TestPhimoe runs the common decoder and routed-experts tests (tests/decoder_suite.py) and Mixtral's experts' tests
(test_models_mixtral.MixtralExpertsTests) in variants that change the computation: biases on the attention and the
head, longrope with its mscales, the sparsemixer's softmax over several near scores (router_jitter_noise 0.5), and
tied embeddings with a sliding window and no biases. Then what is PhiMoE's own: the training forward's random draws
(Gumbel picks, the midpoint factors, the input jitter drawn twice) and the router's estimated gradient, against the
reference with the same seed; positions past original_max_position_embeddings turned with the long factors; the config's defaults and
refusals.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_outputs_close,
    assert_same_attributes,
    assert_training_step_matches,
    lm_inputs,
    load_saved,
    outputs_of,
)
from decoder_suite import reference_grads_as_checkpoint
from openformers import PhimoeConfig
from test_models_mixtral import MixtralExpertsTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, num_local_experts=4, num_experts_per_tok=2, pad_token_id=0,
    initializer_range=0.15, attention_bias=True, lm_head_bias=True, router_jitter_noise=0.5,
)


def longrope(original: int) -> dict:
    return {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": original,
            "short_factor": [1.0, 1.3, 2.0, 3.5], "long_factor": [2.0, 4.0, 5.5, 9.0],
            "short_mscale": 1.2, "long_mscale": 1.45}


class TestPhimoe(MixtralExpertsTests):
    REFERENCE_CONFIG = "PhimoeConfig"
    TINY = TINY
    VARIANTS = {
        "biases-near-scores": {},
        "longrope": dict(rope_parameters=longrope(original=64)),
        "tied-no-biases-best-only-windowed": dict(tie_word_embeddings=True, attention_bias=False, lm_head_bias=False,
                                                  router_jitter_noise=0.01, sliding_window=4),
    }
    HEADS = {
        "PhimoeModel": "AutoModel",
        "PhimoeForCausalLM": "AutoModelForCausalLM",
        "PhimoeForSequenceClassification": "AutoModelForSequenceClassification",
    }
    TRAINING_OVERRIDES = dict(router_aux_loss_coef=0.5, output_router_logits=True)
    EXPERT_BLOCK = "block_sparse_moe"
    EXPERT_NAMES = ("w1", "w3", "w2")
    # the CPU kernel's step does not implement PhiMoE: test_the_cpu_kernel_refuses_phimoe below
    test_the_cpu_kernels_decoding_step_routes_as_the_reference = None

    @classmethod
    def reference_grads(cls, reference) -> dict:
        grads = reference_grads_as_checkpoint(reference, cls.EXPERT_BLOCK, cls.EXPERT_NAMES)
        return {name.replace(".mlp.router.", ".block_sparse_moe.gate."): g for name, g in grads.items()}

    def test_training_loss_and_gradients_match_the_reference(self, training_variant, tmp_path):
        """The training forward draws its experts (and their midpoint factors, and the input's jitter), so each
        forward starts from one seed: the reference's loss and every gradient, the router's the sparsemixer's
        estimate, with gradient checkpointing too (which replays the draws)."""
        overrides = {**self.VARIANTS[training_variant], **self.TRAINING_OVERRIDES, "input_jitter_noise": 0.2}
        reference = self.reference(**overrides)
        model = load_saved(reference, tmp_path)
        inputs = lm_inputs(self.ids(2, 9, seed=7))
        assert_training_step_matches(model, reference, inputs, checkpointing=(False, True),
                                     reference_grads=self.reference_grads, seed=11)
        with torch.no_grad():  # the draws count: the eval forward's loss is another
            torch.manual_seed(11)
            drawn = model(**inputs).loss
            assert (model.eval()(**inputs).loss - drawn).abs() > 1e-3

    @torch.inference_mode()
    def test_int8_quantization_keeps_the_router_in_float(self, variant, tmp_path):
        """Mixtral's check on weights at the reference's initializer_range (0.02): at 0.15 int8's errors in the
        router's inputs change which experts are picked, which moves the logits far whatever the routing."""
        from test_models_mixtral import assert_int8_keeps_the_router_in_float

        load_saved(self.reference(**{**self.VARIANTS[variant], "initializer_range": 0.02}), tmp_path)
        assert_int8_keeps_the_router_in_float(tmp_path)

    def test_the_cpu_kernel_refuses_phimoe_and_generate_runs_the_layers(self, tiny):
        _, reference, model = tiny
        assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 5, seed=3), "phimoe")

    @torch.inference_mode()
    def test_the_router_weights_are_the_softmax_of_the_near_scores(self, tiny):
        """With router_jitter_noise 0.5 the weights are softmaxes over several scores, not ones: a routing that
        weighted each pick by 1 (or by the softmax of all the scores) would move the logits."""
        from openformers.models import phimoe

        _, reference, model = tiny
        if model.config.router_jitter_noise != 0.5:
            pytest.skip("the variant with near scores")
        scores = torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
        weights, chosen = phimoe.sparsemixer(scores, 0.5, training=False)
        assert (weights < 0.99).any() and (chosen[:, 0] == scores.argmax(-1)).all()
        assert (chosen[:, 0] != chosen[:, 1]).all()
        inputs = self.inputs()
        expected = outputs_of(reference, inputs)["logits"]
        original = phimoe.sparsemixer
        try:
            phimoe.sparsemixer = lambda s, eps, training: (original(s, eps, training)[0].clamp(min=1),
                                                           original(s, eps, training)[1])
            assert (outputs_of(model, inputs)["logits"] - expected).abs().max() > 1e-2
        finally:
            phimoe.sparsemixer = original


@torch.inference_mode()
def test_positions_past_the_original_context_turn_with_the_long_factors(tmp_path):
    """Past original_max_position_embeddings, positions turn with the long factors scaled by long_mscale (Phi-3's
    rule, Microsoft's PhiMoE code's and llama.cpp's): what the reference computes when its short factors are the long
    ones (its PhiMoE keeps the short factors at every length and switches only the mscale). Within it, the short
    factors and short_mscale, as the reference."""
    rope = longrope(original=8)
    reference = TestPhimoe.reference(rope_parameters=rope)
    model = load_saved(reference, tmp_path / "ours")
    as_long = TestPhimoe.reference(rope_parameters={**rope, "short_factor": rope["long_factor"]})
    short, long = TestPhimoe.ids(1, 8, seed=4), TestPhimoe.ids(2, 12, seed=4)
    torch.testing.assert_close(model(short).logits, reference(short).logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model(long).logits, as_long(long).logits, atol=1e-4, rtol=1e-4)
    assert (model(long).logits - reference(long).logits).abs().max() > 1e-2


def test_config_defaults_match_the_reference():
    ours, theirs = PhimoeConfig(), transformers.PhimoeConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "sliding_window", "num_experts_per_tok",
        "num_local_experts", "output_router_logits", "router_aux_loss_coef", "router_jitter_noise",
        "input_jitter_noise", "attention_bias", "lm_head_bias",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


# A config.json in the form of microsoft/Phi-3.5-MoE-instruct's (its sizes and fields, its longrope scaling's form
# with 64 made-up factors each, one layer).
PHI35_MOE = {
    "architectures": ["PhiMoEForCausalLM"], "model_type": "phimoe", "vocab_size": 32064, "hidden_size": 4096,
    "intermediate_size": 6400, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_local_experts": 16, "num_experts_per_tok": 2, "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "attention_bias": True,
    "lm_head_bias": True, "router_jitter_noise": 0.01, "input_jitter_noise": 0.01, "router_aux_loss_coef": 0.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 32000,
    "hidden_act": "silu", "attention_dropout": 0.0, "torch_dtype": "bfloat16",
    "rope_scaling": {"type": "longrope", "short_factor": [1.0 + i / 64 for i in range(64)],
                     "long_factor": [1.0 + i / 8 for i in range(64)], "short_mscale": 1.243163121016122,
                     "long_mscale": 1.243163121016122, "original_max_position_embeddings": 4096},
}


def test_a_released_config_reads_as_the_reference_reads_it(tmp_path):
    from test_models_mixtral import assert_reads_a_real_config_as_the_reference

    assert_reads_a_real_config_as_the_reference(tmp_path, PHI35_MOE, (
        "hidden_size", "intermediate_size", "num_key_value_heads", "num_local_experts", "num_experts_per_tok",
        "router_jitter_noise", "input_jitter_noise", "attention_bias", "lm_head_bias", "sliding_window",
    ))
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    scaling = ours.model_rope_scaling()
    assert scaling["original_max_position_embeddings"] == 4096 and scaling["attention_factor"] == 1.243163121016122


@pytest.mark.parametrize("values, message", [
    (dict(num_experts_per_tok=1), "num_experts_per_tok=1"),
    (dict(num_local_experts=0), "num_local_experts=0"),
    (dict(router_jitter_noise=-0.1), "router_jitter_noise=-0.1"),
    (dict(input_jitter_noise=1.5), "input_jitter_noise=1.5"),
    (dict(rope_scaling={**longrope(8), "short_mscale": None}), "rope_scaling.short_mscale=None"),
    (dict(rope_scaling={**longrope(8), "long_factor": [1.0]}), r"rope_scaling.long_factor=\[1.0\]"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_type='linear'"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        PhimoeConfig(**{**TINY, **values})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phimoe", **TINY, **values}))
    with pytest.raises(ValueError, match=message):
        openformers.AutoConfig.from_pretrained(tmp_path)
