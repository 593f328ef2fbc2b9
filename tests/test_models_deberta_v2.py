"""DeBERTa-v2/v3 against the reference: tiny random models made by the reference, for every head and for the
variants of disentangled attention (v3: shared keys, log buckets, normalized table, no absolute positions; v2-xlarge:
the convolution, token types, a projected embedding size, clamped distances; c2p only; none), load with no warning,
give the reference's outputs and losses on a padded batch and each row alone, save what the reference loads back,
train to the reference's gradients, and come back from the Auto classes as the reference's class."""

import json
import warnings

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import (
    assert_gradients_match,
    assert_initialized_as_the_reference,
    assert_pipeline_matches,
    assert_records_close,
    assert_same,
    load_quietly,
    outputs_of,
)
from encoder_suite import EncoderFamilyTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)
VARIANTS = {
    # DeBERTa-v3: distances past 4 in log buckets up to 16 (the test's inputs reach 19), its own masked-LM head.
    "v3": dict(relative_attention=True, pos_att_type="p2c|c2p", share_att_key=True, position_buckets=8,
               max_relative_positions=16, norm_rel_ebd="layer_norm", position_biased_input=False, legacy=False),
    # DeBERTa-v2-xlarge's layout: a convolution after the first layer, distances clamped at 6.
    "v2": dict(relative_attention=True, pos_att_type=["c2p", "p2c"], conv_kernel_size=3, conv_act="gelu",
               max_relative_positions=6, type_vocab_size=2, embedding_size=24),
    "c2p": dict(relative_attention=True, pos_att_type="c2p", pooler_hidden_act="tanh"),
    "absolute": dict(),  # relative_attention off: BERT's attention with DeBERTa's layout
}
LENGTH, REAL = 20, 13  # the batch's length and the second row's real tokens


class TestDebertaV2(EncoderFamilyTests):
    """Every head in every variant; given embeddings (24 wide and projected up in v2), every head gives the
    reference's outputs."""

    REFERENCE_CONFIG = "DebertaV2Config"
    TINY = TINY
    VARIANTS = VARIANTS
    HEADS = {  # the reference's class -> the Auto class that picks it
        "DebertaV2Model": "AutoModel",
        "DebertaV2ForMaskedLM": "AutoModelForMaskedLM",
        "DebertaV2ForSequenceClassification": "AutoModelForSequenceClassification",
        "DebertaV2ForTokenClassification": "AutoModelForTokenClassification",
        "DebertaV2ForQuestionAnswering": "AutoModelForQuestionAnswering",
        "DebertaV2ForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("DebertaV2ForSequenceClassification", "DebertaV2ForMultipleChoice")
    REAL = REAL

    # DeBERTa's own tests below cover these per variant: hidden states with the padding's positions and as a tuple,
    # bfloat16 token classification at a tighter tolerance, and training the classifier and the tied masked LM.
    test_hidden_states_and_attention_weights_match_reference = None
    test_bfloat16_logits_are_the_references_within_its_rounding = None
    test_training_gradients_match_reference = None

    @classmethod
    def inputs(cls, name, variant=None) -> dict:
        """Two rows of LENGTH tokens, the second right-padded after REAL, with every label the head takes (token types
        where the variant has them)."""
        shape = (2, 3, LENGTH) if name == "DebertaV2ForMultipleChoice" else (2, LENGTH)
        ids = torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(ids)
        ids[1, ..., REAL:], mask[1, ..., REAL:] = 0, 0
        inputs = {"input_ids": ids, "attention_mask": mask}
        if VARIANTS[variant or "v3"].get("type_vocab_size"):
            inputs["token_type_ids"] = (torch.arange(LENGTH) >= 8).long().expand_as(ids)
        if name == "DebertaV2ForMaskedLM":
            labels = torch.full_like(ids, -100)
            labels[:, [1, 4, 15]] = ids[:, [1, 4, 15]]
            return {**inputs, "labels": labels}
        if name in cls.PER_SEQUENCE:
            return {**inputs, "labels": torch.tensor([2, 0])}
        if name == "DebertaV2ForTokenClassification":
            return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
        if name == "DebertaV2ForQuestionAnswering":
            return {**inputs, "start_positions": torch.tensor([2, 25]), "end_positions": torch.tensor([4, 6])}
        return inputs

    def test_encoder_refuses_a_cache_and_overlong_inputs(self):
        """And an attention mask of any shape but (B, T)."""
        super().test_encoder_refuses_a_cache_and_overlong_inputs()
        model = openformers.AutoModel.from_config(configs.DebertaV2Config(**TINY))
        with pytest.raises(ValueError, match="attention_mask"):
            model(torch.tensor([[5, 6, 7]]), attention_mask=torch.tensor([[[1, 1, 0]]]))
        with pytest.raises(ValueError, match="attention_mask"):
            model(torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 3, 3))


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_reference(variant, tmp_path):
    """Every layer's output and attention weights, padded positions included (they attend to nothing and are zero)."""
    reference = TestDebertaV2.reference("DebertaV2Model", variant)
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModel.from_pretrained(tmp_path)
    inputs = TestDebertaV2.inputs("DebertaV2Model", variant)
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == TINY["num_hidden_layers"] + 1
    torch.testing.assert_close(ours.hidden_states, theirs.hidden_states, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.attentions, theirs.attentions, atol=1e-4, rtol=1e-4)
    as_tuple = model(**inputs, output_hidden_states=True, return_dict=False)
    assert len(as_tuple) == 2 and torch.equal(as_tuple[0], ours.last_hidden_state)


