"""XLM-RoBERTa-XL and -XXL (facebook/xlm-roberta-xl): RoBERTa-PreLayerNorm's layers (models/roberta_prelayernorm.py)
under the reference's XLMRobertaXL class names and RoBERTa's checkpoint prefix (`roberta`).

What differs from RoBERTa-PreLayerNorm is where the norms live: none in the embeddings, the attention's as
`attention.self_attn_layer_norm`, the feed-forward's on the layer (`LayerNorm`), the final one on the encoder
(`encoder.LayerNorm`); and the feed-forward's output has no dropout.
"""

from ..configs import XLMRobertaXLConfig
from .bert import (
    BertEncoder,
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaPreTrainedModel,
)
from .roberta_prelayernorm import EmbeddingsWithoutNorm, PreNormLayer


class XLMRobertaXLLayer(PreNormLayer):
    norms = ("attention.self_attn_layer_norm", "LayerNorm")
    output_dropout = False


class XLMRobertaXLEncoder(BertEncoder):
    layer_class = XLMRobertaXLLayer


class XLMRobertaXLPreTrainedModel(RobertaPreTrainedModel):
    config_class = XLMRobertaXLConfig

    def base_model_class(self, config: XLMRobertaXLConfig) -> type:
        return XLMRobertaXLModel


class XLMRobertaXLModel(XLMRobertaXLPreTrainedModel, RobertaModel):
    """The encoder: `last_hidden_state` (B, T, C), normalized, and `pooler_output` unless built without the pooler."""

    embeddings_class, encoder_class = EmbeddingsWithoutNorm, XLMRobertaXLEncoder
    final_norm = "encoder.LayerNorm"


class XLMRobertaXLForMaskedLM(XLMRobertaXLPreTrainedModel, RobertaForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""


class XLMRobertaXLForCausalLM(XLMRobertaXLPreTrainedModel, RobertaForCausalLM):
    """A left-to-right language model (built with config.is_decoder=True): next-token logits, loss and generate."""


class XLMRobertaXLForSequenceClassification(XLMRobertaXLPreTrainedModel, RobertaForSequenceClassification):
    """One label (or score) per sequence, from the first token (<s>) through RoBERTa's classification head."""


class XLMRobertaXLForTokenClassification(XLMRobertaXLPreTrainedModel, RobertaForTokenClassification):
    """One label per token (named entities)."""


class XLMRobertaXLForQuestionAnswering(XLMRobertaXLPreTrainedModel, RobertaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class XLMRobertaXLForMultipleChoice(XLMRobertaXLPreTrainedModel, RobertaForMultipleChoice):
    """One score per choice, from each choice's pooled first token."""
