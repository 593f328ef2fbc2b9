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
    GENERATE_OPTIONS,
    add_decoder_metadata,
    assert_cached_decoding_equals_the_full_forward,
    assert_decoding_step_gives_the_references_logits,
    assert_generate_matches,
    assert_hidden_states_and_attentions_match,
    assert_left_padded_batch_equals_single_rows,
    assert_outputs_close,
    assert_same_attributes,
    assert_saved_both_ways,
    assert_static_cache_gives_the_dynamic_cache_tokens,
    assert_training_step_matches,
    finish_gguf,
    generation_inputs,
    head_inputs,
    lm_inputs,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    make_reference,
    outputs_of,
    padded_batch,
)
from openformers import AutoModelForCausalLM, GemmaConfig, GemmaForCausalLM

transformers = pytest.importorskip("transformers")

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


def _reference(name="GemmaForCausalLM", **overrides):
    # The norms drawn around 0: Gemma's store their scale's offset from one.
    return make_reference(name, transformers.GemmaConfig(**{**TINY, **overrides}),
                          is_norm=lambda name: name.endswith("norm.weight"))


def _ids(*shape, seed=1):
    return torch.randint(1, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def _inputs(name) -> dict:
    return head_inputs(name, *padded_batch(_ids(2, 9, seed=7)))


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = _reference(**VARIANTS[request.param])
    return folder, reference, load_saved(reference, folder)


@pytest.fixture(scope="module", params=list(HEADS))
def tiny_head(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name, num_labels=3)
    return name, folder, reference, load_saved(reference, folder, HEADS[name])


@torch.inference_mode()
def test_causal_lm_logits_and_loss_match_reference(tiny):
    _, reference, model = tiny
    assert isinstance(model, GemmaForCausalLM) and not model.training
    assert model.config.hidden_act == "gelu_pytorch_tanh"
    inputs = _inputs("GemmaForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "causal LM")


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny_head):
    name, _, reference, model = tiny_head
    assert type(model).__name__ == name and not model.training
    assert_outputs_close(outputs_of(model, _inputs(name)), outputs_of(reference, _inputs(name)), name)


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_and_back(tiny_head, tmp_path):
    name, _, reference, model = tiny_head
    inputs = _inputs(name)
    assert_saved_both_ways(model, tmp_path, HEADS[name], inputs, outputs_of(reference, inputs))


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(tiny):
    assert_cached_decoding_equals_the_full_forward(tiny[2], _ids(2, 12))


@torch.inference_mode()
def test_left_padded_batch_equals_single_rows(tiny):
    _, reference, model = tiny
    assert_left_padded_batch_equals_single_rows(model, _ids, reference)


@GENERATE_OPTIONS
@torch.inference_mode()
def test_generate_matches_reference(tiny, options):
    _, reference, model = tiny
    assert_generate_matches(model, reference, *generation_inputs(_ids), **options)


@torch.inference_mode()
def test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(tiny):
    assert_static_cache_gives_the_dynamic_cache_tokens(tiny[2], *generation_inputs(_ids))


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_the_reference(tiny):
    folder, _, model = tiny
    assert_hidden_states_and_attentions_match(model, folder, *padded_batch(_ids(2, 9, seed=7)))


@torch.inference_mode()
def test_the_cpu_decoding_step_runs_gemma_with_the_references_logits(tiny):
    # Llama's layers with Gemma's norms of 1 + w, its embedding scaled by sqrt(hidden_size) and GELU: no sandwich
    # norms, queries scaled by 1 / sqrt(head_dim).
    _, reference, model = tiny
    assert_decoding_step_gives_the_references_logits(model, reference, _ids(1, 12, seed=9))


@torch.inference_mode()
def test_bfloat16_logits_match_the_reference(tmp_path):
    reference = _reference()
    reference.save_pretrained(tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16), tmp_path)
    ids = _ids(2, 10, seed=3)
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=2e-2, rtol=2e-2)


def test_training_loss_and_gradients_match_the_reference(tmp_path):
    reference = _reference()
    model = load_saved(reference, tmp_path)
    assert_training_step_matches(model, reference, lm_inputs(_ids(2, 9, seed=7)))


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
