"""mBART against the reference: tiny random models made by the reference for every head load without a word, give the
reference's outputs and losses (decoder inputs made from input_ids or labels with the language code wrapped to the
front), hidden states and attention weights, save what the reference loads back with no key missing, decode with the
cache as without it, generate the reference's tokens (greedy, beams, a forced first token), and come back from the
Auto classes as the reference's classes. MBartTokenizer and MBart50Tokenizer are compared with the reference's on
SentencePiece models trained here, and the translation pipeline with the reference's model and tokenizer."""

import json
import warnings

import pytest
import torch

import openformers
from openformers import configs
from openformers.models.mbart import MBartEncoderLayer

from encoder_parity import assert_same, draw_weights, load_quietly, outputs_of
from seq2seq_models import assert_hidden_states_and_attentions_match, assert_padded_row_gives_what_it_gives_alone, \
    cached_steps_and_full_pass, reloaded_both_ways

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")

BOS, PAD, EOS, LANG = 0, 1, 2, 97  # fairseq's ids; a language code ends mBART's sequences: `X </s> xx_XX`
TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
            dropout=0.0, init_std=0.2, decoder_start_token_id=EOS, scale_embedding=True)
VARIANTS = {"scaled": {}, "unscaled": dict(scale_embedding=False, activation_function="relu")}
HEADS = {  # the reference's class -> the Auto class that picks it
    "MBartModel": "AutoModel",
    "MBartForConditionalGeneration": "AutoModelForSeq2SeqLM",
    "MBartForSequenceClassification": "AutoModelForSequenceClassification",
    "MBartForQuestionAnswering": "AutoModelForQuestionAnswering",
    "MBartForCausalLM": "AutoModelForCausalLM",
}
LENGTH, SHORT = 10, 7  # the second row is right-padded after SHORT tokens, as mBART's tokenizers pad


def _reference(name, **overrides):
    torch.manual_seed(0)
    model = draw_weights(getattr(transformers, name)(transformers.MBartConfig(**{**TINY, **overrides})).eval())
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "layernorm" in parameter_name:  # the embeddings' LayerNorm, which draw_weights leaves at one
                parameter.uniform_(0.5, 1.5)
        if hasattr(model, "final_logits_bias"):  # a buffer, zero in the reference's init: make it count too
            model.final_logits_bias.normal_(std=0.5)
    return model


