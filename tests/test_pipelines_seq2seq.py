"""The encoder-decoder pipelines (text2text-generation, summarization, translation) on a tiny BART, against the
reference's model and tokenizer loaded from the same folder. The reference 5.x has no seq2seq pipelines: the
expected records are what the reference 4.x's pipelines return, the reference's generate (with those pipelines'
generation defaults, max_new_tokens=256 and num_beams=4, where the model does not set them) decoded without special
tokens."""

import json
import warnings

import pytest
import torch

import openformers
from openformers.pipelines import SummarizationPipeline, Text2TextGenerationPipeline, TranslationPipeline

from seq2seq_models import tiny_bart_folder

transformers = pytest.importorskip("transformers")

TEXTS = ["The cat sat on the mat.", "Hello world! Don't panic."]
RECORD = {"text2text-generation": "generated_text", "summarization": "summary_text",
          "translation_en_to_fr": "translation_text"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_bart_folder(tmp_path_factory.mktemp("tiny_bart"))


@pytest.fixture(scope="module")
def reference(folder):
    return transformers.AutoTokenizer.from_pretrained(folder), transformers.AutoModelForSeq2SeqLM.from_pretrained(folder)


def _expected(reference, text, prefix="", **generate_options):
    tokenizer, model = reference
    ids = model.generate(**tokenizer(prefix + text, return_tensors="pt"), **generate_options)
    return tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False), ids


@pytest.mark.parametrize("task", list(RECORD))
def test_each_task_gives_the_reference_records(folder, reference, task):
    pipe = openformers.pipeline(task, model=folder, max_new_tokens=8)
    assert type(pipe) is {"text2text-generation": Text2TextGenerationPipeline, "summarization": SummarizationPipeline,
                          "translation_en_to_fr": TranslationPipeline}[task]
    for text in TEXTS:
        texts, _ = _expected(reference, text, max_new_tokens=8, num_beams=4)
        assert pipe(text) == [{RECORD[task]: texts[0]}]
    # a list of texts: one record per text; with several sequences each, a list of records per text
    assert pipe(TEXTS) == [pipe(text)[0] for text in TEXTS]
    several = pipe(TEXTS, num_return_sequences=2)
    for text, records in zip(TEXTS, several):
        texts, _ = _expected(reference, text, max_new_tokens=8, num_beams=4, num_return_sequences=2)
        assert records == [{RECORD[task]: t} for t in texts]


def test_the_default_generation_is_256_new_tokens_with_4_beams(folder, reference):
    summarizer = openformers.pipeline("summarization", model=folder)
    assert (summarizer.generation_config.max_new_tokens, summarizer.generation_config.num_beams) == (256, 4)
    texts, _ = _expected(reference, TEXTS[0], max_new_tokens=256, num_beams=4)
    assert summarizer(TEXTS[0]) == [{"summary_text": texts[0]}]


def test_call_options_and_token_ids(folder, reference):
    pipe = openformers.pipeline("text2text-generation", model=folder, max_new_tokens=6)
    texts, ids = _expected(reference, TEXTS[1], max_new_tokens=6, num_beams=1, no_repeat_ngram_size=2)
    assert pipe(TEXTS[1], num_beams=1, no_repeat_ngram_size=2) == [{"generated_text": texts[0]}]
    records = pipe(TEXTS[1], num_beams=1, no_repeat_ngram_size=2, return_tensors=True)
    assert list(records[0]) == ["generated_token_ids"] and torch.equal(records[0]["generated_token_ids"], ids[0])
    stop = pipe.tokenizer.decode(ids[0, 1])  # the first generated token: its id becomes the EOS id
    stopped = pipe(TEXTS[1], num_beams=1, no_repeat_ngram_size=2, stop_sequence=stop, return_tensors=True)
    assert stopped[0]["generated_token_ids"].tolist() == ids[0, :2].tolist()
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        openformers.pipeline("summarization", model=folder, max_new_tokenz=4)


