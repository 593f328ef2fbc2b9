"""The tokenizer pipeline: added tokens, normalizer, pre-tokenizer, model, post-processor, decoder.

`AutoTokenizer.from_pretrained(name_or_path)` loads a tokenizer.json, vocabulary files, a tokenizer.model
or the tokenizer in a GGUF file, as the class the reference would pick (`classes.py`).
"""

from .base import PreTrainedTokenizer, PreTrainedTokenizerBase
from .classes import (
    AutoTokenizer,
    BartTokenizer,
    BartTokenizerFast,
    BertTokenizer,
    BertTokenizerFast,
    DistilBertTokenizer,
    DistilBertTokenizerFast,
    GPT2Tokenizer,
    GPT2TokenizerFast,
    GPTNeoXTokenizer,
    GPTNeoXTokenizerFast,
    LlamaTokenizer,
    LlamaTokenizerFast,
    PreTrainedTokenizerFast,
    Qwen2Tokenizer,
    Qwen2TokenizerFast,
    RobertaTokenizer,
    RobertaTokenizerFast,
    T5Tokenizer,
    T5TokenizerFast,
    TokenizersBackend,
    XLMRobertaTokenizer,
    XLMRobertaTokenizerFast,
)
from .encoding import (
    SPIECE_UNDERLINE,
    BatchEncoding,
    CharSpan,
    PaddingStrategy,
    TensorType,
    TokenSpan,
    TruncationStrategy,
)
from .loaders import load_tokenizer, pipeline_from_tokenizer_json, read_gguf_metadata
from .pipeline import AddedToken, Pipeline

__all__ = [
    "SPIECE_UNDERLINE",
    "AddedToken",
    "AutoTokenizer",
    "BatchEncoding",
    "BertTokenizer",
    "BertTokenizerFast",
    "CharSpan",
    "DistilBertTokenizer",
    "DistilBertTokenizerFast",
    "GPT2Tokenizer",
    "GPT2TokenizerFast",
    "GPTNeoXTokenizer",
    "GPTNeoXTokenizerFast",
    "LlamaTokenizer",
    "LlamaTokenizerFast",
    "PaddingStrategy",
    "Pipeline",
    "PreTrainedTokenizer",
    "PreTrainedTokenizerBase",
    "PreTrainedTokenizerFast",
    "Qwen2Tokenizer",
    "Qwen2TokenizerFast",
    "RobertaTokenizer",
    "RobertaTokenizerFast",
    "T5Tokenizer",
    "T5TokenizerFast",
    "TensorType",
    "TokenSpan",
    "TokenizersBackend",
    "TruncationStrategy",
    "XLMRobertaTokenizer",
    "XLMRobertaTokenizerFast",
    "load_tokenizer",
    "pipeline_from_tokenizer_json",
    "read_gguf_metadata",
]
