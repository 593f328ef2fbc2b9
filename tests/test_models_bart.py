"""BART against the reference: a tiny random model made by the reference for every head loads with no warning,
gives the reference's outputs and losses on a padded batch and each row alone, saves what the reference loads
back, decodes with its caches as without them, generates the reference's tokens, and comes back from the Auto
classes as the reference's class; its tokenizer is RoBERTa's, as the reference's."""

import json

import pytest
import torch

import openformers
from openformers import configs
from openformers.generation import DynamicCache, EncoderDecoderCache

from encoder_parity import assert_head_saved_both_ways, assert_same, load_quietly, outputs_of
from seq2seq_models import assert_hidden_states_and_attentions_match, bart_vocabulary_folder, write_checkpoint

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64)
HEADS = {  # the reference's class -> the Auto class that picks it
    "BartModel": "AutoModel",
    "BartForConditionalGeneration": "AutoModelForSeq2SeqLM",
    "BartForSequenceClassification": "AutoModelForSequenceClassification",
    "BartForQuestionAnswering": "AutoModelForQuestionAnswering",
    "BartForCausalLM": "AutoModelForCausalLM",
}
EOS, PAD = 2, 1
LENGTH, SHORT = 10, 7  # the rows' lengths: the second is right-padded after SHORT tokens


def _reference(name, **overrides):
    torch.manual_seed(0)
    config = transformers.BartConfig(**{**TINY, "dropout": 0.0, **overrides})
    model = getattr(transformers, name)(config).eval()
    with torch.no_grad():  # the reference initializes biases, norms and final_logits_bias plainly: make them count
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias"):
                parameter.normal_(std=0.1)
            elif "layer_norm" in parameter_name or "layernorm" in parameter_name:
                parameter.normal_(mean=1.0, std=0.1)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_(std=0.5)
    return model


