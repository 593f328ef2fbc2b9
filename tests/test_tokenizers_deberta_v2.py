"""DebertaV2Tokenizer against the reference, with a SentencePiece unigram model trained here in DeBERTa's layout
([PAD] [CLS] [SEP] [UNK] first, [MASK] added after the pieces): from spm.model alone (as DeBERTa-v3 checkpoints ship
it) and from the tokenizer.json the reference writes, with and without do_lower_case and split_by_punct, the ids,
offsets, tokens and decoding equal the reference's on the project's corpus (tests/test_tokenizers_corpus.py).

One difference is known: `tokens()` names a piece the vocabulary lacks by the unknown token, where the reference's
Unigram names it by its text; its id, offsets and decoding are the reference's.
"""

import json
import shutil

import pytest
import sentencepiece
import tokenizers
import transformers
from test_tokenizers_corpus import CORPUS, _assert_rows_equal

import openformers
from openformers import AutoTokenizer, DebertaV2Tokenizer

OPTIONS = {"plain": {}, "lower-punct": {"do_lower_case": True, "split_by_punct": True}}


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS[::4]), model_prefix=str(folder / "spm"), vocab_size=2000, minloglevel=2,
        model_type="unigram", character_coverage=0.9995, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
    )  # fmt: skip
    return folder / "spm.model"


