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

from encoder_parity import assert_records_close
from encoder_suite import RobertaLayoutTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)
PAD = 1


class TestXLMRoberta(RobertaLayoutTests):
    REFERENCE_CONFIG = "XLMRobertaConfig"
    TINY = TINY
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


@torch.inference_mode()
def test_left_padding_moves_no_real_token(tmp_path):
    """Positions count real tokens only (RoBERTa's rule), so a left-padded row encodes as it does alone."""
    reference = TestXLMRoberta.reference("XLMRobertaModel")
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
    reference = TestXLMRoberta.reference("XLMRobertaForCausalLM")
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
    TestXLMRoberta.reference(name, vocab_size=len(tokenizer), max_position_embeddings=64).save_pretrained(tmp_path)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline(task, model=str(tmp_path))(inputs)
    assert_records_close(openformers.pipeline(task, model=tmp_path)(inputs), expected)
