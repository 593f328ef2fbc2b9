"""The Auto classes: pick the model class from the config's `model_type` (or the GGUF architecture)."""

import importlib
import os

from ..configs import CONFIG_ALIASES, PretrainedConfig
from .base import PreTrainedModel, load_pretrained


def _decoder_classes(family: str) -> dict[str, str]:
    """The task -> class-name table of a Llama-style family ("Mistral" -> MistralForCausalLM...)."""
    return {
        "base": f"{family}Model",
        "causal-lm": f"{family}ForCausalLM",
        "sequence-classification": f"{family}ForSequenceClassification",
        "token-classification": f"{family}ForTokenClassification",
        "question-answering": f"{family}ForQuestionAnswering",
    }


def _encoder_classes(family: str) -> dict[str, str]:
    """The task -> class-name table of a BERT-style family ("Roberta" -> RobertaForMaskedLM...)."""
    return {
        "base": f"{family}Model",
        "causal-lm": "BertLMHeadModel" if family == "Bert" else f"{family}ForCausalLM",
        "masked-lm": f"{family}ForMaskedLM",
        "sequence-classification": f"{family}ForSequenceClassification",
        "token-classification": f"{family}ForTokenClassification",
        "question-answering": f"{family}ForQuestionAnswering",
        "multiple-choice": f"{family}ForMultipleChoice",
    }


# model_type -> (module under openformers.models, {task: class name}): the reference's Auto mappings for our families.
MODEL_CLASSES = {
    "llama": ("llama", _decoder_classes("Llama")),
    "mistral": ("llama", _decoder_classes("Mistral")),  # Llama with a sliding window
    "qwen2": ("llama", _decoder_classes("Qwen2")),  # Llama with q/k/v biases
    "gpt2": ("gpt2", {
        "base": "GPT2Model",
        "causal-lm": "GPT2LMHeadModel",
        "pretraining": "GPT2LMHeadModel",
        "sequence-classification": "GPT2ForSequenceClassification",
        "token-classification": "GPT2ForTokenClassification",
        "question-answering": "GPT2ForQuestionAnswering",
    }),
    "bert": ("bert", {
        **_encoder_classes("Bert"),
        "pretraining": "BertForPreTraining",
        "next-sentence-prediction": "BertForNextSentencePrediction",
    }),
    "roberta": ("bert", {**_encoder_classes("Roberta"), "pretraining": "RobertaForMaskedLM"}),
}


def model_class_for(model_type: str, task: str, source) -> type[PreTrainedModel]:
    model_type = CONFIG_ALIASES.get(model_type, model_type)
    if model_type not in MODEL_CLASSES:
        raise ValueError(
            f"{source} holds a {model_type!r} model, which openformers does not support; supported model types: "
            f"{', '.join(sorted(MODEL_CLASSES))}."
        )
    module_name, classes = MODEL_CLASSES[model_type]
    if task not in classes:
        raise ValueError(f"openformers has no {task} class for {model_type!r} models; it has: {', '.join(classes)}.")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, classes[task])


class _AutoModelClass:
    task = ""

    def __init__(self):
        raise TypeError(f"{type(self).__name__} is not instantiated: use {type(self).__name__}.from_pretrained(...).")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs) -> PreTrainedModel:
        """Load with the class the checkpoint's config names; the options are those of `load_pretrained`."""
        return load_pretrained(lambda config, source: model_class_for(config.model_type, cls.task, source),
                               name_or_path, **kwargs)

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs) -> PreTrainedModel:
        """A model with freshly initialized weights, of the class the config's `model_type` names."""
        return model_class_for(config.model_type, cls.task, "the config").from_config(config, **kwargs)


class AutoModel(_AutoModelClass):
    """The base model (hidden states, no head)."""

    task = "base"


class AutoModelForCausalLM(_AutoModelClass):
    """The model with its language-model head, for `generate`."""

    task = "causal-lm"


class AutoModelForSequenceClassification(_AutoModelClass):
    """One label (or score, when num_labels == 1) per sequence; pass num_labels=N to size a new head."""

    task = "sequence-classification"


class AutoModelForTokenClassification(_AutoModelClass):
    """One label per token, for named entity recognition and tagging."""

    task = "token-classification"


class AutoModelForQuestionAnswering(_AutoModelClass):
    """Extractive question answering: start and end logits over the tokens."""

    task = "question-answering"


class AutoModelForMaskedLM(_AutoModelClass):
    """Masked language modeling (BERT, RoBERTa): logits over the vocabulary at every position."""

    task = "masked-lm"


class AutoModelForMultipleChoice(_AutoModelClass):
    """One score per choice: inputs shaped (batch, num_choices, length) give logits (batch, num_choices)."""

    task = "multiple-choice"


class AutoModelForNextSentencePrediction(_AutoModelClass):
    """BERT's next-sentence head: whether the second segment follows the first (logits for yes, no)."""

    task = "next-sentence-prediction"


class AutoModelForPreTraining(_AutoModelClass):
    """The model with the heads it was pretrained with (BERT: masked LM and next sentence; GPT-2: the LM head)."""

    task = "pretraining"
