"""ModernBERT against the reference: a tiny random model made by the reference for every head (both poolings where a
head pools) loads with no warning, gives the reference's outputs and losses on sequences longer than the local
attention band, padded on either side (at the real tokens: openformers leaves the padding out of the computation),
and each padded row gives what it gives alone; saving goes both ways, the training loss and gradients are the
reference's, and its byte-level BPE tokenizer and fill-mask pipeline give the reference's ids and records."""

import json

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import assert_head_saved_both_ways, assert_pipeline_matches, assert_same, load_quietly, outputs_of

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

# Three layers, the first and last full, the middle one sliding with a band of 4 on each side (local_attention=8);
# sequences of 20 tokens, so the band matters. Every bias is on, and the two rotary bases differ from the defaults.
TINY = dict(
    vocab_size=99, hidden_size=32, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
    local_attention=8, global_attn_every_n_layers=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
    eos_token_id=2, cls_token_id=1, sep_token_id=2, norm_bias=True, attention_bias=True, mlp_bias=True,
    classifier_bias=True, global_rope_theta=1000.0, local_rope_theta=50.0,
)
T = 20
HEADS = {  # the reference's class -> the Auto class that picks it
    "ModernBertModel": "AutoModel",
    "ModernBertForMaskedLM": "AutoModelForMaskedLM",
    "ModernBertForSequenceClassification": "AutoModelForSequenceClassification",
    "ModernBertForTokenClassification": "AutoModelForTokenClassification",
    "ModernBertForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ModernBertForMultipleChoice": "AutoModelForMultipleChoice",
}
POOLED = ("ModernBertForSequenceClassification", "ModernBertForMultipleChoice")
CASES = [(name, pooling) for name in HEADS for pooling in (("cls", "mean") if name in POOLED else ("cls",))]


def _reference(name, **overrides):
    torch.manual_seed(0)
    num_labels = 2 if name == "ModernBertForQuestionAnswering" else 3  # the reference's QA head has num_labels outputs
    config = transformers.ModernBertConfig(**{**TINY, "num_labels": num_labels, **overrides})
    model = getattr(transformers, name)(config).eval()
    with torch.no_grad():  # the reference starts norms at one and biases at zero: make them count
        for parameter_name, parameter in model.named_parameters():
            if "norm" in parameter_name and parameter_name.endswith("weight"):
                parameter.uniform_(0.5, 1.5)
            elif parameter_name.endswith("bias"):
                parameter.normal_(std=0.1)
    return model


def _inputs(name, side="right", length=14) -> dict:
    """Two rows of T tokens, the second padded on `side` to `length` real tokens, with every label the head takes."""
    shape = (2, 3, T) if name == "ModernBertForMultipleChoice" else (2, T)
    ids = torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    padding = slice(length, None) if side == "right" else slice(None, T - length)
    ids[1, ..., padding], mask[1, ..., padding] = 0, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "ModernBertForMaskedLM":
        labels = torch.full_like(ids, -100)
        labels[:, [1, 4, 12]] = ids[:, [1, 4, 12]]
        return {**inputs, "labels": labels.masked_fill(mask == 0, -100)}
    if name in POOLED:
        return {**inputs, "labels": torch.tensor([2, 0])}
    if name == "ModernBertForTokenClassification":
        return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
    if name == "ModernBertForQuestionAnswering":
        return {**inputs, "start_positions": torch.tensor([2, 11]), "end_positions": torch.tensor([4, 25])}
    return inputs


def _at_real_tokens(outputs: dict, mask: torch.Tensor) -> dict:
    """The outputs with per-token tensors (B, T, ...) cut to the real tokens (N, ...); openformers computes only
    those (the padding's are zeros, the reference computes them)."""
    per_token = ("last_hidden_state", "logits", "start_logits", "end_logits")
    return {k: v[mask.bool()] if k in per_token and v.shape[:2] == mask.shape else v for k, v in outputs.items()}


