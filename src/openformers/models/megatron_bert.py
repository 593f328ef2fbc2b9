"""Megatron-BERT (nvidia/megatron-bert-cased-345m, nvidia/megatron-bert-uncased-345m): BERT's model and heads
(models/bert.py) over the pre-LayerNorm layers of models/roberta_prelayernorm.py, under the reference's MegatronBert
class names and BERT's checkpoint prefix (`bert`).

Its norms: none in the embeddings, `attention.ln` before the attention, the layer's `ln` before the feed-forward, and
`encoder.ln` over the last layer's output.
"""

from ..configs import MegatronBertConfig
from .bert import (
    BertEncoder,
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
from .outputs import MegatronBertForPreTrainingOutput
from .roberta_prelayernorm import EmbeddingsWithoutNorm, PreNormLayer


class MegatronBertLayer(PreNormLayer):
    norms = ("attention.ln", "ln")


class MegatronBertEncoder(BertEncoder):
    layer_class = MegatronBertLayer


class MegatronBertPreTrainedModel(BertPreTrainedModel):
    config_class = MegatronBertConfig

    def base_model_class(self, config: MegatronBertConfig) -> type:
        return MegatronBertModel


class MegatronBertModel(MegatronBertPreTrainedModel, BertModel):
    """The encoder: `last_hidden_state` (B, T, C), normalized, and `pooler_output` unless built without the pooler."""

    embeddings_class, encoder_class = EmbeddingsWithoutNorm, MegatronBertEncoder
    final_norm = "encoder.ln"


class MegatronBertForPreTraining(MegatronBertPreTrainedModel, BertForPreTraining):
    """Megatron-BERT as pretrained: masked LM logits and next-sentence logits; the loss is their sum."""

    output_class = MegatronBertForPreTrainingOutput


class MegatronBertForMaskedLM(MegatronBertPreTrainedModel, BertForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""


class MegatronBertForCausalLM(MegatronBertPreTrainedModel, BertLMHeadModel):
    """A left-to-right language model (built with config.is_decoder=True): next-token logits, loss and generate."""


class MegatronBertForNextSentencePrediction(MegatronBertPreTrainedModel, BertForNextSentencePrediction):
    """Whether the second segment follows the first: logits (B, 2), label 0 for "follows", 1 for "random"."""


class MegatronBertForSequenceClassification(MegatronBertPreTrainedModel, BertForSequenceClassification):
    """One label (or score) per sequence, from the pooled first token."""


class MegatronBertForTokenClassification(MegatronBertPreTrainedModel, BertForTokenClassification):
    """One label per token (named entities)."""


class MegatronBertForQuestionAnswering(MegatronBertPreTrainedModel, BertForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class MegatronBertForMultipleChoice(MegatronBertPreTrainedModel, BertForMultipleChoice):
    """One score per choice, from each choice's pooled first token."""
