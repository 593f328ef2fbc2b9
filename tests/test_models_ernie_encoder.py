"""ERNIE 1.0-3.0 (model_type "ernie", an encoder; ERNIE 4.5's decoder is tests/test_models_ernie.py) against the
reference: tiny random models made by the reference for every head, with the task embedding of ERNIE 2.0/3.0
(use_task_id, task_type_ids drawn per token) and without it (ERNIE 1.0), run through tests/encoder_suite.py; here
what ERNIE has of its own: task_type_ids (defaulting to task 0, refused without a task table, out of range by name),
the config's defaults and refusals, generation, and its tokenizer's class."""

import json

import pytest
import torch

import openformers
from openformers import configs

from decoder_parity import REFERENCE_BOOKKEEPING, assert_config_refuses_by_name
from encoder_parity import assert_same, load_quietly, outputs_of
from encoder_suite import ROW_INPUTS, EncoderFamilyTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, type_vocab_size=3,
)


class TestErnie(EncoderFamilyTests):
    """Every head with and without task types; the task table drawn at std 1, so that a task embedding left out or
    added where the reference does not add it shows."""

    REFERENCE_CONFIG = "ErnieConfig"
    TINY = TINY
    VARIANTS = {  # the first is the one the single-variant tests (bfloat16, untied, training) use
        "tasks": dict(use_task_id=True, task_type_vocab_size=4),
        "ernie1": {},
    }
    HEADS = {  # the reference's class -> the Auto class that picks it
        "ErnieModel": "AutoModel",
        "ErnieForPreTraining": "AutoModelForPreTraining",
        "ErnieForMaskedLM": "AutoModelForMaskedLM",
        "ErnieForCausalLM": "AutoModelForCausalLM",
        "ErnieForNextSentencePrediction": "AutoModelForNextSentencePrediction",
        "ErnieForSequenceClassification": "AutoModelForSequenceClassification",
        "ErnieForTokenClassification": "AutoModelForTokenClassification",
        "ErnieForQuestionAnswering": "AutoModelForQuestionAnswering",
        "ErnieForMultipleChoice": "AutoModelForMultipleChoice",
    }
    PER_SEQUENCE = ("ErnieForSequenceClassification", "ErnieForMultipleChoice", "ErnieForNextSentencePrediction")
    TOKEN_TYPES = True
    ALSO_DRAWN = ("task_type_embeddings",)
    ROW_INPUTS = (*ROW_INPUTS, "task_type_ids")

    @classmethod
    def inputs(cls, name, variant=None):
        if name == "ErnieForPreTraining":  # the masked LM's labels and the next-sentence label
            inputs = {**super().inputs("ErnieForMaskedLM"), "next_sentence_label": torch.tensor([1, 0])}
        elif name == "ErnieForNextSentencePrediction":
            inputs = {**super().inputs("ErnieModel"), "labels": torch.tensor([1, 0])}
        else:
            inputs = super().inputs(name)
        # The reference's multiple choice hands task_type_ids (B, num_choices, T) to its embeddings unflattened, which
        # fails: that head is compared below with the reference given each choice's row.
        if cls.VARIANTS[variant or next(iter(cls.VARIANTS))].get("use_task_id") and name != "ErnieForMultipleChoice":
            inputs["task_type_ids"] = task_types(inputs["input_ids"])
        return inputs


def task_types(input_ids: torch.Tensor) -> torch.Tensor:
    return input_ids % 4  # every task, token by token


@torch.inference_mode()
def test_multiple_choice_takes_task_types_per_choice(tmp_path):
    reference = TestErnie.reference("ErnieForMultipleChoice")
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModelForMultipleChoice.from_pretrained, tmp_path)
    inputs = TestErnie.inputs("ErnieForMultipleChoice")
    tasks = task_types(inputs["input_ids"])  # (B, num_choices, T)
    ours = model(**inputs, task_type_ids=tasks)
    assert_same(outputs_of(ours), outputs_of(reference(**inputs, task_type_ids=tasks.view(-1, tasks.shape[-1]))))
    assert not torch.allclose(ours.logits, model(**inputs).logits)


@torch.inference_mode()
def test_task_types_default_to_task_zero_and_are_refused_without_a_table(tmp_path):
    reference = TestErnie.reference("ErnieModel")
    reference.save_pretrained(tmp_path / "tasks")
    model = load_quietly(openformers.AutoModel.from_pretrained, tmp_path / "tasks")
    inputs = {k: v for k, v in TestErnie.inputs("ErnieModel").items() if k != "task_type_ids"}
    ours = model(**inputs).last_hidden_state
    torch.testing.assert_close(ours, reference(**inputs).last_hidden_state, atol=1e-4, rtol=1e-4)
    zeros = torch.zeros_like(inputs["input_ids"])
    torch.testing.assert_close(ours, model(**inputs, task_type_ids=zeros).last_hidden_state)
    assert not torch.allclose(ours, model(**inputs, task_type_ids=zeros + 1).last_hidden_state)
    with pytest.raises(IndexError, match="task_type_ids holds 4.*task_type_vocab_size"):
        model(**inputs, task_type_ids=zeros + 4)
    TestErnie.reference("ErnieModel", "ernie1").save_pretrained(tmp_path / "ernie1")
    plain = load_quietly(openformers.AutoModel.from_pretrained, tmp_path / "ernie1")
    assert not hasattr(plain.embeddings, "task_type_embeddings")
    with pytest.raises(ValueError, match="use_task_id"):
        plain(**inputs, task_type_ids=zeros)


@pytest.mark.parametrize("options", [{}, {"num_beams": 3}], ids=["greedy", "beams"])
@torch.inference_mode()
def test_causal_lm_generates_the_reference_tokens(tmp_path, options):
    reference = TestErnie.reference("ErnieForCausalLM")
    reference.save_pretrained(tmp_path)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path)
    prompt = torch.tensor([[2, 5, 6, 7]])
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None, **options)
    torch.testing.assert_close(model.generate(prompt, **settings), reference.generate(prompt, **settings))


def test_config_defaults_are_the_references():
    ours, theirs = configs.ErnieConfig(), transformers.ErnieConfig()
    for name, value in theirs.to_dict().items():  # BERT's config keeps use_cache and add_cross_attention as read
        if name not in (*REFERENCE_BOOKKEEPING, "use_cache", "add_cross_attention"):
            assert getattr(ours, name) == value, name
    assert openformers.AutoConfig.for_model("ernie").model_type == "ernie"
    assert type(openformers.AutoConfig.for_model("ernie4_5")).__name__ == "Ernie4_5Config"


def test_config_refuses_by_name(tmp_path):
    assert_config_refuses_by_name(configs.ErnieConfig, {**TINY, "task_type_vocab_size": 0}, "task_type_vocab_size=0",
                                  tmp_path)


def test_tokenizer_is_berts_wordpiece(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "你", "好", "hello", "world", "##s", ","]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "ernie"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "BertTokenizer"
    for texts in (["你好 hello worlds,"], ["你好", "hello world"]):
        assert dict(ours(*texts)) == dict(reference(*texts)), texts
