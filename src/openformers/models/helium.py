"""Kyutai's Helium decoders (helium-1-2b, helium-1-preview-2b; model_type "helium") in plain torch.nn.

Llama's network (grouped-query attention, SwiGLU, rotary positions) with three differences from llama.py's:
- the rotary embeddings turn interleaved pairs (2i, 2i + 1) of each head, as GPT-J's (`layers.apply_interleaved_rope`),
  by Llama's tables;
- the RMSNorms scale by their weight in float32 before casting back to the input's dtype (olmo2.Olmo2RMSNorm; only
  half precision sees it);
- attention_bias puts a bias on q/k/v only, never on o_proj.
The heads are the reference's: causal LM, sequence and token classification (it has no QA head for Helium).
llama.cpp has no Helium architecture, so no GGUF reader here. The CPU decoding kernel's step runs these layers, its
rotation set to interleaved pairs (kernels/llama.py).
"""

from torch import nn

from ..configs import HeliumConfig
from .layers import apply_interleaved_rope
from .llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
)
from .olmo2 import Olmo2RMSNorm


class HeliumAttention(LlamaAttention):
    rope = staticmethod(apply_interleaved_rope)

    @staticmethod
    def output_bias(config: HeliumConfig) -> bool:
        return False


class HeliumDecoderLayer(LlamaDecoderLayer):
    attention_class = HeliumAttention
    norm_class = Olmo2RMSNorm


class HeliumPreTrainedModel(LlamaPreTrainedModel):
    config_class = HeliumConfig

    def new_base_model(self, config: HeliumConfig) -> "HeliumModel":
        return HeliumModel(config)


class HeliumModel(HeliumPreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = HeliumDecoderLayer

    def new_norm(self, config: HeliumConfig) -> nn.Module:
        return Olmo2RMSNorm(config.hidden_size, config.rms_norm_eps)


class HeliumForCausalLM(HeliumPreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class HeliumForSequenceClassification(HeliumPreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class HeliumForTokenClassification(HeliumPreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""
