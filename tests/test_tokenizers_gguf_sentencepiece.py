"""SentencePiece tokenizers stored in GGUF metadata (`tokenizer.ggml.model` "llama": BPE by score with byte
fallback, as Llama-2 and Mistral GGUF files; "t5": Unigram with the precompiled normalization rules), written
here with the `gguf` package from models trained with `sentencepiece`: ids, pieces and decode equal the library's
on the same model, and save_pretrained writes a tokenizer.model that `sentencepiece` loads to the same ids."""

import gguf
import pytest
import sentencepiece
from test_tokenizers_sentencepiece import EDGE_TEXTS, corpus, llama_style, t5_style  # noqa: F401 (fixtures)

from openformers import AutoTokenizer
from openformers.tokenizers.sentencepiece import read_sentencepiece_model


def _write_gguf(path, model_file, kind: str):
    """A GGUF holding only the tokenizer, the way llama.cpp's converter writes one from a tokenizer.model."""
    spm = read_sentencepiece_model(model_file)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model(kind)
    writer.add_token_list([piece for piece, _, _ in spm.pieces])
    writer.add_token_scores([score for _, score, _ in spm.pieces])
    writer.add_token_types([piece_type for _, _, piece_type in spm.pieces])
    writer.add_unk_token_id(spm.unk_id)
    writer.add_bos_token_id(spm.bos_id)
    writer.add_eos_token_id(spm.eos_id)
    if spm.pad_id >= 0:
        writer.add_pad_token_id(spm.pad_id)
    writer.add_add_space_prefix(spm.add_dummy_prefix)
    if kind == "t5":
        writer.add_remove_extra_whitespaces(spm.remove_extra_whitespaces)
        writer.add_precompiled_charsmap(spm.precompiled_charsmap)
    writer.add_chat_template("{{ messages[0]['content'] }}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module", params=["llama", "t5"])
def from_gguf(request, tmp_path_factory):
    folder, reference = request.getfixturevalue("llama_style" if request.param == "llama" else "t5_style")
    path = _write_gguf(tmp_path_factory.mktemp("gguf") / "tokenizer.gguf", folder / "tokenizer.model", request.param)
    return request.param, AutoTokenizer.from_pretrained(path), reference


def test_ids_pieces_and_decode_equal_sentencepiece(from_gguf, corpus):  # noqa: F811 (a fixture)
    kind, ours, reference = from_gguf
    for text in EDGE_TEXTS + corpus[::40] + ["<tool>call</tool> after"]:
        expected = reference.encode(text)
        got = ours.encode(text, add_special_tokens=False)
        assert got == expected, text
        assert ours.tokenize(text) == [reference.id_to_piece(token_id) for token_id in expected]
        assert ours.decode(got) == reference.decode(expected), text
        with_specials = [reference.bos_id(), *expected] if kind == "llama" else [*expected, reference.eos_id()]
        assert ours.encode(text) == with_specials


def test_special_tokens_offsets_and_chat_template(from_gguf):
    kind, ours, reference = from_gguf
    assert (ours.unk_token_id, ours.bos_token_id, ours.eos_token_id) == (
        reference.unk_id(),
        reference.bos_id(),
        reference.eos_id(),
    )
    assert ours.pad_token_id == (reference.pad_id() if reference.pad_id() >= 0 else None)
    assert len(ours) == reference.get_piece_size()
    assert ours.chat_template == "{{ messages[0]['content'] }}"
    # As llama.cpp does, the text after a special token starts a new word ("▁" in front again).
    ids = ours.encode("Hello</s>world", add_special_tokens=False)
    eos = ids.index(reference.eos_id())
    assert ids[:eos] == reference.encode("Hello") and ids[eos + 1 :] == reference.encode("world")
    for text in EDGE_TEXTS:
        encoding = ours(text, add_special_tokens=False, return_offsets_mapping=True)
        for start, end in encoding.offset_mapping:
            assert 0 <= start <= end <= len(text), text


def test_save_pretrained_writes_a_tokenizer_model(from_gguf, tmp_path, corpus):  # noqa: F811 (a fixture)
    _, ours, reference = from_gguf
    ours.save_pretrained(tmp_path)
    written = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in EDGE_TEXTS + corpus[::200]:
        assert written.encode(text) == reference.encode(text), text
        assert reloaded.encode(text) == ours.encode(text), text


def test_bad_sentencepiece_gguf_is_named(tmp_path, llama_style):  # noqa: F811 (a fixture)
    writer = gguf.GGUFWriter(tmp_path / "short.gguf", "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "a", "b"])
    writer.add_token_scores([0.0, -1.0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"short\.gguf: tokenizer\.ggml\.scores has 2 values for 3 tokens"):
        AutoTokenizer.from_pretrained(tmp_path / "short.gguf")


def test_gemma_style_runs_of_spaces_and_control_pieces_are_matched_whole(tmp_path):
    # Gemma's GGUF files store its runs of spaces as user-defined pieces spelled with real spaces ("  "), which
    # llama.cpp and the reference match whole (the pipeline, after spaces become "▁"); control pieces such as
    # `<start_of_turn>` are special tokens.
    tokens = ["<pad>", "</s>", "<s>", "<unk>", "a", "b", "▁", "▁a", "▁b", "  ", "   ", "\n", "<turn>"]
    types = [gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.UNKNOWN] + [gguf.TokenType.NORMAL] * 5
    writer = gguf.GGUFWriter(tmp_path / "spaces.gguf", "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 4 + [-1.0, -2.0, -3.0, -4.0, -5.0] + [-1000.0] * 3 + [0.0])
    writer.add_token_types(types + [gguf.TokenType.USER_DEFINED] * 3 + [gguf.TokenType.CONTROL])
    writer.add_unk_token_id(3)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "spaces.gguf")
    assert tokenizer.encode("  a b\n   b", add_special_tokens=False) == [9, 4, 8, 11, 10, 5]
    assert tokenizer.convert_ids_to_tokens([9, 10]) == ["▁▁", "▁▁▁"]
    assert tokenizer.decode([2, 9, 4, 8, 11, 10, 5], skip_special_tokens=True) == "  a b\n   b"
    assert tokenizer.encode("<turn>a<turn>", add_special_tokens=False) == [12, 4, 12]
    assert "<turn>" in tokenizer.all_special_tokens
    with_extra = AutoTokenizer.from_pretrained(tmp_path / "spaces.gguf", extra_special_tokens=["<x>"])
    assert {"<turn>", "<x>"} <= set(with_extra.all_special_tokens)
