"""OLMo 2 against the reference: tiny random models made by transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens; a left-padded batch gives each row's logits alone; what we save, the reference loads; a GGUF
written as llama.cpp's converter writes an "olmo2" file gives the original's logits.
"""

import pytest
import torch

import openformers
from decoder_parity import (
    assert_bfloat16_matches_the_reference,
    assert_decoding_step_gives_the_references_logits,
    assert_gradient_checkpointing_changes_nothing,
    assert_kernel_leaves_the_plain_path,
    assert_outputs_close,
    assert_same_attributes,
    lm_inputs,
    load_quietly,
    outputs_of,
    padded_batch,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, Olmo2Config, Olmo2ForCausalLM

transformers = pytest.importorskip("transformers")


class TestOlmo2(DecoderFamilyTests):
    REFERENCE_CONFIG = "Olmo2Config"
    TINY = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, pad_token_id=0,
    )
    VARIANTS = {
        "untied": {},
        "tied": dict(tie_word_embeddings=True),
        "biased": dict(attention_bias=True),
        "no-grouping": dict(num_key_value_heads=4),
    }
    HEADS = {
        "Olmo2Model": "AutoModel",
        "Olmo2ForCausalLM": "AutoModelForCausalLM",
        "Olmo2ForSequenceClassification": "AutoModelForSequenceClassification",
    }

    @torch.inference_mode()
    def test_the_cpu_decoding_step_runs_olmo2_with_the_references_logits(self, tiny):
        # Norms after each branch and none before, the queries and the keys normed over all heads at once.
        # A bias on the output projection the step has not: that model keeps the plain path.
        _, reference, model = tiny
        if model.config.attention_bias:
            return assert_kernel_leaves_the_plain_path(model, reference, _ids(1, 12, seed=9))
        assert_decoding_step_gives_the_references_logits(model, reference, _ids(1, 12, seed=9))


TINY, HEADS = TestOlmo2.TINY, TestOlmo2.HEADS
_reference, _ids, _inputs = TestOlmo2.reference, TestOlmo2.ids, TestOlmo2.inputs


@torch.inference_mode()
def test_bfloat16_matches_the_reference_in_bfloat16(tmp_path):
    """OLMo 2's norms scale before casting back to bfloat16 (Llama's after), and it rotates in float32 by unrounded
    tables, rounding once: the reference's bits, with weights large enough that either detail done Llama's way
    moves them."""
    _reference(initializer_range=0.15).save_pretrained(tmp_path)
    assert_bfloat16_matches_the_reference(tmp_path, *padded_batch(_ids(2, 10, seed=3)))


def test_config_defaults_match_the_reference():
    ours, theirs = Olmo2Config(), transformers.Olmo2Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "attention_bias", "attention_dropout", "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


def test_what_olmo2_does_not_have_is_refused():
    with pytest.raises(ValueError, match="mlp_bias"):
        Olmo2Config(**TINY, mlp_bias=True)
    with pytest.raises(ValueError, match="attention_dropout"):
        Olmo2Config(**TINY, attention_dropout=1.5)


def test_heads_build_on_the_olmo2_base_model():
    config = Olmo2Config(**TINY, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "Olmo2Model" else model.base_model
        assert type(base).__name__ == "Olmo2Model"
        layer = base.layers[0]
        assert layer.self_attn.q_norm.weight.shape == (TINY["num_attention_heads"] * 16,)  # over all heads at once
        assert layer.self_attn.k_norm.weight.shape == (TINY["num_key_value_heads"] * 16,)
        assert not hasattr(layer, "input_layernorm")


# A GGUF written the way llama.cpp's converter writes an "olmo2" file: its names, the rows in the reference's order.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "post_attention_norm", "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, tied):
    reference = _reference(tie_word_embeddings=tied)
    epsilon = reference.config.rms_norm_eps
    write_gguf(tmp_path / "olmo2.gguf", "olmo2", reference, GGUF_NAMES, layer_norm_rms_eps=epsilon)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "olmo2.gguf")
    assert isinstance(model, Olmo2ForCausalLM) and model.config.rms_norm_eps == pytest.approx(TINY["rms_norm_eps"])
    assert model.config.tie_word_embeddings == tied and model.generation_config.eos_token_id == 2
    inputs = _inputs("Olmo2ForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "olmo2.gguf").model_type == "olmo2"


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = Olmo2ForCausalLM.from_config(Olmo2Config(**TINY, attention_dropout=0.1)).train()
    assert_gradient_checkpointing_changes_nothing(model, lm_inputs(_ids(2, 9, seed=7)))
