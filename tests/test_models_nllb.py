"""M2M100 and NLLB against the reference: tiny random models made by the reference (pre-LayerNorm layers, fairseq
sinusoidal positions counted over the non-padding tokens, no logits bias) load without a word, give the reference's
outputs and losses for both heads and each variant that changes the computation, save what the reference loads back
with no key missing, decode with the cache as without it, batch left-padded rows as they run alone, train with the
reference's gradients, drop the same layers while training (LayerDrop) and generate the reference's tokens with a
forced target language. NllbTokenizer and M2M100Tokenizer are compared with the reference's on a SentencePiece model
trained here (layouts by language, saving both ways), and translate through generate and the pipeline."""

import warnings

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import assert_gradients_match, assert_same as _assert_same, draw_weights, \
    load_quietly as _load_quietly, outputs_of as _outputs
from seq2seq_models import assert_decoder_inputs_wanted, cached_steps_and_full_pass, reloaded_both_ways, \
    write_checkpoint

transformers = pytest.importorskip("transformers")

PAD, EOS, LANG = 1, 2, 90  # fairseq's layout: <s> 0, <pad> 1, </s> 2; a language code near the vocabulary's end
TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
            dropout=0.0, attention_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0, init_std=0.2)
VARIANTS = {  # NLLB's and M2M100's settings; unscaled tokens, another activation, an odd width, padding elsewhere
    "nllb": dict(),
    "unscaled": dict(scale_embedding=False, activation_function="gelu", d_model=35, encoder_attention_heads=5,
                     decoder_attention_heads=7, pad_token_id=4),
}
HEADS = {"M2M100Model": "AutoModel", "M2M100ForConditionalGeneration": "AutoModelForSeq2SeqLM"}


def _reference(name, **overrides):
    torch.manual_seed(0)
    return draw_weights(getattr(transformers, name)(transformers.M2M100Config(**{**TINY, **overrides})).eval())


def _ids(pad=PAD, seed=1):
    """Two rows of source tokens: [lang] X </s>, the second left-padded by three, as NLLB's tokenizer pads."""
    ids = torch.randint(5, LANG, (2, 9), generator=torch.Generator().manual_seed(seed))
    ids[:, 0], ids[:, -1] = LANG, EOS
    ids[1, :3] = pad
    ids[1, 3] = LANG
    return ids, (ids != pad).long()


def _decoder_ids():
    ids = torch.randint(5, LANG, (2, 5), generator=torch.Generator().manual_seed(2))
    ids[:, 0], ids[:, 1] = EOS, LANG + 1
    return ids


def _inputs(name, pad=PAD):
    """Inputs of a head; the second row's decoder inputs end with padding, whose positions read the zero row."""
    ids, mask = _ids(pad)
    decoder_ids = _decoder_ids()
    decoder_ids[1, -2:] = pad
    inputs = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids}
    return {**inputs, "labels": _decoder_ids().roll(-1, 1)} if name == "M2M100ForConditionalGeneration" else inputs


@pytest.fixture(scope="module", params=[(name, variant) for name in HEADS for variant in VARIANTS])
def tiny(request, tmp_path_factory):
    """(the reference's class name, variant, reference model, ours loaded by the Auto class)."""
    name, variant = request.param
    folder = tmp_path_factory.mktemp(f"{name}-{variant}")
    reference = _reference(name, **VARIANTS[variant])
    reference.save_pretrained(folder)
    return name, variant, reference, _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    reference = _reference("M2M100ForConditionalGeneration", init_std=0.5)  # large weights: varied generations
    reference.save_pretrained(folder)
    return reference, openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)


