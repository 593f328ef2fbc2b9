"""dots.llm1 (model_type "dots1") against the reference, on tiny random models it makes and saves.

The variants: a dense first layer, then a sparse one attending through a window of 4 (max_window_layers 1) with experts
chosen by group with drawn correction biases, renormalized; and every layer sparse and full, one group, the weights not
renormalized, q/k/v/o biases and tied embeddings. The tests DeepSeek's mixtures run
(test_models_deepseek.SteppedDeepseekExpertsTests: every head on a padded batch, router logits, cached decoding, left
padding, greedy and beam generation, a static cache, hidden states and attention weights, a training step's gradients,
saving both ways, bfloat16 with the router kept in float32; here the CPU kernel's step with the reference's logits and
tokens), the correction biases, the Auto classes, the config's defaults (experts unset, refused when a model is built)
and refusals, and GGUF files written as llama.cpp's converter writes "dots1". The weights are drawn at std 0.15 and the
correction biases at 0.3, so a routing, norm or window detail applied wrong moves the logits far past the tolerance.
"""

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    load_quietly,
    outputs_of,
)
from openformers import AutoModelForCausalLM, Dots1Config, Dots1ForCausalLM
from test_models_deepseek import SteppedDeepseekExpertsTests, assert_correction_biases_steer_the_choice
from test_models_glm4moe import GGUF_NAMES as GLM4_MOE_GGUF_NAMES
from test_models_mixtral import add_gguf_tensors

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256, n_routed_experts=8,
    n_group=4, topk_group=2, num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1,
    routed_scaling_factor=1.75, norm_topk_prob=True, sliding_window=4, max_window_layers=1, rms_norm_eps=1e-5,
    initializer_range=0.15, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
)


class TestDots1(SteppedDeepseekExpertsTests):
    REFERENCE_CONFIG = "Dots1Config"
    MODEL_TYPE = "dots1"
    TINY = TINY
    VARIANTS = {
        "dense-then-sliding-sparse": {},
        "sparse-full-biased-tied": dict(
            first_k_dense_replace=0, n_group=1, topk_group=1, norm_topk_prob=False, sliding_window=None,
            attention_bias=True, tie_word_embeddings=True,
        ),
    }
    HEADS = {"Dots1ForCausalLM": "AutoModelForCausalLM", "Dots1Model": "AutoModel"}
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "attention_bias", "head_dim", "n_group", "first_k_dense_replace",
                               "sliding_window", "layer_types")
    # dots.llm1's checkpoints hold no multi-token prediction layers (the reference's config has no count of them).
    test_multi_token_prediction_layers_of_a_checkpoint_are_left_out = None

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        assert [layer.is_sliding for layer in model.model.layers] == [
            kind == "sliding_attention" for kind in reference.config.layer_types]

    def test_auto_classes_pick_the_dots1_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is Dots1Config
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is Dots1ForCausalLM
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "Dots1Model"
        with pytest.raises(ValueError, match="no sequence-classification class for 'dots1'"):
            openformers.AutoModelForSequenceClassification.from_pretrained(folder)

    @torch.inference_mode()
    def test_the_correction_biases_steer_the_choice_only(self, tiny):
        _, reference, model = tiny
        assert_correction_biases_steer_the_choice(model, reference, self.ids(2, 9, seed=7))


def test_config_defaults_match_the_reference():
    ours, theirs = Dots1Config(), transformers.Dots1Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "tie_word_embeddings", "attention_bias", "attention_dropout", "moe_intermediate_size", "num_experts_per_tok",
        "output_router_logits", "n_shared_experts", "n_routed_experts", "routed_scaling_factor", "n_group",
        "topk_group", "first_k_dense_replace", "norm_topk_prob", "bos_token_id", "eos_token_id", "pad_token_id",
        "sliding_window", "max_window_layers", "layer_types", "num_local_experts",
    ))
    assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}
    with pytest.raises(ValueError, match="n_routed_experts=None"):  # the reference's defaults set no experts
        Dots1ForCausalLM(Dots1Config(num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=4))


@pytest.mark.parametrize("values, message", [
    (dict(n_group=3), "n_group=3"),
    (dict(n_group=8), "n_group=8"),  # groups of one expert: a group scores its two best
    (dict(topk_group=5), "topk_group=5"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok=9"),
    (dict(first_k_dense_replace=-1), "first_k_dense_replace=-1"),
    (dict(n_shared_experts=0), "n_shared_experts=0"),
    (dict(routed_scaling_factor=0), "routed_scaling_factor=0"),
    (dict(layer_types=["full_attention"]), "layer_types=\\['full_attention'\\]"),
    (dict(sliding_window=None, layer_types=["full_attention", "sliding_attention"]), "layer_types="),
    (dict(attention_dropout=1.0), "attention_dropout=1.0"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
])
def test_bad_config_values_name_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        Dots1Config(**{**TINY, "rope_parameters": None, **values})


# GGUF files as llama.cpp's converter writes a "dots1" checkpoint: GLM-4.5's names with Llama's ffn_norm, the experts
# stacked, no rows permuted, the gating function left out (as its converter writes it); llama.cpp attends over the
# whole past in every layer, so the reference here has no window.
GGUF_NAMES = {**GLM4_MOE_GGUF_NAMES, "post_attention_layernorm": "ffn_norm"}


@pytest.mark.parametrize("variant", list(TestDots1.VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    import gguf

    reference = TestDots1.reference(**{**TestDots1.VARIANTS[variant], "sliding_window": None})
    config = reference.config
    writer = gguf.GGUFWriter(str(tmp_path / "dots1.gguf"), "dots1")
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_expert_count(config.n_routed_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    writer.add_expert_shared_count(config.n_shared_experts)
    writer.add_leading_dense_block_count(config.first_k_dense_replace)
    writer.add_expert_weights_scale(config.routed_scaling_factor)
    writer.add_expert_weights_norm(config.norm_topk_prob)
    writer.add_expert_group_count(config.n_group)
    writer.add_expert_group_used_count(config.topk_group)
    add_gguf_tensors(writer, reference, GGUF_NAMES, permute_heads=False)
    finish_gguf(writer)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "dots1.gguf")
    assert isinstance(model, Dots1ForCausalLM)
    assert_same_attributes(model.config, config, (
        "attention_bias", "tie_word_embeddings", "head_dim", "n_routed_experts", "n_shared_experts",
        "first_k_dense_replace", "norm_topk_prob", "routed_scaling_factor", "n_group", "topk_group", "sliding_window",
    ))
    inputs = TestDots1.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
