"""ERNIE 1.0-3.0 (nghuyong/ernie-1.0-base-zh, ernie-3.0-base-zh, ernie-3.0-nano-zh): BERT's network (models/bert.py)
under the reference's Ernie class names and the `ernie` checkpoint prefix.

The one difference is ERNIE 2.0's and 3.0's task embedding: with config.use_task_id the embeddings add a row of
`task_type_embeddings` by each token's `task_type_ids` (0 when none are given), which every head takes. ERNIE 4.5,
a decoder, is models/ernie4_5.py.
"""

from ..configs import ErnieConfig
from .bert import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertLMHeadModel,
    BertModel,
    BertPreTrainedModel,
)
from .outputs import ErnieForPreTrainingOutput

_TIED = {"cls.predictions.decoder.weight": "ernie.embeddings.word_embeddings.weight"}


class ErniePreTrainedModel(BertPreTrainedModel):
    config_class = ErnieConfig
    base_model_prefix = "ernie"

    def base_model_class(self, config: ErnieConfig) -> type:
        return ErnieModel


class ErnieModel(ErniePreTrainedModel, BertModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` (B, C) unless built without the pooler."""


class ErnieForPreTraining(ErniePreTrainedModel, BertForPreTraining):
    """ERNIE as pretrained: masked LM logits and next-sentence logits; the loss is their sum."""

    tied_weights = _TIED
    output_class = ErnieForPreTrainingOutput


class ErnieForMaskedLM(ErniePreTrainedModel, BertForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = _TIED


class ErnieForCausalLM(ErniePreTrainedModel, BertLMHeadModel):
    """A left-to-right language model (built with config.is_decoder=True): next-token logits, loss and generate."""

    tied_weights = _TIED


class ErnieForNextSentencePrediction(ErniePreTrainedModel, BertForNextSentencePrediction):
    """Whether the second segment follows the first: logits (B, 2), label 0 for "follows", 1 for "random"."""


class ErnieForSequenceClassification(ErniePreTrainedModel, BertForSequenceClassification):
    """One label (or score) per sequence, from the pooled first token."""


class ErnieForTokenClassification(ErniePreTrainedModel, BertForTokenClassification):
    """One label per token (named entities)."""


class ErnieForQuestionAnswering(ErniePreTrainedModel, BertForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class ErnieForMultipleChoice(ErniePreTrainedModel, BertForMultipleChoice):
    """One score per choice, from each choice's pooled first token."""
