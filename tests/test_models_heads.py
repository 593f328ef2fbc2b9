"""The heads and family names added for drop-in use, against the reference: Mistral and Qwen2 under their own
class names, GPT2DoubleHeadsModel, BertForPreTraining, BertForNextSentencePrediction, BertForMultipleChoice,
BertLMHeadModel, RobertaForMultipleChoice and RobertaForCausalLM.

Each one: a tiny random model made by the reference loads with no missing or unexpected keys (no warning at
all), gives the reference's outputs and losses, saves what the reference loads back with the same outputs,
and comes back from the Auto classes as the reference's class.
"""

import json
import warnings

import pytest
import torch

import openformers
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

DECODER = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
)
ENCODER = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, type_vocab_size=2,
)
GPT2 = dict(vocab_size=99, n_positions=32, n_embd=32, n_layer=2, n_head=4)
FAMILY_CONFIGS = {
    "Mistral": ("MistralConfig", {**DECODER, "sliding_window": 4}),
    "Qwen2": ("Qwen2Config", DECODER),
    "Bert": ("BertConfig", ENCODER),
    "Roberta": ("RobertaConfig", ENCODER),
    "GPT2": ("GPT2Config", GPT2),
}
DECODER_HEADS = ("Model", "ForCausalLM", "ForSequenceClassification", "ForTokenClassification",
                 "ForQuestionAnswering")
# class name -> (family, config overrides, the Auto classes that must pick it for this family)
CLASSES = {
    **{f"{family}{head}": (family, {"num_labels": 3}, ()) for family in ("Mistral", "Qwen2") for head in DECODER_HEADS},
    "GPT2DoubleHeadsModel": ("GPT2", {}, ()),
    "BertForPreTraining": ("Bert", {}, ("AutoModelForPreTraining",)),
    "BertForNextSentencePrediction": ("Bert", {}, ("AutoModelForNextSentencePrediction",)),
    "BertForMultipleChoice": ("Bert", {}, ("AutoModelForMultipleChoice",)),
    "BertLMHeadModel": ("Bert", {"is_decoder": True}, ("AutoModelForCausalLM",)),
    "RobertaForMultipleChoice": ("Roberta", {}, ("AutoModelForMultipleChoice",)),
    "RobertaForCausalLM": ("Roberta", {"is_decoder": True}, ("AutoModelForCausalLM",)),
}
AUTO_OF_HEAD = {
    "Model": "AutoModel", "ForCausalLM": "AutoModelForCausalLM",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification", "ForQuestionAnswering": "AutoModelForQuestionAnswering",
}


def _reference(name, **overrides):
    family, defaults, _ = CLASSES[name]
    config_name, tiny = FAMILY_CONFIGS[family]
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**{**tiny, **defaults, **overrides})
    model = getattr(transformers, name)(config).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias"):  # the reference initializes biases to zero: make them count
                parameter.normal_(std=0.1)
    return model