def _assert_same_at_real_tokens(name, ours, theirs, mask):
    ours, theirs = outputs_of(ours), outputs_of(theirs)
    if name == "ModernBertForQuestionAnswering":
        ours.pop("loss"), theirs.pop("loss")
    mask = mask.flatten(0, -2)  # multiple choice: one row per choice
    assert_same(_at_real_tokens(ours, mask), _at_real_tokens(theirs, mask))


@pytest.fixture(scope="module", params=CASES, ids=[f"{name}-{pooling}" for name, pooling in CASES])
def tiny(request, tmp_path_factory):
    name, pooling = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name, classifier_pooling=pooling)
    reference.save_pretrained(folder)
    return name, folder, reference, load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@torch.inference_mode()
def test_every_head_matches_reference_without_padding(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    inputs = _inputs(name, length=T)
    assert inputs["attention_mask"].all()
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@pytest.mark.parametrize("side", ["right", "left"])
@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny, side):
    """At every real token, and the pooled outputs and losses. QA's loss also counts the padding positions' logits
    (in both libraries), which openformers does not compute as the reference does: it is compared without padding."""
    name, _, reference, model = tiny
    if side == "left" and name == "ModernBertForSequenceClassification" and model.config.classifier_pooling == "cls":
        pytest.skip("cls pooling reads position 0, padding in a left-padded row: zeros here, computed in the reference")
    inputs = _inputs(name, side)
    _assert_same_at_real_tokens(name, model(**inputs), reference(**inputs), inputs["attention_mask"])


@pytest.mark.parametrize("side", ["right", "left"])
@torch.inference_mode()
def test_padding_positions_are_zeros_in_the_hidden_states(side):
    model = openformers.ModernBertModel(configs.ModernBertConfig(**TINY))
    inputs = _inputs("ModernBertModel", side)
    out = model(**inputs, output_hidden_states=True)
    padding = inputs["attention_mask"] == 0
    for hidden in (out.last_hidden_state, *out.hidden_states):
        assert not hidden[padding].any() and hidden[~padding].abs().amax(-1).gt(0).all()


@pytest.mark.parametrize("side", ["right", "left"])
@torch.inference_mode()
def test_each_padded_row_gives_what_it_gives_alone(tiny, side):
    name, _, _, model = tiny
    if side == "left" and name == "ModernBertForSequenceClassification" and model.config.classifier_pooling == "cls":
        pytest.skip("the reference pools position 0 whatever it holds, so a left-padded row reads its padding")
    length = 14  # the second row's real tokens
    inputs = {k: v for k, v in _inputs(name, side, length).items() if k in ("input_ids", "attention_mask")}
    batched = outputs_of(model(**inputs))
    real = slice(None, length) if side == "right" else slice(T - length, None)
    alone = outputs_of(model(inputs["input_ids"][1:, ..., real]))
    for key, value in alone.items():
        row = batched[key][1:]
        if name not in POOLED:
            row = row[:, real]  # per-token outputs (B, T, ...): the padding positions are not compared
        torch.testing.assert_close(row, value, atol=1e-5, rtol=1e-5, msg=key)


@torch.inference_mode()
def test_every_head_saves_and_loads_in_both_directions(tiny, tmp_path):
    name, _, reference, model = tiny
    assert_head_saved_both_ways(model, reference, HEADS[name], _inputs(name), tmp_path)