def assert_matches_reference(ours, reference, every: int = 1):
    """ids, offsets and tokens with special tokens on every `every`-th document of the corpus; ids without them and
    decoding (special tokens kept and skipped) on a quarter of those. The reference encodes with its backend."""
    documents = CORPUS[::every]
    backend = tokenizers.Tokenizer.from_str(reference.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    encodings = backend.encode_batch(documents, add_special_tokens=True)
    expected_ids = [encoding.ids for encoding in encodings]
    got = ours(documents, return_offsets_mapping=True)
    _assert_rows_equal(got["input_ids"], expected_ids, "ids")
    _assert_rows_equal(got["offset_mapping"], [encoding.offsets for encoding in encodings], "offsets")
    unk = reference.unk_token_id
    named = [[reference.unk_token if i == unk else token for i, token in zip(e.ids, e.tokens)] for e in encodings]
    _assert_rows_equal([got.tokens(row) for row in range(len(documents))], named, "tokens")
    sample, sample_ids = documents[::4], expected_ids[::4]
    expected_plain = [encoding.ids for encoding in backend.encode_batch(sample, add_special_tokens=False)]
    _assert_rows_equal(ours(sample, add_special_tokens=False)["input_ids"], expected_plain, "ids without specials")
    for skip in (False, True):
        expected = reference.batch_decode(sample_ids, skip_special_tokens=skip)
        _assert_rows_equal(ours.batch_decode(sample_ids, skip_special_tokens=skip), expected, "decode")


def _checkpoint_folder(folder, spm_model, options):
    """What a DeBERTa-v3 checkpoint ships: spm.model, a tokenizer_config.json naming no class, config.json."""
    folder.mkdir(exist_ok=True)
    shutil.copy(spm_model, folder / "spm.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"vocab_type": "spm", **options}))
    (folder / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    return folder


@pytest.mark.parametrize("options, every", [(OPTIONS["plain"], 1), (OPTIONS["lower-punct"], 4)], ids=list(OPTIONS))
def test_spm_model_alone_matches_reference(options, every, spm_model, tmp_path):
    folder = _checkpoint_folder(tmp_path, spm_model, options)
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "DebertaV2Tokenizer"
    assert ours.all_special_tokens == reference.all_special_tokens
    assert ours.all_special_ids == reference.all_special_ids and len(ours) == len(reference)
    assert ours.extra_special_tokens == list(reference.extra_special_tokens)
    assert_matches_reference(ours, reference, every)


@pytest.mark.parametrize("options, every", [(OPTIONS["plain"], 4), (OPTIONS["lower-punct"], 1)], ids=list(OPTIONS))
def test_tokenizer_json_written_by_reference_matches_reference(options, every, spm_model, tmp_path):
    folder = _checkpoint_folder(tmp_path / "checkpoint", spm_model, options)
    transformers.AutoTokenizer.from_pretrained(str(folder)).save_pretrained(tmp_path / "saved")
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    ours = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert type(ours).__name__ == "DebertaV2Tokenizer"
    assert_matches_reference(ours, reference, every)


def test_pairs_masks_and_token_types_match_reference(spm_model, tmp_path):
    folder = _checkpoint_folder(tmp_path, spm_model, {})
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = AutoTokenizer.from_pretrained(folder)
    texts = ["Paris is the [MASK] of France.", "  Leading   spaces\tand\ttabs  "]
    pairs = ["What is it?", "Second segment, with punctuation!"]
    expected = reference(texts, pairs, padding=True, return_offsets_mapping=True)
    got = ours(texts, pairs, padding=True, return_offsets_mapping=True)
    assert list(got.keys()) == list(expected.keys()) and ours.model_input_names == reference.model_input_names
    for key in expected:
        assert got[key] == expected[key], key
    assert ours.mask_token_id == reference.mask_token_id == len(ours) - 1  # [MASK] comes after the pieces


def test_options_rebuild_a_tokenizer_json_as_the_reference_does(spm_model, tmp_path):
    """Keyword arguments replace the normalization and split the file holds (the reference's class rebuilds them)."""
    folder = _checkpoint_folder(tmp_path / "checkpoint", spm_model, {})
    transformers.AutoTokenizer.from_pretrained(str(folder)).save_pretrained(tmp_path / "saved")
    text = ["HELLO, World! Don't split-me; OK?", "ÉCOLE   Straße"]
    for options in ({"do_lower_case": True}, {"split_by_punct": True}, {"add_prefix_space": False}):
        reference = transformers.DebertaV2Tokenizer.from_pretrained(str(tmp_path / "saved"), **options)
        ours = DebertaV2Tokenizer.from_pretrained(tmp_path / "saved", **options)
        assert ours(text)["input_ids"] == reference(text)["input_ids"], options
        assert ours.tokenize(text[0]) == reference.tokenize(text[0]), options


def test_saved_folder_loads_in_both_libraries(spm_model, tmp_path):
    folder = _checkpoint_folder(tmp_path / "checkpoint", spm_model, OPTIONS["lower-punct"])
    ours = AutoTokenizer.from_pretrained(folder)
    ours.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    assert (config["tokenizer_class"], config["do_lower_case"], config["split_by_punct"]) == (
        "DebertaV2Tokenizer", True, True)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ours"))
    assert type(reference).__name__ == "DebertaV2Tokenizer"
    sample = CORPUS[::16]
    assert AutoTokenizer.from_pretrained(tmp_path / "ours")(sample)["input_ids"] == reference(sample)["input_ids"]
    assert ours(sample)["input_ids"] == reference(sample)["input_ids"]


def test_constructor_takes_the_spm_model(spm_model, tmp_path):
    """DebertaV2Tokenizer("spm.model") is the tokenizer the reference loads from a folder holding it (the reference's
    own constructor reads no vocabulary from the file in this version)."""
    reference = transformers.DebertaV2Tokenizer.from_pretrained(str(_checkpoint_folder(tmp_path, spm_model, {})),
                                                                split_by_punct=True)
    ours = openformers.DebertaV2Tokenizer(str(spm_model), split_by_punct=True)
    text = "Constructing from spm.model: does it split, punctuation?"
    assert ours(text)["input_ids"] == reference(text)["input_ids"]
    assert ours.decode(ours(text)["input_ids"]) == reference.decode(reference(text)["input_ids"])


def test_a_model_file_without_the_layout_pieces_is_refused(tmp_path):
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["a small text to train on", "another small text"] * 50), vocab_size=19,
        model_prefix=str(tmp_path / "spm"), minloglevel=2, model_type="unigram",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"spm\.model has no piece '\[CLS\]'"):
        DebertaV2Tokenizer(str(tmp_path / "spm.model"))
