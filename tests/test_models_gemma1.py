"""The first Gemma (`model_type` "gemma": Gemma 2B and 7B, CodeGemma) against the reference: tiny random models made by
transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens, through the CPU kernel's decoding step; what we save, the reference loads; a GGUF written as
llama.cpp's converter writes a "gemma" file (every norm weight stored as 1 + w) gives the original's logits; a
GemmaTokenizer folder tokenizes and pads (on the left) as the reference's.
"""

import json

import gguf
import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_decoding_step_gives_the_references_logits,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, GemmaConfig, GemmaForCausalLM

transformers = pytest.importorskip("transformers")


class TestGemma(DecoderFamilyTests):
    REFERENCE_CONFIG = "GemmaConfig"
    TINY = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=24, max_position_embeddings=256, rope_theta=500.0,
    )
    VARIANTS = {
        "tied": {},
        "untied": dict(tie_word_embeddings=False),
        "no-grouping": dict(num_key_value_heads=4),  # Gemma 7B's
        "legacy-gelu": dict(hidden_act="gelu"),  # the first checkpoints' value, meant as the tanh form
    }
    HEADS = {
        "GemmaModel": "AutoModel",
        "GemmaForCausalLM": "AutoModelForCausalLM",
        "GemmaForSequenceClassification": "AutoModelForSequenceClassification",
        "GemmaForTokenClassification": "AutoModelForTokenClassification",
    }

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        assert tiny[2].config.hidden_act == "gelu_pytorch_tanh"

    @torch.inference_mode()
    def test_the_cpu_decoding_step_runs_gemma_with_the_references_logits(self, tiny):
        # Llama's layers with Gemma's norms of 1 + w, its embedding scaled by sqrt(hidden_size) and GELU: no sandwich
        # norms, queries scaled by 1 / sqrt(head_dim).
        _, reference, model = tiny
        assert_decoding_step_gives_the_references_logits(model, reference, _ids(1, 12, seed=9))


TINY = TestGemma.TINY
_reference, _ids, _inputs = TestGemma.reference, TestGemma.ids, TestGemma.inputs


@torch.inference_mode()
def test_bfloat16_logits_match_the_reference(tmp_path):
    reference = _reference()
    reference.save_pretrained(tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16), tmp_path)
    ids = _ids(2, 10, seed=3)
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=2e-2, rtol=2e-2)


def test_config_defaults_match_the_reference():
    ours, theirs = GemmaConfig(), transformers.GemmaConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
        "rms_norm_eps", "attention_bias", "attention_dropout", "tie_word_embeddings", "pad_token_id", "bos_token_id",
        "eos_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


def test_what_gemma_does_not_compute_is_refused_by_name():
    with pytest.raises(ValueError, match="hidden_act"):
        GemmaConfig(**TINY, hidden_act="silu")
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        GemmaConfig(**TINY, use_bidirectional_attention=True)


# A GGUF written the way llama.cpp's converter writes a "gemma" file: Llama's names (ffn_norm the norm before the MLP),
# every norm weight stored as 1 + w, head_dim as key_length, no output.weight (tied).
GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _write_gguf(path, reference):
    config = reference.config
    writer = gguf.GGUFWriter(str(path), "gemma")
    add_decoder_metadata(writer, config)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        writer.add_tensor(gguf_name, tensor.numpy() + 1 if name.endswith("norm.weight") else tensor.numpy())
    finish_gguf(writer)


@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    reference = _reference()
    _write_gguf(tmp_path / "tiny.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "tiny.gguf")
    assert isinstance(model, GemmaForCausalLM) and model.config.tie_word_embeddings
    assert model.config.head_dim == TINY["head_dim"]
    inputs = _inputs("GemmaForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


@torch.inference_mode()
def test_gguf_weights_are_the_originals(tmp_path):
    # (The reference reads no "gemma" GGUF: its loader knows gemma2 and gemma3 only.)
    reference = _reference()
    _write_gguf(tmp_path / "tiny.gguf", reference)
    ours = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "tiny.gguf").state_dict()
    theirs = reference.state_dict()
    assert sorted(ours) == sorted(theirs)
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], msg=name)


def test_a_gemma_tokenizer_folder_tokenizes_and_pads_as_the_references(tmp_path):
    # The reference's GemmaTokenizer pads on the left unless its tokenizer_config.json says otherwise, and puts
    # <bos> in front: made here from a small vocabulary with byte fallback, as Gemma's.
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁he", "▁w", "or", "ld", "▁wor", "▁world", "llo"]
    merges = [("h", "e"), ("l", "l"), ("▁", "he"), ("▁", "w"), ("o", "r"), ("l", "d"), ("▁w", "or"), ("▁wor", "ld"),
              ("ll", "o")]
    theirs = transformers.GemmaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=merges)
    theirs.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "GemmaTokenizer"
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == "GemmaTokenizer" and ours.padding_side == theirs.padding_side == "left"
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == (theirs.bos_token, theirs.eos_token, theirs.pad_token)
    texts = ["hello world", "world", "héllo\tw"]  # é and the tab by their bytes
    assert ours(texts, padding=True)["input_ids"] == theirs(texts, padding=True)["input_ids"]
    assert ours(texts, padding=True)["attention_mask"] == theirs(texts, padding=True)["attention_mask"]
    assert ours.decode(ours("héllo world")["input_ids"]) == theirs.decode(theirs("héllo world")["input_ids"])
    assert openformers.GemmaTokenizerFast is openformers.GemmaTokenizer
    # A folder whose tokenizer_config.json names no class takes the one the reference registers for its model_type.
    settings = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del settings["tokenizer_class"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma"}))
    assert openformers.AutoTokenizer.from_pretrained(tmp_path).padding_side == "left"