@pytest.mark.parametrize("side", ["right", "left"])
@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_reference(tmp_path, side):
    """Computed step by step (eager) on a padded batch, at the real tokens' states and the real queries' weights
    (a padding key gets no weight in both)."""
    reference = _reference("ModernBertModel", attn_implementation="eager")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModel.from_pretrained(tmp_path, attn_implementation="eager")
    inputs = _inputs("ModernBertModel", side, length=6)
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == TINY["num_hidden_layers"] + 1
    assert len(ours.attentions) == len(theirs.attentions) == TINY["num_hidden_layers"]
    real = inputs["attention_mask"].bool()
    for our_states, their_states in zip((ours.last_hidden_state, *ours.hidden_states),
                                        (theirs.last_hidden_state, *theirs.hidden_states)):
        torch.testing.assert_close(our_states[real], their_states[real], atol=1e-4, rtol=1e-4)
    for our_weights, their_weights in zip(ours.attentions, theirs.attentions):  # (B, nh, T, T)
        torch.testing.assert_close(our_weights.transpose(1, 2)[real], their_weights.transpose(1, 2)[real],
                                   atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_tuples_and_the_configs_output_defaults_match_reference(tiny):
    """return_dict=False gives the reference's tuple; output_hidden_states set in the config applies by default."""
    name, _, reference, model = tiny
    inputs = _inputs(name, length=T)
    ours, theirs = model(**inputs, return_dict=False), reference(**inputs, return_dict=False)
    assert isinstance(ours, tuple) and len(ours) == len(theirs)
    for mine, expected in zip(ours, theirs):
        torch.testing.assert_close(mine, expected, atol=1e-4, rtol=1e-4)
    model.config.output_hidden_states = True
    try:
        assert len(model(**inputs).hidden_states) == TINY["num_hidden_layers"] + 1
    finally:
        model.config.output_hidden_states = False


@torch.inference_mode()
def test_sliding_layers_see_half_the_local_window_on_each_side(tmp_path):
    """One sliding layer: a token changes the outputs within local_attention // 2 of it, and none beyond."""
    reference = _reference("ModernBertModel", num_hidden_layers=1, layer_types=["sliding_attention"])
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModel.from_pretrained(tmp_path)
    ids = _inputs("ModernBertModel")["input_ids"][:1]
    changed = ids.clone()
    changed[0, 10] += 1
    moved = (model(changed).last_hidden_state - model(ids).last_hidden_state).abs().amax(-1)[0] > 0
    assert moved.nonzero().flatten().tolist() == list(range(6, 15))
    torch.testing.assert_close(model(changed).last_hidden_state, reference(changed).last_hidden_state,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("local_attention", [1, 3, 6])
@torch.inference_mode()
def test_narrow_bands_match_reference(tmp_path, local_attention):
    """Sliding layers attend block by block once the sequence outgrows a block's keys: odd and tiny bands too."""
    reference = _reference("ModernBertModel", local_attention=local_attention)
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    for side in ("right", "left"):
        inputs = _inputs("ModernBertModel", side)
        real = inputs["attention_mask"].bool()
        torch.testing.assert_close(model(**inputs).last_hidden_state[real],
                                   reference(**inputs).last_hidden_state[real], atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_inputs_embeds_and_position_ids_match_reference(tiny):
    name, _, reference, model = tiny
    inputs = _inputs(name)
    ids = inputs.pop("input_ids")
    embeds = model.get_input_embeddings()(ids)
    positions = torch.arange(3, 3 + T).expand(ids.shape)  # counted from 3, not from 0 as by default
    ours = model(inputs_embeds=embeds, position_ids=positions, **inputs)
    theirs = reference(inputs_embeds=embeds, position_ids=positions, **inputs)
    _assert_same_at_real_tokens(name, ours, theirs, inputs["attention_mask"])


@torch.inference_mode()
def test_sparse_prediction_gives_the_labelled_positions_only(tmp_path):
    reference = _reference("ModernBertForMaskedLM", sparse_prediction=True)
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModelForMaskedLM.from_pretrained, tmp_path)
    inputs = _inputs("ModernBertForMaskedLM")
    ours, theirs = model(**inputs), reference(**inputs)
    assert ours.logits.shape == (6, TINY["vocab_size"])  # 3 labelled positions in each of 2 rows
    assert_same(outputs_of(ours), outputs_of(theirs))
    without_labels = {k: v for k, v in inputs.items() if k != "labels"}
    assert model(**without_labels).logits.shape == (2, T, TINY["vocab_size"])


@torch.inference_mode()
def test_linear_rope_scaling_matches_reference(tmp_path):
    reference = _reference("ModernBertModel", rope_scaling={"rope_type": "linear", "factor": 2.0})
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path)
    assert model.config.rope_parameters == reference.config.rope_parameters
    inputs = _inputs("ModernBertModel", length=T)
    torch.testing.assert_close(model(**inputs).last_hidden_state, reference(**inputs).last_hidden_state,
                               atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_bfloat16_stays_close_to_the_reference(tmp_path):
    _reference("ModernBertForMaskedLM").save_pretrained(tmp_path)
    model = openformers.AutoModelForMaskedLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    reference = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    inputs = _inputs("ModernBertForMaskedLM")
    ours, theirs = model(**inputs), reference(**inputs)
    assert ours.logits.dtype == torch.bfloat16
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(ours.logits[real].float(), theirs.logits[real].float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
@pytest.mark.parametrize("name", ["ModernBertForMaskedLM", "ModernBertForSequenceClassification"])
def test_training_loss_and_gradients_match_reference(tmp_path, name, checkpointing):
    """Without dropout, one training step's loss and every parameter's gradient are the reference's."""
    _reference(name, classifier_pooling="mean").save_pretrained(tmp_path)
    reference = getattr(transformers, name).from_pretrained(tmp_path).train()
    model = getattr(openformers, name).from_pretrained(tmp_path).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    inputs = _inputs(name)
    ours, theirs = model(**inputs).loss, reference(**inputs).loss
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    grads = {n: p.grad for n, p in reference.named_parameters()}
    for parameter_name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, grads[parameter_name], atol=1e-5, rtol=1e-4, msg=parameter_name)


# Config -------------------------------------------------------------------------------------------------------


def test_config_reads_the_older_keys_and_writes_what_the_reference_reads(tmp_path):
    """Hub configs from before transformers 5 give the rotary bases and the layer pattern as single numbers."""
    old = {**TINY, "model_type": "modernbert", "global_attn_every_n_layers": 3, "num_hidden_layers": 5,
           "reference_compile": True}
    (tmp_path / "config.json").write_text(json.dumps(old))
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert ours.layer_types == theirs.layer_types == ["full_attention"] + ["sliding_attention"] * 2 + \
        ["full_attention", "sliding_attention"]
    assert ours.rope_parameters == theirs.rope_parameters
    assert ours.sliding_window == theirs.sliding_window == 4
    saved = tmp_path / "saved"
    ours.save_pretrained(saved)
    written = json.loads((saved / "config.json").read_text())
    assert not {"global_rope_theta", "local_rope_theta", "reference_compile"} & set(written)
    again = transformers.AutoConfig.from_pretrained(saved)
    assert (again.layer_types, again.rope_parameters) == (theirs.layer_types, theirs.rope_parameters)


def test_config_defaults_are_the_references():
    ours, theirs = configs.ModernBertConfig(), transformers.ModernBertConfig()
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "local_attention",
                 "layer_types", "rope_parameters", "norm_bias", "decoder_bias", "classifier_pooling", "pad_token_id",
                 "tie_word_embeddings", "sparse_prediction", "sliding_window"):
        assert getattr(ours, name) == getattr(theirs, name), name


@pytest.mark.parametrize("values, field", [
    (dict(classifier_pooling="max"), "classifier_pooling"),
    (dict(hidden_activation="mish"), "hidden_activation"),
    (dict(hidden_size=30, num_attention_heads=4), "hidden_size"),
    (dict(layer_types=["full_attention"]), "layer_types"),
    (dict(rope_parameters={"full_attention": {"rope_type": "yarn", "factor": 2.0}}), "rope_type"),
])
def test_config_refuses_what_is_not_implemented(values, field):
    with pytest.raises(ValueError, match=field):
        configs.ModernBertConfig(**{**TINY, **values})


def test_masked_lm_from_config_ties_the_decoder_to_the_embeddings():
    model = openformers.AutoModelForMaskedLM.from_config(configs.ModernBertConfig(**TINY))
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    assert model.model.layers[0].attn_norm.__class__ is torch.nn.Identity
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"])


def test_resizing_the_vocabulary_resizes_the_tied_decoder_and_its_bias():
    model = openformers.ModernBertForMaskedLM(configs.ModernBertConfig(**TINY))
    with torch.no_grad():
        model.decoder.bias.normal_()
    bias = model.decoder.bias.clone()
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    assert torch.equal(model.decoder.bias[: TINY["vocab_size"]], bias)
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 5)


