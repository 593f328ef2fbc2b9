"""CamemBERT (camembert-base, camembert/camembert-large, and the sentence-transformers models built on them): RoBERTa's
network (models/bert.py) under the reference's Camembert class names.

Only the vocabulary differs (a French SentencePiece model with fairseq's ids, tokenizers/classes.CamembertTokenizer),
so every class here is RoBERTa's with its own name, and checkpoints keep RoBERTa's keys (`roberta.encoder.layer.0...`,
`lm_head`, `classifier.out_proj`).
"""

from ..configs import CamembertConfig
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


class CamembertPreTrainedModel(RobertaPreTrainedModel):
    config_class = CamembertConfig

    def base_model_class(self, config: CamembertConfig) -> type:
        return CamembertModel


class CamembertModel(CamembertPreTrainedModel, RobertaModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` (B, C) unless built without the pooler."""


class CamembertForMaskedLM(CamembertPreTrainedModel, RobertaForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""


class CamembertForCausalLM(CamembertPreTrainedModel, RobertaForCausalLM):
    """A left-to-right language model (built with config.is_decoder=True): next-token logits, loss and generate."""


class CamembertForSequenceClassification(CamembertPreTrainedModel, RobertaForSequenceClassification):
    """One label (or score) per sequence, from the first token (<s>) through RoBERTa's classification head."""


class CamembertForTokenClassification(CamembertPreTrainedModel, RobertaForTokenClassification):
    """One label per token (named entities, parts of speech)."""


class CamembertForQuestionAnswering(CamembertPreTrainedModel, RobertaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class CamembertForMultipleChoice(CamembertPreTrainedModel, RobertaForMultipleChoice):
    """One score per choice, from each choice's pooled first token."""
