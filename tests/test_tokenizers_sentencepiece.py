"""SentencePiece tokenizer.model files (BPE with byte fallback, Llama-style; Unigram with the nmt_nfkc
charsmap, T5-style), trained here with `sentencepiece`: our ids, pieces and decode equal the library's."""

import glob
import json
import shutil

import pytest
import sentencepiece

from openformers import AutoTokenizer
from openformers.tokenizers.sentencepiece import read_sentencepiece_model

EDGE_TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog. Don't panic.",
    "中文测试：你好，世界！今天天气很好。",
    "日本語のテキストです。カタカナとひらがな、漢字。",
    "مرحبا بالعالم، هذا نص عربي.",
    "emoji 🤗👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🏳️\u200d🌈",
    "def square(x):\n    return x ** 2  # comment\n\n\tpass\n",
    "   leading spaces",
    "trailing spaces   ",
    "many     spaces      between",
    "line one\r\nline two\rline three\n",
    "café naïve e\u0301 \u00a0nbsp\u2003em ﬁ ① Ⅻ ＡＢＣ ｶﾀｶﾅ",
    "numbers 1234567890 3.14159 1,000,000",
    "https://example.com/path?q=1&x=2 user@mail.org",
    "rare chars: ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ᚠᚢᚦ ⅏",
    "",
    " ",
    "\n",
    "a",
]


def _corpus_lines() -> list[str]:
    lines = []
    for path in sorted(glob.glob("/usr/share/doc/*/copyright"))[:150]:
        with open(path, encoding="utf-8", errors="ignore") as file:
            lines.extend(line for line in file.read().splitlines() if line.strip())
    return lines[:20000] + EDGE_TEXTS * 20


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _corpus_lines()


def _train(folder, corpus, **options):
    folder.mkdir(exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(folder / "tokenizer"), minloglevel=2, **options
    )
    return sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))


@pytest.fixture(scope="module")
def llama_style(tmp_path_factory, corpus):
    folder = tmp_path_factory.mktemp("spm_bpe")
    reference = _train(
        folder,
        corpus,
        model_type="bpe",
        vocab_size=800,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=0.99,
        user_defined_symbols=["<tool>", "</tool>"],
    )
    return folder, reference


@pytest.fixture(scope="module")
def t5_style(tmp_path_factory, corpus):
    folder = tmp_path_factory.mktemp("spm_unigram")
    reference = _train(folder, corpus, model_type="unigram", vocab_size=800, character_coverage=0.995, pad_id=3)
    return folder, reference


@pytest.fixture(scope="module", params=["llama_style", "t5_style"])
def trained(request):
    folder, reference = request.getfixturevalue(request.param)
    return AutoTokenizer.from_pretrained(folder), reference


def test_model_file_is_read_like_sentencepiece(llama_style, t5_style):
    for folder, reference in (llama_style, t5_style):
        model = read_sentencepiece_model(folder / "tokenizer.model")
        assert [piece for piece, _, _ in model.pieces] == [reference.id_to_piece(i) for i in range(len(reference))]
        assert [score for _, score, _ in model.pieces] == [reference.get_score(i) for i in range(len(reference))]
        assert (model.unk_id, model.bos_id, model.eos_id, model.pad_id) == (
            reference.unk_id(),
            reference.bos_id(),
            reference.eos_id(),
            reference.pad_id(),
        )


def test_ids_pieces_and_decode_equal_sentencepiece(trained, corpus):
    ours, reference = trained
    for text in EDGE_TEXTS + corpus[::40]:
        expected = reference.encode(text)
        got = ours.encode(text, add_special_tokens=False)
        assert got == expected, text
        assert ours.convert_ids_to_tokens(got) == [reference.id_to_piece(token_id) for token_id in expected]
        assert ours.decode(got) == reference.decode(expected), text


