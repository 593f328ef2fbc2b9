"""The tokenizer pipeline: added tokens, normalizer, pre-tokenizer, model, post-processor, decoder.

`AutoTokenizer.from_pretrained(name_or_path)` loads a tokenizer.json or the tokenizer in a GGUF file.
"""

from .base import AddedToken, BatchEncoding, Pipeline, PreTrainedTokenizer
from .loaders import load_tokenizer, pipeline_from_tokenizer_json, read_gguf_metadata

# The reference picks a class per model; here one class covers every tokenizer we load.
AutoTokenizer = PreTrainedTokenizer

__all__ = [
    "AddedToken",
    "AutoTokenizer",
    "BatchEncoding",
    "Pipeline",
    "PreTrainedTokenizer",
    "load_tokenizer",
    "pipeline_from_tokenizer_json",
    "read_gguf_metadata",
]