@torch.inference_mode()
def test_v2_xlarge_layout_matches_reference(tmp_path):
    """DeBERTa-v2-xlarge's config.json combines the convolution with v3's shared keys, buckets and normalized table."""
    xlarge = dict(relative_attention=True, pos_att_type="p2c|c2p", share_att_key=True, position_buckets=8,
                  max_relative_positions=-1, norm_rel_ebd="layer_norm", position_biased_input=False,
                  conv_kernel_size=3, conv_act="gelu", attention_head_size=8)
    reference = TestDebertaV2.reference("DebertaV2Model", "absolute", **xlarge)
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    inputs = TestDebertaV2.inputs("DebertaV2Model", "absolute")
    ours = model(**inputs, output_hidden_states=True)
    theirs = reference(**inputs, output_hidden_states=True)
    torch.testing.assert_close(ours.hidden_states, theirs.hidden_states, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["v3", "v2"])
@torch.inference_mode()
def test_bfloat16_logits_are_the_references(variant, tmp_path):
    TestDebertaV2.reference("DebertaV2ForTokenClassification", variant).save_pretrained(tmp_path)
    reference = transformers.DebertaV2ForTokenClassification.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    model = openformers.DebertaV2ForTokenClassification.from_pretrained(tmp_path, dtype=torch.bfloat16)
    inputs = TestDebertaV2.inputs("DebertaV2ForTokenClassification", variant)
    ours, theirs = model(**inputs).logits, reference(**inputs).logits
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours, theirs, atol=4e-3, rtol=1e-2)


@torch.inference_mode()
def test_v3_reads_inputs_longer_than_its_absolute_positions(tmp_path):
    """Without absolute positions only the buckets bound the distances: 150 tokens run (max_position_embeddings 64),
    with distances far past max_relative_positions landing in the last buckets as in the reference."""
    reference = TestDebertaV2.reference("DebertaV2ForMaskedLM", "v3")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForMaskedLM.from_pretrained(tmp_path)
    ids = torch.randint(3, TINY["vocab_size"], (1, 150), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("buckets, limit", [(256, 512), (8, 64), (6, 7)])
def test_log_buckets_are_the_reference_ones(buckets, limit):
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    from openformers.models.deberta_v2 import log_buckets

    distances = torch.arange(-1500, 1501)
    assert torch.equal(log_buckets(distances, buckets, limit),
                       make_log_bucket_position(distances, buckets, limit).long())


@pytest.mark.parametrize("variant, name", [("v3", "DebertaV2ForSequenceClassification"),
                                           ("v2", "DebertaV2ForSequenceClassification"),
                                           ("c2p", "DebertaV2ForMaskedLM")])  # the decoder tied to the embeddings
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_training_gradients_match_reference(variant, name, checkpointing, tmp_path):
    """Without dropout, one training step's loss and every parameter's gradient are the reference's."""
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    TestDebertaV2.reference(name, variant, **no_dropout).save_pretrained(tmp_path)
    reference = getattr(transformers, name).from_pretrained(tmp_path).train()
    model = getattr(openformers, name).from_pretrained(tmp_path).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    assert_gradients_match(model, reference, TestDebertaV2.inputs(name, variant))  # the relative table's rows too


@pytest.mark.parametrize(
    "labels, overrides",
    [
        (torch.tensor([2, -1]), {}),  # rows labelled below 0 are left out
        (torch.tensor([-1, -1]), {}),  # no labelled row: a zero loss
        (torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]), {}),  # a distribution per row
        (torch.tensor([0.5, -1.5]), {"num_labels": 1}),  # regression
        (torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), {"problem_type": "multi_label_classification"}),
        (torch.tensor([1, 2]), {"problem_type": "single_label_classification"}),
    ],
    ids=["ignored-rows", "no-labels", "soft-labels", "regression", "multi-label", "single-label"],
)
@torch.inference_mode()
def test_sequence_classification_losses_follow_the_reference(labels, overrides, tmp_path):
    TestDebertaV2.reference("DebertaV2ForSequenceClassification", "c2p", **overrides).save_pretrained(tmp_path)
    reference = transformers.DebertaV2ForSequenceClassification.from_pretrained(tmp_path).eval()
    model = openformers.DebertaV2ForSequenceClassification.from_pretrained(tmp_path)
    inputs = {**TestDebertaV2.inputs("DebertaV2ForSequenceClassification", "c2p"), "labels": labels}
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))
    assert model.config.problem_type == overrides.get("problem_type")  # DeBERTa does not record the rule it used


