"""Jina embeddings v3 (model_type "jina_embeddings_v3": jinaai/jina-embeddings-v3-hf) against the reference: tiny
random models made by the reference for its five heads run through tests/encoder_suite.py and the rotary encoders'
own tests (tests/test_models_nomic_bert.py: left padding, mean-pooled sentence embeddings). Here what Jina has of its
own: a checkpoint in Jina's layout (fused mixer.Wqkv, emb_ln, norm1/norm2) loading as the reference loads it,
positions counted from 0 where RoBERTa's count from pad_token_id + 1, the config's defaults and refusals, and the
XLM-RoBERTa tokenizer class the reference gives it."""


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
    max_position_embeddings=64, type_vocab_size=2, rope_parameters={"rope_type": "default", "rope_theta": 100.0},
)


class TestJinaEmbeddingsV3(RotaryEncoderTests):
    REFERENCE_CONFIG = "JinaEmbeddingsV3Config"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "JinaEmbeddingsV3Model": "AutoModel",
        "JinaEmbeddingsV3ForMaskedLM": "AutoModelForMaskedLM",
        "JinaEmbeddingsV3ForSequenceClassification": "AutoModelForSequenceClassification",
        "JinaEmbeddingsV3ForTokenClassification": "AutoModelForTokenClassification",
        "JinaEmbeddingsV3ForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    PER_SEQUENCE = ("JinaEmbeddingsV3ForSequenceClassification",)
    PAD = 1
    TOKEN_TYPES = True


@torch.inference_mode()
def test_a_checkpoint_in_jinas_layout_loads_as_the_reference_loads_it(tmp_path):
    from safetensors.torch import load_file

    reference = TestJinaEmbeddingsV3.reference("JinaEmbeddingsV3ForMaskedLM")
    reference.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    fused = next(name for name in stored if name.endswith("layers.0.mixer.Wqkv.weight"))
    assert any(name.endswith("emb_ln.weight") for name in stored)
    model = load_quietly(openformers.AutoModelForMaskedLM.from_pretrained, tmp_path)
    q, k, v = stored[fused].chunk(3)
    attention = model.roberta.layers[0].self_attn
    assert torch.equal(attention.q_proj.weight, q) and torch.equal(attention.v_proj.weight, v)
    inputs = TestJinaEmbeddingsV3.inputs("JinaEmbeddingsV3ForMaskedLM")
    torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_every_position_up_to_max_position_embeddings(tmp_path):
    """Positions count from 0, not from pad_token_id + 1: all max_position_embeddings of them are usable."""
    TestJinaEmbeddingsV3.reference("JinaEmbeddingsV3Model").save_pretrained(tmp_path)
    reference = transformers.AutoModel.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    ids = torch.arange(64)[None] % 90 + 5
    torch.testing.assert_close(model(ids).last_hidden_state, reference(ids).last_hidden_state, atol=1e-4, rtol=1e-4)


def test_config_defaults_are_the_references():
    ours, theirs = configs.JinaEmbeddingsV3Config(), transformers.JinaEmbeddingsV3Config()
    for name, value in theirs.to_dict().items():
        if name not in (*REFERENCE_BOOKKEEPING, "rope_parameters", "use_cache"):
            assert getattr(ours, name) == value, name
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] == 20_000.0
    assert openformers.AutoConfig.for_model("jina_embeddings_v3").model_type == "jina_embeddings_v3"


def test_config_refuses_by_name(tmp_path):
    sizes = {k: v for k, v in TINY.items() if k != "rope_parameters"}
    assert_config_refuses_by_name(configs.JinaEmbeddingsV3Config, {**sizes, "is_decoder": True}, "is_decoder=True",
                                  tmp_path)


def test_tokenizer_class_is_xlm_robertas(tmp_path):
    """The class AutoTokenizer gives "jina_embeddings_v3" where a folder names none: XLMRobertaTokenizer, as the
    reference (GTE's test builds one and compares its ids)."""
    from openformers.tokenizers.classes import _CLASS_OF_MODEL_TYPE

    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    for model_type in ("jina_embeddings_v3", "gte", "nomic_bert"):
        assert _CLASS_OF_MODEL_TYPE[model_type] == TOKENIZER_MAPPING_NAMES[model_type], model_type
