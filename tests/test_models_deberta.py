"""DeBERTa (v1) against the reference: tiny random models made by the reference for every head, in the variants of its
attention (c2p and p2c over distances clamped at 4, with token types and a projected embedding size; c2p alone without
absolute positions and with DeBERTa's own masked-LM head; none), run through tests/encoder_suite.py; here what v1 has
of its own: its config's defaults and refusals, the Auto classes (no multiple-choice head), its float32 LayerNorm and
its byte-level BPE tokenizer."""

import json

import pytest
import torch

import openformers
from openformers import configs

from decoder_parity import assert_config_defaults_equal_the_references, assert_config_refuses_by_name
from encoder_parity import assert_initialized_as_the_reference
from encoder_suite import EncoderFamilyTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)


class TestDeberta(EncoderFamilyTests):
    """Every head in every variant; the fused q/k/v projection and the position projections drawn at std 1, so that
    a query taken for a key, or a position term left out, shows."""

    REFERENCE_CONFIG = "DebertaConfig"
    TINY = TINY
    VARIANTS = {
        "relative": dict(relative_attention=True, pos_att_type="c2p|p2c", max_relative_positions=4, type_vocab_size=2,
                         embedding_size=24),
        "c2p": dict(relative_attention=True, pos_att_type=["c2p"], position_biased_input=False, legacy=False,
                    pooler_hidden_act="tanh"),
        "absolute": dict(),  # relative_attention off: BERT's attention through the fused projection
    }
    HEADS = {  # the reference's class -> the Auto class that picks it
        "DebertaModel": "AutoModel",
        "DebertaForMaskedLM": "AutoModelForMaskedLM",
        "DebertaForSequenceClassification": "AutoModelForSequenceClassification",
        "DebertaForTokenClassification": "AutoModelForTokenClassification",
        "DebertaForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    PER_SEQUENCE = ("DebertaForSequenceClassification",)
    TOKEN_TYPES = True  # read with type_vocab_size=2, ignored without token types, as in the reference
    ALSO_DRAWN = ("in_proj", "pos_proj", "pos_q_proj", "rel_embeddings")


def test_config_defaults_are_the_references_and_it_saves_without_v2s_fields(tmp_path):
    assert_config_defaults_equal_the_references(configs.DebertaConfig(), transformers.DebertaConfig())
    configs.DebertaConfig(**TINY, pos_att_type="p2c|c2p", relative_attention=True).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "deberta" and saved["pos_att_type"] == ["p2c", "c2p"]
    assert not {"share_att_key", "position_buckets", "norm_rel_ebd", "conv_kernel_size", "attention_head_size"} & set(saved)
    theirs = transformers.DebertaConfig.from_pretrained(tmp_path)
    assert (theirs.pos_att_type, theirs.relative_attention) == (["p2c", "c2p"], True)
    assert type(openformers.AutoConfig.from_pretrained(tmp_path)) is configs.DebertaConfig


@pytest.mark.parametrize("values, message", [
    (dict(share_att_key=True), "share_att_key=True"),
    (dict(position_buckets=8), "position_buckets=8"),
    (dict(norm_rel_ebd="layer_norm"), "norm_rel_ebd='layer_norm'"),
    (dict(conv_kernel_size=3), "conv_kernel_size=3"),
    (dict(attention_head_size=4), "attention_head_size=4"),
    (dict(talking_head=True), "talking_head=True"),
    (dict(pos_att_type="c2p|p2p"), "pos_att_type"),
], ids=["share_att_key", "position_buckets", "norm_rel_ebd", "conv", "attention_head_size", "talking_head",
        "pos_att_type"])
def test_config_refuses_v2s_fields_by_name(values, message, tmp_path):
    assert_config_refuses_by_name(configs.DebertaConfig, {**TINY, **values}, message, tmp_path)


def test_auto_classes_pick_the_reference_classes(tmp_path):
    TestDeberta.reference("DebertaForMaskedLM").save_pretrained(tmp_path)
    assert type(openformers.AutoModelForPreTraining.from_pretrained(tmp_path)).__name__ == "DebertaForMaskedLM"
    for auto, task in [("AutoModelForMultipleChoice", "multiple-choice"), ("AutoModelForCausalLM", "causal-lm")]:
        with pytest.raises(ValueError, match=task):
            getattr(openformers, auto).from_pretrained(tmp_path)


def test_new_models_are_initialized_as_the_reference_initializes_them():
    """Weights drawn from normal(0, initializer_range); biases (the query's and value's too) zero, norms one."""
    config = configs.DebertaConfig(**TINY, **TestDeberta.VARIANTS["relative"], initializer_range=0.05)
    assert_initialized_as_the_reference(openformers.DebertaForSequenceClassification(config), 0.05)


@torch.inference_mode()
def test_layer_norm_rounds_as_the_references_in_bfloat16():
    """v1 normalizes in float32 and scales and shifts in the input's dtype: bfloat16 outputs equal the reference's."""
    from transformers.models.deberta.modeling_deberta import DebertaLayerNorm as Reference

    from openformers.models.deberta_v2 import DebertaLayerNorm

    torch.manual_seed(0)
    ours, theirs = DebertaLayerNorm(64, eps=1e-7), Reference(64, eps=1e-7)
    for norm in (ours, theirs):
        norm.load_state_dict({"weight": torch.linspace(0.5, 1.5, 64), "bias": torch.linspace(-1, 1, 64)})
        norm.to(torch.bfloat16)
    x = (torch.randn(4, 9, 64) * 3 + 1).to(torch.bfloat16)
    assert torch.equal(ours(x), theirs(x)) and not torch.equal(ours(x), torch.nn.LayerNorm.forward(ours, x))


def test_tokenizer_is_the_references_byte_level_bpe(tmp_path):
    """A folder as microsoft/deberta-base ships it (vocab.json and merges.txt, config.json's model_type): the
    reference's class, ids, token types, offsets, decoded text and special tokens, `[CLS] A [SEP] [SEP] B [SEP]` for
    a pair."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    texts = ["Hello world, this is DeBERTa.", "  two  spaces and\ttabs\n newline", "café déjà vu ñ", "3.14 and 12345",
             "[SEP] between [PAD] specials, a [MASK] b", ""]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts * 20, trainer)
    tokenizer.model.save(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta"}))
    (tmp_path / "tokenizer_config.json").write_text("{}")
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "DebertaTokenizer"
    assert ours.special_tokens_map == reference.special_tokens_map
    for text in texts:
        got = ours(text, return_offsets_mapping=True)
        assert dict(got) == dict(reference(text, return_offsets_mapping=True)), text
        assert ours.decode(got["input_ids"]) == reference.decode(got["input_ids"]), text
    assert dict(ours("a pair", "of texts")) == dict(reference("a pair", "of texts"))
    assert ours("a pair", "of texts")["input_ids"].count(ours.sep_token_id) == 3
