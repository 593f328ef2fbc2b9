"""ALBERT against the reference: a tiny random model made by the reference for every head (layers shared in groups,
factorized embeddings) loads with no warning, gives the reference's outputs and losses on a padded batch and each
row alone, saves what the reference loads back, and comes back from the Auto classes as the reference's class."""

import shutil
import warnings

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import (
    assert_corpus_parity,
    assert_pipeline_matches,
    assert_same,
    assert_saved_both_ways,
    load_quietly,
    outputs_of,
)
from encoder_suite import EncoderFamilyTests

transformers = pytest.importorskip("transformers")

# Three steps through two groups of two layers: steps 0 and 1 share group 0, step 2 runs group 1.
TINY = dict(
    vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_hidden_groups=2, inner_group_num=2,
    num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
)


class TestAlbert(EncoderFamilyTests):
    REFERENCE_CONFIG = "AlbertConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "AlbertModel": "AutoModel",
        "AlbertForPreTraining": "AutoModelForPreTraining",
        "AlbertForMaskedLM": "AutoModelForMaskedLM",
        "AlbertForSequenceClassification": "AutoModelForSequenceClassification",
        "AlbertForTokenClassification": "AutoModelForTokenClassification",
        "AlbertForQuestionAnswering": "AutoModelForQuestionAnswering",
        "AlbertForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("AlbertForSequenceClassification", "AlbertForMultipleChoice")
    PER_SEQUENCE_OUTPUTS = ("pooler_output", "sop_logits")
    LOWEST_ID = 5
    TOKEN_TYPES = True
    TRAINING_OVERRIDES = dict(classifier_dropout_prob=0.0)

    @classmethod
    def num_labels(cls, name):
        return 2 if name in ("AlbertForQuestionAnswering", "AlbertForPreTraining") else 3

    @classmethod
    def inputs(cls, name, variant=None):
        if name == "AlbertForPreTraining":  # the masked LM's labels, and whether each row's segments are in order
            return {**super().inputs("AlbertForMaskedLM"), "sentence_order_label": torch.tensor([1, 0])}
        return super().inputs(name)

    @classmethod
    def layers_run(cls):
        """One hidden state per layer step (a shared layer counts each time it runs), after the embeddings'
        projection."""
        return TINY["num_hidden_layers"] * TINY["inner_group_num"]

    @classmethod
    def training_head(cls):
        return "AlbertForPreTraining"  # shared layers' gradients summed over the steps that run them

    def test_an_untied_decoder_keeps_its_own_weights_and_bias_both_ways(self, tmp_path):
        """The decoder predicts with its own bias; predictions.bias is kept, unused."""
        super().test_an_untied_decoder_keeps_its_own_weights_and_bias_both_ways(tmp_path)
        model = openformers.AlbertForMaskedLM.from_pretrained(tmp_path / "theirs")
        assert model.predictions.decoder.bias is not model.predictions.bias


@pytest.mark.parametrize("depth, groups", [(4, 4), (5, 2), (2, 1)])
@torch.inference_mode()
def test_layer_groups_are_shared_across_depth_as_the_reference(tmp_path, depth, groups):
    tiny = TestAlbert.reference("AlbertModel", num_hidden_layers=depth, num_hidden_groups=groups, inner_group_num=1)
    tiny.save_pretrained(tmp_path)
    reference = transformers.AlbertModel.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.AlbertModel.from_pretrained, tmp_path)
    assert len(model.encoder.albert_layer_groups) == groups
    inputs = TestAlbert.inputs("AlbertModel")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


def test_masked_lm_from_config_ties_the_decoder_to_the_embeddings():
    model = openformers.AutoModelForMaskedLM.from_config(configs.AlbertConfig(**TINY))
    assert model.predictions.decoder.weight is model.albert.embeddings.word_embeddings.weight
    assert model.predictions.decoder.bias is model.predictions.bias
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"])
    assert model.albert.pooler is None and not model.predictions.bias.any()


def test_resizing_the_vocabulary_resizes_the_tied_decoder_and_its_bias():
    model = openformers.AlbertForMaskedLM(configs.AlbertConfig(**TINY))
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    assert model.predictions.decoder.weight is model.albert.embeddings.word_embeddings.weight
    assert model.predictions.decoder.bias is model.predictions.bias
    assert model.predictions.bias.shape == (TINY["vocab_size"] + 5,)
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 5)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_hidden_groups"):
        configs.AlbertConfig(num_hidden_groups=0)
    with pytest.raises(ValueError, match="hidden_size"):
        configs.AlbertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        configs.AlbertConfig(hidden_act="mish")
    config = configs.AlbertConfig()
    reference = transformers.AlbertConfig()
    for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_hidden_groups",
                 "num_attention_heads", "intermediate_size", "inner_group_num", "hidden_act", "hidden_dropout_prob",
                 "classifier_dropout_prob", "pad_token_id", "bos_token_id", "eos_token_id", "layer_norm_eps"):
        assert getattr(config, name) == getattr(reference, name), name


