"""openformers: load Hugging Face and GGUF checkpoints, tokenize, generate and fine-tune in plain PyTorch.

Public names are imported lazily, so `import openformers` stays fast and `openformers --help` does not
pay for importing torch.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC_NAMES = {
    "AutoTokenizer": "openformers.tokenizers",
    "PreTrainedTokenizer": "openformers.tokenizers",
    "AutoConfig": "openformers.configs",
    "PretrainedConfig": "openformers.configs",
    "LlamaConfig": "openformers.configs",
    "MistralConfig": "openformers.configs",
    "Qwen2Config": "openformers.configs",
    "GPT2Config": "openformers.configs",
    "BertConfig": "openformers.configs",
    "RobertaConfig": "openformers.configs",
    "AutoModel": "openformers.models.auto",
    "AutoModelForCausalLM": "openformers.models.auto",
    "AutoModelForSequenceClassification": "openformers.models.auto",
    "AutoModelForTokenClassification": "openformers.models.auto",
    "AutoModelForQuestionAnswering": "openformers.models.auto",
    "AutoModelForMaskedLM": "openformers.models.auto",
    "PreTrainedModel": "openformers.models.base",
    "LlamaModel": "openformers.models.llama",
    "LlamaForCausalLM": "openformers.models.llama",
    "LlamaForSequenceClassification": "openformers.models.llama",
    "LlamaForTokenClassification": "openformers.models.llama",
    "LlamaForQuestionAnswering": "openformers.models.llama",
    "GPT2Model": "openformers.models.gpt2",
    "GPT2LMHeadModel": "openformers.models.gpt2",
    "GPT2ForSequenceClassification": "openformers.models.gpt2",
    "GPT2ForTokenClassification": "openformers.models.gpt2",
    "GPT2ForQuestionAnswering": "openformers.models.gpt2",
    "BertModel": "openformers.models.bert",
    "BertForMaskedLM": "openformers.models.bert",
    "BertForSequenceClassification": "openformers.models.bert",
    "BertForTokenClassification": "openformers.models.bert",
    "BertForQuestionAnswering": "openformers.models.bert",
    "RobertaModel": "openformers.models.bert",
    "RobertaForMaskedLM": "openformers.models.bert",
    "RobertaForSequenceClassification": "openformers.models.bert",
    "RobertaForTokenClassification": "openformers.models.bert",
    "RobertaForQuestionAnswering": "openformers.models.bert",
    "DynamicCache": "openformers.generation.cache",
    "TextStreamer": "openformers.generation.streamers",
    "TextIteratorStreamer": "openformers.generation.streamers",
    "GenerationConfig": "openformers.generation.config",
    "pipeline": "openformers.pipelines",
    "Trainer": "openformers.training",
    "TrainingArguments": "openformers.training",
    "TrainerCallback": "openformers.training",
    "TrainerState": "openformers.training",
    "TrainerControl": "openformers.training",
    "EarlyStoppingCallback": "openformers.training",
    "DataCollatorWithPadding": "openformers.training",
    "DataCollatorForLanguageModeling": "openformers.training",
    "DataCollatorForTokenClassification": "openformers.training",
    "default_data_collator": "openformers.training",
    "EvalPrediction": "openformers.training",
    "get_scheduler": "openformers.training",
    "set_seed": "openformers.training",
}

__all__ = sorted(_PUBLIC_NAMES)


def __getattr__(name):
    module_name = _PUBLIC_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'openformers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