def test_auto_classes_pick_the_reference_classes(tmp_path):
    TestDebertaV2.reference("DebertaV2ForMaskedLM", "c2p").save_pretrained(tmp_path)
    assert type(openformers.AutoModelForPreTraining.from_pretrained(tmp_path)).__name__ == "DebertaV2ForMaskedLM"
    assert type(openformers.AutoConfig.from_pretrained(tmp_path)).__name__ == "DebertaV2Config"
    with pytest.raises(ValueError, match="causal-lm"):
        openformers.AutoModelForCausalLM.from_pretrained(tmp_path)


def test_config_reads_and_writes_what_the_reference_does(tmp_path):
    config = configs.DebertaV2Config(**TINY, **VARIANTS["v3"])
    assert config.pos_att_type == ["p2c", "c2p"] and config.relative_span == 8
    assert (config.embedding_size, config.attention_head_size, config.pooler_hidden_size) == (32, 8, 32)
    config.save_pretrained(tmp_path)
    theirs = transformers.DebertaV2Config.from_pretrained(tmp_path)
    for key in ("pos_att_type", "share_att_key", "position_buckets", "norm_rel_ebd", "position_biased_input"):
        assert getattr(theirs, key) == getattr(config, key), key
    transformers.DebertaV2Config(**TINY, **VARIANTS["v2"]).save_pretrained(tmp_path)
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    assert (ours.conv_kernel_size, ours.conv_act, ours.embedding_size, ours.type_vocab_size) == (3, "gelu", 24, 2)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "deberta-v2"


@pytest.mark.parametrize(
    "field, value",
    [("pos_att_type", "c2p|p2p"), ("norm_rel_ebd", "batch_norm"), ("conv_kernel_size", 4), ("conv_act", "mish"),
     ("hidden_size", 30), ("pooler_hidden_size", 64), ("cls_dropout", 1.5)],
)
def test_config_refuses_what_the_model_cannot_run(field, value):
    with pytest.raises(ValueError, match=field):
        configs.DebertaV2Config(**{**TINY, field: value})


def test_heads_take_their_dropouts_from_the_reference_fields():
    config = configs.DebertaV2Config(**TINY, hidden_dropout_prob=0.3, cls_dropout=0.4, pooler_dropout=0.2)
    assert openformers.DebertaV2ForTokenClassification(config).dropout.p == 0.3
    classifier = openformers.DebertaV2ForSequenceClassification(config)
    assert (classifier.dropout.p, classifier.pooler.dropout.p) == (0.4, 0.2)
    no_cls_dropout = configs.DebertaV2Config(**TINY, hidden_dropout_prob=0.3)
    assert openformers.DebertaV2ForMultipleChoice(no_cls_dropout).dropout.p == 0.3


def test_new_models_are_initialized_as_the_reference_initializes_them():
    """Weights drawn from normal(0, initializer_range), the convolution's too; biases zero, norms one."""
    config = configs.DebertaV2Config(**TINY, **VARIANTS["v2"], initializer_range=0.05)
    assert_initialized_as_the_reference(openformers.DebertaV2ForSequenceClassification(config), 0.05)


def test_legacy_masked_lm_ties_its_decoder_to_the_embeddings_and_its_bias():
    model = openformers.DebertaV2ForMaskedLM(configs.DebertaV2Config(**TINY))
    predictions = model.cls.predictions
    assert predictions.decoder.weight is model.deberta.embeddings.word_embeddings.weight
    assert predictions.decoder.bias is predictions.bias
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"])