@torch.inference_mode()
def test_mean_pooling_without_a_mask_pools_every_token():
    """The reference's multiple choice needs a mask for mean pooling; without one every token counts, as in its
    sequence classification."""
    config = configs.ModernBertConfig(**TINY, classifier_pooling="mean", num_labels=3)
    for head in (openformers.ModernBertForSequenceClassification, openformers.ModernBertForMultipleChoice):
        model = head(config).eval()
        ids = torch.randint(3, TINY["vocab_size"], (2, 3, 7) if head is openformers.ModernBertForMultipleChoice
                            else (2, 7), generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(model(ids).logits, model(ids, attention_mask=torch.ones_like(ids)).logits)


def test_encoder_refuses_a_cache():
    model = openformers.AutoModel.from_config(configs.ModernBertConfig(**TINY))
    with pytest.raises(ValueError, match="past_key_values"):
        model(torch.tensor([[5, 6]]), past_key_values=object())


# Tokenizer and pipeline -------------------------------------------------------------------------------------------
# ModernBERT ships a byte-level BPE tokenizer.json with BERT's special tokens ([MASK] taking the space before it),
# laid out "[CLS] A [SEP]" and "[CLS] A [SEP] B [SEP]", read by PreTrainedTokenizerFast.

SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
CORPUS = ["Paris is the capital of France.", "I love this movie, it is great!", "Terrible weather today...",
          "The quick brown fox jumps over the lazy dog.", "Sarah Connor lives in Los Angeles.", "naïve café 123"]


def _tokenizer_folder(folder, declared_class="PreTrainedTokenizerFast"):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 5, trainer)
    tokenizer.add_special_tokens([AddedToken("[MASK]", lstrip=True, special=True)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
        mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
    )
    wrapped.save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = declared_class
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return tokenizer.get_vocab_size()


@pytest.mark.parametrize("declared_class", ["PreTrainedTokenizerFast", "BertTokenizer"])
def test_auto_tokenizer_picks_the_references_class_and_ids(tmp_path, declared_class):
    """A ModernBERT folder gets the reference's class, even when its tokenizer_config.json names another."""
    vocab_size = _tokenizer_folder(tmp_path, declared_class)
    _reference("ModernBertModel", vocab_size=vocab_size).save_pretrained(tmp_path)
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(theirs).__name__
    texts = CORPUS + ["Paris is the [MASK] of France.", "  spaces   and\ttabs\n", "émoji 🙂 and ünïcode"]
    assert ours(texts)["input_ids"] == theirs(texts)["input_ids"]
    assert ours(texts[0], texts[1])["input_ids"] == theirs(texts[0], texts[1])["input_ids"]
    assert ours(texts, padding=True, return_tensors="pt")["attention_mask"].tolist() == \
        theirs(texts, padding=True, return_tensors="pt")["attention_mask"].tolist()
    ids = theirs(texts[-1])["input_ids"]
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("ModernBertForMaskedLM", ["Paris is the [MASK] of France.", "I [MASK] this movie."]),
    "text-classification": ("ModernBertForSequenceClassification", ["I love this movie.", "Terrible weather!"]),
    "token-classification": ("ModernBertForTokenClassification", "Sarah Connor lives in Los Angeles."),
}


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_match_reference(task, tmp_path):
    vocab_size = _tokenizer_folder(tmp_path)
    name, inputs = PIPELINE_HEADS[task]
    _reference(name, vocab_size=vocab_size).save_pretrained(tmp_path)
    assert_pipeline_matches(task, tmp_path, inputs)
