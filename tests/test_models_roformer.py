"""RoFormer against the reference: a tiny random model made by the reference for every head, in two variants
(embeddings narrower than the hidden size, projected up; and rotary_value, which turns the values too), loads with
no warning, gives the reference's outputs and losses on a padded batch and each row alone, saves what the reference
loads back, and comes back from the Auto classes as the reference's class. Beside the common tests: left padding
(positions count from the first token, padding or not), the rotary table computed where a checkpoint lacks it, the
causal LM's cached generation, the config's defaults and refusals, and the jieba tokenizer refused by name.
The query and key weights are drawn at std 0.3 (the reference's 0.02 leaves the scores near zero, where a wrong
rotation would hardly show). Training compares the gradients of the parameters: the rotary table is a buffer here,
never trained, where the reference's from_pretrained makes its frozen table trainable again."""

import json

import pytest
import torch

import openformers
from openformers import configs
from openformers.models.roformer import sinusoidal_table

from encoder_parity import assert_causal_lm_generates_as_reference, assert_same, load_quietly, outputs_of
from encoder_suite import EncoderFamilyTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)


class TestRoFormer(EncoderFamilyTests):
    REFERENCE_CONFIG = "RoFormerConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "RoFormerModel": "AutoModel",
        "RoFormerForMaskedLM": "AutoModelForMaskedLM",
        "RoFormerForCausalLM": "AutoModelForCausalLM",
        "RoFormerForSequenceClassification": "AutoModelForSequenceClassification",
        "RoFormerForTokenClassification": "AutoModelForTokenClassification",
        "RoFormerForQuestionAnswering": "AutoModelForQuestionAnswering",
        "RoFormerForMultipleChoice": "AutoModelForMultipleChoice",
    }
    VARIANTS = {"projected": {}, "rotary-value": dict(rotary_value=True)}
    PER_SEQUENCE = ("RoFormerForSequenceClassification", "RoFormerForMultipleChoice")
    TOKEN_TYPES = True

    @classmethod
    def reference(cls, name, variant=None, **overrides):
        model = super().reference(name, variant, **overrides)
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if parameter_name.endswith(("query.weight", "key.weight")):
                    parameter.normal_(std=0.3)
        return model

    @torch.inference_mode()
    def test_each_padded_row_gives_what_it_gives_alone(self, head, tiny):
        if head[0] == "RoFormerForMultipleChoice":
            pytest.skip("multiple choice reads each choice's last position, padding or not (as the reference does)")
        super().test_each_padded_row_gives_what_it_gives_alone(head, tiny)


@pytest.mark.parametrize("rotary_value", [False, True], ids=["qk", "qkv"])
@torch.inference_mode()
def test_left_padding_shifts_the_positions_as_the_references(tmp_path, rotary_value):
    """Positions count from the first token, padding or not. Turning q and k alike leaves their products depending
    on the distance alone, so a left-padded row gives what it gives alone; turned values (rotary_value) keep their
    absolute positions, and the row does not. Here the embeddings are as wide as the hidden states: no projection."""
    reference = TestRoFormer.reference("RoFormerModel", embedding_size=32, rotary_value=rotary_value)
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    assert not hasattr(model, "embeddings_project")
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    ours = model(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, reference(ids, attention_mask=mask).last_hidden_state, atol=1e-4, rtol=1e-4)
    alone = model(ids[:1, 2:]).last_hidden_state
    assert torch.allclose(ours[:1, 2:], alone, atol=1e-4) != rotary_value


def test_rotary_table_is_the_references_and_computed_when_missing(tmp_path):
    """The sinusoidal table, computed as the reference computes it; a checkpoint without it loads with it
    computed (with the warning every new weight gets), giving the reference's outputs."""
    from safetensors.torch import load_file, save_file

    reference = TestRoFormer.reference("RoFormerForMaskedLM")
    table = reference.roformer.encoder.embed_positions.weight
    torch.testing.assert_close(sinusoidal_table(*table.shape), table, atol=0, rtol=0)
    reference.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["roformer.encoder.embed_positions.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="no weights for roformer.encoder.embed_positions.weight"):
        model = openformers.AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(model.roformer.encoder.embed_positions.weight, table)
    inputs = TestRoFormer.inputs("RoFormerForMaskedLM")
    with torch.inference_mode():
        assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@pytest.mark.parametrize("options", [{}, {"num_beams": 3}], ids=["greedy", "beams"])
@torch.inference_mode()
def test_causal_lm_generates_the_reference_tokens(tmp_path, options):
    """Each step turns its one new token by its position after the cached ones."""
    reference = TestRoFormer.reference("RoFormerForCausalLM", "rotary-value")
    assert_causal_lm_generates_as_reference(reference, tmp_path, options)


def test_config_defaults_are_the_reference_ones_and_refusals_name_the_field():
    ours, theirs = configs.RoFormerConfig(), transformers.RoFormerConfig()
    for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
                 "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id", "rotary_value",
                 "is_decoder", "tie_word_embeddings"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert configs.RoFormerConfig(hidden_size=64, num_attention_heads=2).embedding_size == 64
    assert openformers.AutoConfig.for_model("roformer").model_type == "roformer"
    with pytest.raises(ValueError, match="hidden_size=36"):  # head size 9: the rotary pairs need an even one
        configs.RoFormerConfig(hidden_size=36, num_attention_heads=4)
    with pytest.raises(ValueError, match="embedding_size"):
        configs.RoFormerConfig(embedding_size=0)
    with pytest.raises(ValueError, match="summary_type"):
        configs.RoFormerConfig(summary_type="attn")
    with pytest.raises(ValueError, match="add_cross_attention"):
        configs.RoFormerConfig.from_dict({"model_type": "roformer", "is_decoder": True, "add_cross_attention": True})


def test_masked_lm_ties_its_narrow_decoder_to_the_embeddings():
    model = openformers.RoFormerForMaskedLM(configs.RoFormerConfig(**TINY))
    assert model.cls.predictions.decoder.weight is model.roformer.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.in_features == TINY["embedding_size"]
    assert not hasattr(model.roformer.embeddings, "position_embeddings") and model.roformer.pooler is None


def test_jieba_tokenizer_is_refused_by_name_unless_a_tokenizer_json_is_there(tmp_path):
    """RoFormerTokenizer splits Chinese into words with rjieba before WordPiece, which is not built here: a folder of
    vocab.txt is refused, whether config.json or tokenizer_config.json names it; with a tokenizer.json it loads."""
    import tokenizers

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今", "天", "今天", "hello"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roformer"}))
    with pytest.raises(ValueError, match="is RoFormerTokenizer, WordPiece over Chinese .*jieba.* no tokenizer.json"):
        openformers.AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RoFormerTokenizer"}))
    with pytest.raises(ValueError, match=f"The tokenizer of {tmp_path} is RoFormerTokenizer"):
        openformers.AutoTokenizer.from_pretrained(tmp_path)
    backend = tokenizers.Tokenizer(tokenizers.models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    backend.save(str(tmp_path / "tokenizer.json"))
    assert openformers.AutoTokenizer.from_pretrained(tmp_path)("hello")["input_ids"] == [8]