def test_offsets_cover_the_pieces(trained):
    ours, _ = trained
    for text in EDGE_TEXTS:
        encoding = ours(text, add_special_tokens=False, return_offsets_mapping=True)
        previous_end = 0
        for token_id, (start, end) in zip(encoding.input_ids, encoding.offset_mapping):
            assert 0 <= start <= end <= len(text) and start >= previous_end - 1, (text, token_id, start, end)
            previous_end = end


def test_special_tokens_and_bos(trained):
    ours, reference = trained
    assert ours.unk_token_id == reference.unk_id() and ours.bos_token_id == reference.bos_id()
    assert ours.encode("Hello") == [reference.bos_id(), *reference.encode("Hello")]
    assert ours.decode(ours.encode("Hello"), skip_special_tokens=True) == "Hello"


def test_malformed_model_files_are_named(tmp_path, llama_style):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(b"\xff\xff\xff")
    with pytest.raises(ValueError, match=r"broken/tokenizer\.model.*not a SentencePiece model"):
        AutoTokenizer.from_pretrained(folder)
    data = (llama_style[0] / "tokenizer.model").read_bytes()
    (folder / "tokenizer.model").write_bytes(data[:-1])  # cut inside the last field, wherever the fields fall
    with pytest.raises(ValueError, match=r"tokenizer\.model.*truncated"):
        AutoTokenizer.from_pretrained(folder)
    (folder / "tokenizer.model").write_text("just some text, not a protobuf")
    with pytest.raises(ValueError, match=r"tokenizer\.model.*not a SentencePiece model"):
        AutoTokenizer.from_pretrained(folder)


def test_ids_equal_the_reference_sentencepiece_tokenizer(llama_style, corpus):
    """The reference's sentencepiece-backed tokenizer (legacy=True, protobuf installed), special tokens in
    the text included: the same ids. (Its decode spells byte pieces out as "<0xE4>"; ours decodes them.)"""
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    folder, reference_spm = llama_style
    special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    reference = SentencePieceBackend.from_pretrained(str(folder), legacy=True, **special)
    ours = AutoTokenizer.from_pretrained(folder)
    extra = ["<s>Hello</s> world", "a <s> b", "</s>", "Hi <unk> x", "<tool>x</tool> y"]
    for text in EDGE_TEXTS + corpus[::40] + extra:
        assert ours.encode(text, add_special_tokens=False) == reference.encode(text, add_special_tokens=False), text
        assert ours.tokenize(text) == reference.tokenize(text), text


@pytest.mark.parametrize("legacy", [None, False, True])
def test_legacy_false_puts_no_dummy_prefix_after_special_tokens(llama_style, tmp_path, legacy):
    """The reference's Llama tokenizers (legacy=False, their default) give "▁" only to the text at the start,
    not to text after a special token; legacy=True (and llama.cpp) give it to both. The expected ids come from
    `sentencepiece` itself, with the dummy prefix switched off in the model for the text after the token."""
    from transformers.convert_slow_tokenizer import import_protobuf

    folder, reference = llama_style
    proto = import_protobuf().ModelProto.FromString(reference.serialized_model_proto())
    proto.normalizer_spec.add_dummy_prefix = False
    without_prefix = sentencepiece.SentencePieceProcessor(model_proto=proto.SerializeToString())
    shutil.copy(folder / "tokenizer.model", tmp_path / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer"} | ({} if legacy is None else {"legacy": legacy})
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    after = reference if legacy else without_prefix
    for first, second in [("Hello", " world"), ("  two", "three  "), ("", "USER: hi"), ("中文", "\n日本")]:
        expected = [reference.bos_id(), *reference.encode(first), reference.eos_id(), *after.encode(second)]
        assert ours.encode(f"{first}</s>{second}") == expected, (first, second)
    ours.save_pretrained(tmp_path / "saved")
    assert AutoTokenizer.from_pretrained(tmp_path / "saved").encode("a</s>b") == ours.encode("a</s>b")
