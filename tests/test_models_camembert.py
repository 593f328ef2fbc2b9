"""CamemBERT against the reference: a tiny random model made by the reference for every head loads with no warning,
gives the reference's outputs and losses on a padded batch and each row alone, saves what the reference loads back,
and comes back from the Auto classes as the reference's class; the causal LM generates the reference's tokens. The
tokenizer (a SentencePiece model trained in the test, numbered as fairseq numbered CamemBERT's) gives the reference's
ids from sentencepiece.bpe.model alone and the reference's ids, offsets and text from the tokenizer.json the reference
writes."""

import shutil
import warnings

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import assert_pipeline_matches, assert_saved_both_ways
from encoder_suite import RobertaLayoutTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)
PAD = 1


class TestCamembert(RobertaLayoutTests):
    REFERENCE_CONFIG = "CamembertConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "CamembertModel": "AutoModel",
        "CamembertForMaskedLM": "AutoModelForMaskedLM",
        "CamembertForCausalLM": "AutoModelForCausalLM",
        "CamembertForSequenceClassification": "AutoModelForSequenceClassification",
        "CamembertForTokenClassification": "AutoModelForTokenClassification",
        "CamembertForQuestionAnswering": "AutoModelForQuestionAnswering",
        "CamembertForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("CamembertForSequenceClassification", "CamembertForMultipleChoice")

    @torch.inference_mode()
    def test_every_head_matches_reference_on_a_padded_batch(self, head, tiny):
        """Over RoBERTa's layout (base_model_prefix "roberta"), with CamemBERT's config read back."""
        super().test_every_head_matches_reference_on_a_padded_batch(head, tiny)
        _, folder, _, model = tiny
        assert model.base_model_prefix == "roberta"
        assert type(openformers.AutoConfig.from_pretrained(folder)) is configs.CamembertConfig


@pytest.mark.parametrize("options", [{}, {"num_beams": 3}], ids=["greedy", "beams"])
@torch.inference_mode()
def test_causal_lm_generates_the_reference_tokens(tmp_path, options):
    reference = TestCamembert.reference("CamembertForCausalLM")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    prompt = torch.tensor([[5, 8, 9, 10]])
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=PAD, eos_token_id=None, **options)
    torch.testing.assert_close(model.generate(prompt, **settings), reference.generate(prompt, **settings))


def test_config_defaults_are_the_reference_ones():
    ours, theirs = configs.CamembertConfig(), transformers.CamembertConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "pad_token_id", "bos_token_id", "eos_token_id", "layer_norm_eps",
                 "max_position_embeddings", "type_vocab_size", "initializer_range", "hidden_dropout_prob"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert openformers.AutoConfig.for_model("camembert").model_type == "camembert"
    with pytest.raises(ValueError, match="num_attention_heads"):
        configs.CamembertConfig(hidden_size=30, num_attention_heads=4)


# The tokenizer: CamemBERT's sentencepiece.bpe.model is a SentencePiece unigram model whose ids fairseq shifted:
# <s>NOTUSED <pad> </s>NOTUSED <unk> <unk>NOTUSED first, then the model's pieces but its <unk> (<s> is 5, </s> 6),
# <mask> last. The Hub's folders hold it and the tokenizer.json the reference converts it to.

CORPUS = [
    "Le chat dort sur le canapé.", "Paris est la capitale de la France.", "J'adore ce film, il est magnifique !",
    "Il pleut aujourd'hui, quel temps terrible.", "Les enfants jouent dans le jardin.", "Où est la gare ?",
] * 40
TEXTS = ["Le chat dort.", "  Paris  est\tla capitale", "élève ÉCOLE Œuvre", "Paris est la <mask> de la France.",
         "Hello", "<s>NOTUSED x </s>", "a\u0301 \ufb01 \u2460", ""]


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory):
    """A CamemBERT folder with only its SentencePiece model, as the oldest checkpoints have."""
    sentencepiece = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("camembert-spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_prefix=str(folder / "sentencepiece.bpe"), model_type="unigram",
        vocab_size=55, minloglevel=2,
    )
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "CamembertTokenizer"}')
    (folder / "config.json").write_text('{"model_type": "camembert"}')
    return folder


