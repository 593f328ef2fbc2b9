"""Qwen3 against the reference: tiny random models made by transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens; a left-padded batch gives each row's logits alone; what we save, the reference loads.
"""

import pytest
import torch

import openformers
from decoder_parity import (
    assert_kernel_leaves_the_plain_path,
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    outputs_of,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")


class TestQwen3(DecoderFamilyTests):
    REFERENCE_CONFIG = "Qwen3Config"
    # head_dim 24 is not hidden_size // num_attention_heads (16): Qwen3 sizes its heads on their own.
    TINY = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=24, max_position_embeddings=256, rms_norm_eps=1e-5, pad_token_id=0,
    )
    VARIANTS = {
        "untied": {},
        "tied": dict(tie_word_embeddings=True),
        "windowed": dict(use_sliding_window=True, sliding_window=4, max_window_layers=0),
        "biased": dict(attention_bias=True),
    }
    HEADS = {
        "Qwen3Model": "AutoModel",
        "Qwen3ForCausalLM": "AutoModelForCausalLM",
        "Qwen3ForSequenceClassification": "AutoModelForSequenceClassification",
        "Qwen3ForTokenClassification": "AutoModelForTokenClassification",
        "Qwen3ForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    SAVED_CONFIG_ATTRIBUTES = ("layer_types", "sliding_window")

    @torch.inference_mode()
    def test_the_cpu_decoding_step_runs_qwen3_with_the_references_logits(self, tiny, monkeypatch):
        # The step norms each head's queries and keys (q_norm, k_norm) before their rotation, as the layers do, and
        # takes a window on every layer; a bias on o_proj (attention_bias) it refuses by name.
        from openformers.kernels.llama import refusal

        _, reference, model = tiny
        if model.config.attention_bias:
            assert "attention_bias" in refusal(model.config)
            return assert_kernel_leaves_the_plain_path(model, reference, _ids(1, 7, seed=9))
        assert refusal(model.config) is None and model.model.accelerated_step is not None
        calls, decode_step = [], torch.ops.openformers.decode_step
        monkeypatch.setattr(torch.ops.openformers, "decode_step", lambda *args: calls.append(1) or decode_step(*args))
        ids = _ids(1, 9, seed=9)
        cache, theirs = DynamicCache(), reference(ids).logits
        steps = [model(ids[:, :4], past_key_values=cache).logits]
        steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(4, ids.shape[1])]
        assert len(calls) == ids.shape[1] - 4
        torch.testing.assert_close(torch.cat(steps, dim=1), theirs, atol=1e-4, rtol=1e-4)


TINY, HEADS = TestQwen3.TINY, TestQwen3.HEADS
_reference, _ids, _inputs = TestQwen3.reference, TestQwen3.ids, TestQwen3.inputs


def test_config_defaults_match_the_reference():
    ours, theirs = Qwen3Config(), transformers.Qwen3Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "attention_bias",
        "use_sliding_window", "sliding_window", "max_window_layers", "layer_types", "tie_word_embeddings",
        "bos_token_id", "eos_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]


def test_a_partial_sliding_window_or_bad_layer_types_are_refused():
    with pytest.raises(ValueError, match="layer_types"):
        Qwen3Config(num_hidden_layers=4, use_sliding_window=True, sliding_window=8, max_window_layers=2)
    with pytest.raises(ValueError, match="layer_types"):
        Qwen3Config(num_hidden_layers=2, layer_types=["full_attention"])
    unused = Qwen3Config(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"])
    assert unused.sliding_window is None and unused.attention_window is None  # use_sliding_window is off


def test_heads_build_on_the_qwen3_base_model():
    config = Qwen3Config(**TINY, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "Qwen3Model" else model.base_model
        assert type(base).__name__ == "Qwen3Model"
        assert base.layers[0].self_attn.q_norm.weight.shape == (TINY["head_dim"],)
    assert hasattr(openformers.Qwen3ForQuestionAnswering(config), "transformer")  # the reference's name


# A GGUF written the way llama.cpp's converter writes a "qwen3" file: its names, the rows in the reference's order.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, tied):
    reference = _reference(tie_word_embeddings=tied)
    config = reference.config
    write_gguf(tmp_path / "qwen3.gguf", "qwen3", reference, GGUF_NAMES, key_length=config.head_dim,
               value_length=config.head_dim, layer_norm_rms_eps=config.rms_norm_eps)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "qwen3.gguf")
    assert isinstance(model, Qwen3ForCausalLM) and model.config.head_dim == TINY["head_dim"]
    assert model.config.tie_word_embeddings == tied and model.generation_config.eos_token_id == 2
    inputs = _inputs("Qwen3ForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "qwen3.gguf").model_type == "qwen3"


def test_attention_dropout_applies_while_training_only():
    model = Qwen3ForCausalLM(Qwen3Config(**TINY, attention_dropout=0.5))
    ids = _ids(1, 6)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
