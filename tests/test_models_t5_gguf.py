"""GGUF files of T5, Flan-T5 and UMT5 as llama.cpp's converter writes them (its "t5" architecture: enc.blk.N.* and
dec.blk.N.* tensors, t5.* metadata, a SentencePiece Unigram tokenizer with T5's sentinels as "[PAD<id>]"
placeholders) and of T5's encoder alone ("t5encoder"). The reference reads "t5" files into another network (a gated
feed-forward with ReLU whatever the file holds, the original T5's head unscaled), so the oracle is the Hugging Face
model each file was written from: logits on a padded batch, greedy generation, the encoder's states, a Q8_0 matrix
read as its blocks dequantize; the tokenizer gives the ids of the Hugging Face tokenizer of the same SentencePiece
model, sentinels included (which the reference's reading of the file names back alike).
"""

import warnings

import gguf
import pytest
import sentencepiece
import torch
from test_tokenizers_sentencepiece import EDGE_TEXTS, corpus  # noqa: F401 (a fixture)

import openformers

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
            decoder_start_token_id=0)
VARIANTS = {  # the reference's config class, its options
    "t5": ("T5", dict(feed_forward_proj="relu")),  # the original: ReLU, tied head, decoder output scaled
    "flan-t5": ("T5", dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_decoder_layers=3)),
    "umt5": ("UMT5", dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)),  # a table in every layer
}


def reference_model(variant: str, head: str = "ForConditionalGeneration"):
    """The reference's tiny random model, its norms drawn and, untied, a head of its own."""
    family, options = VARIANTS[variant]
    torch.manual_seed(0)
    model = getattr(transformers, f"{family}{head}")(getattr(transformers, f"{family}Config")(**TINY, **options))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.normal_(1.0, 0.2)
        if not model.config.scale_decoder_outputs and hasattr(model, "lm_head"):
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    return model.eval()


def write_gguf(path, model, arch="t5", quantized=(), drop=(), tokens=None):
    """`model` as convert_hf_to_gguf.py's T5Model (T5EncoderModel for "t5encoder") writes it: its t5.* metadata,
    one token table, the head only when it is not tied (the saved checkpoint holds none then), llama.cpp's tensor
    names (the gguf package's own map), the tensors named in `quantized` as Q8_0 blocks, the metadata keys in `drop`
    left out, and `tokens` (pieces, scores, types, charsmap) as its tokenizer. Returns the quantized tensors as the
    blocks give them back, by Hugging Face name."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    metadata = {
        "context_length": 512, "embedding_length": config.d_model, "feed_forward_length": config.d_ff,
        "block_count": config.num_layers, "head_count": config.num_heads, "key_length": config.d_kv,
        "value_length": config.d_kv, "layer_norm_eps": config.layer_norm_epsilon,
        "relative_attn_buckets_count": config.relative_attention_num_buckets,
        "layer_norm_rms_eps": config.layer_norm_epsilon,
    }
    if arch == "t5":
        metadata.update(decoder_block_count=config.num_decoder_layers, decoder_start_token_id=0)
    for key, value in metadata.items():
        if key not in drop:
            getattr(writer, f"add_{key}")(value)
    if tokens is None:  # a vocabulary of plain pieces, for the model's size
        tokens = ([f"t{i}" for i in range(config.vocab_size)], [-1.0] * config.vocab_size, [1] * config.vocab_size, b"")
    pieces, scores, types, charsmap = tokens
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(True)
    writer.add_remove_extra_whitespaces(True)
    if charsmap:
        writer.add_precompiled_charsmap(charsmap)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(2)
    writer.add_pad_token_id(0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5 if arch == "t5" else gguf.MODEL_ARCH.T5ENCODER,
                                     max(config.num_layers, config.num_decoder_layers))
    read_back, tables = {}, 0
    for name, tensor in model.state_dict().items():
        if name in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            tables += 1
            if tables > 1:
                continue
            name = "shared.weight"
        if name == "lm_head.weight" and config.scale_decoder_outputs:
            continue
        base, suffix = name.rsplit(".", 1)
        gguf_name = f"{names.get_name(base)}.{suffix}"
        if gguf_name in quantized:
            kind = gguf.GGMLQuantizationType.Q8_0
            blocks = gguf.quants.quantize(tensor.numpy(), kind)
            writer.add_tensor(gguf_name, blocks, raw_dtype=kind)
            read_back[name] = torch.from_numpy(gguf.quants.dequantize(blocks, kind))
        else:
            writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return read_back


def load_quietly(load, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(*args)


def padded_batch():
    ids = torch.randint(3, TINY["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = 0, 0
    ids[0, -1], ids[1, 5] = 1, 1  # EOS
    decoder_ids = torch.randint(3, TINY["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(2))
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids}


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = reference_model(variant)
    write_gguf(tmp_path / "t5.gguf", reference)
    model = load_quietly(openformers.AutoModelForSeq2SeqLM.from_pretrained, tmp_path / "t5.gguf")
    assert type(model).__name__ == type(reference).__name__
    for name in ("feed_forward_proj", "scale_decoder_outputs", "num_decoder_layers", "d_kv", "decoder_start_token_id"):
        assert getattr(model.config, name) == getattr(reference.config, name), name
    batch = padded_batch()
    torch.testing.assert_close(model(**batch).logits, reference(**batch).logits, atol=1e-4, rtol=1e-4)
    # Without its cache: the reference's sizes its decoder's cache by the encoder's layers.
    expected = reference.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8,
                                  do_sample=False, use_cache=False)
    ours = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8,
                          do_sample=False)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("variant", ["flan-t5", "umt5"])
@torch.inference_mode()
def test_t5encoder_gguf_matches_the_original_encoder(variant, tmp_path):
    reference = reference_model(variant, "EncoderModel")
    write_gguf(tmp_path / "encoder.gguf", reference, arch="t5encoder")
    model_class = getattr(openformers, type(reference).__name__)
    model = load_quietly(model_class.from_pretrained, tmp_path / "encoder.gguf")
    batch = {key: value for key, value in padded_batch().items() if key != "decoder_input_ids"}
    torch.testing.assert_close(model(**batch).last_hidden_state, reference(**batch).last_hidden_state,
                               atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_q8_0_matrix_reads_as_its_blocks(tmp_path):
    """A Q8_0 matrix (the decoder's first cross-attention query) reads as the blocks dequantize."""
    reference = reference_model("flan-t5")
    read_back = write_gguf(tmp_path / "q8.gguf", reference, quantized=("dec.blk.0.cross_attn_q.weight",))
    model = load_quietly(openformers.AutoModelForSeq2SeqLM.from_pretrained, tmp_path / "q8.gguf")
    name = "decoder.block.0.layer.1.EncDecAttention.q.weight"
    assert not torch.equal(read_back[name], reference.state_dict()[name])  # the blocks round
    reference.load_state_dict(read_back, strict=False)
    batch = padded_batch()
    torch.testing.assert_close(model(**batch).logits, reference(**batch).logits, atol=1e-4, rtol=1e-4)


def test_missing_metadata_is_named(tmp_path):
    write_gguf(tmp_path / "t5.gguf", reference_model("t5"), drop=("relative_attn_buckets_count",))
    with pytest.raises(ValueError, match=r"t5\.gguf lacks the GGUF metadata key t5\.attention\.relative_buckets_count"):
        openformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "t5.gguf")


