"""StarCoder2 against the reference: tiny random models made by transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens, with and without a sliding window shorter than the sequences; a left-padded batch gives each
row's logits alone; what we save, the reference loads; a GGUF written as llama.cpp's converter writes a
"starcoder2" file gives the original's logits.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_decoding_step_gives_the_references_logits,
    assert_gradient_checkpointing_changes_nothing,
    assert_kernel_leaves_the_plain_path,
    assert_outputs_close,
    assert_same_attributes,
    lm_inputs,
    load_quietly,
    load_saved,
    outputs_of,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, Starcoder2Config, Starcoder2ForCausalLM
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")


class TestStarcoder2(DecoderFamilyTests):
    REFERENCE_CONFIG = "Starcoder2Config"
    TINY = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, norm_epsilon=1e-5, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
    )
    VARIANTS = {
        "tied": {},
        "untied": dict(tie_word_embeddings=False),
        "windowed": dict(sliding_window=4),
        "unbiased": dict(use_bias=False, hidden_act="gelu"),
    }
    HEADS = {
        "Starcoder2Model": "AutoModel",
        "Starcoder2ForCausalLM": "AutoModelForCausalLM",
        "Starcoder2ForSequenceClassification": "AutoModelForSequenceClassification",
        "Starcoder2ForTokenClassification": "AutoModelForTokenClassification",
    }
    LOWEST_ID = 3
    IS_NORM = staticmethod(lambda name: "norm" in name and name.endswith("weight"))
    TRAINING_VARIANTS = ["untied"]
    SAVED_CONFIG_ATTRIBUTES = ("sliding_window", "use_bias", "norm_epsilon", "hidden_act", "tie_word_embeddings")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        assert model.config.sliding_window == reference.config.sliding_window

    @torch.inference_mode()
    def test_the_cpu_kernels_decoding_step_gives_the_reference_logits_unless_gelu_is_exact(self, tiny):
        _, reference, model = tiny
        ids = _ids(1, 12, seed=9)
        if model.config.hidden_act == "gelu":  # erf's GELU: the step has the tanh form only, and refuses it by name
            assert_kernel_leaves_the_plain_path(model, reference, ids)
        else:
            assert_decoding_step_gives_the_references_logits(model, reference, ids, prefill=3)


TINY, VARIANTS = TestStarcoder2.TINY, TestStarcoder2.VARIANTS
_reference, _ids, _inputs = TestStarcoder2.reference, TestStarcoder2.ids, TestStarcoder2.inputs


@torch.inference_mode()
def test_a_long_sequence_through_the_sliding_window_matches_reference(tmp_path):
    reference = _reference(sliding_window=5)
    model = load_saved(reference, tmp_path)
    ids = _ids(2, 40, seed=11)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding: the window counts slots, padding included, as the reference's does
    torch.testing.assert_close(model(ids, attention_mask=mask).logits, reference(ids, attention_mask=mask).logits,
                               atol=1e-4, rtol=1e-4)
    cache = DynamicCache()
    steps = [model(ids[:, :20], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(20, 40)]
    torch.testing.assert_close(torch.cat(steps, dim=1), reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_dropouts_apply_while_training_only(tmp_path):
    config = Starcoder2Config(**TINY, embedding_dropout=0.3, residual_dropout=0.3, attention_dropout=0.3)
    model = Starcoder2ForCausalLM(config)
    ids = _ids(1, 8)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(ids).logits, model(ids).logits)
        model.train()
        torch.manual_seed(0)
        first = model(ids).logits
        torch.manual_seed(1)
        assert not torch.equal(first, model(ids).logits)
    layer = model.model.layers[0]
    assert model.model.embedding_dropout.p == layer.residual_dropout.p == layer.self_attn.dropout == 0.3


def test_config_defaults_match_the_reference():
    ours, theirs = Starcoder2Config(), transformers.Starcoder2Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "norm_epsilon",
        "sliding_window", "attention_dropout", "residual_dropout", "embedding_dropout", "use_bias",
        "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None
    assert ours.head_dim == 128 and Starcoder2Config(head_dim=64).head_dim == 64


@pytest.mark.parametrize("field, value", [("hidden_act", "tanh"), ("sliding_window", 0), ("residual_dropout", 1.0),
                                          ("norm_epsilon", 0), ("num_key_value_heads", 3)])
def test_what_the_model_cannot_run_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Starcoder2Config(**{**TINY, field: value})


# A GGUF written the way llama.cpp's converter writes a "starcoder2" file: its names, the rows in the reference's
# order, biases and LayerNorm biases as tensors of their own.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}


def _write_gguf(path, reference, with_vocabulary=False):
    config = reference.config
    metadata = dict(layer_norm_eps=config.norm_epsilon)
    if config.sliding_window is not None:
        metadata["sliding_window"] = config.sliding_window
    if with_vocabulary:  # the reference's GGUF loader sizes the model by the token list
        metadata.update(tokenizer_model="gpt2", token_list=[chr(0x100 + i) for i in range(config.vocab_size)],
                        token_merges=[])
    write_gguf(path, "starcoder2", reference, GGUF_NAMES, **metadata)


@pytest.mark.parametrize("variant", ["tied", "untied", "windowed", "unbiased"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, variant):
    overrides = {**VARIANTS[variant], "hidden_act": "gelu_pytorch_tanh"}  # llama.cpp runs StarCoder2 with GELU-tanh
    reference = _reference(**overrides)
    _write_gguf(tmp_path / "starcoder2.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "starcoder2.gguf")
    config = reference.config
    assert isinstance(model, Starcoder2ForCausalLM) and model.config.norm_epsilon == pytest.approx(config.norm_epsilon)
    assert model.config.tie_word_embeddings == config.tie_word_embeddings
    assert (model.config.use_bias, model.config.sliding_window) == (config.use_bias, config.sliding_window)
    assert model.generation_config.eos_token_id == 2
    inputs = _inputs("Starcoder2ForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "starcoder2.gguf").model_type == "starcoder2"


def test_a_transformers_4_config_file_reads_and_saves_as_the_reference_reads_it(tmp_path):
    # bigcode/starcoder2-3b's layout: rope_theta at the top, no rope_parameters, and keys the model does not use.
    values = {**TINY, "model_type": "starcoder2", "architectures": ["Starcoder2ForCausalLM"],
              "rope_theta": 999999.4420358813, "sliding_window": 4096, "norm_type": "layer_norm",
              "mlp_type": "default", "embedding_dropout": 0.1, "residual_dropout": 0.1, "attention_dropout": 0.1}
    (tmp_path / "config.json").write_text(json.dumps(values))
    config = openformers.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, Starcoder2Config) and config.rope_theta == values["rope_theta"]
    assert config.sliding_window == 4096 and config.norm_type == "layer_norm" and config.residual_dropout == 0.1
    config.save_pretrained(tmp_path / "saved")
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / "saved")
    assert theirs.rope_parameters["rope_theta"] == values["rope_theta"]
    for name in ("sliding_window", "embedding_dropout", "residual_dropout", "attention_dropout", "use_bias"):
        assert getattr(theirs, name) == getattr(config, name), name
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["mlp_type"] == "default"


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    dropouts = dict(embedding_dropout=0.1, residual_dropout=0.1, attention_dropout=0.1)
    model = Starcoder2ForCausalLM.from_config(Starcoder2Config(**TINY, sliding_window=4, **dropouts)).train()
    assert_gradient_checkpointing_changes_nothing(model, lm_inputs(_ids(2, 9, seed=7)))


@pytest.mark.parametrize("variant", ["tied", "untied"])
def test_gguf_weights_are_those_the_reference_reads(tmp_path, variant):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "starcoder2.gguf", reference, with_vocabulary=True)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="starcoder2.gguf").state_dict()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="starcoder2.gguf").state_dict()
    assert ours.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0, msg=name)
