"""Phi-1, Phi-1.5 and Phi-2 (model_type "phi") against the reference, on tiny random models it makes and saves.

Partial rotary embeddings (0.5, Phi-1's; 0.4, Phi-2's), the per-head LayerNorms of qk_layernorm, grouped-query
attention and linear rope scaling; every head the reference has, on a right- and a left-padded row with the head's
labels; greedy and beam generation; saving both ways and transformers 4's config.json; GGUF files written as
llama.cpp's converter writes a "phi2" checkpoint (q/k/v apart, or fused as the original checkpoints are); and the
CodeGenTokenizer that Phi's tokenizer_config.json names.
"""

import json
import warnings

import pytest
import torch

import openformers
from decoder_parity import (
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    assert_kernel_steps_unless_refused,
    load_quietly,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, PhiConfig, PhiForCausalLM

transformers = pytest.importorskip("transformers")


class TestPhi(DecoderFamilyTests):
    REFERENCE_CONFIG = "PhiConfig"
    TINY = dict(
        vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    VARIANTS = {
        "phi-1": {},  # partial_rotary_factor 0.5 by default
        "qk-norm-gqa": dict(qk_layernorm=True, num_key_value_heads=2, partial_rotary_factor=0.4),
        "linear-rope": dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0,
                                             "partial_rotary_factor": 1.0}),
    }
    HEADS = {
        "PhiModel": "AutoModel",
        "PhiForCausalLM": "AutoModelForCausalLM",
        "PhiForSequenceClassification": "AutoModelForSequenceClassification",
        "PhiForTokenClassification": "AutoModelForTokenClassification",
    }
    LOWEST_ID = 3
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = TRAINING_VARIANTS = ["qk-norm-gqa"]
    SAVED_CONFIG_ATTRIBUTES = ("qk_layernorm", "num_key_value_heads", "tie_word_embeddings", "rope_parameters")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        assert tiny[2].lm_head.bias is not None

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_and_generates_as_the_reference(self, tiny):
        """from_pretrained gives Phi the kernel's decoding step (one LayerNorm for both branches, partial rotary,
        biases everywhere, the head's too), whose steps give the reference's logits and whose greedy tokens are the
        reference's, with qk_layernorm's q/k LayerNorms too."""
        folder, reference, model = tiny
        assert_kernel_steps_unless_refused(folder, reference, _ids(1, 12, seed=9), "phi", None)

    def test_auto_classes_pick_the_phi_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is PhiConfig
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "PhiModel"
        with warnings.catch_warnings(record=True) as caught:  # the new head's weights are reported
            classifier = openformers.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        assert any("score.weight" in str(warning.message) for warning in caught)
        assert type(classifier).__name__ == "PhiForSequenceClassification" and classifier.score.bias is None
        with pytest.raises(ValueError, match="no question-answering class for 'phi'"):
            openformers.AutoModelForQuestionAnswering.from_pretrained(folder)


TINY = TestPhi.TINY
_reference, _ids, _inputs = TestPhi.reference, TestPhi.ids, TestPhi.inputs


def _outputs(model, name) -> dict:
    return outputs_of(model, _inputs(name))


@torch.inference_mode()
def test_transformers_4_config_json_loads(tmp_path):
    """Phi-2's config.json (transformers 4) has partial_rotary_factor, rope_theta and rope_scaling at the top and no
    rope_parameters; it loads as the reference loads it, and is written back in both layouts."""
    reference = _reference(partial_rotary_factor=0.4)
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(partial_rotary_factor=0.4, rope_theta=10000.0, rope_scaling=None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.config.partial_rotary_factor == 0.4 and model.config.rotary_dim == 6
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "transformers 4 config")
    written = model.config.to_dict()
    assert written["partial_rotary_factor"] == written["rope_parameters"]["partial_rotary_factor"] == 0.4
    assert written["rope_theta"] == written["rope_parameters"]["rope_theta"] == 10000.0


