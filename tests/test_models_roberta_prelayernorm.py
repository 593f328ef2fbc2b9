"""RoBERTa-PreLayerNorm and XLM-RoBERTa-XL, RoBERTa with a LayerNorm before each sublayer and one over the last
layer's output, against the reference: tiny random models made by the reference for every head, their norms drawn
(so that a norm applied in the wrong place, or left out, shows), run through tests/encoder_suite.py; here what the
two have of their own: the norms' names and places, the configs' defaults and the tokenizers' classes."""

import json

import pytest
import torch

import openformers
from openformers import configs

from decoder_parity import REFERENCE_BOOKKEEPING
from encoder_parity import load_quietly
from encoder_suite import RobertaLayoutTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)


def heads_of(family: str) -> dict:
    return {
        f"{family}Model": "AutoModel",
        f"{family}ForMaskedLM": "AutoModelForMaskedLM",
        f"{family}ForCausalLM": "AutoModelForCausalLM",
        f"{family}ForSequenceClassification": "AutoModelForSequenceClassification",
        f"{family}ForTokenClassification": "AutoModelForTokenClassification",
        f"{family}ForQuestionAnswering": "AutoModelForQuestionAnswering",
        f"{family}ForMultipleChoice": "AutoModelForMultipleChoice",
    }


class TestRobertaPreLayerNorm(RobertaLayoutTests):
    REFERENCE_CONFIG = "RobertaPreLayerNormConfig"
    TINY = TINY
    HEADS = heads_of("RobertaPreLayerNorm")
    PER_SEQUENCE = ("RobertaPreLayerNormForSequenceClassification", "RobertaPreLayerNormForMultipleChoice")


class TestXLMRobertaXL(RobertaLayoutTests):
    REFERENCE_CONFIG = "XLMRobertaXLConfig"
    TINY = {**TINY, "layer_norm_eps": 0.5}  # an eps large enough to show a norm that takes another
    HEADS = heads_of("XLMRobertaXL")
    PER_SEQUENCE = ("XLMRobertaXLForSequenceClassification", "XLMRobertaXLForMultipleChoice")


NORMS = {  # family -> the norms' names in its base model's checkpoint keys, the embeddings' included
    "RobertaPreLayerNorm": {"embeddings.LayerNorm", "encoder.layer.0.attention.LayerNorm",
                            "encoder.layer.0.intermediate.LayerNorm", "LayerNorm"},
    "XLMRobertaXL": {"encoder.layer.0.attention.self_attn_layer_norm", "encoder.layer.0.LayerNorm",
                     "encoder.LayerNorm"},
}


@pytest.mark.parametrize("family, test_class", [("RobertaPreLayerNorm", TestRobertaPreLayerNorm),
                                                ("XLMRobertaXL", TestXLMRobertaXL)])
def test_norms_sit_where_the_checkpoints_name_them(family, test_class, tmp_path):
    test_class.reference(f"{family}Model").save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    norms = {name.removesuffix(".weight") for name in model.state_dict()
             if name.endswith("weight") and ("LayerNorm" in name or "layer_norm" in name) and ".layer.1." not in name}
    assert norms == NORMS[family]


@pytest.mark.parametrize("model_type, name", [("roberta-prelayernorm", "RobertaPreLayerNormConfig"),
                                              ("xlm-roberta-xl", "XLMRobertaXLConfig")])
def test_config_defaults_are_the_references(model_type, name):
    ours, theirs = getattr(configs, name)(), getattr(transformers, name)()
    for key, value in theirs.to_dict().items():  # RoBERTa's config keeps use_cache and add_cross_attention as read
        if key not in (*REFERENCE_BOOKKEEPING, "use_cache", "add_cross_attention"):
            assert getattr(ours, key) == value, key
    assert type(openformers.AutoConfig.for_model(model_type)).__name__ == name


def test_roberta_prelayernorm_tokenizer_is_robertas(tmp_path):
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "h": 5, "i": 6, "Ġ": 7, "hi": 8, "Ġhi": 9}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh i\nĠ hi\n", encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta-prelayernorm"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "RobertaTokenizer"
    assert dict(ours("hi hi")) == dict(reference("hi hi"))


@torch.inference_mode()
def test_xlm_roberta_xl_causal_lm_generates_the_reference_tokens(tmp_path):
    reference = TestXLMRobertaXL.reference("XLMRobertaXLForCausalLM")
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path)
    prompt = torch.tensor([[0, 5, 6, 7]])
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=1, eos_token_id=None)
    torch.testing.assert_close(model.generate(prompt, **settings), reference.generate(prompt, **settings))