def _reference_tokenizer(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def json_folder(spm_folder, tmp_path_factory):
    """The tokenizer.json and tokenizer_config.json the reference writes for that model."""
    folder = tmp_path_factory.mktemp("camembert-json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _reference_tokenizer(spm_folder).save_pretrained(folder)
    assert (folder / "tokenizer.json").exists()
    return folder


def test_tokenizer_from_the_sentencepiece_model_gives_the_references_ids(spm_folder):
    import sentencepiece

    reference, ours = _reference_tokenizer(spm_folder), openformers.AutoTokenizer.from_pretrained(spm_folder)
    assert type(ours).__name__ == type(reference).__name__ == "CamembertTokenizer"
    assert len(ours) == len(reference) and ours.special_tokens_map == reference.special_tokens_map
    assert ours.convert_ids_to_tokens(list(range(7))) == [
        "<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>", "<unk>NOTUSED", "<s>", "</s>"]
    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_folder / "sentencepiece.bpe.model"))
    for text in TEXTS:
        expected = reference(text)["input_ids"]
        assert ours(text)["input_ids"] == expected, text
        if "<" not in text:  # sentencepiece's own ids, fairseq's shift applied (its <unk>, 0, is 3 here)
            assert expected[1:-1] == [i + 4 if i else 3 for i in processor.encode(text)], text
    assert ours("une paire", "de textes")["input_ids"] == reference("une paire", "de textes")["input_ids"]


def test_tokenizer_from_the_references_tokenizer_json_matches_it(json_folder):
    reference, ours = _reference_tokenizer(json_folder), openformers.AutoTokenizer.from_pretrained(json_folder)
    assert type(ours).__name__ == type(reference).__name__ == "CamembertTokenizer"
    assert ours.special_tokens_map == reference.special_tokens_map
    assert ours.all_special_tokens == reference.all_special_tokens
    for text in TEXTS + CORPUS[:6]:
        expected = reference(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"] and got["offset_mapping"] == expected["offset_mapping"], text
        for skip in (False, True):
            assert ours.decode(got["input_ids"], skip_special_tokens=skip) == reference.decode(
                expected["input_ids"], skip_special_tokens=skip), text
    got, expected = ours(TEXTS[:4], TEXTS[4:8], padding=True), reference(TEXTS[:4], TEXTS[4:8], padding=True)
    assert got["input_ids"] == expected["input_ids"] and got["attention_mask"] == expected["attention_mask"]


@pytest.mark.parametrize("source", ["spm_folder", "json_folder"])
def test_tokenizer_saves_what_the_reference_reads(source, request, tmp_path):
    folder = request.getfixturevalue(source)
    assert_saved_both_ways(openformers.AutoTokenizer.from_pretrained(folder), _reference_tokenizer(folder), CORPUS[:6],
                           tmp_path, "CamembertTokenizer")


PIPELINE_HEADS = {  # task -> (the reference's class, its inputs); sentence-transformers models embed with the base
    "fill-mask": ("CamembertForMaskedLM", ["Paris est la <mask> de la France.", "Le <mask> dort."]),
    "feature-extraction": ("CamembertModel", ["Le chat dort sur le canapé.", "Où est la gare ?"]),
    "text-classification": ("CamembertForSequenceClassification", ["J'adore ce film.", "Quel temps terrible."]),
}


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_the_reference_tokenizer_match_reference(task, json_folder, tmp_path):
    shutil.copytree(json_folder, tmp_path, dirs_exist_ok=True)
    vocab_size = len(openformers.AutoTokenizer.from_pretrained(tmp_path))
    name, inputs = PIPELINE_HEADS[task]
    TestCamembert.reference(name, vocab_size=vocab_size).save_pretrained(tmp_path)
    assert_pipeline_matches(task, tmp_path, inputs)