@torch.inference_mode()
def test_every_head_matches_reference(tiny):
    name, variant, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    assert not hasattr(model, "final_logits_bias")
    inputs = _inputs(name, VARIANTS[variant].get("pad_token_id", PAD))
    _assert_same(_outputs(model(**inputs)), _outputs(reference(**inputs)))
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    reference.set_attn_implementation("eager")  # the reference's sdpa path returns no weights
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    reference.set_attn_implementation("sdpa")
    for key in ("encoder_hidden_states", "decoder_hidden_states", "encoder_attentions", "cross_attentions"):
        assert len(ours[key]) == len(theirs[key]), key
        for got, expected in zip(ours[key], theirs[key]):  # the last hidden states after the stacks' LayerNorm
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=key)


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_without_missing_keys(tiny, tmp_path):
    name, variant, reference, model = tiny
    theirs, ours = reloaded_both_ways(model, tmp_path, name)
    inputs = _inputs(name, VARIANTS[variant].get("pad_token_id", PAD))
    _assert_same(_outputs(theirs(**inputs)), _outputs(reference(**inputs)), atol=1e-6)
    _assert_same(_outputs(ours(**inputs)), _outputs(model(**inputs)), atol=1e-6)


def test_position_tables_are_the_references_and_not_stored():
    for dim, pad in ((32, 1), (35, 4)):  # an odd width ends each row with a zero
        config = dict(TINY, d_model=dim, encoder_attention_heads=1, decoder_attention_heads=1, pad_token_id=pad)
        theirs = transformers.M2M100Model(transformers.M2M100Config(**config)).encoder.embed_positions.weights
        ours = openformers.M2M100Model(configs.M2M100Config(**config))
        torch.testing.assert_close(ours.encoder.embed_positions.weight, theirs, atol=0, rtol=0)
        assert not any("embed_positions" in key for key in ours.state_dict())


@torch.inference_mode()
def test_left_padded_rows_give_what_they_give_alone(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    decoder_ids = _decoder_ids()
    batched = model(ids, mask, decoder_input_ids=decoder_ids).logits
    alone = model(ids[1:, 3:], decoder_input_ids=decoder_ids[1:]).logits
    torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_decoding_step_by_step_with_the_cache_gives_the_full_pass(seq2seq):
    steps, full = cached_steps_and_full_pass(seq2seq[1], *_ids(), _decoder_ids())
    torch.testing.assert_close(steps, full, atol=1e-4, rtol=1e-4)  # large weights, large logits


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3), dict(num_beams=2, num_return_sequences=2)],
                         ids=["greedy", "beams", "two-returned"])
@torch.inference_mode()
def test_generation_with_a_forced_language_matches_reference(seq2seq, options):
    reference, model = seq2seq
    ids, mask = _ids()
    kwargs = dict(max_new_tokens=10, do_sample=False, forced_bos_token_id=LANG + 1, **options)
    expected = reference.generate(input_ids=ids, attention_mask=mask, **kwargs)
    got = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(got, expected) and bool((got[:, :2] == torch.tensor([EOS, LANG + 1])).all())
    assert len(set(map(tuple, got.tolist()))) > 1


@torch.inference_mode()
def test_sequences_past_the_position_table_and_given_embeddings_as_the_reference(seq2seq):
    """The table grows past max_position_embeddings (64) as the reference's does; given embeddings count every
    position (padding included) and are not scaled."""
    reference, model = seq2seq
    long = torch.randint(5, LANG, (1, 80), generator=torch.Generator().manual_seed(3))
    decoder_ids = torch.randint(5, LANG, (1, 70), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model(long, decoder_input_ids=decoder_ids).logits,
                               reference(long, decoder_input_ids=decoder_ids).logits, atol=1e-4, rtol=1e-4)
    ids, mask = _ids()
    table = reference.model.shared
    embeds = {"inputs_embeds": table(ids) * 3.0, "decoder_inputs_embeds": table(_decoder_ids())}
    torch.testing.assert_close(model(attention_mask=mask, **embeds).logits,
                               reference(attention_mask=mask, **embeds).logits, atol=1e-4, rtol=1e-4)


