"""EuroBERT (model_type "eurobert": EuroBERT/EuroBERT-210m) against the reference: tiny random models made by the
reference for its four heads, with each of the sequence classifier's three poolings, run through
tests/encoder_suite.py. Here what EuroBERT has of its own: attention both ways (a token reads the tokens after it,
where Llama's would not), left padding, mean-pooled sentence embeddings of a padded batch, the config's defaults and
refusals. The queries and keys are drawn at std 0.3 so that a wrong rotation or mask shows."""

import pytest
import torch

import openformers
from openformers import configs

from decoder_parity import REFERENCE_BOOKKEEPING, assert_config_refuses_by_name
from encoder_parity import load_quietly
from test_models_nomic_bert import RotaryEncoderTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=37, max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    mask_token_id=3, rope_parameters={"rope_type": "default", "rope_theta": 100.0},
)


class TestEuroBert(RotaryEncoderTests):
    REFERENCE_CONFIG = "EuroBertConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "EuroBertModel": "AutoModel",
        "EuroBertForMaskedLM": "AutoModelForMaskedLM",
        "EuroBertForSequenceClassification": "AutoModelForSequenceClassification",
        "EuroBertForTokenClassification": "AutoModelForTokenClassification",
    }
    VARIANTS = {"late": {}, "mean": dict(classifier_pooling="mean"), "bos": dict(classifier_pooling="bos")}
    PER_SEQUENCE = ("EuroBertForSequenceClassification",)
    PER_SEQUENCE_OUTPUTS = ()
    TRAINING_OVERRIDES = dict(attention_dropout=0.0)

    # EuroBERT has no pooler, and the reference's masked LM is untied by default: the suite's untied test is the
    # default's, which every head test covers.
    test_an_untied_decoder_keeps_its_own_weights_and_bias_both_ways = None


@torch.inference_mode()
def test_tokens_attend_both_ways(tmp_path):
    """The first token's state changes with the tokens after it (a causal mask would leave it alone)."""
    TestEuroBert.reference("EuroBertModel").save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    first = model(torch.tensor([[5, 6, 7]])).last_hidden_state[0, 0]
    assert not torch.allclose(first, model(torch.tensor([[5, 6, 8]])).last_hidden_state[0, 0], atol=1e-3)


def test_config_defaults_are_the_references():
    ours, theirs = configs.EuroBertConfig(), transformers.EuroBertConfig()
    for name, value in theirs.to_dict().items():
        if name not in (*REFERENCE_BOOKKEEPING, "rope_parameters", "pretraining_tp", "use_cache"):
            assert getattr(ours, name) == value, name
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert openformers.AutoConfig.for_model("eurobert").model_type == "eurobert"


def test_config_refuses_by_name(tmp_path):
    sizes = {k: v for k, v in TINY.items() if k != "rope_parameters"}
    assert_config_refuses_by_name(configs.EuroBertConfig, {**sizes, "classifier_pooling": "max"},
                                  "classifier_pooling='max'", tmp_path)


def test_tokenizer_class_is_the_folders():
    """The reference registers no tokenizer class for "eurobert" (its folders name theirs): neither does AutoTokenizer."""
    from openformers.tokenizers.classes import _CLASS_OF_MODEL_TYPE

    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    assert "eurobert" not in TOKENIZER_MAPPING_NAMES and "eurobert" not in _CLASS_OF_MODEL_TYPE
