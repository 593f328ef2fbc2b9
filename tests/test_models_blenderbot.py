"""Blenderbot and Blenderbot-Small against the reference: tiny random models made by the reference for every head
load without a word, give the reference's outputs and losses and hidden states, save what the reference loads back
with no key missing, decode with the cache as without it, generate the reference's tokens (greedy and beams), and
come back from the Auto classes as the reference's classes; the configs' defaults are the reference's, and
Blenderbot's byte-level BPE tokenizer encodes as the reference's."""

import json

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import assert_same, draw_weights, load_quietly, outputs_of
from seq2seq_models import TEXTS, assert_decoder_inputs_wanted, assert_hidden_states_and_attentions_match, \
    assert_padded_row_gives_what_it_gives_alone, bart_head_inputs, bart_vocabulary_folder, cached_steps_and_full_pass, \
    reloaded_both_ways, right_padded_ids

transformers = pytest.importorskip("transformers")

PAD, START, EOS = 0, 1, 2  # both families' layout; decoding starts from START
TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=24,
            dropout=0.0, init_std=0.2, scale_embedding=True)  # the checkpoints scale their embeddings
FAMILIES = ("Blenderbot", "BlenderbotSmall")
HEADS = {"Model": "AutoModel", "ForConditionalGeneration": "AutoModelForSeq2SeqLM",
         "ForCausalLM": "AutoModelForCausalLM"}
CASES = [(family, head, {}) for family in FAMILIES for head in HEADS] + [
    (family, "ForConditionalGeneration", dict(scale_embedding=False, activation_function="relu"))
    for family in FAMILIES]
LENGTH, SHORT = 9, 6  # the second row is right-padded after SHORT tokens


def _reference(family, head, **overrides):
    torch.manual_seed(0)
    config = getattr(transformers, f"{family}Config")(**{**TINY, **overrides})
    model = draw_weights(getattr(transformers, f"{family}{head}")(config).eval(), "embed_positions")
    if hasattr(model, "final_logits_bias"):  # a buffer, zero in the reference's init: make it count too
        model.final_logits_bias.normal_(std=0.5)
    return model


def _ids(seed=1):
    return right_padded_ids(3, TINY["vocab_size"], LENGTH, SHORT, PAD, EOS, seed)


def _inputs(head):
    return bart_head_inputs(head, *_ids(), _decoder_ids())


def _decoder_ids():
    decoder_ids = torch.randint(3, TINY["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(2))
    decoder_ids[:, 0] = START
    return decoder_ids


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}{h}-{'-'.join(o) or 'default'}" for f, h, o in CASES])
def tiny(request, tmp_path_factory):
    """(family, head, reference model, ours loaded by the Auto class)."""
    family, head, overrides = request.param
    folder = tmp_path_factory.mktemp(family + head)
    reference = _reference(family, head, **overrides)
    reference.save_pretrained(folder)
    return family, head, reference, load_quietly(getattr(openformers, HEADS[head]).from_pretrained, folder)


@pytest.fixture(scope="module", params=FAMILIES)
def seq2seq(request, tmp_path_factory):
    family = request.param
    folder = tmp_path_factory.mktemp(family)
    reference = _reference(family, "ForConditionalGeneration", init_std=0.5)  # large weights: varied generations
    reference.save_pretrained(folder)
    return reference, openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)