def test_layerdrop_drops_the_references_layers_while_training(tmp_path):
    reference = _reference("M2M100ForConditionalGeneration", encoder_layers=4, decoder_layers=4,
                           encoder_layerdrop=0.5, decoder_layerdrop=0.5)
    reference.save_pretrained(tmp_path)
    model = openformers.M2M100ForConditionalGeneration.from_pretrained(tmp_path)
    model.train(), reference.train()
    inputs = _inputs("M2M100ForConditionalGeneration")
    losses = set()
    for seed in range(4):
        torch.manual_seed(seed)
        ours = model(**inputs).loss
        torch.manual_seed(seed)
        theirs = reference(**inputs).loss
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        losses.add(round(theirs.detach().item(), 4))
    assert len(losses) > 1  # layers were dropped, differently from seed to seed
    model.eval()
    torch.manual_seed(0)
    assert torch.equal(model(**inputs).logits, model(**inputs).logits)  # none while evaluating


def test_a_training_step_gives_the_references_gradients(tmp_path):
    reference = _reference("M2M100ForConditionalGeneration")
    reference.save_pretrained(tmp_path)
    model = openformers.M2M100ForConditionalGeneration.from_pretrained(tmp_path)
    model.train(), reference.train()  # dropout and LayerDrop are 0: the same computation, with gradients
    assert_gradients_match(model, reference, _inputs("M2M100ForConditionalGeneration"))


def test_the_base_model_wants_decoder_inputs_as_the_reference():
    assert_decoder_inputs_wanted(_reference("M2M100Model"), openformers.M2M100Model(configs.M2M100Config(**TINY)),
                                 _ids()[0])


@torch.inference_mode()
def test_a_checkpoint_with_position_tables_loads_quietly(tmp_path):
    """fairseq conversions may store the computed position tables; they are ignored."""
    reference = _reference("M2M100ForConditionalGeneration")
    write_checkpoint(reference, tmp_path, **{f"model.{stack}.embed_positions.weights":
                                             getattr(reference.model, stack).embed_positions.weights
                                             for stack in ("encoder", "decoder")})
    model = _load_quietly(openformers.AutoModelForSeq2SeqLM.from_pretrained, tmp_path)
    assert model.lm_head.weight is model.model.shared.weight is model.model.encoder.embed_tokens.weight
    inputs = _inputs("M2M100ForConditionalGeneration")
    _assert_same(_outputs(model(**inputs)), _outputs(reference(**inputs)))


def test_config_defaults_names_and_errors_are_the_references():
    ours, theirs = configs.M2M100Config(), transformers.M2M100Config()
    for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim",
                 "encoder_attention_heads", "decoder_attention_heads", "max_position_embeddings",
                 "encoder_layerdrop", "decoder_layerdrop", "dropout", "attention_dropout", "activation_dropout",
                 "decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id", "is_encoder_decoder",
                 "scale_embedding", "init_std", "activation_function", "tie_word_embeddings", "use_cache",
                 "hidden_size", "num_attention_heads", "num_hidden_layers"):
        assert getattr(ours, name) == getattr(theirs, name), name
    config = configs.M2M100Config(hidden_size=64, num_attention_heads=8)
    assert (config.d_model, config.encoder_attention_heads) == (64, 8) and "hidden_size" not in config.to_dict()
    assert type(openformers.AutoConfig.for_model("m2m_100")).__name__ == "M2M100Config"
    for field, value in (("d_model", 30), ("activation_function", "mish"), ("encoder_layerdrop", 1.5),
                         ("pad_token_id", None), ("pad_token_id", 99)):
        with pytest.raises(ValueError, match=field):
            configs.M2M100Config(**{**TINY, field: value})


# The tokenizers: NLLB's tokenizer.json (a SentencePiece BPE with fairseq's ids and the language codes added after
# it) and M2M100's SentencePiece model with vocab.json, both made here from a SentencePiece model trained here.

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Hello world, how are you today?", "I am a small frog.",
             "Der schnelle braune Fuchs springt über den faulen Hund.", "Le chef de l'ONU affirme qu'il n'y a pas."]
TEXTS = ["Hello world", "  spaced   out  ", "", "Schöne Grüße über alles!", "€uro ☃ snow", "I am a small frog.",
         "Hello <mask> fra_Latn world", "Hello __fr__ world</s>x", "zzz qqq"]


