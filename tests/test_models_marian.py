"""Marian (opus-mt) against the reference: tiny random models made by the reference for every head and both token
table layouts load without a word, give the reference's outputs and losses, save what the reference loads back with
no key missing, decode with the cache as without it, generate the reference's tokens (greedy and beams, the padding
token banned as the checkpoints' generation configs ban it), and translate through the pipeline as the reference's
model and tokenizer do. MarianTokenizer is compared with the reference's on SentencePiece models trained here."""

import json
import warnings

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import assert_same as _assert_same, draw_weights, load_quietly as _load_quietly, \
    outputs_of as _outputs
from seq2seq_models import assert_decoder_inputs_wanted, assert_padded_row_gives_what_it_gives_alone, \
    cached_steps_and_full_pass, reloaded_both_ways, right_padded_ids, write_checkpoint

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")

PAD, EOS = 98, 0  # Marian's layout: </s> first, the padding token last; decoding starts from the padding token
TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
            pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=EOS, forced_eos_token_id=EOS, dropout=0.0,
            init_std=0.2)
VARIANTS = {  # the opus-mt checkpoints' settings, and a model with its own decoder vocabulary
    "shared": dict(scale_embedding=True, activation_function="swish"),
    "separate": dict(share_encoder_decoder_embeddings=False, decoder_vocab_size=113, activation_function="gelu"),
}
HEADS = {"MarianModel": "AutoModel", "MarianMTModel": "AutoModelForSeq2SeqLM",
         "MarianForCausalLM": "AutoModelForCausalLM"}
LENGTH, SHORT = 9, 6  # the second row is right-padded after SHORT tokens, as Marian's tokenizer pads


def _reference(name, **overrides):
    torch.manual_seed(0)
    model = draw_weights(getattr(transformers, name)(transformers.MarianConfig(**{**TINY, **overrides})).eval())
    if hasattr(model, "final_logits_bias"):  # a buffer, zero in the reference's init: make it count too
        model.final_logits_bias.normal_(std=0.5)
    return model


def _ids(seed=1):
    return right_padded_ids(1, PAD, LENGTH, SHORT, PAD, EOS, seed)


def _inputs(name):
    ids, mask = _ids()
    if name == "MarianForCausalLM":
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    decoder_ids = torch.randint(1, PAD, (2, 5), generator=torch.Generator().manual_seed(2))
    decoder_ids[:, 0] = PAD
    inputs = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids}
    return {**inputs, "labels": decoder_ids.roll(-1, 1)} if name == "MarianMTModel" else inputs


@pytest.fixture(scope="module", params=[(name, variant) for name in HEADS for variant in VARIANTS
                                        if (name, variant) != ("MarianForCausalLM", "separate")])
def tiny(request, tmp_path_factory):
    """(the reference's class name, variant, folder, reference model, ours loaded by the Auto class)."""
    name, variant = request.param
    folder = tmp_path_factory.mktemp(f"{name}-{variant}")
    reference = _reference(name, **VARIANTS[variant])
    reference.save_pretrained(folder)
    return name, variant, folder, reference, _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    reference = _reference("MarianMTModel", init_std=0.5, **VARIANTS["shared"])  # large weights: varied generations
    reference.save_pretrained(folder)
    return reference, openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)


@torch.inference_mode()
def test_every_head_matches_reference(tiny):
    name, _, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    inputs = _inputs(name)
    _assert_same(_outputs(model(**inputs)), _outputs(reference(**inputs)))


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_without_missing_keys(tiny, tmp_path):
    name, _, _, reference, model = tiny
    theirs, ours = reloaded_both_ways(model, tmp_path, name)
    inputs = _inputs(name)
    _assert_same(_outputs(theirs(**inputs)), _outputs(reference(**inputs)), atol=1e-6)
    _assert_same(_outputs(ours(**inputs)), _outputs(model(**inputs)), atol=1e-6)


