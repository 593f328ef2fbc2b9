"""Falcon (model_type "falcon") against the reference, on tiny random models it makes and saves.

The layouts of the released checkpoints: the new decoder architecture with grouped key/value heads and two norms
(Falcon-40B) or one (Falcon 2), the older multi-query parallel layout (Falcon-7B), and Falcon-RW's per-head layout
with sequential attention and MLP, biases and ALiBi positions; every head the reference has, greedy and beam
generation, padded batches, saving both ways, bfloat16, and GGUF files written as llama.cpp's converter writes them.
"""

import pytest
import torch

import openformers
from decoder_parity import (
    assert_kernel_steps_unless_refused,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, FalconConfig, FalconForCausalLM

transformers = pytest.importorskip("transformers")


def _is_norm_weight(name: str) -> bool:
    parts = name.split(".")
    return name.endswith("weight") and any(p.startswith(("ln_", "input_layernorm", "post_attention_layernorm"))
                                           for p in parts)


class TestFalcon(DecoderFamilyTests):
    """ALiBi counts each key's position over the real tokens, so a left-padded row is biased as the row alone
    (test_left_padded_batch_equals_single_rows); computed step by step (eager), ALiBi's biases are added to the scores
    as a float mask (test_hidden_states_and_attention_weights_match_the_reference)."""

    REFERENCE_CONFIG = "FalconConfig"
    TINY = dict(
        vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    VARIANTS = {
        "new-decoder": dict(new_decoder_architecture=True, num_kv_heads=2, ffn_hidden_size=96),
        "new-decoder-one-norm": dict(new_decoder_architecture=True, num_kv_heads=2, num_ln_in_parallel_attn=1,
                                     tie_word_embeddings=False),
        "multi-query": dict(rope_theta=500.0),
        "rw-alibi": dict(multi_query=False, parallel_attn=False, bias=True, alibi=True),
        # 6 heads: ALiBi's slopes for a number of heads that is not a power of two
        "alibi-multi-query-6-heads": dict(alibi=True, num_attention_heads=6, hidden_size=48, activation="gelu_new"),
    }
    HEADS = {
        "FalconModel": "AutoModel",
        "FalconForCausalLM": "AutoModelForCausalLM",
        "FalconForSequenceClassification": "AutoModelForSequenceClassification",
        "FalconForTokenClassification": "AutoModelForTokenClassification",
        "FalconForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    LOWEST_ID = 3
    IS_NORM = staticmethod(_is_norm_weight)
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = ["new-decoder", "rw-alibi"]
    TRAINING_VARIANTS = ["rw-alibi"]
    SAVED_CONFIG_ATTRIBUTES = ("new_decoder_architecture", "multi_query", "parallel_attn", "alibi", "bias",
                               "num_kv_heads", "num_key_value_heads", "num_ln_in_parallel_attn", "ffn_hidden_size",
                               "rope_parameters")

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_and_generates_as_the_reference(self, tiny):
        """from_pretrained gives Falcon the kernel's decoding step in every layout (the new decoder architecture's
        groups of query heads with two norms or one, Falcon-7B's multi-query layout, Falcon-RW's ALiBi and per-head
        layout, ALiBi with one key/value head), whose steps and greedy tokens are the reference's."""
        folder, reference, _ = tiny
        assert_kernel_steps_unless_refused(folder, reference, _ids(1, 12, seed=9), "falcon", None)

    @pytest.mark.parametrize("quantization, tolerance", [("int8", 0.02), ("int4", 0.2)])
    @torch.inference_mode()
    def test_quantized_loading_stays_near_the_reference(self, tiny, quantization, tolerance):
        """from_pretrained(..., quantization=...) packs every projection; the logits move by the rounding only."""
        folder, reference, _ = tiny
        if quantization == "int4" and reference.config.hidden_size % 32:
            with pytest.raises(ValueError, match="int8"):  # int4 groups 32 inputs
                AutoModelForCausalLM.from_pretrained(folder, quantization=quantization)
            return
        model = AutoModelForCausalLM.from_pretrained(folder, quantization=quantization)
        ids = _ids(1, 12)
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=tolerance, rtol=0)
        assert model.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, 16)


TINY, VARIANTS = TestFalcon.TINY, TestFalcon.VARIANTS
_reference, _ids, _inputs = TestFalcon.reference, TestFalcon.ids, TestFalcon.inputs


def _outputs(model, name) -> dict:
    return outputs_of(model, _inputs(name))


@torch.inference_mode()
def test_alibi_past_256_positions_rounds_as_the_reference(tmp_path):
    """The reference multiplies slopes by positions in bfloat16, so positions past 256 are rounded: so are ours."""
    reference = _reference(**VARIANTS["rw-alibi"])
    model = load_saved(reference, tmp_path)
    ids = _ids(1, 300, seed=11)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["new-decoder", "rw-alibi"])