def _sentencepiece_model(folder):
    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 5), model_prefix=str(folder / "sentencepiece.bpe"), vocab_size=120,
        model_type="bpe", minloglevel=2, character_coverage=1.0, hard_vocab_limit=False, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1)
    (folder / "sentencepiece.bpe.vocab").unlink()
    return folder / "sentencepiece.bpe.model"


def _nllb_folder(folder):
    """A folder as NLLB's: tokenizer.json (the reference's conversion of the SentencePiece model, with the 202
    language codes added after the vocabulary and <mask> last) and tokenizer_config.json."""
    import json

    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES as codes

    model = _sentencepiece_model(folder / "spm")
    (folder / "spm" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "NllbTokenizer"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.AutoTokenizer.from_pretrained(str(model.parent)).save_pretrained(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    rows = len(data["model"]["vocab"])
    special = dict(single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
    data["added_tokens"] = [token for token in data["added_tokens"] if token["content"] != "<mask>"] + [
        dict(id=rows + i, content=code, **special) for i, code in enumerate(codes)] + [
        dict(id=rows + len(codes), content="<mask>", **{**special, "lstrip": True, "normalized": True})]
    data["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(data))
    config = {"tokenizer_class": "NllbTokenizer", "additional_special_tokens": codes, "src_lang": None,
              "tgt_lang": None, "legacy_behaviour": False, "mask_token": "<mask>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _m2m100_folder(folder):
    """A folder as M2M100's: sentencepiece.bpe.model, vocab.json (fairseq's four specials, then the pieces) and the
    language tokens listed in special_tokens_map.json."""
    import json

    import sentencepiece

    from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES as codes

    processor = sentencepiece.SentencePieceProcessor(model_file=str(_sentencepiece_model(folder)))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(3, processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(i), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"additional_special_tokens": [f"__{code}__" for code in codes["m2m100"]]}))
    config = {"tokenizer_class": "M2M100Tokenizer", "src_lang": None, "tgt_lang": None, "language_codes": "m2m100",
              "num_madeup_words": 8, "model_max_length": 1024}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


TOKENIZER_OPTIONS = {  # per tokenizer class: the options each test loads it with
    "NllbTokenizer": [dict(), dict(src_lang="fra_Latn", tgt_lang="deu_Latn"),
                      dict(legacy_behaviour=True, src_lang="zul_Latn", tgt_lang="deu_Latn")],
    "M2M100Tokenizer": [dict(tgt_lang="ro"), dict(src_lang="fr", tgt_lang="de")],
}
LANGUAGES = {"NllbTokenizer": ("deu_Latn", "fra_Latn"), "M2M100Tokenizer": ("de", "fr")}


@pytest.fixture(scope="module", params=list(TOKENIZER_OPTIONS))
def tokenizer_folder(request, tmp_path_factory):
    make = _nllb_folder if request.param == "NllbTokenizer" else _m2m100_folder
    return request.param, make(tmp_path_factory.mktemp(request.param))


def _both(folder, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AutoTokenizer.from_pretrained(str(folder), **options)
    return reference, openformers.AutoTokenizer.from_pretrained(folder, **options)


def test_tokenizers_encode_and_decode_as_the_references(tokenizer_folder):
    name, folder = tokenizer_folder
    for options in TOKENIZER_OPTIONS[name]:
        reference, ours = _both(folder, **options)
        assert type(ours).__name__ == type(reference).__name__ == name
        assert (len(ours), ours.vocab_size, ours.all_special_ids) == (len(reference), reference.vocab_size,
                                                                     reference.all_special_ids)
        for text in TEXTS:
            expected = reference(text, text_target=text)
            assert dict(ours(text, text_target=text)) == dict(expected), (options, text)
            assert ours(text, "and more").input_ids == reference(text, "and more").input_ids, (options, text)
            for ids in (expected.input_ids, expected["labels"]):
                for skip in (False, True):
                    assert ours.decode(ids, skip_special_tokens=skip) == \
                        reference.decode(ids, skip_special_tokens=skip), (options, text)
                mask = reference.get_special_tokens_mask(ids, already_has_special_tokens=True)
                assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == mask
        batch = dict(text_target=SENTENCES[:3], padding=True, return_tensors="pt")
        got, expected = ours(SENTENCES[:3], **batch), reference(SENTENCES[:3], **batch)
        assert sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in expected)


def test_tokenizers_switch_languages_and_build_translation_inputs_as_the_references(tokenizer_folder):
    name, folder = tokenizer_folder
    reference, ours = _both(folder)
    source, target = LANGUAGES[name]
    ours.src_lang = reference.src_lang = source
    assert ours(TEXTS[0]).input_ids == reference(TEXTS[0]).input_ids
    got = ours._build_translation_inputs(SENTENCES[:2], return_tensors="pt", src_lang=target, tgt_lang=source,
                                         padding=True)
    expected = reference._build_translation_inputs(SENTENCES[:2], return_tensors="pt", src_lang=target,
                                                   tgt_lang=source, padding=True)
    assert sorted(got) == sorted(expected) and ours.src_lang == target
    assert all(torch.equal(torch.as_tensor(got[k]), torch.as_tensor(expected[k])) for k in expected)
    assert ours.convert_tokens_to_ids(ours._language_token(source)) == got["forced_bos_token_id"]
    with pytest.raises(ValueError, match="xx_Latn"):
        ours.src_lang = "xx_Latn"
    with pytest.raises(ValueError, match="tgt_lang"):
        ours._build_translation_inputs("Hi", src_lang=source, tgt_lang=None)


def test_tokenizers_save_both_ways(tokenizer_folder, tmp_path):
    name, folder = tokenizer_folder
    options = TOKENIZER_OPTIONS[name][-1]
    reference, ours = _both(folder, **options)
    ours.save_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")
    theirs_of_ours, _ = _both(tmp_path / "ours")
    _, ours_of_theirs = _both(tmp_path / "theirs")
    assert (theirs_of_ours.src_lang, theirs_of_ours.tgt_lang) == (options["src_lang"], options["tgt_lang"])
    for text in TEXTS:
        expected = dict(reference(text, text_target=text))
        assert dict(theirs_of_ours(text, text_target=text)) == expected, text
        assert dict(ours_of_theirs(text, text_target=text)) == expected, text


@pytest.mark.parametrize("name", list(TOKENIZER_OPTIONS))
@torch.inference_mode()
def test_translation_with_a_forced_language_gives_the_references_tokens(name, tmp_path):
    folder = (_nllb_folder if name == "NllbTokenizer" else _m2m100_folder)(tmp_path / name)
    source, target = LANGUAGES[name]
    tokenizer, _ = _both(folder, src_lang=source)
    reference = _reference("M2M100ForConditionalGeneration", init_std=0.5, vocab_size=len(tokenizer))
    reference.save_pretrained(folder)
    model = openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)
    ours_tokenizer = openformers.AutoTokenizer.from_pretrained(folder, src_lang=source)
    forced = tokenizer.convert_tokens_to_ids(target if name == "NllbTokenizer" else tokenizer.get_lang_token(target))
    options = dict(max_new_tokens=8, num_beams=2, forced_bos_token_id=forced)
    expected = reference.generate(**tokenizer(SENTENCES[:2], return_tensors="pt", padding=True), **options)
    got = model.generate(**ours_tokenizer(SENTENCES[:2], return_tensors="pt", padding=True), **options)
    assert torch.equal(got, expected) and bool((got[:, 1] == forced).all())
    translator = openformers.pipeline("translation", model=folder, src_lang=source, tgt_lang=target,
                                      max_new_tokens=8, num_beams=2)
    texts = tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert texts[0] != texts[1]  # the sentences translate differently: the comparison below means something
    assert translator(SENTENCES[:2]) == [{"translation_text": text} for text in texts]