@torch.inference_mode()
def test_every_head_matches_reference(tiny):
    family, head, reference, model = tiny
    assert type(model).__name__ == type(reference).__name__ == f"{family}{head}" and not model.training
    inputs = _inputs(head)
    ours, theirs = outputs_of(model(**inputs)), outputs_of(reference(**inputs))
    assert ("loss" in theirs) == (head != "Model")
    assert_same(ours, theirs)


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_without_missing_keys(tiny, tmp_path):
    family, head, reference, model = tiny
    theirs, ours = reloaded_both_ways(model, tmp_path, f"{family}{head}")
    inputs = _inputs(head)
    assert_same(outputs_of(theirs(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)
    assert_same(outputs_of(ours(**inputs)), outputs_of(model(**inputs)), atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_hidden_states_and_attentions_are_the_references(family, tmp_path):
    reference = _reference(family, "ForConditionalGeneration", attn_implementation="eager")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert_hidden_states_and_attentions_match(model, reference, _inputs("ForConditionalGeneration"),
                                              TINY["encoder_layers"])


@pytest.mark.parametrize("family", FAMILIES)
def test_position_tables_start_at_row_zero(family):
    """No BART offset: max_position_embeddings rows, and the longest input reads the last one."""
    model = getattr(openformers, f"{family}Model")(getattr(configs, f"{family}Config")(**TINY))
    for stack in (model.encoder, model.decoder):
        assert stack.embed_positions.weight.shape == (TINY["max_position_embeddings"], TINY["d_model"])
    ids = torch.full((1, TINY["max_position_embeddings"]), 5)
    assert model(ids, decoder_input_ids=ids).last_hidden_state.shape == (1, TINY["max_position_embeddings"], 32)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.full((1, TINY["max_position_embeddings"] + 1), 5), decoder_input_ids=ids)


@torch.inference_mode()
def test_the_input_embeddings_are_the_references(tiny):
    """Blenderbot's token table scales what it reads (scale_embedding); Blenderbot-Small's is a plain table, whose
    encoder scales what it reads and whose decoder does not."""
    _, _, reference, model = tiny
    ids = _ids()[0]
    torch.testing.assert_close(model.get_input_embeddings()(ids), reference.get_input_embeddings()(ids))


@torch.inference_mode()
def test_right_padded_rows_give_what_they_give_alone(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    assert_padded_row_gives_what_it_gives_alone(model, ids, mask, _decoder_ids(), SHORT, atol=1e-4)


@torch.inference_mode()
def test_decoding_step_by_step_with_the_cache_gives_the_full_pass(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    steps, full = cached_steps_and_full_pass(model, ids, mask, _decoder_ids())
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
    assert torch.equal(got, expected) and bool((got[:, 0] == START).all())


@torch.inference_mode()
def test_blenderbots_generation_bans_the_prompts_trigrams_as_the_references(seq2seq):
    """Blenderbot's config sets encoder_no_repeat_ngram_size=3 (a generation option); Blenderbot-Small's does not."""
    reference, model = seq2seq
    expected = 3 if reference.config.model_type == "blenderbot" else None
    assert reference.generation_config.encoder_no_repeat_ngram_size == expected
    assert model.generation_config.encoder_no_repeat_ngram_size == expected


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_causal_lm_counts_positions_from_the_cache_as_the_reference(family, tmp_path):
    """The reference's decoders take no position ids: a left-padded row's positions count its padding."""
    reference = _reference(family, "ForCausalLM", init_std=0.5)
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    batch = torch.tensor([[5, 17, 42, 8, 9], [PAD, PAD, 9, 33, 4]])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    for options in (dict(), dict(num_beams=3)):
        kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, **options)
        assert torch.equal(model.generate(batch, attention_mask=mask, **kwargs),
                           reference.generate(batch, attention_mask=mask, **kwargs))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_base_model_wants_decoder_inputs_as_the_reference(family):
    model = getattr(openformers, f"{family}Model")(getattr(configs, f"{family}Config")(**TINY))
    assert_decoder_inputs_wanted(_reference(family, "Model"), model, _ids()[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_config_defaults_names_and_errors_are_the_references(family):
    ours, theirs = getattr(configs, f"{family}Config")(), getattr(transformers, f"{family}Config")()
    for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim",
                 "encoder_attention_heads", "decoder_attention_heads", "max_position_embeddings",
                 "decoder_start_token_id", "pad_token_id", "bos_token_id", "eos_token_id", "forced_eos_token_id",
                 "num_labels", "is_encoder_decoder", "scale_embedding", "init_std", "activation_function", "dropout",
                 "tie_word_embeddings", "hidden_size", "num_attention_heads", "num_hidden_layers",
                 "encoder_no_repeat_ngram_size"):
        assert getattr(ours, name, None) == getattr(theirs, name, None), name
    model_type = theirs.model_type
    assert openformers.AutoConfig.for_model(model_type).model_type == model_type
    for field, value in (("d_model", 30), ("activation_function", "mish"), ("dropout", 1.5), ("encoder_layers", 0)):
        with pytest.raises(ValueError, match=field):
            getattr(configs, f"{family}Config")(**{**TINY, field: value})


# Blenderbot's tokenizer: RoBERTa's byte-level BPE with a space added in front, and nothing added around a text when
# read from vocab.json and merges.txt (the reference 5.x's BlenderbotTokenizer); a tokenizer.json keeps its own
# post-processor (the Hub's put </s> after the text).

SAMPLES = ["Hello world", " Hello world", "The cat sat <mask> the mat.", "Hi </s> there<pad>x", "", "line\none  two"]


def _reference_tokenizer(folder):
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def _assert_encodes_as(ours, reference):
    assert type(ours).__name__ == type(reference).__name__ == "BlenderbotTokenizer"
    assert (len(ours), ours.all_special_tokens) == (len(reference), reference.all_special_tokens)
    for text in SAMPLES:
        assert ours(text).input_ids == reference(text).input_ids, text
        assert ours(text, "The dog.").input_ids == reference(text, "The dog.").input_ids, text
        ids = reference(text).input_ids
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip), text


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory):
    folder = bart_vocabulary_folder(tmp_path_factory.mktemp("blenderbot_tokenizer"), TEXTS, vocab_size=320)
    (folder / "config.json").write_text(json.dumps({"model_type": "blenderbot"}))
    return folder


def test_tokenizer_from_vocab_and_merges_encodes_as_the_reference(vocabulary):
    reference = _reference_tokenizer(vocabulary)
    _assert_encodes_as(openformers.AutoTokenizer.from_pretrained(vocabulary), reference)
    assert reference("Hello world").input_ids[0] == reference(" Hello world").input_ids[0]  # the space in front


def test_tokenizer_json_keeps_its_post_processor_and_saves_both_ways(vocabulary, tmp_path):
    reference = _reference_tokenizer(vocabulary)
    reference.save_pretrained(tmp_path / "theirs")
    data = json.loads((tmp_path / "theirs" / "tokenizer.json").read_text())
    data["post_processor"] = {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}},
                                                                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                                       {"SpecialToken": {"id": "</s>", "type_id": 1}}],
                              "special_tokens": {"</s>": {"id": "</s>", "ids": [EOS], "tokens": ["</s>"]}}}
    (tmp_path / "theirs" / "tokenizer.json").write_text(json.dumps(data))
    reference = _reference_tokenizer(tmp_path / "theirs")
    assert reference("Hello world").input_ids[-1] == EOS
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path / "theirs")
    _assert_encodes_as(ours, reference)
    ours.save_pretrained(tmp_path / "ours")
    _assert_encodes_as(_reference_tokenizer(tmp_path / "ours"), reference)


def test_blenderbot_small_tokenizer_without_tokenizer_json_is_refused_by_name(vocabulary, tmp_path):
    """Its slow-only rules (lowercasing, punctuation split off, '@@' continuations) are not built here: a folder of
    vocab.json and merges.txt is refused rather than read as a byte-level BPE, whether config.json or
    tokenizer_config.json says what it is."""
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((vocabulary / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blenderbot-small"}))
    with pytest.raises(ValueError, match="is BlenderbotSmallTokenizer, Blenderbot-Small's BPE .* no tokenizer.json"):
        openformers.AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BlenderbotSmallTokenizer"}))
    with pytest.raises(ValueError, match=f"The tokenizer of {tmp_path} is BlenderbotSmallTokenizer"):
        openformers.AutoTokenizer.from_pretrained(tmp_path)
