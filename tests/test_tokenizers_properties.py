"""Property tests (hypothesis) on arbitrary Unicode: byte-level BPE (SmolLM2) and byte-fallback
SentencePiece tokenizers give back the text they encoded, ids equal the reference's, a batch equals its
rows one by one, offsets cover the text in order, and padding and truncation keep their invariants; over all
of Unicode (controls, combining marks, emoji, characters newer than the reference's tables), byte-level BPE,
WordPiece (MiniLM) and Unigram (ALBERT-style normalizers) give the reference's ids and offsets, and a lone
surrogate anywhere is refused with its position named."""

import pytest
import sentencepiece
import tokenizers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_tokenizers import GGUF_FOLDER, GGUF_NAME, hf_gguf, smollm2_original  # noqa: F401 (fixtures)
from test_tokenizers_hostile import (  # noqa: F401 (fixtures)
    minilm,
    minilm_folder,
    minilm_reference,
    smollm2_gguf,
    smollm2_reference,
)
from test_tokenizers_sentencepiece import corpus, llama_style  # noqa: F401 (fixtures)
from tokenizers import decoders, models, normalizers, pre_tokenizers

from openformers import AutoTokenizer
from openformers.tokenizers import reference_unicode
from openformers.tokenizers.pre_tokenizers import BYTE_ALPHABET
from openformers.tokenizers.sentencepiece import read_sentencepiece_model

# Any Unicode text, with whitespace, digits and the special tokens' spellings mixed in more often than chance.
pieces = st.one_of(
    st.text(max_size=20),
    st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "0", "42", "e\u0301", "🤗", "中文", "<|im_start|>", "</s>"]),
)
texts = st.lists(pieces, max_size=8).map("".join)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def smollm2():
    return AutoTokenizer.from_pretrained(GGUF_FOLDER, gguf_file=GGUF_NAME)


@pytest.fixture(scope="module")
def llama_sentencepiece(llama_style):  # noqa: F811 (a fixture)
    folder, reference = llama_style
    return AutoTokenizer.from_pretrained(folder), reference


def _all_bytes_known(tokenizer, text: str) -> bool:
    """SmolLM2's vocabulary lacks a few bytes that never occur in its training text (controls like 0x1D,
    0xF1..., the lead byte of planes 4-7): they are dropped, here and in the reference."""
    vocab = tokenizer.get_vocab()
    return all(BYTE_ALPHABET[byte] in vocab for byte in text.encode("utf-8"))


@SETTINGS
@given(text=texts)
def test_byte_level_round_trips_and_equals_reference(smollm2, smollm2_original, text):  # noqa: F811
    ids = smollm2.encode(text, add_special_tokens=False)
    assert ids == smollm2_original.encode(text, add_special_tokens=False).ids
    assert smollm2.decode(ids) == smollm2_original.decode(ids, skip_special_tokens=False)
    if _all_bytes_known(smollm2, text):
        assert smollm2.decode(ids) == text


@SETTINGS
@given(text=texts)
def test_byte_fallback_round_trips_and_equals_sentencepiece(llama_sentencepiece, text):
    ours, reference = llama_sentencepiece
    # Special tokens written in the text are matched whole (as the reference's transformers tokenizer does);
    # the sentencepiece library spells them out, so such texts are not compared.
    assume(not any(token in text for token in ("<s>", "</s>", "<unk>")))
    ids = ours.encode(text, add_special_tokens=False)
    assert ids == reference.encode(text)
    assert ours.decode(ids) == reference.decode(ids)
    # The model keeps the text as it is (identity normalization, spaces kept), so it comes back whole.
    assert ours.decode(ids) == text or text != reference.decode(ids)


@SETTINGS
@given(text=texts)
def test_offsets_cover_the_text_in_order(smollm2, text):
    assume(_all_bytes_known(smollm2, text))
    encoding = smollm2(text, add_special_tokens=False, return_offsets_mapping=True)
    covered = 0
    for start, end in encoding.offset_mapping:
        # Each token starts where the one before ended, or shares its span (a character cut between tokens).
        assert start == covered or end == covered, (text, encoding.offset_mapping)
        covered = end
    assert covered == len(text)


@SETTINGS
@given(batch=st.lists(texts, max_size=6))
def test_batch_equals_one_by_one(smollm2, batch):
    together = smollm2(batch, return_offsets_mapping=True)
    for index, text in enumerate(batch):
        alone = smollm2(text, return_offsets_mapping=True)
        assert together.input_ids[index] == alone.input_ids == smollm2.encode(text)
        assert together.offset_mapping[index] == alone.offset_mapping
        assert together.word_ids(index) == alone.word_ids()


@SETTINGS
@given(
    batch=st.lists(texts, min_size=1, max_size=6),
    max_length=st.integers(1, 12),
    side=st.sampled_from(["left", "right"]),
)
def test_padding_and_truncation_keep_their_invariants(smollm2, batch, max_length, side):
    full = [smollm2.encode(text) for text in batch]
    padded = smollm2(batch, padding=True, padding_side=side)
    longest = max(len(ids) for ids in full)
    for ids, row, mask in zip(full, padded.input_ids, padded.attention_mask):
        fill = longest - len(ids)
        pad = [smollm2.pad_token_id] * fill
        assert row == (pad + ids if side == "left" else ids + pad)
        assert mask == ([0] * fill + [1] * len(ids) if side == "left" else [1] * len(ids) + [0] * fill)
    for truncation_side in ("right", "left"):
        smollm2.truncation_side = truncation_side
        try:
            cut = smollm2(batch, truncation=True, max_length=max_length, padding="max_length")
        finally:
            smollm2.truncation_side = "right"
        for ids, row, mask in zip(full, cut.input_ids, cut.attention_mask):
            assert len(row) == max_length and sum(mask) == min(len(ids), max_length)
            kept = [token for token, keep in zip(row, mask) if keep]
            assert kept == (ids[: len(kept)] if truncation_side == "right" else ids[len(ids) - len(kept) :])


