"""SentencePiece-style tokenizer.json files (the reference's format for Llama-2, Mistral and T5): Metaspace,
Prepend/Replace normalizers, BPE with byte fallback and fused unknowns, Unigram with the Precompiled
charsmap, and the ByteFallback/Fuse/Strip/Replace/Metaspace decoders, built here with `tokenizers` from
models trained with `sentencepiece`; ids, offsets and decode equal HF `tokenizers` on the same file."""

import pytest
import sentencepiece
import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors
from test_tokenizers_sentencepiece import EDGE_TEXTS, _corpus_lines

from openformers import AutoTokenizer
from openformers.tokenizers.sentencepiece import read_sentencepiece_model


@pytest.fixture(scope="module")
def corpus():
    return _corpus_lines()[:6000] + EDGE_TEXTS * 10


def _train(folder, corpus, **options):
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(folder / "spm"), minloglevel=2, vocab_size=600, **options
    )
    return read_sentencepiece_model(folder / "spm.model")


def _merges(pieces: list[str]) -> list[tuple[str, str]]:
    """Merges for a SentencePiece BPE vocabulary: every split of a piece into two pieces, by the piece's rank."""
    rank = {piece: index for index, piece in enumerate(pieces)}
    merges = [
        (rank[piece], rank[piece[:cut]], rank[piece[cut:]], piece[:cut], piece[cut:])
        for piece in pieces
        for cut in range(1, len(piece))
        if piece[:cut] in rank and piece[cut:] in rank
    ]
    return [(first, second) for *_, first, second in sorted(merges)]


def _specials(tokenizer: tokenizers.Tokenizer):
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )


@pytest.fixture(scope="module")
def llama_style(tmp_path_factory, corpus):
    folder = tmp_path_factory.mktemp("llama_json")
    spm = _train(folder, corpus, model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                 remove_extra_whitespaces=False, character_coverage=0.99)  # fmt: skip
    pieces = [piece for piece, _, _ in spm.pieces]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    built = {}
    # Llama-2 as saved by the reference: Prepend + Replace normalizer, no pre-tokenizer.
    legacy = tokenizers.Tokenizer(models.BPE(vocab, _merges(pieces), unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    legacy.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    legacy.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    built["legacy"] = legacy
    # Mistral-style: Metaspace pre-tokenizer (prepend only at the start, no split) and decoder.
    metaspace = tokenizers.Tokenizer(models.BPE(vocab, _merges(pieces), unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    metaspace.decoder = decoders.Sequence(
        [decoders.Metaspace(replacement="▁", prepend_scheme="first"), decoders.ByteFallback(), decoders.Fuse()]
    )
    built["metaspace"] = metaspace
    return folder, built


@pytest.fixture(scope="module")
def t5_style(tmp_path_factory, corpus):
    folder = tmp_path_factory.mktemp("t5_json")
    spm = _train(folder, corpus, model_type="unigram")
    tokenizer = tokenizers.Tokenizer(models.Unigram([(piece, score) for piece, score, _ in spm.pieces], unk_id=spm.unk_id))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(spm.precompiled_charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return folder, {"unigram": tokenizer}


@pytest.fixture(scope="module", params=["legacy", "metaspace", "unigram"])
def pair_of_tokenizers(request, tmp_path_factory):
    fixture = "t5_style" if request.param == "unigram" else "llama_style"
    _, built = request.getfixturevalue(fixture)
    reference = built[request.param]
    _specials(reference)
    folder = tmp_path_factory.mktemp(request.param)
    reference.save(str(folder / "tokenizer.json"))
    return AutoTokenizer.from_pretrained(folder), tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))


def test_ids_offsets_and_decode_match_reference(pair_of_tokenizers, corpus):
    ours, reference = pair_of_tokenizers
    for text in EDGE_TEXTS + corpus[::25] + ["<s>after a special token</s> and   more"]:
        for add_special_tokens in (True, False):
            expected = reference.encode(text, add_special_tokens=add_special_tokens)
            got = ours(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
            assert got.input_ids == expected.ids, text
            assert got.offset_mapping == expected.offsets, text
        assert ours.decode(expected.ids) == reference.decode(expected.ids, skip_special_tokens=False), text
        assert ours.decode(expected.ids, skip_special_tokens=True) == reference.decode(expected.ids), text


@pytest.mark.parametrize("byte_pieces", [256, 128])
def test_a_unigram_with_byte_fallback_gives_the_references_ids(tmp_path, byte_pieces):
    """A tokenizer.json Unigram's `<0xXX>` pieces are ordinary pieces (no SentencePiece types): unknown text
    takes them by name, and a character with a byte lacking its piece stays unknown, as in the reference."""
    vocab = [("<unk>", 0.0), ("▁hello", -1.0), ("▁", -2.0), ("h", -3.0), ("e", -3.0), ("l", -3.0), ("o", -3.0)]
    vocab += [(f"<0x{byte:02X}>", -10.0) for byte in range(byte_pieces)]
    reference = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    reference.pre_tokenizer = pre_tokenizers.Metaspace()
    reference.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    reference.save(str(tmp_path / "tokenizer.json"))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["hello ü 日本 a", "hole <0x41>", "\x00x"]:
        expected = reference.encode(text)
        assert ours.encode(text) == expected.ids, text
        assert ours.decode(expected.ids) == reference.decode(expected.ids)