@pytest.fixture(scope="module")
def t5_tokenizers(tmp_path_factory, corpus):  # noqa: F811 (a fixture)
    """A Unigram SentencePiece model laid out as T5's (pad 0, EOS 1, unk 2, no BOS); the reference's T5 tokenizer
    of it (100 sentinels after its pieces); the GGUF file the converter writes for a model of 128 more ids than
    pieces (placeholders, the sentinels among them), read by us and by the reference."""
    folder = tmp_path_factory.mktemp("t5_spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(folder / "spiece"), minloglevel=2, model_type="unigram",
        vocab_size=800, character_coverage=0.995, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    hf = transformers.T5Tokenizer.from_pretrained(folder)
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((folder / "spiece.model").read_bytes())
    size = len(spm) + 128
    pieces, scores, types = [f"[PAD{i}]" for i in range(size)], [-10000.0] * size, [5] * size  # 5: UNUSED
    for i in range(len(spm)):
        pieces[i], scores[i] = spm.id_to_piece(i), spm.get_score(i)
        types[i] = 2 if spm.is_unknown(i) else 3 if spm.is_control(i) else 1
    config = transformers.T5Config(**{**TINY, "vocab_size": size})
    path = tmp_path_factory.mktemp("t5_gguf") / "t5.gguf"
    write_gguf(path, transformers.T5ForConditionalGeneration(config),
               tokens=(pieces, scores, types, proto.normalizer_spec.precompiled_charsmap))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return openformers.AutoTokenizer.from_pretrained(path), hf, theirs


def test_tokenizer_ids_equal_the_hugging_face_tokenizer(t5_tokenizers, corpus):  # noqa: F811 (a fixture)
    ours, hf, theirs = t5_tokenizers
    sentinels = ["The <extra_id_0> walks in <extra_id_1> park.", "<extra_id_99> end"]
    for text in EDGE_TEXTS + corpus[::50] + sentinels:
        expected = hf(text)["input_ids"]
        assert ours(text)["input_ids"] == expected, text
        if hf.unk_token_id not in expected:  # an unknown piece decodes as sentencepiece's " ⁇ " here (DESIGN.md)
            assert ours.decode(expected, skip_special_tokens=True) == hf.decode(expected, skip_special_tokens=True)
    for text in sentinels:  # the reference's reading of the file names the sentinels back alike (it drops the
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text  # charsmap: other text may differ)
    assert ours.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [len(hf) - 1 - 0, len(hf) - 100]
    assert (ours.eos_token_id, ours.pad_token_id, ours.unk_token_id) == (1, 0, 2)
