"""IBM Granite (model_type "granite") against the reference, on tiny random models it makes and saves.

Llama's network with four scalars (embeddings times embedding_multiplier, attention scores times attention_multiplier,
each branch times residual_multiplier before its residual add, logits divided by logits_scaling), set away from 1 in
every tiny model, with untied and tied embeddings and with biases on the attention and the MLP. Both heads the
reference has, on a right- and a left-padded row with labels; inputs_embeds (scaled too); cached decoding, left
padding, greedy and beam generation, the CPU kernel's decoding step (which refuses attention biases); hidden states and attention
weights; a training step; saving both ways; each scalar shown to matter; the config's defaults and refusals; GGUF files
written as llama.cpp's converter writes a "granite" checkpoint; and the tokenizer of a Granite folder (which names
GPT2Tokenizer, read as the reference's TokenizersBackend).
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
from openformers import AutoModelForCausalLM, GraniteConfig, GraniteForCausalLM

transformers = pytest.importorskip("transformers")

# Granite 3.x's own scalars are 12 (embeddings), 0.22 (residual), 1/128 (attention) and 8 or 16 (logits); the
# attention's here is neither 1 nor 1/sqrt(head_dim) = 0.25, so that neither default passes for it.
SCALARS = dict(embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.4, logits_scaling=8.0)


class TestGranite(DecoderFamilyTests):
    """The hidden states and attention weights come from the eager path, where the attention's scale multiplies the
    scores in our own code rather than in torch's SDPA."""

    REFERENCE_CONFIG = "GraniteConfig"
    TINY = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0}, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.15,  # weights large enough that a scalar applied wrong moves the logits past the tolerance
        **SCALARS,
    )
    VARIANTS = {
        "untied": {},  # the reference's default
        "tied": dict(tie_word_embeddings=True),  # Granite 3.x's checkpoints
        "biases": dict(attention_bias=True, mlp_bias=True),
    }
    HEADS = {"GraniteModel": "AutoModel", "GraniteForCausalLM": "AutoModelForCausalLM"}
    HEAD_VARIANTS = TRAINING_VARIANTS = ["biases"]
    HEAD_OVERRIDES = {}

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == reference.config.tie_word_embeddings

    @torch.inference_mode()
    def test_given_inputs_embeds_are_scaled_as_the_references(self, tiny):
        _, reference, model = tiny
        inputs = _inputs()
        given = dict(inputs_embeds=reference.model.embed_tokens(inputs.pop("input_ids")), **inputs)
        assert_outputs_close(outputs_of(model, given), outputs_of(reference, given), "inputs_embeds")

    def test_auto_classes_pick_the_granite_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is GraniteConfig
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "GraniteModel"
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is GraniteForCausalLM
        with pytest.raises(ValueError, match="no sequence-classification class for 'granite'"):
            openformers.AutoModelForSequenceClassification.from_pretrained(folder)


TINY, VARIANTS = TestGranite.TINY, TestGranite.VARIANTS
_reference, _ids, _inputs = TestGranite.reference, TestGranite.ids, TestGranite.inputs


def assert_the_scalar_changes_the_logits(reference, ids, scalar: str, folder):
    """The same weights with `scalar` at 1 give other logits: the parity with the reference holds for it applied
    (Granite MoE's tests use it too)."""
    model = load_saved(reference, folder)
    scaled = model(ids).logits
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, scalar: 1.0}))
    plain = load_quietly(AutoModelForCausalLM.from_pretrained, folder)
    assert (plain(ids).logits - scaled).abs().max() > 1e-2


@pytest.mark.parametrize("scalar", list(SCALARS))
@torch.inference_mode()
def test_each_scalar_changes_the_logits(scalar, tmp_path):
    assert_the_scalar_changes_the_logits(_reference(), _ids(1, 9), scalar, tmp_path)


@pytest.mark.parametrize("variant", ["untied", "tied"])
@torch.inference_mode()
def test_the_cpu_decoding_step_runs_granite_with_the_references_logits(variant, tmp_path):
    # Llama's step with Granite's scalars: the embedding's scale and the queries' factor (set_family), each branch's
    # factor before the residual add (set_residual_scale); the logits' divisor after the head (next_token_logits).
    from openformers.kernels.llama import next_token_logits

    reference = _reference(**VARIANTS[variant])
    model = load_saved(reference, tmp_path)
    ids = _ids(1, 12, seed=9)
    assert_decoding_step_gives_the_references_logits(model, reference, ids)
    cache = openformers.DynamicCache()
    model(ids[:, :11], past_key_values=cache)
    logits, argmax = next_token_logits(model, ids[0, 11:], cache)
    torch.testing.assert_close(logits, reference(ids).logits[:, -1], atol=1e-4, rtol=1e-4)
    assert argmax.tolist() == logits.argmax(-1).tolist()


def test_the_cpu_kernel_refuses_granites_attention_bias_and_generate_runs_the_layers(tmp_path):
    from openformers.kernels import llama as llama_kernel

    reference = _reference(**VARIANTS["biases"])
    model = load_saved(reference, tmp_path)
    assert llama_kernel.refusal(model.config) == "attention_bias=True is not implemented by the decoding kernel"
    assert not llama_kernel.eligible(model) and model.model.accelerated_step is None
    ids = _ids(1, 5, seed=3)
    settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.inference_mode():
        assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()