def test_config_defaults_match_the_reference():
    ours, theirs = PhiConfig(), transformers.PhiConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_act",
        "max_position_embeddings", "initializer_range", "layer_norm_eps", "tie_word_embeddings", "qk_layernorm",
        "bos_token_id", "eos_token_id", "pad_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.partial_rotary_factor == theirs.rope_parameters["partial_rotary_factor"] == 0.5
    parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0, "partial_rotary_factor": 0.25}
    scaled = PhiConfig.from_dict({"rope_parameters": parameters, "partial_rotary_factor": 0.4})
    assert scaled.partial_rotary_factor == 0.25 and scaled.rope_theta == 100.0  # the dict wins, as in the reference
    assert scaled.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert openformers.AutoConfig.for_model("phi", **TINY).num_key_value_heads == 4


@pytest.mark.parametrize("values, message", [
    (dict(partial_rotary_factor=0.1), "partial_rotary_factor=0.1"),
    (dict(partial_rotary_factor=1.5), "partial_rotary_factor=1.5"),
    (dict(hidden_act="tanh"), "hidden_act='tanh'"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    (dict(resid_pdrop=1.0), "resid_pdrop=1.0"),
    (dict(qk_layernorm="yes"), "qk_layernorm='yes'"),
    (dict(rope_scaling={"rope_type": "proportional", "factor": 2.0}), "rope_type='proportional'"),
    (dict(layer_norm_eps=0), "layer_norm_eps=0"),
])
def test_config_refuses_what_it_does_not_implement(values, message):
    with pytest.raises(ValueError, match=message):
        PhiConfig(**{**TINY, **values})


def test_a_bad_config_json_value_names_the_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi", **TINY, "num_key_value_heads": 3}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: num_key_value_heads=3"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "phi2" checkpoint: its names, with q/k/v apart (from Hugging Face
# checkpoints) or fused as all queries, all keys, all values (from the original ones, whose Wqkv is stored so).

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.final_layernorm": "output_norm", "lm_head": "output",
    "model.layers": "blk", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.dense": "attn_output", "input_layernorm": "attn_norm", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down",
}


def _write_gguf(path, reference, fused: bool):
    import gguf

    config = reference.config
    heads, hidden = config.num_attention_heads, config.hidden_size
    writer = gguf.GGUFWriter(str(path), "phi2")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_eps(config.layer_norm_eps)
    writer.add_rope_dimension_count(int(config.rope_parameters["partial_rotary_factor"] * hidden) // heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_eos_token_id(2)
    tensors = {gguf_name: tensor for _, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES)}
    if fused:
        for name in [name for name in tensors if ".attn_q." in name]:
            parts = [tensors.pop(name.replace("attn_q", part)) for part in ("attn_q", "attn_k", "attn_v")]
            tensors[name.replace("attn_q", "attn_qkv")] = torch.cat(parts)
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("fused, variant", [(False, dict(partial_rotary_factor=0.4)),
                                            (True, dict(num_key_value_heads=2))], ids=["apart", "fused"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(fused, variant, tmp_path):
    reference = _reference(**variant)
    _write_gguf(tmp_path / "phi-2.gguf", reference, fused)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "phi-2.gguf")
    assert isinstance(model, PhiForCausalLM) and model.generation_config.eos_token_id == 2
    assert model.config.rotary_dim == int(reference.config.rope_parameters["partial_rotary_factor"] * 16)
    assert model.config.num_key_value_heads == reference.config.num_key_value_heads
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "phi-2.gguf").model_type == "phi"


def test_gguf_without_a_required_key_is_refused(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "broken.gguf"), "phi2")
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_head_count(4)
    finish_gguf(writer)
    with pytest.raises(ValueError, match=r"broken.gguf lacks the GGUF metadata key phi2.feed_forward_length"):
        openformers.AutoConfig.from_pretrained(tmp_path / "broken.gguf")


# The tokenizer: Phi's tokenizer_config.json names CodeGenTokenizer, whose reference class keeps a tokenizer.json's
# vocabulary, merges, added tokens (Phi's runs of spaces and tabs) and post-processor and builds the rest itself.

TEXTS = ["def hello_world():\n    print('Hello, world!')\n", "  two  spaces and\ttabs\n newline", "café déjà vu ñ",
         "3.14 and 12345", "<|endoftext|> between specials", "        eight spaces", "\t\t\ttabs", " leading space",
         "Instruct: Write a poem.\nOutput:", "x  =  1 ,  y isn't", "e\u0301 not composed", ""]


