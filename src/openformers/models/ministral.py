"""Ministral decoders (Ministral-8B-Instruct-2410; model_type "ministral") in plain torch.nn: Mistral's network whose
layers each slide or not.

The layers are Llama's (llama.py; no biases, grouped-query attention, SwiGLU, RMSNorm). Those `layer_types` marks
"sliding_attention" see only the last `sliding_window` positions, the others every position; all rotate by the same
tables (decoder.SlidingLayersDecoder, as Gemma 2 and Cohere 2 give their layers their masks). The heads are the
reference's: causal LM, sequence and token classification, extractive QA.

llama.cpp has no architecture of its own for Ministral: its converter writes the released checkpoint (whose
architectures name Mistral) as a "llama" file without the layer pattern, which loads as Mistral (llama.py). On the
CPU, kernels/llama.py runs the decoding step of these layers as Mistral's, with Gemma's per-layer windows.
"""

from ..configs import MinistralConfig
from .decoder import SlidingLayersDecoder
from .llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
)


class MinistralDecoderLayer(LlamaDecoderLayer):
    def __init__(self, config: MinistralConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.is_sliding = config.layer_types[layer_idx] == "sliding_attention"  # which mask layer_inputs gives it


class MinistralPreTrainedModel(LlamaPreTrainedModel):
    config_class = MinistralConfig

    def new_base_model(self, config: MinistralConfig) -> "MinistralModel":
        return MinistralModel(config)


class MinistralModel(MinistralPreTrainedModel, SlidingLayersDecoder, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = MinistralDecoderLayer

    def __init__(self, config: MinistralConfig):
        super().__init__(config)
        self.sliding_window = None  # the full layers' mask; the sliding layers' comes from layer_inputs
        self.local_rotary_emb = self.rotary_emb  # one rotation for both kinds of layer


class MinistralForCausalLM(MinistralPreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class MinistralForSequenceClassification(MinistralPreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class MinistralForTokenClassification(MinistralPreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""


class MinistralForQuestionAnswering(MinistralPreTrainedModel, LlamaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