def test_config_defaults_match_the_reference():
    ours, theirs = GraniteConfig(), transformers.GraniteConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias", "attention_dropout",
        "mlp_bias", "embedding_multiplier", "logits_scaling", "residual_multiplier", "attention_multiplier",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


@pytest.mark.parametrize("values, message", [
    (dict(logits_scaling=0), "logits_scaling=0"),
    (dict(embedding_multiplier=-12.0), "embedding_multiplier=-12.0"),
    (dict(residual_multiplier="0.22"), "residual_multiplier='0.22'"),
    (dict(attention_multiplier=None), "attention_multiplier=None"),
    (dict(attention_dropout=1.0), "attention_dropout=1.0"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        GraniteConfig(**{**TINY, **values})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "granite", **TINY, **values}))
    with pytest.raises(ValueError, match=f"config.json: Invalid config: {message}"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "granite" checkpoint: Llama's names and metadata, the query and key rows
# (and their biases) permuted for llama.cpp's rotation, no output.weight when tied, and the scalars as
# granite.embedding_scale, granite.residual_scale, granite.attention.scale and granite.logit_scale.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _scale_metadata(config) -> dict:
    """The scalars as the converter writes them: each only where it is not zero (all of them, here)."""
    return dict(embedding_scale=config.embedding_multiplier, residual_scale=config.residual_multiplier,
                attention_scale=config.attention_multiplier, logit_scale=config.logits_scaling)


@pytest.mark.parametrize("variant", ["tied", "biases"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    config = reference.config
    write_gguf(tmp_path / "granite.gguf", "granite", reference, GGUF_NAMES, permute_heads=True,
               layer_norm_rms_eps=config.rms_norm_eps, **_scale_metadata(config))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "granite.gguf")
    assert isinstance(model, GraniteForCausalLM) and model.config.tie_word_embeddings == config.tie_word_embeddings
    assert (model.config.attention_bias, model.config.mlp_bias) == (config.attention_bias, config.mlp_bias)
    for name, value in SCALARS.items():  # float32 in the file
        assert getattr(model.config, name) == pytest.approx(value, rel=1e-6), name
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "GGUF")
    theirs = reference.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name], msg=name)


@torch.inference_mode()
def test_gguf_without_the_optional_scales_reads_them_as_llama_cpp_does(tmp_path):
    # Absent, llama.cpp scales neither the embeddings nor the branches, and scales the attention by 1/sqrt(head_dim).
    reference = _reference(embedding_multiplier=1.0, residual_multiplier=1.0, attention_multiplier=0.25)
    write_gguf(tmp_path / "granite.gguf", "granite", reference, GGUF_NAMES, permute_heads=True,
               layer_norm_rms_eps=reference.config.rms_norm_eps, logit_scale=reference.config.logits_scaling)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "granite.gguf")
    assert (model.config.embedding_multiplier, model.config.residual_multiplier) == (1.0, 1.0)
    assert model.config.attention_multiplier == 0.25
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "GGUF")


@pytest.mark.parametrize("metadata, message", [
    ({}, "lacks the GGUF metadata key granite.logit_scale"),
    (dict(logit_scale=8.0, rope_scaling_finetuned=False), "turns rotary positions off"),  # llama.cpp's hybrids'
], ids=["no-logit-scale", "unrotated"])
def test_gguf_without_a_logit_scale_or_with_rotation_off_is_refused(metadata, message, tmp_path):
    write_gguf(tmp_path / "granite.gguf", "granite", _reference(), GGUF_NAMES, permute_heads=True, **metadata)
    with pytest.raises(ValueError, match=message):
        openformers.AutoConfig.from_pretrained(tmp_path / "granite.gguf")


# The tokenizer: Granite's tokenizer_config.json names GPT2Tokenizer (byte-level BPE), with <|end_of_text|> as its
# BOS, EOS, padding and unknown token and the chat roles' markers as added special tokens; the reference reads such a
# folder as its generic TokenizersBackend (the class it registers for granite), the tokenizer.json as it is.

SPECIAL = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"]
TEXTS = ["Hello Granite, how are you?", "<|start_of_role|>user<|end_of_role|>Hi  there\t!<|end_of_text|>",
         "café déjà vu\n  indented", ""]


def test_gpt2_tokenizer_of_a_granite_folder_matches_the_reference(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "granite"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "add_bos_token": False, "add_prefix_space": False,
        "bos_token": SPECIAL[0], "eos_token": SPECIAL[0], "pad_token": SPECIAL[0], "unk_token": SPECIAL[0],
        "additional_special_tokens": SPECIAL[1:],
    }))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    # The reference registers its generic class for granite, which wins over the class the folder names.
    assert type(ours).__name__ == type(reference).__name__ == "TokenizersBackend"
    assert (ours.eos_token_id, ours.pad_token_id) == (reference.eos_token_id, reference.pad_token_id) == (0, 0)
    for text in TEXTS:
        ids = reference(text)["input_ids"]
        assert ours(text)["input_ids"] == ids, text
        assert ours.decode(ids) == reference.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)