def test_position_tables_are_the_references_and_not_trained():
    for dim in (32, 7):  # an odd width puts one more sine than cosine in each row
        config = dict(TINY, d_model=dim, encoder_attention_heads=1, decoder_attention_heads=1)
        theirs = transformers.MarianModel(transformers.MarianConfig(**config)).encoder.embed_positions.weight
        ours = openformers.MarianModel(configs.MarianConfig(**config))
        torch.testing.assert_close(ours.encoder.embed_positions.weight, theirs.detach(), atol=1e-6, rtol=0)
        assert "encoder.embed_positions.weight" not in dict(ours.named_parameters())


@torch.inference_mode()
def test_right_padded_rows_give_what_they_give_alone(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    assert_padded_row_gives_what_it_gives_alone(model, ids, mask, _inputs("MarianMTModel")["decoder_input_ids"], SHORT)


@torch.inference_mode()
def test_decoding_step_by_step_with_the_cache_gives_the_full_pass(seq2seq):
    steps, full = cached_steps_and_full_pass(seq2seq[1], *_ids(), _inputs("MarianMTModel")["decoder_input_ids"])
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3), dict(num_beams=2, num_return_sequences=2)],
                         ids=["greedy", "beams", "two-returned"])
@torch.inference_mode()
def test_generation_matches_reference(seq2seq, options):
    reference, model = seq2seq
    ids, mask = _ids()
    kwargs = dict(max_new_tokens=10, do_sample=False, bad_words_ids=[[PAD]], **options)
    expected = reference.generate(input_ids=ids, attention_mask=mask, **kwargs)
    got = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(got, expected) and bool((got[:, 0] == PAD).all()) and not (got[:, 1:] == PAD).any()


@torch.inference_mode()
def test_causal_lm_counts_positions_from_the_cache_as_the_reference(tmp_path):
    """The reference's Marian decoder takes no position ids: a left-padded row's positions count its padding."""
    reference = _reference("MarianForCausalLM", init_std=0.5, **VARIANTS["shared"])
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    batch = torch.tensor([[5, 17, 42, 8, 9], [PAD, PAD, 9, 33, 4]])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate passes a decoder; Marian's does not read them
    torch.testing.assert_close(model(batch, attention_mask=mask, position_ids=positions).logits,
                               reference(batch, attention_mask=mask).logits, atol=1e-4, rtol=1e-4)
    for options in (dict(), dict(num_beams=3)):
        kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, **options)
        assert torch.equal(model.generate(batch, attention_mask=mask, **kwargs),
                           reference.generate(batch, attention_mask=mask, **kwargs))


@torch.inference_mode()
def test_given_embeddings_are_scaled_as_the_reference_scales_them(seq2seq):
    reference, model = seq2seq
    ids, mask = _ids()
    decoder_ids = _inputs("MarianMTModel")["decoder_input_ids"]
    table = reference.model.shared
    embeds = {"inputs_embeds": table(ids) * 3.0, "decoder_inputs_embeds": table(decoder_ids)}
    torch.testing.assert_close(model(attention_mask=mask, **embeds).logits,
                               reference(attention_mask=mask, **embeds).logits, atol=1e-4, rtol=1e-4)


def test_the_base_model_wants_decoder_inputs_as_the_reference():
    """Marian, unlike BART, does not shift input_ids into decoder inputs."""
    assert_decoder_inputs_wanted(_reference("MarianModel"), openformers.MarianModel(configs.MarianConfig(**TINY)),
                                 _ids()[0])


@torch.inference_mode()
def test_a_checkpoint_with_position_tables_and_every_tied_copy_loads_quietly(tmp_path):
    """Older opus-mt files store the position tables and the shared table under every name; they load as computed
    tables and one tied table, without a word."""
    reference = _reference("MarianMTModel", **VARIANTS["shared"])
    assert {"model.encoder.embed_positions.weight", "lm_head.weight"} <= set(write_checkpoint(reference, tmp_path))
    model = _load_quietly(openformers.AutoModelForSeq2SeqLM.from_pretrained, tmp_path)
    assert model.lm_head.weight is model.model.shared.weight is model.model.decoder.embed_tokens.weight
    inputs = _inputs("MarianMTModel")
    _assert_same(_outputs(model(**inputs)), _outputs(reference(**inputs)))


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_a_base_model_checkpoint_reads_as_the_translation_model_with_a_zero_bias(variant, tmp_path):
    _reference("MarianModel", **VARIANTS[variant]).save_pretrained(tmp_path)
    model = _load_quietly(openformers.MarianMTModel.from_pretrained, tmp_path)  # as the reference: quietly
    assert not model.final_logits_bias.any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    inputs = _inputs("MarianMTModel")
    _assert_same(_outputs(model(**inputs)), _outputs(theirs(**inputs)))