def _ids(generator_seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows ending in </s>, the second right-padded, as BART tokenizers pad."""
    ids = torch.randint(3, TINY["vocab_size"], (2, LENGTH), generator=torch.Generator().manual_seed(generator_seed))
    mask = torch.ones_like(ids)
    ids[:, -1], ids[1, SHORT - 1] = EOS, EOS
    ids[1, SHORT:], mask[1, SHORT:] = PAD, 0
    return ids, mask


def _inputs(name) -> dict:
    ids, mask = _ids()
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "BartForConditionalGeneration":
        labels = torch.randint(3, TINY["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(2))
        labels[1, 4:] = -100
        return {**inputs, "labels": labels}
    if name == "BartForSequenceClassification":
        return {**inputs, "labels": torch.tensor([2, 0])}
    if name == "BartForQuestionAnswering":
        return {**inputs, "start_positions": torch.tensor([2, 11]), "end_positions": torch.tensor([4, 6])}
    if name == "BartForCausalLM":
        return {**inputs, "labels": ids.masked_fill(mask == 0, -100)}
    return inputs


@pytest.fixture(scope="module", params=list(HEADS))
def tiny(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name)
    reference.save_pretrained(folder)
    return name, folder, reference, load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    reference = _reference("BartForConditionalGeneration", init_std=0.5)  # large weights: varied generations
    reference.save_pretrained(folder)
    return reference, openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    inputs = _inputs(name)
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@torch.inference_mode()
def test_each_padded_row_gives_what_it_gives_alone(tiny):
    name, _, _, model = tiny
    ids, mask = _ids()
    batched = outputs_of(model(input_ids=ids, attention_mask=mask))
    alone = outputs_of(model(input_ids=ids[1:, :SHORT]))
    for key, value in alone.items():
        row = batched[key][1:]
        if key != "logits" or name != "BartForSequenceClassification":
            row = row[:, :SHORT]  # per-position outputs (B, T, ...): the padding positions are not compared
        torch.testing.assert_close(row, value, atol=1e-5, rtol=1e-5, msg=key)


@torch.inference_mode()
def test_every_head_saves_and_loads_in_both_directions(tiny, tmp_path):
    name, _, reference, model = tiny
    assert_head_saved_both_ways(model, reference, HEADS[name], _inputs(name), tmp_path)


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_reference(tmp_path):
    reference = _reference("BartForConditionalGeneration", attn_implementation="eager")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    inputs = _inputs("BartForConditionalGeneration")
    assert_hidden_states_and_attentions_match(model, reference, inputs, TINY["encoder_layers"])


@torch.inference_mode()
def test_decoding_step_by_step_with_the_cache_gives_the_full_pass(seq2seq):
    _, model = seq2seq
    ids, mask = _ids()
    decoder_ids = torch.randint(3, TINY["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(3))
    full = model(ids, mask, decoder_input_ids=decoder_ids, use_cache=False).logits
    encoder_outputs = model.get_encoder()(ids, mask)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    steps = []
    for t in range(decoder_ids.shape[1]):
        out = model(attention_mask=mask, decoder_input_ids=decoder_ids[:, t:t + 1], encoder_outputs=encoder_outputs,
                    past_key_values=cache)
        assert out.past_key_values is cache and cache.get_seq_length() == t + 1
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert all(cache.is_updated.values())  # the encoder's keys were projected once, at the first step


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3), dict(num_beams=2, num_return_sequences=2),
                                     dict(no_repeat_ngram_size=2, min_new_tokens=4)],
                         ids=["greedy", "beams", "two-returned", "processors"])
@torch.inference_mode()
def test_generation_matches_reference(seq2seq, options):
    reference, model = seq2seq
    ids, mask = _ids()
    kwargs = dict(max_new_tokens=8, do_sample=False, **options)
    expected = reference.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, **kwargs), expected)


@torch.inference_mode()
def test_generation_forces_eos_at_max_length_as_the_reference(seq2seq):
    reference, model = seq2seq
    ids, mask = _ids(generator_seed=5)
    assert model.generation_config.forced_eos_token_id == EOS
    expected = reference.generate(input_ids=ids, attention_mask=mask, max_length=6)
    got = model.generate(input_ids=ids, attention_mask=mask, max_length=6)
    assert torch.equal(got, expected) and bool((got[:, -1] == EOS).all())


@torch.inference_mode()
def test_causal_lm_generates_as_the_reference(tmp_path):
    reference = _reference("BartForCausalLM")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    prompt = torch.tensor([[0, 5, 17, 42, 8]])
    for options in (dict(), dict(num_beams=3)):
        kwargs = dict(max_new_tokens=6, do_sample=False, **options)
        assert torch.equal(model.generate(prompt, **kwargs), reference.generate(prompt, **kwargs))


def test_sequence_classification_refuses_rows_with_different_numbers_of_eos(tmp_path):
    reference = _reference("BartForSequenceClassification")
    reference.save_pretrained(tmp_path)
    model = openformers.BartForSequenceClassification.from_pretrained(tmp_path)
    ids, mask = _ids()
    ids[0, 3] = EOS  # the first row now holds two
    with pytest.raises(ValueError, match="All examples must have the same number of <eos> tokens"):
        reference(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="All examples must have the same number of <eos> tokens"):
        model(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="at least one <eos>"):
        model(input_ids=torch.tensor([[5, 6, 7]]))


@torch.inference_mode()
def test_labels_make_the_decoder_inputs_and_the_collator_uses_the_same(seq2seq):
    reference, model = seq2seq
    labels = torch.tensor([[5, 6, 7, -100], [8, 9, -100, -100]])
    expected = reference.prepare_decoder_input_ids_from_labels(labels=labels)
    assert torch.equal(model.prepare_decoder_input_ids_from_labels(labels), expected)
    assert expected[:, 0].eq(model.config.decoder_start_token_id).all() and not (expected == -100).any()


def test_config_defaults_names_and_errors_are_the_reference():
    ours, theirs = configs.BartConfig(), transformers.BartConfig()
    for name in ("d_model", "encoder_layers", "decoder_ffn_dim", "max_position_embeddings", "decoder_start_token_id",
                 "forced_eos_token_id", "num_labels", "is_encoder_decoder", "scale_embedding", "init_std",
                 "hidden_size", "num_attention_heads", "num_hidden_layers"):
        assert getattr(ours, name) == getattr(theirs, name), name
    config = configs.BartConfig(hidden_size=64, num_attention_heads=8)
    assert (config.d_model, config.encoder_attention_heads) == (64, 8) and "hidden_size" not in config.to_dict()
    with pytest.raises(ValueError, match="d_model"):
        configs.BartConfig(d_model=30, decoder_attention_heads=4, encoder_attention_heads=5)
    with pytest.raises(ValueError, match="activation_function"):
        configs.BartConfig(activation_function="mish")


def test_from_config_ties_one_table_and_resizing_keeps_it_tied():
    model = openformers.BartForConditionalGeneration(configs.BartConfig(**TINY))
    shared = model.model.shared.weight
    assert model.lm_head.weight is shared
    assert model.model.encoder.embed_tokens.weight is shared and model.model.decoder.embed_tokens.weight is shared
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    shared = model.get_input_embeddings().weight
    assert shared.shape[0] == TINY["vocab_size"] + 5 and model.lm_head.weight is shared
    assert model.model.encoder.embed_tokens.weight is shared and model.model.decoder.embed_tokens.weight is shared
    assert model.final_logits_bias.shape == (1, TINY["vocab_size"] + 5)
    assert model(torch.tensor([[0, 5, 2]])).logits.shape == (1, 3, TINY["vocab_size"] + 5)


@torch.inference_mode()
def test_scaled_embeddings_and_a_checkpoint_without_final_logits_bias(tmp_path):
    reference = _reference("BartModel", scale_embedding=True)
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.BartForConditionalGeneration.from_pretrained, tmp_path)  # as the reference: quiet
    assert not model.final_logits_bias.any()
    theirs = transformers.BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    inputs = _inputs("BartModel")
    torch.testing.assert_close(model(**inputs).logits, theirs(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_overlong_inputs_are_refused_with_the_field_named():
    model = openformers.BartModel(configs.BartConfig(**TINY))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.full((1, TINY["max_position_embeddings"] + 1), 5))
    with pytest.raises(TypeError, match="EncoderDecoderCache"):
        model(torch.tensor([[5, 6]]), past_key_values=DynamicCache())


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_training_gradients_match_reference(tmp_path, checkpointing):
    """Without dropout, one training step's loss and every parameter's gradient are the reference's."""
    reference = _reference("BartForConditionalGeneration").train()
    reference.save_pretrained(tmp_path)
    model = openformers.BartForConditionalGeneration.from_pretrained(tmp_path).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    inputs = _inputs("BartForConditionalGeneration")
    ours, theirs = model(**inputs).loss, reference(**inputs).loss
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    ours.backward()
    theirs.backward()
    expected = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name].grad, atol=1e-5, rtol=1e-4, msg=name)


