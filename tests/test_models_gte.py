"""GTE (model_type "gte": Alibaba-NLP/gte-multilingual-base, gte-base-en-v1.5) against the reference: tiny random
models made by the reference for its four heads, with token types (the multilingual model's one type) and without
(the English model's type_vocab_size 0), run through tests/encoder_suite.py and the rotary encoders' own tests
(tests/test_models_nomic_bert.py). Here what GTE has of its own: a checkpoint in Alibaba's layout (fused qkv_proj
and up_gate_proj, attn_ln/mlp_ln, the "new" prefix) loading as the reference loads it, the masked LM's decoder bias
kept when tied, the config's defaults and refusals, and the XLM-RoBERTa tokenizer class the reference gives it."""

import json
import warnings

import pytest
import torch

import openformers
from openformers import configs

from decoder_parity import REFERENCE_BOOKKEEPING, assert_config_refuses_by_name
from encoder_parity import load_quietly
from test_models_nomic_bert import RotaryEncoderTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 100.0},
)


class TestGte(RotaryEncoderTests):
    REFERENCE_CONFIG = "GteConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "GteModel": "AutoModel",
        "GteForMaskedLM": "AutoModelForMaskedLM",
        "GteForSequenceClassification": "AutoModelForSequenceClassification",
        "GteForTokenClassification": "AutoModelForTokenClassification",
    }
    VARIANTS = {"multilingual": dict(type_vocab_size=2), "english": dict(type_vocab_size=0)}
    PER_SEQUENCE = ("GteForSequenceClassification",)
    PAD = 1
    TOKEN_TYPES = True

    @classmethod
    def inputs(cls, name, variant=None) -> dict:
        inputs = super().inputs(name, variant)
        if variant == "english":  # no token types to give
            inputs.pop("token_type_ids")
        return inputs


@torch.inference_mode()
def test_a_checkpoint_in_alibabas_layout_loads_as_the_reference_loads_it(tmp_path):
    """The reference writes Alibaba's layout (q/k/v fused in qkv_proj, up and gate in up_gate_proj, attn_ln, mlp_ln,
    lm_head.norm), which the Hub's checkpoints have under the prefix "new": it loads here split as the reference
    splits it."""
    from safetensors.torch import load_file, save_file

    reference = TestGte.reference("GteForMaskedLM", "multilingual")
    reference.save_pretrained(tmp_path)
    stored = {name.replace("gte.", "new.", 1): tensor for name, tensor in
              load_file(tmp_path / "model.safetensors").items()}
    assert {"new.encoder.layer.0.attention.qkv_proj.weight", "new.encoder.layer.0.mlp.up_gate_proj.weight",
            "new.encoder.layer.0.attn_ln.weight", "lm_head.norm.weight", "lm_head.decoder.bias"} <= set(stored)
    save_file(stored, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = load_quietly(openformers.AutoModelForMaskedLM.from_pretrained, tmp_path)
    layer = model.gte.layers[0]
    q, k, v = stored["new.encoder.layer.0.attention.qkv_proj.weight"].chunk(3)
    up, gate = stored["new.encoder.layer.0.mlp.up_gate_proj.weight"].chunk(2)
    assert torch.equal(layer.self_attn.k_proj.weight, k) and torch.equal(layer.mlp.gate_proj.weight, gate)
    assert torch.equal(layer.mlp.up_proj.weight, up)
    assert torch.equal(model.lm_head.decoder.bias, stored["lm_head.decoder.bias"]) and stored["lm_head.decoder.bias"].any()
    assert model.lm_head.decoder.weight is model.gte.embeddings.word_embeddings.weight
    inputs = TestGte.inputs("GteForMaskedLM", "multilingual")
    torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_english_model_has_no_token_types():
    model = openformers.GteModel(configs.GteConfig(**TINY, type_vocab_size=0))
    assert not hasattr(model.embeddings, "token_type_embeddings")


def test_config_defaults_are_the_references():
    ours, theirs = configs.GteConfig(), transformers.GteConfig()
    for name, value in theirs.to_dict().items():
        if name not in (*REFERENCE_BOOKKEEPING, "rope_parameters"):
            assert getattr(ours, name) == value, name
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] == 160_000.0
    assert openformers.AutoConfig.for_model("gte").model_type == "gte"


@pytest.mark.parametrize("values, message", [
    (dict(type_vocab_size=-1), "type_vocab_size=-1"),
    (dict(hidden_size=36, num_attention_heads=4), "head_dim=9"),
    (dict(is_decoder=True), "is_decoder=True"),
], ids=["token-types", "odd-head-size", "decoder"])
def test_config_refuses_by_name(tmp_path, values, message):
    sizes = {k: v for k, v in TINY.items() if k != "rope_parameters"}
    assert_config_refuses_by_name(configs.GteConfig, {**sizes, **values}, message, tmp_path)


def test_tokenizer_is_xlm_robertas(tmp_path):
    """A folder whose tokenizer_config.json names no class gets XLMRobertaTokenizer for "gte", as the reference."""
    sentencepiece = pytest.importorskip("sentencepiece")
    corpus = ["The quick brown fox jumps over the lazy dog.", "Le renard brun saute par-dessus le chien.",
              "Der schnelle braune Fuchs springt.", "query: what is a fox?"] * 20
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "spm"),
                                             model_type="unigram", vocab_size=40, minloglevel=2)
    folder = tmp_path / "tokenizer"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.XLMRobertaTokenizer(vocab_file=str(tmp_path / "spm.model")).save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("tokenizer_class", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    (folder / "config.json").write_text(json.dumps({"model_type": "gte"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "XLMRobertaTokenizer"
    for texts in (["query: the quick fox"], ["Le chien", "springt über den Fuchs"]):
        assert dict(ours(*texts)) == dict(reference(*texts)), texts