# --- ids and offsets against the reference over all of Unicode, for each kind of model

# Any code point but a surrogate (hypothesis leans towards small ones), and runs of what tends to break
# alignment: controls, combining marks, emoji sequences, whitespace, and characters newer than the reference's
# normalization tables.
_NEWER = [
    chr(first)
    for first, _ in reference_unicode.NEWER_THAN_REFERENCE + reference_unicode.NEWER_THAN_REFERENCE_GRAPHEMES
]
unicode_pieces = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.text(st.characters(min_codepoint=0x80, exclude_categories=("Cs",)), max_size=6),
    st.text(st.characters(categories=("Cc", "Cf", "Zs", "Zl", "Zp")), min_size=1, max_size=4),
    st.builds(lambda base, marks: base + marks, st.sampled_from("aeAEiß ̈中"),
              st.text(st.characters(categories=("Mn", "Mc", "Me")), min_size=1, max_size=4)),  # fmt: skip
    st.sampled_from(["😀", "👍🏽", "👨‍👩‍👧", "🏳️‍🌈", "9️⃣", "\u2764\ufe0f", "🇫🇷", "\U0001f16c", "ﬁ", "①", "ｶﾞ", "¼",
                     "\u0f73\u0f71", "\u1100\u314f", "\u302e\u0301", " ", "  ", "\n\n", "\t", "42"]),  # fmt: skip
    st.sampled_from(_NEWER),
)
unicode_texts = st.lists(unicode_pieces, max_size=8).map("".join)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _assert_reference_encoding(ours, reference, text: str) -> None:
    expected = reference.encode(text)
    got = ours(text, return_offsets_mapping=True)
    assert got["input_ids"] == expected.ids
    assert [tuple(span) for span in got["offset_mapping"]] == expected.offsets


@pytest.fixture(scope="module")
def unigram_pair(tmp_path_factory, corpus):  # noqa: F811 (a fixture)
    """A SentencePiece Unigram model trained here, as a tokenizer.json with ALBERT's normalizers (the
    SentencePiece rules, then NFKD, StripAccents and Lowercase) and Metaspace."""
    folder = tmp_path_factory.mktemp("unigram_fuzz")
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(corpus[:4000]), model_prefix=str(folder / "spm"),
                                             model_type="unigram", vocab_size=500, minloglevel=2)  # fmt: skip
    spm = read_sentencepiece_model(folder / "spm.model")
    pieces = [(piece, score) for piece, score, _ in spm.pieces]
    reference = tokenizers.Tokenizer(models.Unigram(pieces, unk_id=spm.unk_id))
    reference.normalizer = normalizers.Sequence([
        normalizers.Precompiled(spm.precompiled_charsmap), normalizers.NFKD(), normalizers.StripAccents(),
        normalizers.Lowercase(), normalizers.Replace(tokenizers.Regex(" {2,}"), " "),
    ])  # fmt: skip
    reference.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    reference.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    reference.save(str(folder / "tokenizer.json"))
    return AutoTokenizer.from_pretrained(folder), tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def smollm2_from_gguf(smollm2_gguf):  # noqa: F811 (a fixture)
    return AutoTokenizer.from_pretrained(smollm2_gguf)


@FUZZ
@given(text=unicode_texts)
def test_byte_level_bpe_equals_reference_on_any_unicode(smollm2_from_gguf, smollm2_reference, text):  # noqa: F811
    _assert_reference_encoding(smollm2_from_gguf, smollm2_reference, text)


@FUZZ
@given(text=unicode_texts)
def test_wordpiece_equals_reference_on_any_unicode(minilm, minilm_reference, text):  # noqa: F811
    _assert_reference_encoding(minilm, minilm_reference, text)


@FUZZ
@given(text=unicode_texts)
def test_unigram_equals_reference_on_any_unicode(unigram_pair, text):
    _assert_reference_encoding(*unigram_pair, text)


@FUZZ
@given(text=unicode_texts, position=st.integers(0, 100), surrogate=st.integers(0xD800, 0xDFFF))
def test_a_lone_surrogate_anywhere_is_refused(minilm, smollm2, unigram_pair, text, position, surrogate):  # noqa: F811
    position = min(position, len(text))
    text = text[:position] + chr(surrogate) + text[position:]
    for tokenizer in (minilm, smollm2, unigram_pair[0]):
        with pytest.raises(ValueError, match=rf"text holds a lone surrogate, .* at character {position}\b"):
            tokenizer(text, return_offsets_mapping=True)


@pytest.mark.parametrize(
    "text",
    ["\x1f0", "\x1f\x1fbc d", "a\x1fb", "¼\x08", "¼\x08b", "ﬀ\u0300x", "¼\u0300", "ﬁ\x08 ok",
     *(f"¼{chr(first)}x" for first, _ in reference_unicode.NEWER_THAN_REFERENCE_GRAPHEMES), "¼\u1acf",
     "<UNK>", "a<unk>b", "\U0001d11e<unk>x"],  # fmt: skip
)
def test_unigram_offsets_where_precompiled_removes_or_expands_characters(unigram_pair, text):
    """The reference's alignment where its SentencePiece rules drop characters (controls, a lone grave accent)
    next to ones they expand (ligatures, fractions), or at the start of the text; and its graphemes, which a
    rule replaces whole, by Unicode 17 (a mark of Unicode 18 after "¼" is kept, one of 17 goes with it); the
    unknown piece spelled out ("<UNK>" lowercased) is that piece, and one with an unknown character before it."""
    _assert_reference_encoding(*unigram_pair, text)