def test_dropouts_follow_the_reference_fields():
    config = configs.AlbertConfig(**TINY, hidden_dropout_prob=0.2, classifier_dropout_prob=0.3)
    for head in ("AlbertForSequenceClassification", "AlbertForTokenClassification", "AlbertForMultipleChoice"):
        assert getattr(openformers, head)(config).dropout.p == 0.3
    assert openformers.AlbertForPreTraining(config).sop_classifier.dropout.p == 0.3
    config = configs.AlbertConfig(**TINY, hidden_dropout_prob=0.2, classifier_dropout_prob=None)
    assert openformers.AlbertForTokenClassification(config).dropout.p == 0.2


# AlbertTokenizer: a SentencePiece unigram model trained here on a sample of the project's corpus (with its NFKC
# rules, which the reference keeps as a Precompiled normalizer), read from spiece.model and from the tokenizer.json
# the reference writes, gives the reference's ids on the corpus (tests/test_tokenizers_corpus.py), offsets and decoded
# text on a part of it.


@pytest.fixture(scope="module")
def albert_tokenizer_folders(tmp_path_factory):
    sentencepiece = pytest.importorskip("sentencepiece")
    from test_tokenizers_corpus import CORPUS

    source = tmp_path_factory.mktemp("spiece")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS[::20]), model_prefix=str(source / "spiece"), model_type="unigram",
        vocab_size=1000, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        minloglevel=2,
    )
    saved = tmp_path_factory.mktemp("albert-tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.AlbertTokenizer.from_pretrained(source).save_pretrained(saved)
    assert (saved / "tokenizer.json").exists() and not (saved / "spiece.model").exists()
    return source, saved


@pytest.mark.parametrize("files, every", [("tokenizer.json", 1), ("spiece.model", 4)])
def test_tokenizer_matches_the_reference_on_the_corpus(albert_tokenizer_folders, files, every):
    folder = albert_tokenizer_folders[0 if files == "spiece.model" else 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AlbertTokenizer.from_pretrained(folder)
    ours = (openformers.AutoTokenizer if files == "tokenizer.json" else openformers.AlbertTokenizer).from_pretrained(
        folder
    )
    assert type(ours).__name__ == "AlbertTokenizer" and ours.model_input_names == ["input_ids", "attention_mask"]
    assert_corpus_parity(ours, reference, every)


PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("AlbertForMaskedLM", ["Paris is the [MASK] of France.", "The [MASK] sat on the mat."]),
    "text-classification": ("AlbertForSequenceClassification", ["I love this movie.", "Der Hund spielt."]),
    "token-classification": ("AlbertForTokenClassification", "Les chats dorment sur le canapé."),
}


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_the_reference_tokenizer_match_reference(task, albert_tokenizer_folders, tmp_path):
    shutil.copytree(albert_tokenizer_folders[1], tmp_path, dirs_exist_ok=True)
    name, inputs = PIPELINE_HEADS[task]
    vocab_size = len(openformers.AutoTokenizer.from_pretrained(tmp_path))
    TestAlbert.reference(name, vocab_size=vocab_size).save_pretrained(tmp_path)
    assert_pipeline_matches(task, tmp_path, inputs)


@pytest.mark.parametrize("options", [{}, {"keep_accents": True, "do_lower_case": False}, {"add_prefix_space": False}],
                         ids=["defaults", "cased-with-accents", "no-prefix-space"])
def test_tokenizer_options_and_saving_both_ways(albert_tokenizer_folders, options, tmp_path):
    """The options rebuild the normalizer and pre-tokenizer as the reference's; each library reads what the other
    saves and encodes as before (the options travel in tokenizer_config.json)."""
    from test_tokenizers_corpus import CORPUS

    documents = [*CORPUS[::40], "Ünïcödé ``quoted'' TEXT", "  spaced   out  ", "[MASK] eats [MASK]."]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AlbertTokenizer.from_pretrained(albert_tokenizer_folders[1], **options)
    ours = openformers.AlbertTokenizer.from_pretrained(albert_tokenizer_folders[1], **options)
    assert_saved_both_ways(ours, reference, documents, tmp_path, "AlbertTokenizer")


def test_tokenizer_built_from_its_sentencepiece_file_encodes_as_from_the_folder(albert_tokenizer_folders):
    """AlbertTokenizer(vocab_file=...) reads the model (the reference 5.x's constructor keeps only the specials)."""
    source = albert_tokenizer_folders[0]
    built = openformers.AlbertTokenizer(vocab_file=str(source / "spiece.model"), keep_accents=True)
    loaded = openformers.AlbertTokenizer.from_pretrained(source, keep_accents=True)
    texts = ["Ünïcödé ``quoted'' TEXT", "The cat sat on the mat.", "[MASK] eats [MASK]."]
    assert built(texts)["input_ids"] == loaded(texts)["input_ids"]
    assert built.convert_ids_to_tokens(built("Hello")["input_ids"])[0] == "[CLS]"


def test_auto_tokenizer_picks_albert_from_the_model_type(albert_tokenizer_folders, tmp_path):
    """A folder with spiece.model and an albert config.json, as older checkpoints are: the reference's class and ids."""
    shutil.copy(albert_tokenizer_folders[0] / "spiece.model", tmp_path)
    transformers.AlbertConfig(**TINY).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "AlbertTokenizer"
    texts = ["Hello world, Ünïcödé ``quoted''.", "[MASK] eats [MASK]."]
    assert ours(texts)["input_ids"] == reference(texts)["input_ids"]
