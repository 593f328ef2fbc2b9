"""SmolLM3 decoders in plain torch.nn: Llama's network in which some layers attend without rotary positions.

The layers `config.no_rope_layers` marks 0 (by default every fourth) take their queries and keys as projected, with
no rotation ("NoPE"); everything else (grouped-query attention, SwiGLU, the heads, the cache) is llama.py's, and the
head is tied to the embeddings. Parameter names are those of Hugging Face checkpoints. The CPU decoding kernel runs
its step as Llama's, the unrotated layers told apart by `StepWeights.set_unrotated` (kernels/llama.py), which reads
each layer's `rotates` when it gathers the weights.

GGUF files of llama.cpp's "smollm3" architecture are read as Llama's (`gguf_config_values`, the query and key rows
permuted back by `convert_gguf_state_dict`): llama.cpp writes no key for the unrotated layers and leaves every fourth
one unrotated, which is the config's default.
"""

from ..configs import GGUF_CONFIG_READERS, SmolLM3Config
from .llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)


def config_from_gguf(gguf, **overrides) -> SmolLM3Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "smollm3" architecture."""
    return SmolLM3Config.from_dict({"architectures": ["SmolLM3ForCausalLM"], **gguf_config_values(gguf)}, **overrides)


GGUF_CONFIG_READERS["smollm3"] = config_from_gguf


class SmolLM3Attention(LlamaAttention):
    """Llama's attention, its queries and keys rotated only in the layers no_rope_layers marks 1."""

    def __init__(self, config: SmolLM3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.rotates = bool(config.no_rope_layers[layer_idx])


class SmolLM3DecoderLayer(LlamaDecoderLayer):
    attention_class = SmolLM3Attention


class SmolLM3PreTrainedModel(LlamaPreTrainedModel):
    config_class = SmolLM3Config

    def new_base_model(self, config: SmolLM3Config) -> "SmolLM3Model":
        return SmolLM3Model(config)


class SmolLM3Model(SmolLM3PreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = SmolLM3DecoderLayer

    def __init__(self, config: SmolLM3Config):
        super().__init__(config)
        self.sliding_window = None  # a sliding_window without use_sliding_window applies nowhere (the config's check)


class SmolLM3ForCausalLM(SmolLM3PreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class SmolLM3ForSequenceClassification(SmolLM3PreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class SmolLM3ForTokenClassification(SmolLM3PreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""


class SmolLM3ForQuestionAnswering(SmolLM3PreTrainedModel, LlamaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
