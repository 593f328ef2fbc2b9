"""M2M100 and NLLB against the reference: tiny random models made by the reference (pre-LayerNorm layers, fairseq
sinusoidal positions counted over the non-padding tokens, no logits bias) load without a word, give the reference's
outputs and losses for both heads and each variant that changes the computation, save what the reference loads back
with no key missing, decode with the cache as without it, batch left-padded rows as they run alone, drop the same
layers while training (LayerDrop) and generate the reference's tokens with a forced target language."""

import warnings

import pytest
import torch

import openformers
from openformers import configs
from openformers.generation import DynamicCache, EncoderDecoderCache

from encoder_parity import assert_same as _assert_same, draw_weights, load_quietly as _load_quietly, \
    outputs_of as _outputs

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
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's own notices
        theirs, info = getattr(transformers, name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ours = _load_quietly(getattr(openformers, name).from_pretrained, tmp_path)
    inputs = _inputs(name, VARIANTS[variant].get("pad_token_id", PAD))
    _assert_same(_outputs(theirs.eval()(**inputs)), _outputs(reference(**inputs)), atol=1e-6)
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
    _, model = seq2seq
    ids, mask = _ids()
    decoder_ids = _decoder_ids()
    full = model(ids, mask, decoder_input_ids=decoder_ids, use_cache=False).logits
    encoder_outputs = model.get_encoder()(ids, mask)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    steps = [model(attention_mask=mask, decoder_input_ids=decoder_ids[:, t:t + 1], encoder_outputs=encoder_outputs,
                   past_key_values=cache).logits for t in range(decoder_ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)  # large weights, large logits


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


def test_the_base_model_wants_decoder_inputs_as_the_reference():
    reference = _reference("M2M100Model")
    model = openformers.M2M100Model(configs.M2M100Config(**TINY))
    ids, _ = _ids()
    with pytest.raises(ValueError):
        reference(input_ids=ids)
    with pytest.raises(ValueError, match="decoder_input_ids"):
        model(input_ids=ids)


@torch.inference_mode()
def test_a_checkpoint_with_position_tables_loads_quietly(tmp_path):
    """fairseq conversions may store the computed position tables; they are ignored."""
    from safetensors.torch import save_file

    reference = _reference("M2M100ForConditionalGeneration")
    reference.config.save_pretrained(tmp_path)
    tensors = {name: tensor.clone().contiguous() for name, tensor in reference.state_dict().items()}
    for stack in ("encoder", "decoder"):
        tensors[f"model.{stack}.embed_positions.weights"] = getattr(reference.model, stack).embed_positions.weights
    save_file(tensors, tmp_path / "model.safetensors")
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
