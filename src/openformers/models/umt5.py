"""UMT5 (umt5-small, umt5-base, umt5-xl, umt5-xxl: mT5 retrained on UniMax-sampled mC4) over T5's layers, stacks,
caches and heads. One difference in the layers: every block's self-attention owns its relative position table
(`encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias`), where T5's first block owns the one its stack
shares (config.relative_attention_in_every_layer, which t5.T5Block reads). The cross-attentions have no table, as
in T5.

The config has mT5's defaults; the decoder output is scaled by d_model ** -0.5 before the LM head by T5's rule
(unless config.json says tie_word_embeddings is false, as UMT5's checkpoints do, which then store their own head).
"""

from ..configs import UMT5Config
from .t5 import (
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5ForQuestionAnswering,
    T5ForSequenceClassification,
    T5ForTokenClassification,
    T5Model,
    T5PreTrainedModel,
)


class UMT5PreTrainedModel(T5PreTrainedModel):
    config_class = UMT5Config

    def new_base_model(self, config: UMT5Config) -> "UMT5EncoderModel":
        return UMT5EncoderModel(config)


class UMT5Model(UMT5PreTrainedModel, T5Model):
    """UMT5's encoder-decoder without a head."""


class UMT5ForConditionalGeneration(UMT5PreTrainedModel, T5ForConditionalGeneration):
    """UMT5 text to text: vocabulary logits at every decoder position, and their loss against `labels`."""


class UMT5EncoderModel(UMT5PreTrainedModel, T5EncoderModel):
    """UMT5's encoder alone."""


class UMT5ForSequenceClassification(UMT5PreTrainedModel, T5ForSequenceClassification):
    """One label per sequence, from the decoder's state at the last EOS."""


class UMT5ForTokenClassification(UMT5PreTrainedModel, T5ForTokenClassification):
    """One label per token, from the encoder alone."""


class UMT5ForQuestionAnswering(UMT5PreTrainedModel, T5ForQuestionAnswering):
    """Extractive QA over the decoder's states."""
