"""Megatron-BERT, BERT with a LayerNorm before each sublayer and one over the last layer's output, against the
reference: tiny random models made by the reference for every head, their norms drawn, run through
tests/encoder_suite.py; here what it has of its own: where its norms sit, its config's defaults and its tokenizer's
class."""

import json

import pytest
import torch

import openformers
from openformers import configs

from decoder_parity import REFERENCE_BOOKKEEPING
from encoder_parity import load_quietly
from encoder_suite import EncoderFamilyTests

transformers = pytest.importorskip("transformers")


class TestMegatronBert(EncoderFamilyTests):
    REFERENCE_CONFIG = "MegatronBertConfig"
    TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                max_position_embeddings=64)
    HEADS = {  # the reference's class -> the Auto class that picks it
        "MegatronBertModel": "AutoModel",
        "MegatronBertForPreTraining": "AutoModelForPreTraining",
        "MegatronBertForMaskedLM": "AutoModelForMaskedLM",
        "MegatronBertForCausalLM": "AutoModelForCausalLM",
        "MegatronBertForNextSentencePrediction": "AutoModelForNextSentencePrediction",
        "MegatronBertForSequenceClassification": "AutoModelForSequenceClassification",
        "MegatronBertForTokenClassification": "AutoModelForTokenClassification",
        "MegatronBertForQuestionAnswering": "AutoModelForQuestionAnswering",
        "MegatronBertForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("MegatronBertForSequenceClassification", "MegatronBertForMultipleChoice",
                    "MegatronBertForNextSentencePrediction")
    TOKEN_TYPES = True
    ALSO_DRAWN = (".ln.",)  # its norms' names hold neither "LayerNorm" nor "layer_norm"

    @classmethod
    def inputs(cls, name, variant=None):
        if name == "MegatronBertForPreTraining":  # the masked LM's labels and the next-sentence label
            return {**super().inputs("MegatronBertForMaskedLM"), "next_sentence_label": torch.tensor([1, 0])}
        if name == "MegatronBertForNextSentencePrediction":
            return {**super().inputs("MegatronBertModel"), "labels": torch.tensor([1, 0])}
        return super().inputs(name)


def test_norms_sit_where_the_checkpoints_name_them(tmp_path):
    TestMegatronBert.reference("MegatronBertModel").save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    norms = {name.removesuffix(".weight") for name in model.state_dict()
             if name.endswith("ln.weight") or "LayerNorm" in name}
    assert norms == {"encoder.layer.0.attention.ln", "encoder.layer.0.ln", "encoder.layer.1.attention.ln",
                     "encoder.layer.1.ln", "encoder.ln"}


def test_config_defaults_are_the_references():
    ours, theirs = configs.MegatronBertConfig(), transformers.MegatronBertConfig()
    for key, value in theirs.to_dict().items():  # BERT's config keeps use_cache and add_cross_attention as read
        if key not in (*REFERENCE_BOOKKEEPING, "use_cache", "add_cross_attention"):
            assert getattr(ours, key) == value, key


def test_tokenizer_is_berts_wordpiece(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "world", "##s", ","]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "megatron-bert"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "BertTokenizer"
