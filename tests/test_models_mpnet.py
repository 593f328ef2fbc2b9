"""MPNet against the reference: a tiny random model made by the reference for every head loads with no warning,
gives the reference's outputs and losses on a padded batch and each row alone (relative-position bias included),
saves what the reference loads back, and comes back from the Auto classes as the reference's class."""

import shutil
import warnings

import pytest
import tokenizers
import torch

import openformers
from openformers import configs
from openformers.models.mpnet import relative_position_buckets

from encoder_parity import (
    assert_corpus_parity,
    assert_pipeline_matches,
    assert_same,
    assert_saved_both_ways,
    load_quietly,
    outputs_of,
)
from encoder_suite import EncoderWithoutTokenTypesTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)


class TestMPNet(EncoderWithoutTokenTypesTests):
    """Every head's outputs with the relative-position bias included (and its table's gradients in a training step);
    given embeddings, every token counts as real when placing positions, as in the reference."""

    REFERENCE_CONFIG = "MPNetConfig"
    TINY = TINY
    HEADS = {  # the reference's class -> the Auto class that picks it
        "MPNetModel": "AutoModel",
        "MPNetForMaskedLM": "AutoModelForMaskedLM",
        "MPNetForSequenceClassification": "AutoModelForSequenceClassification",
        "MPNetForTokenClassification": "AutoModelForTokenClassification",
        "MPNetForQuestionAnswering": "AutoModelForQuestionAnswering",
        "MPNetForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("MPNetForSequenceClassification", "MPNetForMultipleChoice")
    PAD = 1
    ALSO_DRAWN = ("relative_attention_bias",)  # a bias that matters
    POSITION_OFFSET = 2  # positions start after the padding's, as RoBERTa's


@torch.inference_mode()
def test_far_apart_tokens_fall_in_the_reference_log_buckets(tmp_path):
    """Offsets past 8 are bucketed on a log scale up to 128, and farther ones share the last bucket."""
    T = 150
    TestMPNet.reference("MPNetModel", max_position_embeddings=T + 2).save_pretrained(tmp_path)
    reference = transformers.MPNetModel.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.MPNetModel.from_pretrained, tmp_path)
    theirs = reference.encoder.relative_position_bucket(torch.arange(T)[None, :] - torch.arange(T)[:, None])
    assert torch.equal(relative_position_buckets(T, torch.device("cpu")), theirs)
    ids = torch.randint(3, TINY["vocab_size"], (1, T), generator=torch.Generator().manual_seed(2))
    assert_same(outputs_of(model(ids)), outputs_of(reference(ids)))


def test_masked_lm_from_config_ties_the_decoder_to_the_embeddings():
    model = openformers.AutoModelForMaskedLM.from_config(configs.MPNetConfig(**TINY))
    assert model.lm_head.decoder.weight is model.mpnet.embeddings.word_embeddings.weight
    assert model.lm_head.decoder.bias is model.lm_head.bias
    assert model.mpnet.pooler is None and not model.lm_head.bias.any()
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    assert model.lm_head.decoder.bias is model.lm_head.bias
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 5)


def test_config_defaults_and_validation():
    config, reference = configs.MPNetConfig(), transformers.MPNetConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "hidden_dropout_prob", "relative_attention_num_buckets", "pad_token_id",
                 "bos_token_id", "eos_token_id", "layer_norm_eps", "max_position_embeddings"):
        assert getattr(config, name) == getattr(reference, name), name
    with pytest.raises(ValueError, match="relative_attention_num_buckets"):
        configs.MPNetConfig(relative_attention_num_buckets=16)
    with pytest.raises(ValueError, match="hidden_size"):
        configs.MPNetConfig(hidden_size=30, num_attention_heads=4)


def test_every_head_drops_out_by_hidden_dropout_prob():
    config = configs.MPNetConfig(**TINY, hidden_dropout_prob=0.3, classifier_dropout=0.7)
    assert openformers.MPNetForTokenClassification(config).dropout.p == 0.3
    assert openformers.MPNetForMultipleChoice(config).dropout.p == 0.3
    assert openformers.MPNetForSequenceClassification(config).classifier.dropout.p == 0.3


# MPNetTokenizer: a WordPiece vocabulary trained here with `tokenizers` on a sample of the project's corpus, laid out
# as MPNet's (fairseq's <s> <pad> </s> <unk> first, <mask> last), read from vocab.txt and from the tokenizer.json the
# reference writes: the reference's ids on the corpus, offsets and decoded text on a part of it; and the pipelines.


