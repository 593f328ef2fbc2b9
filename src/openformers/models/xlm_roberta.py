"""XLM-RoBERTa: RoBERTa's network (models/bert.py) under the reference's XLMRoberta class names.

Only the vocabulary differs (multilingual SentencePiece), so every class here is RoBERTa's with its own name,
and checkpoints keep RoBERTa's keys (`roberta.encoder.layer.0...`, `lm_head`, `classifier.out_proj`).
"""

from ..configs import XLMRobertaConfig
from .bert import (
    POOLER_KEYS,
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

    def new_base_model(self, config: XLMRobertaConfig) -> "XLMRobertaModel":
        """The encoder a head builds on, as an XLMRobertaModel (the reference's class for `model.roberta`)."""
        if not self.add_pooling_layer:  # a checkpoint's pooler is left unused, as the reference does
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, POOLER_KEYS)
        return XLMRobertaModel(config, add_pooling_layer=self.add_pooling_layer)


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
