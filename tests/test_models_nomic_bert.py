"""NomicBERT (model_type "nomic_bert": nomic-ai/nomic-embed-text-v1.5) against the reference: tiny random models made
by the reference for its four heads run through tests/encoder_suite.py, the queries and keys drawn at std 0.3 and
the rotary base low, so that a wrong rotation shows. Here what NomicBERT has of its own: left padding (positions
count from the first token, padding or not), a checkpoint in Nomic's own layout (fused Wqkv, emb_ln, fc11/fc12/fc2,
norm1/norm2) loading as the reference loads it, mean-pooled sentence embeddings of a padded batch, head_dim apart
from hidden_size, the config's defaults and refusals, and BERT's tokenizer class."""

import json

import pytest
import torch

import openformers
from openformers import configs

from decoder_parity import REFERENCE_BOOKKEEPING, assert_config_refuses_by_name
from encoder_parity import load_quietly
from encoder_suite import EncoderFamilyTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 100.0},
)


class RotaryEncoderTests(EncoderFamilyTests):
    """The common tests of the rotary encoders (NomicBERT, GTE, Jina embeddings v3), with their q and k drawn large,
    and the tests they share of their own."""

    DRAWN_LARGE = ("q_proj.weight", "k_proj.weight")

    @classmethod
    def reference(cls, name, variant=None, **overrides):
        model = super().reference(name, variant, **overrides)
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if parameter_name.endswith(cls.DRAWN_LARGE):
                    parameter.normal_(std=0.3)
        return model

    @torch.inference_mode()
    def test_left_padding_keeps_the_references_positions(self, tmp_path):
        """Positions count from 0 in every row, padding included, as the reference's: a left-padded row gives the
        reference's outputs, and (rotations see distances only) what it gives alone."""
        self.reference(self.head_named("AutoModel")).save_pretrained(tmp_path)
        reference = getattr(transformers, self.head_named("AutoModel")).from_pretrained(tmp_path).eval()
        model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
        ids = torch.tensor([[self.PAD, self.PAD, 5, 6, 7], [8, 9, 10, 11, 12]])
        mask = (ids != self.PAD).long()
        ours = model(ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours, reference(ids, attention_mask=mask).last_hidden_state, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours[:1, 2:], model(ids[:1, 2:]).last_hidden_state, atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_mean_pooled_sentence_embeddings_are_the_references(self, tmp_path):
        """The sentence embedding these models are used for: the mean of the real tokens' last hidden states."""
        self.reference(self.head_named("AutoModel")).save_pretrained(tmp_path)
        reference = getattr(transformers, self.head_named("AutoModel")).from_pretrained(tmp_path).eval()
        model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
        inputs = {k: v for k, v in self.inputs(self.head_named("AutoModel")).items() if k != "labels"}
        mask = inputs["attention_mask"][..., None].float()

        def pooled(hidden):
            return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

        ours, theirs = pooled(model(**inputs).last_hidden_state), pooled(reference(**inputs).last_hidden_state)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(ours[0], ours[1], atol=1e-2)


class TestNomicBert(RotaryEncoderTests):
    REFERENCE_CONFIG = "NomicBertConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "NomicBertModel": "AutoModel",
        "NomicBertForMaskedLM": "AutoModelForMaskedLM",
        "NomicBertForSequenceClassification": "AutoModelForSequenceClassification",
        "NomicBertForTokenClassification": "AutoModelForTokenClassification",
    }
    PER_SEQUENCE = ("NomicBertForSequenceClassification",)
    TOKEN_TYPES = True
    # Without dropout: the reference's default already has none.
    TRAINING_OVERRIDES = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@torch.inference_mode()
def test_a_checkpoint_in_nomics_layout_loads_as_the_reference_loads_it(tmp_path):
    """The reference writes Nomic's own layout (fused Wqkv, emb_ln, fc11/fc12/fc2, norm1/norm2), which the Hub's
    checkpoints have: it loads here with q, k and v split as the reference splits them; saved here, under the
    reference's names, it loads in the reference again (the suite's test of saving both ways)."""
    from safetensors.torch import load_file

    reference = TestNomicBert.reference("NomicBertModel")
    reference.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    assert {"encoder.layers.0.attn.Wqkv.weight", "emb_ln.weight", "encoder.layers.0.mlp.fc12.weight",
            "encoder.layers.0.norm2.weight"} <= set(stored)
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    q, k, v = stored["encoder.layers.0.attn.Wqkv.weight"].chunk(3)
    attention = model.layers[0].self_attn
    assert torch.equal(attention.q_proj.weight, q) and torch.equal(attention.v_proj.weight, v)
    assert torch.equal(model.layers[0].mlp.gate_proj.weight, stored["encoder.layers.0.mlp.fc12.weight"])


@torch.inference_mode()
def test_head_dim_apart_from_hidden_size(tmp_path):
    """head_dim 16 with hidden_size 32 and 4 heads: q, k and v are 64 wide, o_proj narrows them back."""
    reference = TestNomicBert.reference("NomicBertForMaskedLM", head_dim=16)
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModelForMaskedLM.from_pretrained, tmp_path)
    assert model.nomic_bert.layers[0].self_attn.q_proj.out_features == 64
    inputs = TestNomicBert.inputs("NomicBertForMaskedLM")
    torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_config_defaults_are_the_references():
    ours, theirs = configs.NomicBertConfig(), transformers.NomicBertConfig()
    for name, value in theirs.to_dict().items():
        if name not in (*REFERENCE_BOOKKEEPING, "rope_parameters"):
            assert getattr(ours, name) == value, name
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] == 1000.0
    assert openformers.AutoConfig.for_model("nomic_bert").model_type == "nomic_bert"
    assert configs.NomicBertConfig.from_dict({"rope_parameters": {"rope_type": "default", "rope_theta": 5.0}}
                                             ).rope_theta == 5.0


@pytest.mark.parametrize("values, message", [
    (dict(head_dim=7), "head_dim=7"),
    (dict(is_decoder=True), "is_decoder=True"),
    (dict(rope_theta=-1.0), "rope_theta=-1.0"),
], ids=["odd-head-dim", "decoder", "theta"])
def test_config_refuses_by_name(tmp_path, values, message):
    sizes = {k: v for k, v in TINY.items() if k != "rope_parameters"}  # the file's rope_parameters would win
    assert_config_refuses_by_name(configs.NomicBertConfig, {**sizes, **values}, message, tmp_path)


def test_tokenizer_is_berts_wordpiece(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "search_query", ":", "hello", "world", "##s", ","]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nomic_bert"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "BertTokenizer"
    for texts in (["search_query: hello worlds,"], ["hello", "world"]):
        assert dict(ours(*texts)) == dict(reference(*texts)), texts