def _tokenizer_json(folder, prefix_space_and_nfc: bool = False):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    if prefix_space_and_nfc:  # parts the reference's CodeGenTokenizer replaces by its own
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space_and_nfc)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=prefix_space_and_nfc)  # Phi-2's: trim_offsets=False
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    tokenizer.add_tokens([AddedToken(" " * n, normalized=True) for n in (8, 4, 2)]
                         + [AddedToken("\t" * n, normalized=True) for n in (3, 2)])
    folder.mkdir(exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"model_type": "phi"}))
    return folder


def _name_codegen(folder):
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CodeGenTokenizer", "add_prefix_space": False, "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "clean_up_tokenization_spaces": True,
        "model_max_length": 2048,
    }))
    return folder


def _assert_tokenizers_agree(ours, reference):
    for text in TEXTS:
        expected = reference(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"] and got["offset_mapping"] == expected["offset_mapping"], text
        for skip in (False, True):  # clean_up_tokenization_spaces=True is ignored for a BPE, as the reference does
            assert ours.decode(got["input_ids"], skip_special_tokens=skip) == reference.decode(
                expected["input_ids"], skip_special_tokens=skip), text
    assert ours("a pair", "of texts")["input_ids"] == reference("a pair", "of texts")["input_ids"]
    for tokenizer in (ours, reference):
        tokenizer.pad_token = tokenizer.eos_token  # Phi has no padding token; its users pad with the end token
    batch = dict(padding=True, return_tensors="pt")
    for side in ("right", "left"):
        ours.padding_side = reference.padding_side = side
        got, expected = ours(TEXTS[:4], **batch), reference(TEXTS[:4], **batch)
        assert got["input_ids"].tolist() == expected["input_ids"].tolist(), side
        assert got["attention_mask"].tolist() == expected["attention_mask"].tolist(), side
    assert ours.batch_decode(got["input_ids"]) == reference.batch_decode(expected["input_ids"])


@pytest.mark.parametrize("kind", ["phi-2", "prefix-space-and-nfc"])
def test_codegen_tokenizer_matches_the_reference(kind, tmp_path):
    folder = _name_codegen(_tokenizer_json(tmp_path / kind, prefix_space_and_nfc=kind != "phi-2"))
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "CodeGenTokenizer"
    assert ours.special_tokens_map == reference.special_tokens_map and ours.pad_token is None
    _assert_tokenizers_agree(ours, reference)


def test_tokenizer_named_by_model_type_only_matches_the_reference(tmp_path):
    """Without a tokenizer_config.json, model_type "phi" names GPT2Tokenizer in the reference's Auto mapping."""
    folder = _tokenizer_json(tmp_path / "plain")
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "GPT2Tokenizer"
    _assert_tokenizers_agree(ours, reference)


def test_codegen_tokenizer_options_saving_and_truncation_match_the_reference(tmp_path):
    folder = _name_codegen(_tokenizer_json(tmp_path / "phi-2"))
    reference = transformers.CodeGenTokenizer.from_pretrained(str(folder), add_prefix_space=True)
    ours = openformers.CodeGenTokenizer.from_pretrained(folder, add_prefix_space=True)
    for text in TEXTS[:4]:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
    ours.save_pretrained(tmp_path / "saved")
    for reloaded in (transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved")),
                     openformers.AutoTokenizer.from_pretrained(tmp_path / "saved")):
        assert type(reloaded).__name__ == "CodeGenTokenizer"
        for text in TEXTS[:4]:
            assert reloaded(text)["input_ids"] == reference(text)["input_ids"], text
    typed = dict(return_token_type_ids=True)
    expected = transformers.CodeGenTokenizer.from_pretrained(str(folder), **typed)("a pair", "of texts")
    assert dict(openformers.CodeGenTokenizer.from_pretrained(folder, **typed)("a pair", "of texts")) == dict(expected)
    completion = "def f():\n    return 1\n# done\ndef g():\n    pass\nprint(f())\nprint(g())\n"
    ids = reference(completion)["input_ids"]
    for patterns in (["^#"], ["\n\n\n", "^'''"], [], None):
        expected = reference.decode(ids, truncate_before_pattern=patterns)
        assert ours.decode(ids, truncate_before_pattern=patterns) == expected, patterns
    truncated = ours.decode(ids, truncate_before_pattern=["^#"])
    assert truncated.rstrip().endswith("return 1") and "def g" not in truncated
