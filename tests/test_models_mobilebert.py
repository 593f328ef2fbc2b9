"""MobileBERT against the reference: tiny random models made by the reference for every head, in its layouts (the
default bottleneck with shared query/key projections, trigram embeddings and no_norm; LayerNorms with the
bottleneck feeding the values too; no bottleneck and one feed-forward, without trigrams or the pooler's dense),
run through tests/encoder_suite.py; here what MobileBERT has of its own: its config's defaults and refusals, the
pretraining and next-sentence heads, the Auto classes and its tokenizer's class."""

import json

import pytest
import torch

import openformers
from openformers import configs

from decoder_parity import assert_config_defaults_equal_the_references, assert_config_refuses_by_name
from encoder_parity import assert_same, load_quietly, outputs_of
from encoder_suite import EncoderFamilyTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, embedding_size=16, intra_bottleneck_size=16, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=24, num_feedforward_networks=3, max_position_embeddings=64,
)


class TestMobileBert(EncoderFamilyTests):
    """Every head in every layout; the norms drawn (no_norm's scale and shift count as much as LayerNorm's)."""

    REFERENCE_CONFIG = "MobileBertConfig"
    TINY = TINY
    VARIANTS = {
        "default": {},
        # An eps large enough to show which LayerNorms take it and which keep torch's 1e-5, as the reference's.
        "layer_norm": dict(normalization_type="layer_norm", layer_norm_eps=0.5, use_bottleneck_attention=True,
                           hidden_act="gelu"),
        "plain": dict(use_bottleneck=False, trigram_input=False, num_feedforward_networks=1,
                      classifier_activation=False, hidden_dropout_prob=0.1),
    }
    HEADS = {  # the reference's class -> the Auto class that picks it
        "MobileBertModel": "AutoModel",
        "MobileBertForPreTraining": "AutoModelForPreTraining",
        "MobileBertForMaskedLM": "AutoModelForMaskedLM",
        "MobileBertForNextSentencePrediction": "AutoModelForNextSentencePrediction",
        "MobileBertForSequenceClassification": "AutoModelForSequenceClassification",
        "MobileBertForTokenClassification": "AutoModelForTokenClassification",
        "MobileBertForQuestionAnswering": "AutoModelForQuestionAnswering",
        "MobileBertForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("MobileBertForSequenceClassification", "MobileBertForMultipleChoice",
                    "MobileBertForNextSentencePrediction")
    TOKEN_TYPES = True
    ALSO_DRAWN = ("NoNorm",)  # no parameter is named so: the norms are drawn by "LayerNorm" in their names

    @classmethod
    def inputs(cls, name, variant=None):
        if name == "MobileBertForPreTraining":  # the masked LM's labels and the next-sentence label
            inputs = super().inputs("MobileBertForMaskedLM")
            return {**inputs, "next_sentence_label": torch.tensor([1, 0])}
        if name == "MobileBertForNextSentencePrediction":
            return {**super().inputs("MobileBertModel"), "labels": torch.tensor([1, 0])}
        return super().inputs(name)


def test_config_defaults_are_the_references():
    assert_config_defaults_equal_the_references(configs.MobileBertConfig(), transformers.MobileBertConfig())
    assert configs.MobileBertConfig().true_hidden_size == transformers.MobileBertConfig().true_hidden_size == 128
    assert configs.MobileBertConfig(use_bottleneck=False).true_hidden_size == 512


@pytest.mark.parametrize("values, message", [
    (dict(normalization_type="batch_norm"), "normalization_type='batch_norm'"),
    (dict(intra_bottleneck_size=18), "intra_bottleneck_size=18"),
    (dict(embedding_size=40), "embedding_size=40"),
    (dict(num_feedforward_networks=0), "num_feedforward_networks=0"),
], ids=["normalization_type", "intra_bottleneck_size", "embedding_size", "num_feedforward_networks"])
def test_config_refuses_by_name(values, message, tmp_path):
    assert_config_refuses_by_name(configs.MobileBertConfig, {**TINY, **values}, message, tmp_path)


@torch.inference_mode()
def test_pretraining_checkpoint_loads_into_the_base_model_and_masked_lm(tmp_path):
    """The pretraining checkpoint (pooler and both heads) loads into the base model, and into the masked LM, which
    leaves the pooler and the next-sentence head unused, with the reference's outputs."""
    TestMobileBert.reference("MobileBertForPreTraining").save_pretrained(tmp_path)
    for name in ("MobileBertModel", "MobileBertForMaskedLM"):
        model = load_quietly(getattr(openformers, name).from_pretrained, tmp_path)
        reference = load_quietly(getattr(transformers, name).from_pretrained, tmp_path).eval()
        inputs = TestMobileBert.inputs("MobileBertModel")
        assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


def test_tokenizer_is_berts_wordpiece_under_the_references_class(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", ",", "the"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mobilebert"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "BertTokenizer"
    assert openformers.MobileBertTokenizer is openformers.MobileBertTokenizerFast is openformers.BertTokenizer
    for texts in (["Hello worlds, the world"], ["hello", "the worlds"]):
        assert dict(ours(*texts)) == dict(reference(*texts)), texts