def _load_quietly(load, folder):
    """Load, failing on any warning: a missing, unexpected or newly initialized weight is reported by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(folder)


def _ids(*shape, vocab=99, seed=1):
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


def _inputs(name) -> dict:
    """A batch for `name`, with padding where the model takes an attention mask, and every label it takes."""
    family = CLASSES[name][0]
    if name in ("BertForMultipleChoice", "RobertaForMultipleChoice", "GPT2DoubleHeadsModel"):
        ids = _ids(2, 3, 7)
        mask = torch.ones_like(ids)
        mask[1, 2, 5:] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
        if name == "GPT2DoubleHeadsModel":
            labels = ids.masked_fill(mask == 0, -100)
            return {**inputs, "mc_token_ids": torch.tensor([[6, 4, 5], [2, 6, 4]]), "labels": labels,
                    "mc_labels": torch.tensor([1, 2])}
        if family == "Bert":
            inputs["token_type_ids"] = (torch.arange(7) >= 4).long().expand(2, 3, 7)
        return {**inputs, "labels": torch.tensor([2, 0])}
    if family in ("Mistral", "Qwen2"):
        ids = _ids(2, 9, vocab=DECODER["vocab_size"], seed=7)
        mask = torch.ones_like(ids)
        ids[0, 6:], mask[0, 6:] = 0, 0  # right padding
        ids[1, :2], mask[1, :2] = 0, 0  # left padding
    else:
        ids = _ids(2, 10)
        mask = torch.ones_like(ids)
        ids[1, 7:], mask[1, 7:] = {"Bert": 0, "Roberta": 1}[family], 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if family == "Bert":
        inputs["token_type_ids"] = (torch.arange(ids.shape[1]) >= 5).long().expand_as(ids)
    if name.endswith("ForSequenceClassification"):
        return {**inputs, "labels": torch.tensor([2, 0])}
    if name.endswith("ForTokenClassification"):
        return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
    if name.endswith("ForQuestionAnswering"):
        return {**inputs, "start_positions": torch.tensor([3, 12]), "end_positions": torch.tensor([5, 4])}
    if name == "BertForPreTraining":
        labels = torch.full_like(ids, -100)
        labels[:, [1, 4]] = ids[:, [1, 4]]
        return {**inputs, "labels": labels, "next_sentence_label": torch.tensor([0, 1])}
    if name == "BertForNextSentencePrediction":
        return {**inputs, "labels": torch.tensor([1, 0])}
    if name.endswith("Model") and not name.endswith("LMHeadModel"):
        return inputs
    return {**inputs, "labels": ids.masked_fill(mask == 0, -100)}  # causal LM


def _outputs(model, name) -> dict:
    """Every tensor field of the output, by name (the reference adds its cache, which is left out)."""
    out = model(**_inputs(name))
    return {key: out[key] for key in out.keys() if isinstance(out[key], torch.Tensor)}


@pytest.fixture(scope="module", params=list(CLASSES))
def tiny(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name)
    reference.save_pretrained(folder)
    return name, folder, reference, _load_quietly(getattr(openformers, name).from_pretrained, folder)


@torch.inference_mode()
def test_outputs_and_losses_match_the_reference(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    ours, theirs = _outputs(model, name), _outputs(reference, name)
    assert list(ours) == list(theirs)
    assert any("loss" in key for key in ours) or name.endswith("Model") and "last_hidden_state" in ours
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4, msg=f"{name}.{key}")


@torch.inference_mode()
def test_saved_model_loads_back_in_the_reference(tiny, tmp_path):
    name, _, reference, model = tiny
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [name]
    theirs = getattr(transformers, name).from_pretrained(tmp_path).eval()
    expected = _outputs(reference, name)
    for key, value in _outputs(theirs, name).items():
        torch.testing.assert_close(value, expected[key], atol=1e-4, rtol=1e-4, msg=f"{name}.{key}")
    ours = _load_quietly(getattr(openformers, name).from_pretrained, tmp_path)
    for key, value in _outputs(ours, name).items():
        torch.testing.assert_close(value, expected[key], atol=1e-4, rtol=1e-4, msg=f"{name}.{key}")


def test_auto_classes_return_the_reference_class(tiny):
    name, folder, _, _ = tiny
    family, _, autos = CLASSES[name]
    head = name.removeprefix(family)
    for auto in autos + ((AUTO_OF_HEAD[head],) if head in AUTO_OF_HEAD else ()):
        theirs = getattr(transformers, auto).from_pretrained(folder)
        ours = _load_quietly(getattr(openformers, auto).from_pretrained, folder)
        assert type(ours).__name__ == type(theirs).__name__ == name, auto


def test_family_classes_share_the_llama_implementation():
    from openformers.models import llama

    for family in ("Mistral", "Qwen2"):
        base = getattr(llama, f"{family}PreTrainedModel")
        assert issubclass(base, llama.LlamaPreTrainedModel)
        for head in DECODER_HEADS:
            cls = getattr(openformers, f"{family}{head}")
            assert issubclass(cls, base) and issubclass(cls, getattr(llama, f"Llama{head}"))
    assert openformers.MistralPreTrainedModel.config_class is openformers.MistralConfig
    assert openformers.Qwen2PreTrainedModel.config_class is openformers.Qwen2Config


def test_family_heads_build_on_the_family_base_model():
    config = openformers.Qwen2Config(**DECODER)
    model = openformers.Qwen2ForCausalLM.from_config(config)
    assert type(model.model).__name__ == "Qwen2Model"
    model = openformers.MistralForQuestionAnswering(openformers.MistralConfig(**DECODER))
    assert type(model.model).__name__ == "MistralModel"  # the reference's Mistral QA keeps it under "model"
    assert type(openformers.LlamaForCausalLM(config).model).__name__ == "LlamaModel"


# The decoders built on BERT and RoBERTa: a cache, and generation.


@pytest.mark.parametrize("name", ["BertLMHeadModel", "RobertaForCausalLM"])
@torch.inference_mode()
def test_encoder_decoders_cached_decoding_equals_the_full_forward(name, tmp_path):
    _reference(name).save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = _ids(2, 9, seed=3)
    full = model(ids).logits
    cache = DynamicCache()
    steps = [model(ids[:, :4], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(4, 9)]
    assert cache.seq_len == 9
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["BertLMHeadModel", "RobertaForCausalLM"])
@torch.inference_mode()
def test_encoder_decoders_generate_as_the_reference(name, tmp_path):
    reference = _reference(name)
    reference.save_pretrained(tmp_path)
    model = getattr(openformers, name).from_pretrained(tmp_path)
    ids = _ids(1, 5, seed=4)
    expected = reference.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(model.generate(ids, max_new_tokens=8, do_sample=False), expected)


def test_bert_lm_head_without_is_decoder_warns_and_stays_bidirectional(tmp_path):
    reference = _reference("BertLMHeadModel", is_decoder=False)
    reference.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="is_decoder"):
        model = openformers.BertLMHeadModel.from_pretrained(tmp_path)
    with torch.inference_mode():
        torch.testing.assert_close(_outputs(model, "BertLMHeadModel"), _outputs(reference, "BertLMHeadModel"))
    with pytest.raises(ValueError, match="past_key_values"):
        model(_ids(1, 3), past_key_values=DynamicCache())


def test_multiple_choice_wants_choices():
    model = openformers.BertForMultipleChoice.from_config(openformers.BertConfig(**ENCODER))
    with pytest.raises(ValueError, match="num_choices"):
        model(_ids(2, 5))


def test_class_labels_outside_num_labels_say_how_to_load_more():
    # The usual mistake: a three-class dataset on a model loaded with the default two labels. torch's own error
    # says "Target 2 is out of bounds" (on a GPU, a device-side assert).
    for config in (openformers.BertConfig(**ENCODER), openformers.LlamaConfig(**DECODER)):
        model_class = getattr(openformers, config.model_type.capitalize() + "ForSequenceClassification")
        model = model_class.from_config(config)
        assert model.config.num_labels == 2
        expected = r"^labels holds 2, .*num_labels=2 .*from_pretrained\(\.\.\., num_labels=N\)"
        with pytest.raises(IndexError, match=expected):
            model(_ids(3, 5), labels=torch.tensor([0, 2, 1]))
        model(_ids(3, 5), labels=torch.tensor([0, -100, 1])).loss.backward()  # -100 leaves a sample out


# GPT-2's double heads: the default classification token, and inputs without a choices axis.


@torch.inference_mode()
def test_gpt2_double_heads_defaults_match_the_reference(tmp_path):
    reference = _reference("GPT2DoubleHeadsModel")
    reference.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="multiple_choice_head"):  # the reference warns of them too
        model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(model).__name__ == "GPT2LMHeadModel"  # the LM part of the checkpoint, as the reference picks
    model = _load_quietly(openformers.GPT2DoubleHeadsModel.from_pretrained, tmp_path)
    assert model.config.num_labels == 1 and model.multiple_choice_head.summary.out_features == 1
    for ids in (_ids(2, 3, 6, seed=5), _ids(2, 6, seed=6)):  # no mc_token_ids: each row's last token
        ours, theirs = model(ids), reference(ids)
        torch.testing.assert_close(ours.mc_logits, theirs.mc_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_gpt2_double_heads_summary_settings_match_the_reference(tmp_path):
    reference = _reference("GPT2DoubleHeadsModel", summary_activation="tanh", summary_proj_to_labels=False)
    reference.save_pretrained(tmp_path)
    model = _load_quietly(openformers.GPT2DoubleHeadsModel.from_pretrained, tmp_path)
    assert model.multiple_choice_head.summary.out_features == GPT2["n_embd"]
    inputs = _inputs("GPT2DoubleHeadsModel")
    del inputs["mc_labels"]  # each choice now gets a vector, not a score: there is no choice to classify
    ours, theirs = model(**inputs), reference(**inputs)
    assert ours.mc_logits.shape == (2, 3, GPT2["n_embd"])
    for key in ("loss", "logits", "mc_logits"):
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4, msg=key)


def test_gpt2_double_heads_from_a_language_model_checkpoint(tmp_path):
    """The documented start: GPT2DoubleHeadsModel.from_pretrained of a plain GPT-2 checkpoint; the choice head is new."""
    torch.manual_seed(0)
    reference = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2)).eval()
    reference.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"multiple_choice_head\.summary\.weight.*newly initialized"):
        model = openformers.GPT2DoubleHeadsModel.from_pretrained(tmp_path)
    assert model.config.num_labels == 1 and model.multiple_choice_head.summary.weight.shape == (1, GPT2["n_embd"])
    ids = _ids(2, 3, 6, seed=8)
    with torch.inference_mode():
        out = model(ids)
        expected = reference(ids.view(6, 6)).logits.view(2, 3, 6, -1)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    assert out.mc_logits.shape == (2, 3) and torch.isfinite(out.mc_logits).all()


# output_hidden_states, output_attentions and return_dict, as the reference answers them.


@torch.inference_mode()
def test_hidden_states_attentions_and_tuples_match_the_reference(tiny):
    name, _, reference, model = tiny
    inputs = _inputs(name)
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    reference.set_attn_implementation("eager")  # the reference returns weights only when computed step by step
    try:
        theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    finally:
        reference.set_attn_implementation("sdpa")
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 3  # the embeddings and each of the 2 layers
    for mine, expected in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(mine, expected, atol=1e-4, rtol=1e-4)
    assert len(ours.attentions) == 2
    for mine, expected in zip(ours.attentions, theirs.attentions):
        torch.testing.assert_close(mine, expected, atol=1e-4, rtol=1e-4)
    rows = torch.stack(ours.attentions).sum(-1)
    torch.testing.assert_close(rows[rows > 0.5], torch.ones_like(rows[rows > 0.5]))  # softmax rows (empty: 0)
    as_tuple = model(**inputs, return_dict=False)
    expected = _outputs(model, name)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(expected)
    for value, key in zip(as_tuple, expected):
        torch.testing.assert_close(value, expected[key])


@pytest.mark.parametrize("name", ["BertForMultipleChoice", "GPT2DoubleHeadsModel", "BertLMHeadModel"])
@torch.inference_mode()
def test_inputs_embeds_give_what_the_ids_give(name, tmp_path):
    reference = _reference(name)
    reference.save_pretrained(tmp_path)
    model = _load_quietly(getattr(openformers, name).from_pretrained, tmp_path)
    inputs = _inputs(name)
    ids = inputs.pop("input_ids")
    embeds = model.get_input_embeddings()(ids)
    ours = model(inputs_embeds=embeds, **inputs)
    if name == "GPT2DoubleHeadsModel":  # the reference's fails on (B, num_choices, T, C) embeddings: its ids' answer
        theirs = reference(ids, **inputs)
    else:
        theirs = reference(inputs_embeds=embeds, **inputs)
    for key in ("loss", "logits", "mc_logits"):
        if key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4, msg=key)
            torch.testing.assert_close(ours[key], model(ids, **inputs)[key], atol=1e-5, rtol=1e-5, msg=key)


# The task heads are written once (models/heads.py) and named per family.

TASK_HEADS = {"ForSequenceClassification": ("SequenceClassification", "PooledSequenceClassification"),
              "ForTokenClassification": ("TokenClassification",), "ForQuestionAnswering": ("QuestionAnswering",),
              "ForMultipleChoice": ("MultipleChoice",)}


def test_every_family_names_the_shared_task_heads():
    from openformers.models import heads

    for family in ("Llama", "Mistral", "Qwen2", "GPT2", "Bert", "Roberta"):
        for suffix, shared in TASK_HEADS.items():
            cls = getattr(openformers, f"{family}{suffix}", None)
            if cls is not None:
                assert issubclass(cls, tuple(getattr(heads, name) for name in shared)), cls.__name__


DROPOUT_CASES = [
    ("LlamaForTokenClassification", {"hidden_dropout": 0.3}),
    ("LlamaForTokenClassification", {"classifier_dropout": 0.2, "hidden_dropout": 0.3}),
    ("GPT2ForTokenClassification", {"hidden_dropout": 0.3}),
    ("GPT2ForTokenClassification", {}),
    ("BertForTokenClassification", {"hidden_dropout_prob": 0.3}),
    ("BertForSequenceClassification", {"classifier_dropout": 0.2}),
    ("BertForMultipleChoice", {"classifier_dropout": 0.2}),
    ("RobertaForSequenceClassification", {"classifier_dropout": 0.2}),
    ("RobertaForMultipleChoice", {"classifier_dropout": 0.2, "hidden_dropout_prob": 0.3}),
]
DROPOUT_CONFIGS = {"Llama": ("LlamaConfig", DECODER), "GPT2": ("GPT2Config", GPT2), "Bert": ("BertConfig", ENCODER),
                   "Roberta": ("RobertaConfig", ENCODER)}


@pytest.mark.parametrize("name, values", DROPOUT_CASES)
def test_the_dropout_before_a_classifier_is_the_references(name, values):
    config_name, tiny = next(DROPOUT_CONFIGS[family] for family in DROPOUT_CONFIGS if name.startswith(family))

    def head_dropouts(library):
        model = getattr(library, name)(getattr(library, config_name)(**tiny, **values))
        return {key: module.p for key, module in model.named_modules()
                if isinstance(module, torch.nn.Dropout) and not key.startswith(model.base_model_prefix)}

    assert head_dropouts(openformers) == head_dropouts(transformers)
