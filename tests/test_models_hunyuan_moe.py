"""Hunyuan-MoE (model_type "hunyuan_v1_moe") against the reference, on tiny random models it makes and saves.

A class over decoder_suite.RoutedExpertsTests and test_models_llama_variants.LlamaVariantTests (every head the
reference has on a padded batch with labels, the router logits without a load-balancing loss, cached decoding, left
padding, greedy and beam generation, a static cache, hidden states, a training step's gradients with the reference's
fused experts split per expert, saving both ways with the reference's tensor names, bfloat16 with the router kept in
float32, the config's defaults and refusals, the CPU kernel's refusal, the Auto classes) in two variants: the
released layout (rope "dynamic" with an alpha, one top-k for all layers) and one with a top-k per layer (1, then 3),
attention biases, one key/value head and tied embeddings. Also GGUF files as llama.cpp's converter writes
"hunyuan-moe" (the stretched base, the experts stacked, the shared MLP as *_shexp). The weights are drawn at std 0.15,
so a routing or norm detail applied wrong moves the logits far past the tolerance.
"""

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    load_quietly,
    outputs_of,
)
from decoder_suite import RoutedExpertsTests
from openformers import AutoModelForCausalLM, HunYuanMoEV1ForCausalLM
from test_models_hunyuan import ALPHA_ROPE, HUNYUAN_GGUF_NAMES
from test_models_llama_variants import SIZES, LlamaVariantTests
from test_models_mixtral import add_gguf_tensors

transformers = pytest.importorskip("transformers")


class TestHunYuanMoE(RoutedExpertsTests, LlamaVariantTests):
    REFERENCE_CONFIG = "HunYuanMoEV1Config"
    MODEL_TYPE = "hunyuan_v1_moe"
    TINY = dict(SIZES, head_dim=16, num_experts=6, moe_topk=2, rope_parameters=ALPHA_ROPE)
    VARIANTS = {
        "alpha-rope-top-2": {},  # the released layout: no biases, untied head, the stretched base
        "top-k-per-layer-biases-tied-gqa-1": dict(
            moe_topk=[1, 3], attention_bias=True, tie_word_embeddings=True, num_key_value_heads=1,
            rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
    }
    HEADS = {"HunYuanMoEV1ForCausalLM": "AutoModelForCausalLM", "HunYuanMoEV1Model": "AutoModel",
             "HunYuanMoEV1ForSequenceClassification": "AutoModelForSequenceClassification"}
    LOAD_BALANCING = False
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "tie_word_embeddings", "rope_parameters", "num_experts", "moe_topk")
    DEFAULT_FIELDS = ("attention_bias", "eod_token_id", "num_experts", "moe_topk", "output_router_logits")
    REFUSALS = [
        (dict(num_experts=0), "num_experts=0"),
        (dict(moe_topk=7), "moe_topk=7"),
        (dict(moe_topk=[2]), "moe_topk=\\[2\\]"),
        (dict(moe_topk=[2, 0]), "moe_topk=\\[2, 0\\]"),
        (dict(rope_parameters=None, rope_scaling={"type": "dynamic", "factor": 2.0}), "rope_scaling.alpha=None"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    ]

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        assert [layer.mlp.top_k for layer in model.model.layers] == [
            layer.mlp.gate.top_k for layer in reference.model.layers]
        assert model.model.layers[0].mlp.gate.wg.weight.dtype == torch.float32

    test_the_cpu_kernel_refuses_the_family_and_generation_runs_the_layers = None

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits_or_refuses_a_top_k_per_layer(self, tiny):
        """The kernel's step runs Hunyuan dense's layers with the experts and the shared MLP beside them; a top-k
        that differs between layers (the step takes one) it refuses, and generation runs the layers."""
        _, reference, model = tiny
        if isinstance(model.config.moe_topk, list) and len(set(model.config.moe_topk)) > 1:
            assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 5, seed=3),
                                                               self.MODEL_TYPE, refused="moe_topk=[1, 3]")
        else:
            assert_kernel_steps_and_generates_as_the_reference(model, reference, self.ids(1, 12, seed=9))

    def test_auto_classes_pick_the_familys_classes(self, tiny):
        super().test_auto_classes_pick_the_familys_classes(tiny)
        with pytest.raises(ValueError, match="no token-classification class for 'hunyuan_v1_moe'"):
            openformers.AutoModelForTokenClassification.from_pretrained(tiny[0])


# llama.cpp's "hunyuan-moe" files: Hunyuan dense's names, the router, the shared MLP (named before Llama's MLP, whose
# names are part of them) and the stacked experts; the stretched base as rope.freq_base with no scaling.
GGUF_NAMES = {"mlp.shared_mlp.gate_proj": "ffn_gate_shexp", "mlp.shared_mlp.up_proj": "ffn_up_shexp",
              "mlp.shared_mlp.down_proj": "ffn_down_shexp", "mlp.gate.wg": "ffn_gate_inp", **HUNYUAN_GGUF_NAMES}


@pytest.mark.parametrize("variant", ["alpha-rope-top-2", "top-1-biases-tied"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    import gguf

    overrides = {"top-1-biases-tied": dict(moe_topk=1, attention_bias=True, tie_word_embeddings=True,
                                           rope_parameters={"rope_type": "default", "rope_theta": 500.0})}
    reference = TestHunYuanMoE.reference(**overrides.get(variant, {}))
    config = reference.config
    rope, dim = config.rope_parameters, config.head_dim
    writer = gguf.GGUFWriter(str(tmp_path / "hy.gguf"), "hunyuan-moe")
    add_decoder_metadata(writer, config)
    writer.add_rope_freq_base(rope["rope_theta"] * rope.get("alpha", 1.0) ** (dim / (dim - 2)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(dim)
    writer.add_value_length(dim)
    writer.add_expert_count(config.num_experts)
    writer.add_expert_used_count(config.moe_topk)
    writer.add_expert_feed_forward_length(config.intermediate_size)
    writer.add_expert_shared_feed_forward_length(config.intermediate_size)
    writer.add_expert_shared_count(1)
    add_gguf_tensors(writer, reference, GGUF_NAMES, permute_heads=False)
    finish_gguf(writer)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "hy.gguf")
    assert isinstance(model, HunYuanMoEV1ForCausalLM)
    assert_same_attributes(model.config, config, ("attention_bias", "tie_word_embeddings", "head_dim", "num_experts",
                                                  "moe_topk"))
    inputs = TestHunYuanMoE.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


def test_gguf_with_experts_of_another_size_than_the_shared_mlp_is_refused(tmp_path):
    import gguf

    reference = TestHunYuanMoE.reference()
    writer = gguf.GGUFWriter(str(tmp_path / "hy.gguf"), "hunyuan-moe")
    add_decoder_metadata(writer, reference.config)
    writer.add_expert_count(6)
    writer.add_expert_feed_forward_length(32)
    add_gguf_tensors(writer, reference, GGUF_NAMES, permute_heads=False)
    finish_gguf(writer)
    with pytest.raises(ValueError, match="experts of 32"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "hy.gguf")