def test_config_defaults_names_and_errors_are_the_references():
    ours, theirs = configs.MarianConfig(), transformers.MarianConfig()
    for name in ("vocab_size", "decoder_vocab_size", "d_model", "encoder_layers", "decoder_ffn_dim",
                 "max_position_embeddings", "decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id",
                 "forced_eos_token_id", "num_labels", "is_encoder_decoder", "scale_embedding", "init_std",
                 "activation_function", "share_encoder_decoder_embeddings", "tie_word_embeddings", "hidden_size",
                 "num_attention_heads", "num_hidden_layers"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert configs.MarianConfig(vocab_size=10).decoder_vocab_size == 10
    config = configs.MarianConfig(hidden_size=64, num_attention_heads=8)
    assert (config.d_model, config.encoder_attention_heads) == (64, 8) and "hidden_size" not in config.to_dict()
    for field, value in (("d_model", 30), ("activation_function", "mish"), ("decoder_vocab_size", -3),
                         ("dropout", 1.5)):
        with pytest.raises(ValueError, match=field):
            configs.MarianConfig(**{**TINY, field: value})


def test_resizing_keeps_one_table_and_refuses_separate_ones():
    model = openformers.MarianMTModel(configs.MarianConfig(**TINY))
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    shared = model.get_input_embeddings().weight
    assert model.lm_head.weight is shared and model.model.decoder.embed_tokens.weight is shared
    assert model.final_logits_bias.shape == (1, 104) and model.config.decoder_vocab_size == 104
    separate = openformers.MarianMTModel(configs.MarianConfig(**TINY, **VARIANTS["separate"]))
    assert separate.lm_head.weight is separate.model.decoder.embed_tokens.weight
    assert separate.model.encoder.embed_tokens.weight is not separate.model.decoder.embed_tokens.weight
    with pytest.raises(ValueError, match="share_encoder_decoder_embeddings"):
        separate.resize_token_embeddings(120)


# The tokenizer: SentencePiece models for each language trained here, and a vocab.json that both share.

SOURCE = ["The quick brown fox jumps over the lazy dog.", "Hello world, how are you today?", "I am a small frog.",
          "Tom asked his teacher for advice.", "Numbers like 1234 and 3.14 appear too."]
TARGET = ["Der schnelle braune Fuchs springt über den faulen Hund.", "Hallo Welt, wie geht es dir heute?",
          "Ich bin ein kleiner Frosch.", "Tom bat seinen Lehrer um Rat.", "Zahlen wie 1234 und 3,14 kommen vor."]
TEXTS = ["Hello world", ">>de<< Hello world", ">>de<<Hello", "Hello >>de<< x", ">>xx<< Hi", "Hi </s> there <pad>x",
         "€uro ☃ snow", "  spaced   out  ", "", "Schöne Grüße über alles!", "He said . Hi , there"]


def _marian_tokenizer_folder(folder, separate=False):
    folder.mkdir(parents=True, exist_ok=True)
    vocabularies = []
    for name, lines in (("source", SOURCE), ("target", TARGET)):
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines * 5), model_prefix=str(folder / name), vocab_size=80, model_type="unigram",
            minloglevel=2, character_coverage=1.0, hard_vocab_limit=False, pad_id=-1, bos_id=-1, eos_id=2, unk_id=1)
        (folder / f"{name}.model").rename(folder / f"{name}.spm")
        processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / f"{name}.spm"))
        vocabularies.append([processor.id_to_piece(i) for i in range(processor.get_piece_size())])
    pieces = [vocabularies[0], vocabularies[1]] if separate else [vocabularies[0] + vocabularies[1]]
    for pieces_of, file in zip(pieces, ("vocab.json", "target_vocab.json")):
        vocab = {"</s>": 0, "<unk>": 1}
        for piece in pieces_of + [">>de<<", "<pad>"]:
            vocab.setdefault(piece, len(vocab))
        (folder / file).write_text(json.dumps(vocab))
    config = {"source_lang": "en", "target_lang": "de", "separate_vocabs": separate,
              "tokenizer_class": "MarianTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module", params=[False, True], ids=["shared-vocab", "separate-vocabs"])
