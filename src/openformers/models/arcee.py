"""Arcee's AFM decoders (AFM-4.5B and its Base; model_type "arcee") in plain torch.nn.

Llama's network (grouped-query attention, RMSNorm, rotary positions, optional biases) with Nemotron's MLP: no gate,
up_proj, the config's activation (a squared ReLU, `relu2`, in AFM's checkpoints), down_proj. The heads are the
reference's: causal LM, sequence and token classification, extractive QA.

GGUF files of llama.cpp's "arcee" architecture are Llama's files without `ffn_gate` (the query and key rows permuted
for llama.cpp's rotation, undone by llama.py; YaRN from `arcee.rope.scaling.*`). The CPU decoding kernel's step
runs these layers, its MLP's activation (relu2) by StepWeights.set_activation.
"""

from ..configs import GGUF_CONFIG_READERS, ArceeConfig
from .llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)
from .nemotron import NemotronMLP


def config_from_gguf(gguf, **overrides) -> ArceeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "arcee" architecture: Llama's metadata, with the
    biases the first layer's tensors show (llama.cpp reads each where the file has it)."""
    values = gguf_config_values(gguf)
    values.update(architectures=["ArceeForCausalLM"], attention_bias="blk.0.attn_output.bias" in gguf.tensor_names,
                  mlp_bias="blk.0.ffn_up.bias" in gguf.tensor_names)
    return ArceeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["arcee"] = config_from_gguf


class ArceeDecoderLayer(LlamaDecoderLayer):
    mlp_class = NemotronMLP  # up_proj, the activation, down_proj


class ArceePreTrainedModel(LlamaPreTrainedModel):
    config_class = ArceeConfig

    def new_base_model(self, config: ArceeConfig) -> "ArceeModel":
        return ArceeModel(config)


class ArceeModel(ArceePreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = ArceeDecoderLayer


class ArceeForCausalLM(ArceePreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class ArceeForSequenceClassification(ArceePreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class ArceeForTokenClassification(ArceePreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""


class ArceeForQuestionAnswering(ArceePreTrainedModel, LlamaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
