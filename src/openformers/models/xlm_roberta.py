"""XLM-RoBERTa: RoBERTa's network (models/bert.py) under the reference's XLMRoberta class names.

Only the vocabulary differs (multilingual SentencePiece), so every class here is RoBERTa's with its own name,
and checkpoints keep RoBERTa's keys (`roberta.encoder.layer.0...`, `lm_head`, `classifier.out_proj`).
"""

from ..configs import XLMRobertaConfig
from .bert import (
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaPreTrainedModel,
)


class XLMRobertaPreTrainedModel(RobertaPreTrainedModel):
    config_class = XLMRobertaConfig

    def base_model_class(self, config: XLMRobertaConfig) -> type:
        return XLMRobertaModel


class XLMRobertaModel(XLMRobertaPreTrainedModel, RobertaModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` (B, C) unless built without the pooler."""


class XLMRobertaForMaskedLM(XLMRobertaPreTrainedModel, RobertaForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""


class XLMRobertaForCausalLM(XLMRobertaPreTrainedModel, RobertaForCausalLM):
    """A left-to-right language model (built with config.is_decoder=True): next-token logits, loss and generate."""


class XLMRobertaForSequenceClassification(XLMRobertaPreTrainedModel, RobertaForSequenceClassification):
    """One label (or score) per sequence, from the first token (<s>) through RoBERTa's classification head."""


class XLMRobertaForTokenClassification(XLMRobertaPreTrainedModel, RobertaForTokenClassification):
    """One label per token (named entities)."""


class XLMRobertaForQuestionAnswering(XLMRobertaPreTrainedModel, RobertaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class XLMRobertaForMultipleChoice(XLMRobertaPreTrainedModel, RobertaForMultipleChoice):
    """One score per choice, from each choice's pooled first token."""
