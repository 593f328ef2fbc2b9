"""RoBERTa-PreLayerNorm (andreasmadsen/efficient_mlm_m0.40): RoBERTa's network (models/bert.py) with a LayerNorm
before each sublayer, whose output is added to its input unnormalized, and one over the last layer's output.

The pre-LayerNorm layer here is shared with XLM-RoBERTa-XL (xlm_roberta_xl.py) and Megatron-BERT (megatron_bert.py),
which keep the same norms under other names: a layer names where it holds its two norms (`norms`), and the base
model where it holds the final one (`BertModel.final_norm`).
"""

from torch import nn

from ..configs import BertConfig, RobertaPreLayerNormConfig
from .bert import (
    BertEmbeddings,
    BertEncoder,
    BertIntermediate,
    BertSelfAttention,
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaPreTrainedModel,
    add_layer_norm,
)


class PreNormResidual(nn.Module):
    """Project, dropout, add the sublayer's input (normalized before the sublayer, not after)."""

    def __init__(self, config: BertConfig, in_features: int, dropout: bool = True):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout else 0.0)

    def forward(self, x, residual):
        return self.dropout(self.dense(x)) + residual


class PreNormAttention(nn.Module):
    """BERT's attention and its output projection; the layer normalizes the input (its norm may live here)."""

    def __init__(self, config: BertConfig, layer_idx: int = 0):
        super().__init__()
        self.self = BertSelfAttention(config, layer_idx)
        self.output = PreNormResidual(config, config.hidden_size)


class PreNormLayer(nn.Module):
    """x + attention(norm(x)), then x + feed_forward(norm(x))."""

    # Where the layer keeps its norms, before the attention and before the feed-forward (the checkpoints' names).
    norms = ("attention.LayerNorm", "intermediate.LayerNorm")
    output_dropout = True  # XLM-RoBERTa-XL's feed-forward output has no dropout

    def __init__(self, config: BertConfig, layer_idx: int = 0):
        super().__init__()
        self.attention = PreNormAttention(config, layer_idx)
        self.intermediate = BertIntermediate(config)
        self.output = PreNormResidual(config, config.intermediate_size, self.output_dropout)
        for path in self.norms:
            add_layer_norm(self, path, config)

    def forward(self, x, mask, cache=None, attention_path="sdpa", rotary=None):
        attention_norm, feed_forward_norm = (self.get_submodule(path) for path in self.norms)
        y, weights = self.attention.self(attention_norm(x), mask, cache, attention_path, rotary)
        x = self.attention.output(y, x)
        return self.output(self.intermediate(feed_forward_norm(x)), x), weights


class EmbeddingsWithoutNorm(BertEmbeddings):
    """BERT's embeddings without their LayerNorm, which the first layer's norm stands for (XLM-R XL, Megatron-BERT)."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.LayerNorm = nn.Identity()


class RobertaPreLayerNormEncoder(BertEncoder):
    layer_class = PreNormLayer


class RobertaPreLayerNormPreTrainedModel(RobertaPreTrainedModel):
    config_class = RobertaPreLayerNormConfig
    base_model_prefix = "roberta_prelayernorm"

    def base_model_class(self, config: RobertaPreLayerNormConfig) -> type:
        return RobertaPreLayerNormModel


class RobertaPreLayerNormModel(RobertaPreLayerNormPreTrainedModel, RobertaModel):
    """The encoder: `last_hidden_state` (B, T, C), normalized, and `pooler_output` unless built without the pooler."""

    encoder_class = RobertaPreLayerNormEncoder
    final_norm = "LayerNorm"


_TIED = {"lm_head.decoder.weight": "roberta_prelayernorm.embeddings.word_embeddings.weight"}


class RobertaPreLayerNormForMaskedLM(RobertaPreLayerNormPreTrainedModel, RobertaForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = _TIED


class RobertaPreLayerNormForCausalLM(RobertaPreLayerNormPreTrainedModel, RobertaForCausalLM):
    """A left-to-right language model (built with config.is_decoder=True): next-token logits, loss and generate."""

    tied_weights = _TIED


class RobertaPreLayerNormForSequenceClassification(RobertaPreLayerNormPreTrainedModel,
                                                   RobertaForSequenceClassification):
    """One label (or score) per sequence, from the first token (<s>) through RoBERTa's classification head."""


class RobertaPreLayerNormForTokenClassification(RobertaPreLayerNormPreTrainedModel, RobertaForTokenClassification):
    """One label per token (named entities)."""


class RobertaPreLayerNormForQuestionAnswering(RobertaPreLayerNormPreTrainedModel, RobertaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class RobertaPreLayerNormForMultipleChoice(RobertaPreLayerNormPreTrainedModel, RobertaForMultipleChoice):
    """One score per choice, from each choice's pooled first token."""