@pytest.mark.parametrize("variant", ["c2p", "v3"], ids=["legacy-head", "lm_predictions-head"])
@torch.inference_mode()
def test_resizing_the_vocabulary_keeps_the_masked_lm_whole(variant, tmp_path):
    """New tokens get a zero bias (the legacy decoder's stays the head's `bias`), old tokens keep their logits, and
    the resized model saves what the reference loads."""
    reference = TestDebertaV2.reference("DebertaV2ForMaskedLM", variant)
    reference.save_pretrained(tmp_path / "before")
    model = openformers.DebertaV2ForMaskedLM.from_pretrained(tmp_path / "before")
    old_ids = torch.tensor([[5, 6, 7, 90, 95]])
    before = model(old_ids).logits
    model.resize_token_embeddings(TINY["vocab_size"] + 11)
    head = model.cls.predictions if variant == "c2p" else model.lm_predictions.lm_head
    if variant == "c2p":
        assert head.decoder.bias is head.bias and head.decoder.weight is model.get_input_embeddings().weight
    assert head.bias.shape == (TINY["vocab_size"] + 11,) and not head.bias[TINY["vocab_size"]:].any()
    torch.testing.assert_close(model(old_ids).logits[..., : TINY["vocab_size"]], before)
    model.save_pretrained(tmp_path / "after")
    theirs = load_quietly(transformers.DebertaV2ForMaskedLM.from_pretrained, tmp_path / "after").eval()
    ids = torch.tensor([[5, 6, 105, 90, 108]])
    torch.testing.assert_close(model(ids).logits, theirs(ids).logits, atol=1e-5, rtol=1e-5)


# Pipelines: tiny random v3-like heads with a DebertaV2Tokenizer from an spm.model trained here (no tokenizer.json).

PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("DebertaV2ForMaskedLM", ["Paris is the [MASK] of France.", "I [MASK] you."]),
    "text-classification": ("DebertaV2ForSequenceClassification", ["I love this movie.", "Terrible weather!"]),
    "token-classification": ("DebertaV2ForTokenClassification", "Sarah Connor lives in Los Angeles."),
}


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory):
    sentencepiece = pytest.importorskip("sentencepiece")
    from test_tokenizers_corpus import CORPUS

    folder = tmp_path_factory.mktemp("deberta-spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([doc for doc in CORPUS[::8] if doc.isascii()]), model_prefix=str(folder / "spm"),
        vocab_size=400, minloglevel=2, model_type="unigram", character_coverage=1.0, pad_id=0, bos_id=1, eos_id=2,
        unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
    )  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}))
    return folder


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_match_reference(task, spm_folder, tmp_path):
    for path in spm_folder.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    name, inputs = PIPELINE_HEADS[task]
    TestDebertaV2.reference(name, "v3", vocab_size=401).save_pretrained(tmp_path)  # the pieces and [MASK]
    assert_pipeline_matches(task, tmp_path, inputs)


@pytest.mark.parametrize("multi_label", [False, True], ids=["one-label", "multi-label"])
def test_zero_shot_classification_matches_reference(multi_label, spm_folder, tmp_path):
    """DeBERTa-v3 NLI models are the common zero-shot classifiers: the pipeline's labels and scores are the reference's."""
    for path in spm_folder.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    model = TestDebertaV2.reference("DebertaV2ForSequenceClassification", "v3", vocab_size=401, id2label=labels,
                                    label2id={label: i for i, label in labels.items()})
    with torch.no_grad():
        model.classifier.weight.mul_(200)  # scores far enough apart to order the labels
    model.save_pretrained(tmp_path)
    inputs = (["I love this movie.", "The stock market fell."], ["sports", "finance", "film"])
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline("zero-shot-classification", model=str(tmp_path))(*inputs,
                                                                                        multi_label=multi_label)
    got = openformers.pipeline("zero-shot-classification", model=tmp_path)(*inputs, multi_label=multi_label)
    assert_records_close(got, expected)
    assert len(set(expected[0]["scores"])) == 3


@pytest.mark.parametrize("aggregation", ["simple", "first", "average", "max"])
def test_token_classification_aggregation_matches_reference(aggregation, spm_folder, tmp_path):
    """Words are the reference's: pieces starting with "▁" start a word, and the entity groups and scores follow."""
    for path in spm_folder.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    model = TestDebertaV2.reference("DebertaV2ForTokenClassification", "v3", vocab_size=401, num_labels=5,
                                    id2label=labels, label2id={label: i for i, label in labels.items()})
    with torch.no_grad():
        model.classifier.weight.mul_(100)  # labels that change along the text
    model.save_pretrained(tmp_path)
    text = "Sarah Connor lives in Los Angeles, California."
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline("token-classification", model=str(tmp_path),
                                         aggregation_strategy=aggregation)(text)
        got = openformers.pipeline("token-classification", model=tmp_path, aggregation_strategy=aggregation)(text)
    assert_records_close(got, expected)
    assert len({record["entity_group"] for record in expected}) > 1