def _ids(seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows `X </s> LANG`, the second right-padded."""
    ids = torch.randint(3, LANG, (2, LENGTH), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    ids[:, -2:] = torch.tensor([EOS, LANG])
    ids[1, SHORT - 2:SHORT] = torch.tensor([EOS, LANG])
    ids[1, SHORT:], mask[1, SHORT:] = PAD, 0
    return ids, mask


def _inputs(name) -> dict:
    """Without decoder inputs: the base model and the heads shift input_ids, the LM head its labels."""
    ids, mask = _ids()
    inputs = {"input_ids": ids, "attention_mask": mask}
    labels = ids.masked_fill(mask == 0, -100)
    if name in ("MBartForConditionalGeneration", "MBartForCausalLM"):
        return {**inputs, "labels": labels}
    if name == "MBartForSequenceClassification":
        return {**inputs, "labels": torch.tensor([1, 0])}
    if name == "MBartForQuestionAnswering":
        return {**inputs, "start_positions": torch.tensor([1, 3]), "end_positions": torch.tensor([4, 5])}
    return inputs


@pytest.fixture(scope="module", params=[(name, "scaled") for name in HEADS]
                + [("MBartForConditionalGeneration", "unscaled")], ids=lambda p: "-".join(p))
def tiny(request, tmp_path_factory):
    """(the reference's class name, folder, reference model, ours loaded by the Auto class)."""
    name, variant = request.param
    folder = tmp_path_factory.mktemp(f"{name}-{variant}")
    reference = _reference(name, **VARIANTS[variant])
    reference.save_pretrained(folder)
    return name, folder, reference, load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    reference = _reference("MBartForConditionalGeneration", init_std=0.5)  # large weights: varied generations
    reference.save_pretrained(folder)
    return reference, openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)


@torch.inference_mode()
def test_every_head_matches_reference(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    inputs = _inputs(name)
    ours, theirs = outputs_of(model(**inputs)), outputs_of(reference(**inputs))
    assert ("loss" in theirs) == (name not in ("MBartModel",))
    assert_same(ours, theirs)


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_without_missing_keys(tiny, tmp_path):
    name, _, reference, model = tiny
    theirs, ours = reloaded_both_ways(model, tmp_path, name)
    inputs = _inputs(name)
    assert_same(outputs_of(theirs(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)
    assert_same(outputs_of(ours(**inputs)), outputs_of(model(**inputs)), atol=1e-6)


@torch.inference_mode()
def test_each_padded_row_gives_what_it_gives_alone(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    decoder_ids = torch.randint(3, LANG, (2, 5), generator=torch.Generator().manual_seed(2))
    assert_padded_row_gives_what_it_gives_alone(model, ids, mask, decoder_ids, SHORT, atol=1e-4)


@torch.inference_mode()
def test_hidden_states_end_with_the_stacks_final_norm_as_the_references(tmp_path):
    reference = _reference("MBartForConditionalGeneration", attn_implementation="eager")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    inputs = _inputs("MBartForConditionalGeneration")
    assert_hidden_states_and_attentions_match(model, reference, inputs, TINY["encoder_layers"])
    ours = model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(ours.encoder_hidden_states[-1], ours.encoder_last_hidden_state)


@torch.inference_mode()
def test_decoding_step_by_step_with_the_cache_gives_the_full_pass(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    decoder_ids = torch.randint(3, LANG, (2, 5), generator=torch.Generator().manual_seed(3))
    steps, full = cached_steps_and_full_pass(model, ids, mask, decoder_ids)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3), dict(num_beams=2, num_return_sequences=2),
                                     dict(forced_bos_token_id=LANG), dict(forced_bos_token_id=LANG, num_beams=3)],
                         ids=["greedy", "beams", "two-returned", "forced-language", "forced-language-beams"])
@torch.inference_mode()
def test_generation_matches_reference(seq2seq, options):
    reference, model = seq2seq
    ids, mask = _ids()
    kwargs = dict(max_new_tokens=8, do_sample=False, **options)
    expected = reference.generate(input_ids=ids, attention_mask=mask, **kwargs)
    got = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(got, expected) and bool((got[:, 0] == EOS).all())
    if "forced_bos_token_id" in options:
        assert bool((got[:, 1] == LANG).all())


@torch.inference_mode()
def test_causal_lm_generates_as_the_reference_and_each_left_padded_row_as_alone(tmp_path):
    reference = _reference("MBartForCausalLM", init_std=0.5)
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    prompt = torch.tensor([[LANG, 5, 17, 42, 8]])
    for options in (dict(), dict(num_beams=3)):
        kwargs = dict(max_new_tokens=6, do_sample=False, **options)
        assert torch.equal(model.generate(prompt, **kwargs), reference.generate(prompt, **kwargs))
    rows = [[LANG, 5, 17, 42, 8], [LANG, 9, 33]]
    batch = torch.tensor([rows[0], [PAD, PAD] + rows[1]])
    together = model.generate(batch, attention_mask=batch.ne(PAD).long(), max_new_tokens=6, pad_token_id=PAD)
    for i, row in enumerate(rows):
        alone = model.generate(torch.tensor([row]), max_new_tokens=6)[0]
        assert together[i, 5:5 + len(alone) - len(row)].tolist() == alone[len(row):].tolist()


@torch.inference_mode()
def test_labels_make_the_decoder_inputs_with_the_language_code_in_front(seq2seq):
    reference, model = seq2seq
    labels = torch.tensor([[5, 6, EOS, LANG], [8, EOS, LANG, -100]])
    expected = reference.prepare_decoder_input_ids_from_labels(labels=labels)
    got = model.prepare_decoder_input_ids_from_labels(labels)
    assert torch.equal(got, expected) and got.tolist() == [[LANG, 5, 6, EOS], [LANG, 8, EOS, LANG]]
    ids, _ = _ids()
    assert torch.equal(model.model.decoder_inputs_for(ids), transformers.models.mbart.modeling_mbart.
                       shift_tokens_right(ids, PAD))


def test_config_defaults_names_and_errors_are_the_references():
    ours, theirs = configs.MBartConfig(), transformers.MBartConfig()
    for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim",
                 "encoder_attention_heads", "max_position_embeddings", "decoder_start_token_id", "pad_token_id",
                 "eos_token_id", "bos_token_id", "forced_eos_token_id", "num_labels", "is_encoder_decoder",
                 "scale_embedding", "init_std", "activation_function", "dropout", "classifier_dropout",
                 "tie_word_embeddings", "hidden_size", "num_attention_heads", "num_hidden_layers"):
        assert getattr(ours, name) == getattr(theirs, name), name
    config = configs.MBartConfig(hidden_size=64, num_attention_heads=8)
    assert (config.d_model, config.encoder_attention_heads) == (64, 8) and "hidden_size" not in config.to_dict()
    assert openformers.AutoConfig.for_model("mbart").model_type == "mbart"
    for field, value in (("d_model", 30), ("activation_function", "mish"), ("classifier_dropout", 1.5),
                         ("decoder_layers", 0)):
        with pytest.raises(ValueError, match=field):
            configs.MBartConfig(**{**TINY, field: value})


def test_new_models_tie_one_table_and_resizing_keeps_it_tied():
    model = openformers.MBartForConditionalGeneration(configs.MBartConfig(**TINY))
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    shared = model.get_input_embeddings().weight
    assert model.lm_head.weight is shared and model.model.decoder.embed_tokens.weight is shared
    assert model.final_logits_bias.shape == (1, 104)
    assert {"model.encoder.layer_norm.weight", "model.decoder.layer_norm.bias"} <= set(model.state_dict())


# The tokenizers: a SentencePiece unigram model trained here, read with fairseq's ids and the language codes.

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Hello world, how are you today?", "I am a small frog.",
          "Vulpea maro sare peste câinele leneș.", "Numbers like 1234 and 3.14 appear too.", "Bună ziua, lume!"]
TEXTS = ["Hello world", "Hello <mask> world", "en_XX Hello", "ro_RO", "Hi </s> there <pad>x", "€uro ☃ snow",
         "  spaced   out  ", "", "Bună ziua, câinele!"]


def _tokenizer_folder(folder, tokenizer_class, **options):
    folder.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 5), model_prefix=str(folder / "sentencepiece.bpe"), vocab_size=90,
        model_type="unigram", minloglevel=2, character_coverage=1.0, hard_vocab_limit=False)
    (folder / "sentencepiece.bpe.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class, **options}))
    return folder


def _reference_tokenizer(folder, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(str(folder), **options)


@pytest.fixture(scope="module", params=["MBartTokenizer", "MBart50Tokenizer"])
def tokenizers(request, tmp_path_factory):
    folder = _tokenizer_folder(tmp_path_factory.mktemp(request.param), request.param, src_lang="en_XX",
                               tgt_lang="ro_RO")
    return folder, _reference_tokenizer(folder), openformers.AutoTokenizer.from_pretrained(folder)


def _assert_encodes_as(ours, reference, from_sentencepiece=True):
    """Ids, special tokens and decoding as the reference's; read from a SentencePiece model, an unknown piece decodes
    as SentencePiece writes it (" ⁇ "), where the reference writes `<unk>`."""
    assert type(ours).__name__ == type(reference).__name__
    assert (len(ours), ours.vocab_size) == (len(reference), reference.vocab_size)
    assert sorted(ours.all_special_ids) == sorted(reference.all_special_ids)
    assert ours.convert_tokens_to_ids(["en_XX", "ro_RO", "<mask>"]) == \
        reference.convert_tokens_to_ids(["en_XX", "ro_RO", "<mask>"])
    for text in TEXTS:
        assert ours(text).input_ids == reference(text).input_ids, text
        assert ours(text_target=text).input_ids == reference(text_target=text).input_ids, text
        ids = reference(text).input_ids
        for skip in (False, True):
            expected = reference.decode(ids, skip_special_tokens=skip)
            if from_sentencepiece:
                expected = expected.replace("<unk>", " \u2047 ")
            assert ours.decode(ids, skip_special_tokens=skip) == expected, text


def test_tokenizer_encodes_sources_and_targets_and_decodes_as_the_reference(tokenizers):
    _, reference, ours = tokenizers
    _assert_encodes_as(ours, reference)
    options = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    got, expected = ours("Hello <mask> world", **options), reference("Hello <mask> world", **options)
    at = expected.input_ids.index(reference.mask_token_id)
    assert got.offset_mapping[at] == expected.offset_mapping[at] == (5, 12)  # the mask takes the space before it
    assert got.special_tokens_mask == expected.special_tokens_mask
    batch = dict(text_target=CORPUS[3:5], padding=True)
    assert dict(ours(CORPUS[:2], **batch)) == dict(reference(CORPUS[:2], **batch))


def test_tokenizer_switches_languages_as_the_reference(tokenizers):
    folder, _, _ = tokenizers
    reference = _reference_tokenizer(folder, src_lang="ro_RO", tgt_lang="de_DE")
    ours = openformers.AutoTokenizer.from_pretrained(folder, src_lang="ro_RO", tgt_lang="de_DE")
    assert (ours.src_lang, ours.tgt_lang) == ("ro_RO", "de_DE")
    _assert_encodes_as(ours, reference)
    reference.src_lang = ours.src_lang = "fr_XX"
    assert ours("Hello world", text_target="Bună").input_ids == reference("Hello world", text_target="Bună").input_ids
    assert dict(ours("Hello world", text_target="Bună")) == dict(reference("Hello world", text_target="Bună"))
    expected = reference._build_translation_inputs("Hello", return_tensors="pt", src_lang="en_XX", tgt_lang="ro_RO")
    got = ours._build_translation_inputs("Hello", return_tensors="pt", src_lang="en_XX", tgt_lang="ro_RO")
    assert got["forced_bos_token_id"] == expected["forced_bos_token_id"] == ours.convert_tokens_to_ids("ro_RO")
    assert torch.equal(got["input_ids"], expected["input_ids"]) and ours.src_lang == "en_XX"


def test_tokenizer_saves_both_ways(tokenizers, tmp_path):
    folder, reference, ours = tokenizers
    ours.save_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")  # tokenizer.json, with the language codes as added tokens
    theirs_of_ours = _reference_tokenizer(tmp_path / "ours")
    ours_of_theirs = openformers.AutoTokenizer.from_pretrained(tmp_path / "theirs")
    assert (ours_of_theirs.src_lang, ours_of_theirs.tgt_lang) == (reference.src_lang, reference.tgt_lang)
    _assert_encodes_as(theirs_of_ours, reference, from_sentencepiece=False)  # the reference, from what ours saved
    _assert_encodes_as(ours_of_theirs, reference, from_sentencepiece=False)  # ours, from the reference's tokenizer.json


@torch.inference_mode()
def test_translation_pipeline_gives_the_references_translation(tmp_path):
    """mBART-50 many-to-many: the source language's code leads the input, generation starts from </s> and the target
    language's code is forced as the first token."""
    folder = _tokenizer_folder(tmp_path / "mbart-50-mmt", "MBart50Tokenizer")
    tokenizer = _reference_tokenizer(folder, src_lang="en_XX")
    reference = _reference("MBartForConditionalGeneration", init_std=0.5, vocab_size=len(tokenizer))
    reference.save_pretrained(folder)
    ro = tokenizer.convert_tokens_to_ids("ro_RO")
    options = dict(max_new_tokens=8, num_beams=2)
    expected = reference.generate(**tokenizer(CORPUS[:2], return_tensors="pt", padding=True), forced_bos_token_id=ro,
                                  **options)
    assert bool((expected[:, 1] == ro).all())
    translator = openformers.pipeline("translation", model=folder, src_lang="en_XX", tgt_lang="ro_RO", **options)
    assert type(translator.model).__name__ == "MBartForConditionalGeneration"
    texts = tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert translator(CORPUS[:2]) == [{"translation_text": text} for text in texts]


@torch.inference_mode()
def test_float16_encoder_layers_clamp_what_would_overflow_as_the_reference():
    config = dict(TINY, d_model=8, encoder_attention_heads=2, encoder_ffn_dim=8)
    torch.manual_seed(0)
    theirs = transformers.models.mbart.modeling_mbart.MBartEncoderLayer(transformers.MBartConfig(**config)).eval()
    theirs.fc2.bias.fill_(65000.0)  # near float16's largest value: the layer's output overflows without the clamp
    ours = MBartEncoderLayer(configs.MBartConfig(**config)).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 8).mul(2000).half()
    got, _ = ours.half()(x, None)
    expected = theirs.half()(x, None)
    assert bool(got.isfinite().all()) and got.abs().max() == torch.finfo(torch.float16).max - 1000
    torch.testing.assert_close(got, expected)
