"""BPE's `continuing_subword_prefix` ("##") and `end_of_word_suffix` ("</w>", as CLIP), on small tokenizers
trained here with `tokenizers`: ids, tokens, offsets and decode equal the reference on the same tokenizer.json."""

import inspect
import json

import pytest
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
from test_tokenizers import DIGIT_TEXTS, TEXTS

from openformers import AutoTokenizer

EXTRA = ["unaffable ## and #hash </w> inside", "x", "ab", "aaaaaaaa bbbb", "Ωmega ünïcödé ⅷ"]


def _corpus() -> list[str]:
    return inspect.getsource(json.decoder).splitlines() + TEXTS * 3 + DIGIT_TEXTS * 3


def _trained(prefix: str | None, suffix: str | None, byte_level: bool) -> tokenizers.Tokenizer:
    options = {"continuing_subword_prefix": prefix, "end_of_word_suffix": suffix}
    options = {key: value for key, value in options.items() if value is not None}
    if byte_level:  # CLIP's layout: a split, then bytes, and "</w>" ends each word
        tokenizer = tokenizers.Tokenizer(models.BPE(**options))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]", **options))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.decoder = decoders.BPEDecoder(suffix=suffix) if suffix else decoders.WordPiece(prefix=prefix or "##")
        alphabet = []
    # Without byte-level, a small alphabet leaves characters to [UNK]. (With byte-level, every byte is kept:
    # a byte missing with no unk_token is dropped, and the reference's offsets then skip it too, which we don't.)
    limit = 1000 if byte_level else 120
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=["[UNK]"], initial_alphabet=alphabet, show_progress=False, limit_alphabet=limit,
        **options,
    )  # fmt: skip
    tokenizer.train_from_iterator(_corpus(), trainer)
    return tokenizer


@pytest.fixture(
    scope="module",
    params=[("##", None, False), (None, "</w>", False), ("##", "</w>", False), (None, "</w>", True)],
    ids=["prefix", "suffix", "prefix_and_suffix", "clip_style"],
)
def pair_of_tokenizers(request, tmp_path_factory):
    reference = _trained(*request.param)
    folder = tmp_path_factory.mktemp("bpe_options")
    reference.save(str(folder / "tokenizer.json"))
    model = json.loads(reference.to_str())["model"]
    assert (model["continuing_subword_prefix"], model["end_of_word_suffix"]) == request.param[:2]
    return AutoTokenizer.from_pretrained(folder), reference


def test_ids_tokens_offsets_and_decode_match_reference(pair_of_tokenizers):
    ours, reference = pair_of_tokenizers
    for text in TEXTS + DIGIT_TEXTS + EXTRA + _corpus()[::7]:
        expected = reference.encode(text)
        got = ours(text, return_offsets_mapping=True)
        assert got.input_ids == expected.ids, text
        assert got.tokens() == expected.tokens, text
        assert got.offset_mapping == expected.offsets, text
        assert got.word_ids() == expected.word_ids, text
        assert ours.decode(expected.ids) == reference.decode(expected.ids, skip_special_tokens=False), text
        assert ours.decode(expected.ids, skip_special_tokens=True) == reference.decode(expected.ids), text


def test_merge_naming_a_missing_token_is_an_error(tmp_path):
    data = json.loads(_trained("##", None, False).to_str())
    first, second = data["model"]["merges"][0]
    del data["model"]["vocab"][first + second.removeprefix("##")]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"tokenizer\.json.*the BPE merge .* which is not in the vocabulary"):
        AutoTokenizer.from_pretrained(tmp_path)
