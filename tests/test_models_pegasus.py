"""Pegasus against the reference: tiny random models made by the reference for every head load without a word, give
the reference's outputs and losses and hidden states, save what the reference loads back with no key missing (the
position tables included, as the reference saves them), decode with the cache as without it, generate the reference's
tokens, and come back from the Auto classes as the reference's classes."""

import json
import warnings

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import assert_same, draw_weights, load_quietly, outputs_of
from seq2seq_models import assert_hidden_states_and_attentions_match, assert_padded_row_gives_what_it_gives_alone, \
    bart_head_inputs, cached_steps_and_full_pass, reloaded_both_ways, right_padded_ids

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")

PAD, EOS = 0, 1  # Pegasus's layout; decoding starts from the padding token
TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
            dropout=0.0, init_std=0.2, scale_embedding=True, activation_function="relu")  # pegasus-large's
HEADS = {"PegasusModel": "AutoModel", "PegasusForConditionalGeneration": "AutoModelForSeq2SeqLM",
         "PegasusForCausalLM": "AutoModelForCausalLM"}
LENGTH, SHORT = 9, 6  # the second row is right-padded after SHORT tokens


def _reference(name, **overrides):
    torch.manual_seed(0)
    model = draw_weights(getattr(transformers, name)(transformers.PegasusConfig(**{**TINY, **overrides})).eval())
    if hasattr(model, "final_logits_bias"):  # a buffer, zero in the reference's init: make it count too
        model.final_logits_bias.normal_(std=0.5)
    return model


def _ids(seed=1):
    return right_padded_ids(2, TINY["vocab_size"], LENGTH, SHORT, PAD, EOS, seed)


def _inputs(name):
    decoder_ids = torch.randint(2, TINY["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(2))
    decoder_ids[:, 0] = PAD
    return bart_head_inputs(name, *_ids(), decoder_ids)


@pytest.fixture(scope="module", params=list(HEADS))
def tiny(request, tmp_path_factory):
    """(the reference's class name, reference model, ours loaded by the Auto class)."""
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name)
    reference.save_pretrained(folder)
    return name, reference, load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    reference = _reference("PegasusForConditionalGeneration", init_std=0.5)  # large weights: varied generations
    reference.save_pretrained(folder)
    return reference, openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)


@torch.inference_mode()
def test_every_head_matches_reference(tiny):
    name, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    inputs = _inputs(name)
    ours, theirs = outputs_of(model(**inputs)), outputs_of(reference(**inputs))
    assert ("loss" in theirs) == (name != "PegasusModel")
    assert_same(ours, theirs)


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_without_missing_keys(tiny, tmp_path):
    name, reference, model = tiny
    theirs, ours = reloaded_both_ways(model, tmp_path, name)
    inputs = _inputs(name)
    assert_same(outputs_of(theirs(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)
    assert_same(outputs_of(ours(**inputs)), outputs_of(model(**inputs)), atol=1e-6)


@torch.inference_mode()
def test_hidden_states_end_with_the_stacks_final_norm_as_the_references(tmp_path):
    reference = _reference("PegasusForConditionalGeneration", attn_implementation="eager")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    inputs = _inputs("PegasusForConditionalGeneration")
    assert_hidden_states_and_attentions_match(model, reference, inputs, TINY["encoder_layers"])


def test_position_tables_are_the_references_and_not_trained():
    theirs = transformers.PegasusModel(transformers.PegasusConfig(**TINY)).decoder.embed_positions.weight
    ours = openformers.PegasusModel(configs.PegasusConfig(**TINY))
    torch.testing.assert_close(ours.decoder.embed_positions.weight, theirs.detach(), atol=1e-6, rtol=0)
    assert not any("embed_positions" in name for name, _ in ours.named_parameters())


@torch.inference_mode()
def test_right_padded_rows_give_what_they_give_alone(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    assert_padded_row_gives_what_it_gives_alone(model, ids, mask, _inputs("PegasusModel")["decoder_input_ids"], SHORT,
                                                atol=1e-4)


@torch.inference_mode()
def test_decoding_step_by_step_with_the_cache_gives_the_full_pass(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    steps, full = cached_steps_and_full_pass(model, ids, mask, _inputs("PegasusModel")["decoder_input_ids"])
    torch.testing.assert_close(steps, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3), dict(num_beams=2, num_return_sequences=2)],
                         ids=["greedy", "beams", "two-returned"])
@torch.inference_mode()
def test_generation_matches_reference(seq2seq, options):
    reference, model = seq2seq
    ids, mask = _ids()
    kwargs = dict(max_new_tokens=10, do_sample=False, **options)
    expected = reference.generate(input_ids=ids, attention_mask=mask, **kwargs)
    got = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(got, expected) and bool((got[:, 0] == PAD).all())


@torch.inference_mode()
def test_causal_lm_counts_positions_from_the_cache_as_the_reference(tmp_path):
    """The reference's Pegasus decoder takes no position ids: a left-padded row's positions count its padding."""
    reference = _reference("PegasusForCausalLM", init_std=0.5)
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    batch = torch.tensor([[5, 17, 42, 8, 9], [PAD, PAD, 9, 33, 4]])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    for options in (dict(), dict(num_beams=3)):
        kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, **options)
        assert torch.equal(model.generate(batch, attention_mask=mask, **kwargs),
                           reference.generate(batch, attention_mask=mask, **kwargs))


def test_the_base_model_wants_decoder_inputs_as_the_reference():
    model = openformers.PegasusModel(configs.PegasusConfig(**TINY))
    with pytest.raises(ValueError):
        _reference("PegasusModel")(input_ids=_ids()[0])
    with pytest.raises(ValueError, match="decoder_input_ids"):
        model(input_ids=_ids()[0])


def test_config_defaults_names_and_errors_are_the_references():
    ours, theirs = configs.PegasusConfig(), transformers.PegasusConfig()
    for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "decoder_ffn_dim",
                 "max_position_embeddings", "decoder_start_token_id", "pad_token_id", "eos_token_id",
                 "forced_eos_token_id", "num_labels", "is_encoder_decoder", "scale_embedding", "init_std",
                 "activation_function", "dropout", "tie_word_embeddings", "hidden_size", "num_attention_heads",
                 "num_hidden_layers"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert openformers.AutoConfig.for_model("pegasus").model_type == "pegasus"
    for field, value in (("d_model", 30), ("activation_function", "mish"), ("dropout", 1.5), ("encoder_layers", 0)):
        with pytest.raises(ValueError, match=field):
            configs.PegasusConfig(**{**TINY, field: value})


# The tokenizer: a SentencePiece unigram model trained here in Pegasus's layout (<pad>, </s>, <unk> first).

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Hello world, how are you today?", "I am a small frog.",
          "Numbers like 1234 and 3.14 appear too.", "Summaries are shorter than the articles they summarize."]