@torch.inference_mode()
def test_bfloat16_logits_match_the_reference(variant, tmp_path):
    """Each projection rounds its product to bfloat16 before adding the bias, as the reference's FalconLinear."""
    _reference(**VARIANTS[variant]).save_pretrained(tmp_path)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    model = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16), tmp_path)
    inputs = _inputs("FalconModel")
    torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=0, rtol=0)


def test_config_defaults_match_the_reference():
    ours, theirs = FalconConfig(), transformers.FalconConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_ln_in_parallel_attn",
        "layer_norm_epsilon", "hidden_dropout", "attention_dropout", "num_kv_heads", "alibi",
        "new_decoder_architecture", "multi_query", "parallel_attn", "bias", "max_position_embeddings",
        "ffn_hidden_size", "activation", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
        "num_key_value_heads", "head_dim", "rotary",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    new = FalconConfig(new_decoder_architecture=True, hidden_size=512, num_attention_heads=16, num_kv_heads=8)
    assert (new.num_ln_in_parallel_attn, new.num_key_value_heads) == (2, 8)
    assert FalconConfig(n_embed=128, num_attention_heads=4).hidden_size == 128  # the older name


@pytest.mark.parametrize("values, message", [
    (dict(new_decoder_architecture=True, parallel_attn=False), "parallel_attn"),
    (dict(num_ln_in_parallel_attn=2), "num_ln_in_parallel_attn"),
    (dict(multi_query=False, num_kv_heads=2), "num_kv_heads"),
    (dict(new_decoder_architecture=True, num_kv_heads=3), "num_kv_heads"),
    (dict(activation="tanh"), "activation"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}), "rope_type"),
])
def test_config_refuses_what_the_reference_cannot_run_or_openformers_does_not_implement(values, message):
    with pytest.raises(ValueError, match=message):
        FalconConfig(**{**TINY, **values})


# GGUF files as llama.cpp's converter writes a "falcon" checkpoint: its names, the fused rows regrouped as all
# queries, all keys, all values, and ln_mlp as a second attention norm.

GGUF_NAMES = {
    "transformer.word_embeddings": "token_embd", "transformer.ln_f": "output_norm", "lm_head": "output",
    "transformer.h": "blk", "self_attention.query_key_value": "attn_qkv", "self_attention.dense": "attn_output",
    "input_layernorm": "attn_norm", "ln_attn": "attn_norm", "ln_mlp": "attn_norm_2", "mlp.dense_h_to_4h": "ffn_up",
    "mlp.dense_4h_to_h": "ffn_down",
}


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    writer = gguf.GGUFWriter(str(path), "falcon")
    writer.add_context_length(2048)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.ffn_hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    writer.add_eos_token_id(2)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if "query_key_value" in name:  # (kv, group + 2, hs, ...) -> queries, keys, values
            groups = tensor.reshape(kv_heads, heads // kv_heads + 2, head_dim, *tensor.shape[1:])
            tensor = torch.cat([groups[:, :-2].reshape(heads * head_dim, *tensor.shape[1:]),
                                groups[:, -2].reshape(kv_heads * head_dim, *tensor.shape[1:]),
                                groups[:, -1].reshape(kv_heads * head_dim, *tensor.shape[1:])])
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant, overrides", [
    ("new-decoder", {}), ("new-decoder", dict(bias=True)), ("new-decoder-one-norm", {}), ("multi-query", {}),
], ids=["new-decoder", "new-decoder-biased", "new-decoder-one-norm", "multi-query"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, overrides, tmp_path):
    reference = _reference(**VARIANTS[variant], **overrides)
    _write_gguf(tmp_path / "falcon.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "falcon.gguf")
    assert isinstance(model, FalconForCausalLM) and model.generation_config.eos_token_id == 2
    assert model.config.num_key_value_heads == reference.config.num_key_value_heads
    assert model.config.tie_word_embeddings == reference.config.tie_word_embeddings
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "falcon.gguf").model_type == "falcon"



def test_gguf_without_a_required_key_is_refused(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "broken.gguf"), "falcon")
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    finish_gguf(writer)
    with pytest.raises(ValueError, match=r"broken.gguf lacks the GGUF metadata key falcon.attention[.]head_count"):
        openformers.AutoConfig.from_pretrained(tmp_path / "broken.gguf")


@pytest.mark.parametrize("overrides", [
    dict(parallel_attn=False),  # multi-query, attention then MLP, rotary
    dict(multi_query=False, rope_scaling={"rope_type": "linear", "factor": 2.0}),  # a head per query, scaled rope
    dict(new_decoder_architecture=True, num_kv_heads=4, activation="relu", bias=True),  # no grouping
], ids=["sequential-multi-query", "per-head-linear-rope", "new-decoder-ungrouped"])
@torch.inference_mode()
def test_other_layouts_match_the_reference(overrides, tmp_path):
    reference = _reference(**overrides)
    model = load_saved(reference, tmp_path)
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), str(overrides))
    ids = _ids(1, 6, seed=6)
    settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()