@pytest.fixture(scope="module")
def mpnet_tokenizer_folders(tmp_path_factory):
    from test_tokenizers_corpus import CORPUS
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    trained = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trained.normalizer = normalizers.BertNormalizer(lowercase=True)
    trained.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]"]
    trained.train_from_iterator(CORPUS[::8], trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials,
                                                                       show_progress=False))
    source = tmp_path_factory.mktemp("mpnet-vocab")
    vocab = sorted(trained.get_vocab(), key=trained.get_vocab().get)
    (source / "vocab.txt").write_text("".join(f"{token}\n" for token in [*vocab, "<mask>"]), encoding="utf-8")
    saved = tmp_path_factory.mktemp("mpnet-tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.MPNetTokenizer.from_pretrained(source).save_pretrained(saved)
    return source, saved


@pytest.mark.parametrize("files, every", [("tokenizer.json", 1), ("vocab.txt", 4)])
def test_tokenizer_matches_the_reference_on_the_corpus(mpnet_tokenizer_folders, files, every):
    folder = mpnet_tokenizer_folders[0 if files == "vocab.txt" else 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.MPNetTokenizer.from_pretrained(folder)
    ours = (openformers.AutoTokenizer if files == "tokenizer.json" else openformers.MPNetTokenizer).from_pretrained(
        folder
    )
    assert type(ours).__name__ == "MPNetTokenizer" and ours.model_input_names == ["input_ids", "attention_mask"]
    for text, pair in [("Paris is the <mask> of France.", None), ("The cat sat.", "Les chats dorment!")]:
        assert dict(ours(text, pair)) == dict(reference(text, pair))  # <mask> takes its space; RoBERTa's pairs
    assert_corpus_parity(ours, reference, every)


PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("MPNetForMaskedLM", ["Paris is the <mask> of France.", "The <mask> sat on the mat."]),
    "text-classification": ("MPNetForSequenceClassification", ["I love this movie.", "Der Hund spielt."]),
}


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_the_reference_tokenizer_match_reference(task, mpnet_tokenizer_folders, tmp_path):
    shutil.copytree(mpnet_tokenizer_folders[1], tmp_path, dirs_exist_ok=True)
    name, inputs = PIPELINE_HEADS[task]
    vocab_size = len(openformers.AutoTokenizer.from_pretrained(tmp_path))
    TestMPNet.reference(name, vocab_size=vocab_size).save_pretrained(tmp_path)
    assert_pipeline_matches(task, tmp_path, inputs)


@pytest.mark.parametrize(
    "options", [{}, {"do_lower_case": False}, {"strip_accents": True, "tokenize_chinese_chars": False}],
    ids=["defaults", "cased", "accents-stripped-no-cjk-split"],
)
def test_tokenizer_options_and_saving_both_ways(mpnet_tokenizer_folders, options, tmp_path):
    """The options rebuild BERT's normalizer as the reference's; each library reads what the other saves and encodes
    as before, <mask> still taking the space before it."""
    from test_tokenizers_corpus import CORPUS

    documents = [*CORPUS[::40], "Ünïcödé TEXT 日本語", "Paris is the <mask> of France.", "a<mask>  <mask>b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.MPNetTokenizer.from_pretrained(mpnet_tokenizer_folders[1], **options)
    ours = openformers.MPNetTokenizer.from_pretrained(mpnet_tokenizer_folders[1], **options)
    assert_saved_both_ways(ours, reference, documents, tmp_path, "MPNetTokenizer")


def test_tokenizer_built_from_its_vocabulary_file_encodes_as_from_the_folder(mpnet_tokenizer_folders):
    source = mpnet_tokenizer_folders[0]
    built = openformers.MPNetTokenizer(vocab_file=str(source / "vocab.txt"))
    loaded = openformers.MPNetTokenizer.from_pretrained(source)
    texts = ["Paris is the <mask> of France.", ("The cat sat.", "Les chats dorment!")]
    for text in texts:
        pair = text if isinstance(text, tuple) else (text, None)
        assert dict(built(*pair)) == dict(loaded(*pair))
    assert (built.cls_token, built.sep_token, built.unk_token, built.mask_token) == ("<s>", "</s>", "[UNK]", "<mask>")


def test_auto_tokenizer_picks_mpnet_from_the_model_type(mpnet_tokenizer_folders, tmp_path):
    """A folder with vocab.txt and an mpnet config.json: the reference's class, ids and inputs."""
    shutil.copy(mpnet_tokenizer_folders[0] / "vocab.txt", tmp_path)
    transformers.MPNetConfig(**TINY).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "MPNetTokenizer"
    assert dict(ours("Hello <mask> world", "second")) == dict(reference("Hello <mask> world", "second"))
