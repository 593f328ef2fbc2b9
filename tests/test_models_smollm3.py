"""SmolLM3 against the reference: tiny random models made by transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens, through the CPU kernel's decoding step; what we save, the reference loads. The tiny models have
four layers, the fourth unrotated (the family's default), or the layers a config's `no_rope_layers` marks.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_decoding_step_gives_the_references_logits,
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    load_saved,
    outputs_of,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests
from openformers import SmolLM3Config, SmolLM3ForCausalLM

transformers = pytest.importorskip("transformers")


class TestSmolLM3(DecoderFamilyTests):
    REFERENCE_CONFIG = "SmolLM3Config"
    TINY = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rope_theta=500.0, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
    )
    VARIANTS = {
        "tied": {},
        "untied": dict(tie_word_embeddings=False),
        "unrotated-first": dict(no_rope_layers=[0, 1, 1, 0]),
        # A window the config does not switch on applies nowhere, in the reference as here.
        "window-off": dict(sliding_window=3, use_sliding_window=False),
    }
    HEADS = {
        "SmolLM3Model": "AutoModel",
        "SmolLM3ForCausalLM": "AutoModelForCausalLM",
        "SmolLM3ForSequenceClassification": "AutoModelForSequenceClassification",
        "SmolLM3ForTokenClassification": "AutoModelForTokenClassification",
        "SmolLM3ForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "no_rope_layers", "sliding_window", "use_sliding_window")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        assert [layer.self_attn.rotates for layer in model.model.layers] == [
            bool(flag) for flag in reference.config.no_rope_layers
        ]

    @torch.inference_mode()
    def test_the_cpu_decoding_step_runs_smollm3_with_the_references_logits(self, tiny):
        # Llama's step, the unrotated layers' queries and keys attending as projected (StepWeights.set_unrotated).
        _, reference, model = tiny
        assert_decoding_step_gives_the_references_logits(model, reference, _ids(1, 12, seed=9))


TINY, HEADS = TestSmolLM3.TINY, TestSmolLM3.HEADS
_reference, _ids, _inputs = TestSmolLM3.reference, TestSmolLM3.ids, TestSmolLM3.inputs


@torch.inference_mode()
def test_the_unrotated_layers_change_the_logits(tmp_path):
    # The same weights with every layer rotated give other logits: the parity above is not Llama's by accident.
    reference = _reference()
    model = load_saved(reference, tmp_path)
    ids = _ids(1, 9)
    unrotated = model(ids).logits
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "no_rope_layers": [1, 1, 1, 1]}))
    rotated = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path)
    assert [layer.self_attn.rotates for layer in rotated.model.layers] == [True] * 4
    assert (rotated(ids).logits - unrotated).abs().max() > 1e-4  # the tiny weights move them by ~5e-4


# A GGUF as llama.cpp's converter writes a "smollm3" file: Llama's names and metadata, the query and key rows permuted
# for its rotation, no output.weight (tied), and nothing that says which layers rotate.
GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    reference = _reference()
    write_gguf(tmp_path / "tiny.gguf", "smollm3", reference, GGUF_NAMES, permute_heads=True,
               layer_norm_rms_eps=reference.config.rms_norm_eps)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "tiny.gguf")
    assert isinstance(model, SmolLM3ForCausalLM) and model.config.tie_word_embeddings
    assert model.config.no_rope_layers == [1, 1, 1, 0]  # llama.cpp's every fourth layer
    inputs = _inputs("SmolLM3ForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    theirs = reference.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name], msg=name)


def test_config_defaults_match_the_reference():
    ours, theirs = SmolLM3Config(), transformers.SmolLM3Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "attention_bias", "attention_dropout", "mlp_bias", "tie_word_embeddings", "pad_token_id", "bos_token_id",
        "eos_token_id", "no_rope_layers", "no_rope_layer_interval", "layer_types", "use_sliding_window",
        "sliding_window",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


def test_what_smollm3_does_not_implement_is_refused_by_name():
    with pytest.raises(ValueError, match="use_sliding_window"):
        SmolLM3Config(**TINY, use_sliding_window=True, sliding_window=4)
    with pytest.raises(ValueError, match="no_rope_layers"):
        SmolLM3Config(**TINY, no_rope_layers=[1, 1, 0])
    with pytest.raises(ValueError, match="no_rope_layers"):
        SmolLM3Config(**TINY, no_rope_layers=[1, 1, 2, 0])
    with pytest.raises(ValueError, match="hidden_act"):
        SmolLM3Config(**TINY, hidden_act="gelu")


def test_heads_build_on_the_smollm3_base_model():
    config = SmolLM3Config(**TINY, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "SmolLM3Model" else model.base_model
        assert type(base).__name__ == "SmolLM3Model"
        assert [layer.self_attn.rotates for layer in base.layers] == [True, True, True, False]