def tokenizers(request, tmp_path_factory):
    folder = _marian_tokenizer_folder(tmp_path_factory.mktemp("marian_tokenizer"), separate=request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Recommended: pip install sacremoses."
        reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    return folder, reference, openformers.AutoTokenizer.from_pretrained(folder)


def test_tokenizer_encodes_and_decodes_as_the_reference(tokenizers):
    _, reference, ours = tokenizers
    assert type(ours).__name__ == type(reference).__name__ == "MarianTokenizer"
    assert (len(ours), ours.vocab_size, ours.all_special_ids) == (len(reference), reference.vocab_size,
                                                                 reference.all_special_ids)
    for text in TEXTS:
        assert ours(text).input_ids == reference(text).input_ids, text
        assert ours(text_target=text).input_ids == reference(text_target=text).input_ids, text
        for ids in (reference(text).input_ids, reference(text_target=text).input_ids):
            for skip in (False, True):
                assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)
                for source in (False, True):
                    assert ours.decode(ids, skip_special_tokens=skip, use_source_tokenizer=source) == \
                        reference.decode(ids, skip_special_tokens=skip, use_source_tokenizer=source), (text, source)
            mask = reference.get_special_tokens_mask(ids, already_has_special_tokens=True)
            assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == mask


def test_tokenizer_batches_pad_and_return_labels_as_the_reference(tokenizers):
    _, reference, ours = tokenizers
    options = dict(text_target=TARGET[:3], padding=True)
    assert dict(ours(SOURCE[:3], **options)) == dict(reference(SOURCE[:3], **options))
    theirs = reference(SOURCE[:2], padding="max_length", max_length=40, truncation=True, return_tensors="pt")
    got = ours(SOURCE[:2], padding="max_length", max_length=40, truncation=True, return_tensors="pt")
    assert torch.equal(got.input_ids, theirs.input_ids) and torch.equal(got.attention_mask, theirs.attention_mask)
    assert ours.batch_decode(theirs.input_ids, skip_special_tokens=True) == \
        reference.batch_decode(theirs.input_ids, skip_special_tokens=True)


def test_tokenizer_saves_both_ways(tokenizers, tmp_path):
    folder, reference, ours = tokenizers
    ours.save_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_of_ours = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ours"))
    ours_of_theirs = openformers.MarianTokenizer.from_pretrained(tmp_path / "theirs")
    assert (theirs_of_ours.source_lang, theirs_of_ours.separate_vocabs) == ("en", reference.separate_vocabs)
    for text in TEXTS:
        expected = reference(text, text_target=text)
        assert dict(theirs_of_ours(text, text_target=text)) == dict(expected)
        assert dict(ours_of_theirs(text, text_target=text)) == dict(expected)


@torch.inference_mode()
def test_translation_pipeline_gives_the_references_translation(tmp_path):
    folder = _marian_tokenizer_folder(tmp_path / "opus-mt-en-de")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    reference = _reference("MarianMTModel", init_std=0.5, **{**VARIANTS["shared"], "vocab_size": len(tokenizer),
                                                             "pad_token_id": tokenizer.pad_token_id,
                                                             "decoder_start_token_id": tokenizer.pad_token_id})
    reference.generation_config.bad_words_ids = [[tokenizer.pad_token_id]]
    reference.save_pretrained(folder)
    ours = openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)
    ours_tokenizer = openformers.AutoTokenizer.from_pretrained(folder)
    options = dict(max_new_tokens=8, num_beams=2)
    batch = ours_tokenizer(SOURCE[:2], return_tensors="pt", padding=True)
    expected = reference.generate(**tokenizer(SOURCE[:2], return_tensors="pt", padding=True), **options)
    assert torch.equal(ours.generate(**batch, **options), expected)
    translator = openformers.pipeline("translation_en_to_de", model=folder, **options)
    texts = tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert translator(SOURCE[:2]) == [{"translation_text": text} for text in texts]