def test_task_specific_params_and_the_models_max_length(tmp_path, reference):
    folder = tiny_bart_folder(tmp_path, task_specific_params={
        "summarization": {"prefix": "summarize: ", "max_length": 12, "num_beams": 2, "no_repeat_ngram_size": 2},
        "translation_en_to_de": {"prefix": "translate English to German: ", "max_length": 9},
    })
    tokenizer, model = transformers.AutoTokenizer.from_pretrained(folder), \
        transformers.AutoModelForSeq2SeqLM.from_pretrained(folder)
    summarizer = openformers.pipeline("summarization", model=folder)
    # the task's params come after the default length: max_new_tokens=256 stays, and wins, as in the reference 4.x
    config = summarizer.generation_config
    assert summarizer.prefix == "summarize: " and (config.max_new_tokens, config.max_length) == (256, 12)
    texts, _ = _expected((tokenizer, model), TEXTS[0], "summarize: ", max_new_tokens=256, max_length=12,
                         num_beams=2, no_repeat_ngram_size=2)
    assert summarizer(TEXTS[0]) == [{"summary_text": texts[0]}]
    with pytest.warns(UserWarning, match="defaulting to \"translation_en_to_de\""):
        translator = openformers.pipeline("translation", model=folder)
    assert translator.task == "translation_en_to_de" and translator.prefix == "translate English to German: "
    texts, _ = _expected((tokenizer, model), TEXTS[1], "translate English to German: ", max_new_tokens=256,
                         max_length=9, num_beams=4)
    assert translator(TEXTS[1]) == [{"translation_text": texts[0]}]


def test_a_max_length_in_the_models_generation_config_beats_the_default_length(tmp_path):
    folder = tiny_bart_folder(tmp_path)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "max_length": 7, "num_beams": 2}))
    pipe = openformers.pipeline("text2text-generation", model=folder)
    # max_length is the model's; num_beams stays the pipeline's 4 (the reference 4.x lets the model fill only the
    # options the pipeline has no default for)
    assert (pipe.generation_config.max_new_tokens, pipe.generation_config.max_length) == (None, 7)
    assert pipe.generation_config.num_beams == 4
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    texts, _ = _expected((tokenizer, model), TEXTS[0], max_length=7, num_beams=4)
    assert pipe(TEXTS[0]) == [{"generated_text": texts[0]}]


def test_a_model_that_is_not_an_encoder_decoder_is_named(folder):
    decoder = openformers.BartForCausalLM(openformers.BartConfig(vocab_size=320, d_model=16, decoder_layers=1,
                                                                 decoder_attention_heads=2, decoder_ffn_dim=8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SummarizationPipeline(decoder, openformers.AutoTokenizer.from_pretrained(folder))
    assert any("BartForCausalLM is not supported for summarization" in str(w.message) for w in caught)
    assert openformers.pipeline(model=folder).task == "text2text-generation"  # BartForConditionalGeneration's


def test_a_multilingual_tokenizer_builds_the_translation_inputs_with_the_tasks_languages(folder, reference):
    """Tokenizers of many languages (mBART's, NLLB's in the reference) set the languages themselves."""
    pipe = openformers.pipeline("translation_en_to_ro", model=folder, max_new_tokens=5, num_beams=1)
    seen = []

    def build(text, return_tensors, truncation, src_lang, tgt_lang):
        seen.append((src_lang, tgt_lang, truncation))
        return pipe.tokenizer(text, return_tensors=return_tensors)

    pipe.tokenizer._build_translation_inputs = build
    texts, _ = _expected(reference, TEXTS[0], max_new_tokens=5, num_beams=1)
    assert pipe(TEXTS[0]) == [{"translation_text": texts[0]}]
    pipe(TEXTS[0], src_lang="de", tgt_lang="fr", truncation=True)
    assert seen == [("en", "ro", False), ("de", "fr", True)]


def test_a_generator_of_texts_gives_an_iterator_of_each_texts_records(folder):
    pipe = openformers.pipeline("summarization", model=folder, max_new_tokens=4, num_beams=1)
    results = pipe(text for text in TEXTS)
    assert not isinstance(results, list)
    assert list(results) == [pipe(text) for text in TEXTS]