# The tokenizer: the reference's BartTokenizer is RoBERTa's byte-level BPE, and AutoTokenizer picks it for "bart".

TEXTS = ["Hello world! Don't panic.", "  two  spaces ", "<mask> and </s> inside", "", "summarize: a b c"]


@pytest.fixture(scope="module")
def bart_tokenizer_folder(tmp_path_factory):
    return bart_vocabulary_folder(tmp_path_factory.mktemp("bart_tokenizer"), TEXTS, vocab_size=400)


@pytest.mark.parametrize("declared", [None, "BartTokenizer"], ids=["by-model-type", "by-tokenizer-config"])
def test_auto_tokenizer_picks_robertas_tokenizer_and_encodes_as_the_reference(bart_tokenizer_folder, declared,
                                                                               tmp_path):
    for path in bart_tokenizer_folder.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    if declared:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": declared}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "RobertaTokenizer"
    assert openformers.BartTokenizer is openformers.BartTokenizerFast is openformers.RobertaTokenizer
    for text in TEXTS:
        for pair in (None, "A second one."):
            assert ours(text, pair).input_ids == reference(text, pair).input_ids, (text, pair)
        ids = reference.encode(text)
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)
    batch = ["a b c", "Hello world! Don't panic."]
    assert ours(batch, padding=True).input_ids == reference(batch, padding=True).input_ids
    assert ours(text_target=batch).input_ids == reference(text_target=batch).input_ids