TEXTS = ["Hello world", "Hello <mask_1> world", "a <mask_2> b <unk_7> c", "Hi </s> there <pad>x", "€uro ☃ snow",
         "", "line\none", "The lazy dog."]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pegasus_tokenizer")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 5), model_prefix=str(folder / "spiece"), vocab_size=70, model_type="unigram",
        minloglevel=2, character_coverage=1.0, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    (folder / "spiece.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PegasusTokenizer"}))
    return folder, _reference_tokenizer(folder), openformers.AutoTokenizer.from_pretrained(folder)


def _reference_tokenizer(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(str(folder))


def _assert_encodes_as(ours, reference):
    assert type(ours).__name__ == type(reference).__name__ == "PegasusTokenizer"
    assert (len(ours), ours.vocab_size) == (len(reference), reference.vocab_size)
    assert sorted(ours.all_special_ids) == sorted(reference.all_special_ids)
    names = ["<mask_1>", "<mask_2>", "<unk_2>", "<unk_102>", "<unk>", "▁the"]
    assert ours.convert_tokens_to_ids(names) == reference.convert_tokens_to_ids(names)
    for text in TEXTS:
        assert ours(text).input_ids == reference(text).input_ids, text
        assert ours(text, text).input_ids == reference(text, text).input_ids, text
        ids = reference(text).input_ids
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip), text


def test_tokenizer_encodes_and_decodes_as_the_reference(tokenizers):
    _, reference, ours = tokenizers
    _assert_encodes_as(ours, reference)
    assert dict(ours(CORPUS[:2], text_target=CORPUS[2:4], padding=True)) == \
        dict(reference(CORPUS[:2], text_target=CORPUS[2:4], padding=True))


def test_tokenizer_saves_both_ways(tokenizers, tmp_path):
    _, reference, ours = tokenizers
    ours.save_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")
    assert (tmp_path / "ours" / "tokenizer.json").is_file()  # the pipeline the reference builds from spiece.model
    _assert_encodes_as(_reference_tokenizer(tmp_path / "ours"), reference)
    _assert_encodes_as(openformers.AutoTokenizer.from_pretrained(tmp_path / "theirs"), reference)


@torch.inference_mode()
def test_summarization_pipeline_gives_the_references_summary(tokenizers, tmp_path):
    folder, tokenizer, _ = tokenizers
    reference = _reference("PegasusForConditionalGeneration", init_std=0.5, vocab_size=len(tokenizer))
    reference.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    options = dict(max_new_tokens=8, num_beams=2)
    expected = reference.generate(**tokenizer(CORPUS[:2], return_tensors="pt", padding=True), **options)
    summarizer = openformers.pipeline("summarization", model=tmp_path, **options)
    texts = tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert summarizer(CORPUS[:2]) == [{"summary_text": text} for text in texts]
