"""XLM-RoBERTa against the reference: a tiny random model made by the reference for every head loads with no
warning, gives the reference's outputs and losses on a padded batch and each row alone, saves what the
reference loads back, and comes back from the Auto classes as the reference's class; the causal LM generates
the reference's tokens."""

import shutil
import warnings

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import (
    assert_head_saved_both_ways,
    assert_padded_row_gives_what_it_gives_alone,
    padded_head_inputs,
    assert_records_close,
    assert_same,
    load_quietly,
    outputs_of,
)

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)
PAD = 1
HEADS = {  # the reference's class -> the Auto class that picks it
    "XLMRobertaModel": "AutoModel",
    "XLMRobertaForMaskedLM": "AutoModelForMaskedLM",
    "XLMRobertaForCausalLM": "AutoModelForCausalLM",
    "XLMRobertaForSequenceClassification": "AutoModelForSequenceClassification",
    "XLMRobertaForTokenClassification": "AutoModelForTokenClassification",
    "XLMRobertaForQuestionAnswering": "AutoModelForQuestionAnswering",
    "XLMRobertaForMultipleChoice": "AutoModelForMultipleChoice",
}
PER_SEQUENCE = ("XLMRobertaForSequenceClassification", "XLMRobertaForMultipleChoice")


def _reference(name, **overrides):
    torch.manual_seed(0)
    num_labels = 2 if name == "XLMRobertaForQuestionAnswering" else 3  # the reference's QA head has num_labels outputs
    config = transformers.XLMRobertaConfig(
        **{**TINY, "num_labels": num_labels, "is_decoder": name == "XLMRobertaForCausalLM", **overrides}
    )
    model = getattr(transformers, name)(config).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias"):  # the reference initializes biases to zero: make them count
                parameter.normal_(std=0.1)
    return model


def _inputs(name) -> dict:
    return padded_head_inputs(name, TINY["vocab_size"], PAD)


@pytest.fixture(scope="module", params=list(HEADS))
def tiny(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name)
    reference.save_pretrained(folder)
    return name, folder, reference, load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    assert type(model.base_model).__name__ == "XLMRobertaModel"
    inputs = _inputs(name)
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@torch.inference_mode()
def test_each_padded_row_gives_what_it_gives_alone(tiny):
    name, _, _, model = tiny
    assert_padded_row_gives_what_it_gives_alone(model, _inputs(name), name in PER_SEQUENCE)


@torch.inference_mode()
def test_every_head_saves_and_loads_in_both_directions(tiny, tmp_path):
    name, _, reference, model = tiny
    assert_head_saved_both_ways(model, reference, HEADS[name], _inputs(name), tmp_path)


@torch.inference_mode()
def test_left_padding_moves_no_real_token(tmp_path):
    """Positions count real tokens only (RoBERTa's rule), so a left-padded row encodes as it does alone."""
    reference = _reference("XLMRobertaModel")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModel.from_pretrained(tmp_path)
    ids = torch.tensor([[PAD, PAD, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (ids != PAD).long()
    ours = model(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, reference(ids, attention_mask=mask).last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[0, 2:], model(ids[:1, 2:]).last_hidden_state[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [{}, {"num_beams": 3}], ids=["greedy", "beams"])
@torch.inference_mode()
def test_causal_lm_generates_the_reference_tokens(tmp_path, options):
    reference = _reference("XLMRobertaForCausalLM")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    prompt = torch.tensor([[0, 5, 6, 7]])
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=PAD, eos_token_id=None, **options)
    torch.testing.assert_close(model.generate(prompt, **settings), reference.generate(prompt, **settings))


def test_config_defaults_are_the_reference_ones():
    ours, theirs = configs.XLMRobertaConfig(), transformers.XLMRobertaConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "pad_token_id", "bos_token_id", "eos_token_id",
                 "layer_norm_eps", "max_position_embeddings", "type_vocab_size"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert openformers.AutoConfig.for_model("xlm-roberta").model_type == "xlm-roberta"


# End to end: the reference's XLM-R tokenizer (a SentencePiece unigram model, saved as tokenizer.json) with
# tiny random heads, through the pipelines.

CORPUS = [
    "The cat sat on the mat.", "Paris is the capital of France.", "I love this movie, it is wonderful!",
    "Terrible weather today, rain and wind.", "Les chats dorment sur le canapé.", "Der Hund spielt im Garten.",
] * 40
PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("XLMRobertaForMaskedLM", ["Paris is the <mask> of France.", "The <mask> sat on the mat."]),
    "text-classification": ("XLMRobertaForSequenceClassification", ["I love this movie.", "Der Hund spielt."]),
    "token-classification": ("XLMRobertaForTokenClassification", "Les chats dorment sur le canapé."),
}


@pytest.fixture(scope="module")
def xlmr_tokenizer_folder(tmp_path_factory):
    """A folder holding the reference's XLMRobertaTokenizer, built from a small SentencePiece unigram model."""
    sentencepiece = pytest.importorskip("sentencepiece")
    source = tmp_path_factory.mktemp("spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_prefix=str(source / "sentencepiece.bpe"), model_type="unigram",
        vocab_size=60, minloglevel=2,
    )
    folder = tmp_path_factory.mktemp("xlmr-tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.XLMRobertaTokenizer(vocab_file=str(source / "sentencepiece.bpe.model")).save_pretrained(folder)
    assert (folder / "tokenizer.json").exists()
    return folder


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_the_reference_tokenizer_match_reference(task, xlmr_tokenizer_folder, tmp_path):
    shutil.copytree(xlmr_tokenizer_folder, tmp_path, dirs_exist_ok=True)
    tokenizer = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(tokenizer).__name__ == "XLMRobertaTokenizer"
    name, inputs = PIPELINE_HEADS[task]
    _reference(name, vocab_size=len(tokenizer), max_position_embeddings=64).save_pretrained(tmp_path)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline(task, model=str(tmp_path))(inputs)
    assert_records_close(openformers.pipeline(task, model=tmp_path)(inputs), expected)