@torch.inference_mode()
def test_tuples_and_embeddings_given_instead_of_ids_are_the_references(seq2seq):
    reference, model = seq2seq
    ids, mask = _ids()
    decoder_ids = torch.randint(3, TINY["vocab_size"], (2, 4), generator=torch.Generator().manual_seed(4))
    theirs = reference(ids, mask, decoder_ids, return_dict=False)
    ours = model(ids, mask, decoder_ids, return_dict=False)
    assert len(ours) == len(theirs) == 3  # logits, the cache, the encoder's last hidden state
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[2], theirs[2], atol=1e-4, rtol=1e-4)
    embeds = {"inputs_embeds": reference.model.shared(ids), "decoder_inputs_embeds": reference.model.shared(decoder_ids)}
    torch.testing.assert_close(model(attention_mask=mask, **embeds).logits,
                               reference(attention_mask=mask, **embeds).logits, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_untied_embeddings_load_save_and_stay_apart(tmp_path):
    reference = _reference("BartForConditionalGeneration", tie_word_embeddings=False)
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.BartForConditionalGeneration.from_pretrained, tmp_path)
    tables = [model.model.shared, model.model.encoder.embed_tokens, model.model.decoder.embed_tokens, model.lm_head]
    assert len({id(table.weight) for table in tables}) == 4
    inputs = _inputs("BartForConditionalGeneration")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))
    model.save_pretrained(tmp_path / "ours")
    theirs = load_quietly(transformers.BartForConditionalGeneration.from_pretrained, tmp_path / "ours").eval()
    assert_same(outputs_of(theirs(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)


def test_layerdrop_skips_the_layers_the_reference_skips(tmp_path):
    """While training, each layer is skipped with probability encoder_layerdrop / decoder_layerdrop, drawn in the
    reference's order: with the same seed, the same layers are skipped and the loss is the reference's."""
    reference = _reference("BartForConditionalGeneration", encoder_layerdrop=0.5, decoder_layerdrop=0.5).train()
    reference.save_pretrained(tmp_path)
    model = openformers.BartForConditionalGeneration.from_pretrained(tmp_path).train()
    inputs = _inputs("BartForConditionalGeneration")
    losses = set()
    for seed in range(4):
        torch.manual_seed(seed)
        theirs = reference(**inputs).loss
        torch.manual_seed(seed)
        ours = model(**inputs).loss
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        losses.add(round(float(ours.detach()), 4))
    assert len(losses) > 1  # different seeds skipped different layers


@torch.inference_mode()
def test_causal_lm_reads_the_decoder_of_a_whole_checkpoint(tmp_path):
    whole = _reference("BartForConditionalGeneration")
    whole.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="left out"):
        model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(model).__name__ == "BartForCausalLM"
    reference = transformers.BartForCausalLM(transformers.BartConfig(**{**TINY, "dropout": 0.0})).eval()
    reference.model.decoder.load_state_dict(whole.model.decoder.state_dict())
    ids = torch.tensor([[0, 5, 17, 42, 8]])
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)
    with pytest.warns(FutureWarning, match="deprecated"):
        type("Mine", (openformers.BartPretrainedModel,), {})


def test_new_weights_are_drawn_with_init_std():
    model = openformers.BartForConditionalGeneration(configs.BartConfig(**TINY, init_std=0.5))
    assert 0.4 < float(model.model.encoder.layers[0].fc1.weight.detach().std()) < 0.6
    assert not model.final_logits_bias.any() and not model.model.encoder.layers[0].fc1.bias.any()
    assert not model.model.shared.weight[model.config.pad_token_id].any()


@torch.inference_mode()
def test_an_older_checkpoint_with_every_tied_copy_and_fairseqs_markers_loads_quietly(tmp_path):
    """Checkpoints converted from fairseq store the shared table under every name it has, an lm_head, and version
    markers; they load as the tied model, without a word."""
    reference = _reference("BartForConditionalGeneration")
    markers = {"model.encoder.version": torch.tensor([2.0]), "model.decoder.version": torch.tensor([2.0])}
    tensors = write_checkpoint(reference, tmp_path, **markers)
    assert {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"} <= set(tensors)
    model = load_quietly(openformers.AutoModelForSeq2SeqLM.from_pretrained, tmp_path)
    assert model.lm_head.weight is model.model.shared.weight is model.model.encoder.embed_tokens.weight
    inputs = _inputs("BartForConditionalGeneration")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@torch.inference_mode()
def test_causal_lm_generates_each_left_padded_row_as_alone(tmp_path):
    _reference("BartForCausalLM", init_std=0.5).save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    rows = [[0, 5, 17, 42, 8], [0, 9, 33]]
    batch = torch.tensor([rows[0], [PAD, PAD] + rows[1]])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    together = model.generate(batch, attention_mask=mask, max_new_tokens=6, pad_token_id=PAD)
    for i, row in enumerate(rows):
        alone = model.generate(torch.tensor([row]), max_new_tokens=6)[0]
        assert together[i, 5:5 + len(alone) - len(row)].tolist() == alone[len(row):].tolist()
