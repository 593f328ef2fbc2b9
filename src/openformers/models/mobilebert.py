"""MobileBERT in plain torch.nn: BERT's post-norm encoder made narrow inside each layer.

Each layer projects its input (hidden_size wide) down to `intra_bottleneck_size` ("bottleneck.input"); by default
the queries and keys read a second such projection ("bottleneck.attention", `key_query_shared_bottleneck`) and the
values the layer's input itself. Attention, then `num_feedforward_networks - 1` extra feed-forward blocks and the
last one, each adding its input and normalizing, run at the narrow width; the output projects back up and adds the
layer's input. The norms are "no_norm" (weight * x + bias, no statistics) unless `normalization_type` says
"layer_norm". The embeddings concatenate each token's with its neighbours' (`trigram_input`) and project them to
hidden_size. The heads are BERT's (models/bert.py), with a pooler whose dense + tanh `classifier_activation` turns
on and a masked LM that predicts with the token embeddings plus hidden_size - embedding_size rows of its own.

Parameter names are those of Hugging Face checkpoints (`mobilebert.encoder.layer.0.bottleneck.input.dense.weight`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import MobileBertConfig
from .base import embedded
from .bert import (
    BertEncoder,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertIntermediate,
    BertModel,
    BertPreTrainedModel,
    BertPredictionHeadTransform,
    _embedding,
)
from .heads import HeadModel
from .layers import ACTIVATIONS, encoder_attention
from .outputs import BaseModelOutputWithPooling, MobileBertForPreTrainingOutput


class NoNorm(nn.Module):
    """MobileBERT's default norm: an element-wise scale and shift, without statistics."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x):
        return x * self.weight + self.bias


def norm(config: MobileBertConfig, size: int, eps: float | None = None) -> nn.Module:
    """The config's norm; the reference leaves some LayerNorms at torch's eps (1e-5), given as eps=None."""
    if config.normalization_type == "no_norm":
        return NoNorm(size)
    return nn.LayerNorm(size) if eps is None else nn.LayerNorm(size, eps=eps)


class MobileBertEmbeddings(nn.Module):
    """Token embeddings (with the previous and next tokens' beside them when `trigram_input`) projected to
    hidden_size, plus positions and token types, a norm and dropout."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.trigram_input = config.trigram_input
        self.projects = config.trigram_input or config.embedding_size != config.hidden_size
        self.word_embeddings = _embedding(config.vocab_size, config.embedding_size, config.pad_token_id)
        self.position_embeddings = _embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = _embedding(config.type_vocab_size, config.hidden_size)
        width = config.embedding_size * (3 if config.trigram_input else 1)
        self.embedding_transformation = nn.Linear(width, config.hidden_size)
        self.LayerNorm = norm(config, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, position_ids, token_type_ids, inputs_embeds=None):
        x = embedded(self.word_embeddings, input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, E)
        if self.trigram_input:  # [next token, token, previous token], zeros past either end
            x = torch.cat([F.pad(x[:, 1:], (0, 0, 0, 1)), x, F.pad(x[:, :-1], (0, 0, 1, 0))], dim=-1)
        if self.projects:
            x = self.embedding_transformation(x)
        if token_type_ids is None:
            token_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        x = x + self.position_embeddings(position_ids) + embedded(
            self.token_type_embeddings, token_type_ids, "token_type_ids", ": its config's type_vocab_size.")
        return self.dropout(self.LayerNorm(x))


class MobileBertSelfAttention(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        C = config.true_hidden_size
        self.n_head = config.num_attention_heads
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C if config.use_bottleneck_attention else config.hidden_size, C)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, q, k, v, mask, attention_path="sdpa"):
        B, T, _ = q.shape
        q, k, v = (proj(x).view(B, T, self.n_head, -1).transpose(1, 2)
                   for proj, x in ((self.query, q), (self.key, k), (self.value, v)))  # (B, nh, T, hs)
        return encoder_attention(q, k, v, mask, self.dropout if self.training else 0.0, attention_path)


class ResidualNorm(nn.Module):
    """dense, dropout (`dropout` True), add the residual, norm: the attention's output and every feed-forward's."""

    def __init__(self, config: MobileBertConfig, in_features: int, out_features: int, eps: float | None,
                 dropout: bool):
        super().__init__()
        self.dense = nn.Linear(in_features, out_features)
        self.LayerNorm = norm(config, out_features, eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob) if dropout else None

    def forward(self, x, residual):
        x = self.dense(x)
        return self.LayerNorm((self.dropout(x) if self.dropout is not None else x) + residual)


class MobileBertAttention(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        C = config.true_hidden_size
        self.self = MobileBertSelfAttention(config)
        self.output = ResidualNorm(config, C, C, config.layer_norm_eps, dropout=not config.use_bottleneck)

    def forward(self, q, k, v, residual, mask, attention_path="sdpa"):
        y, weights = self.self(q, k, v, mask, attention_path)
        return self.output(y, residual), weights


class MobileBertOutput(nn.Module):
    """The last feed-forward's output: back to the narrow width, add, norm; with the bottleneck, then up to
    hidden_size, dropout, add the layer's input, norm (`bottleneck`)."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.true_hidden_size)
        self.LayerNorm = norm(config, config.true_hidden_size)
        if config.use_bottleneck:
            self.bottleneck = ResidualNorm(config, config.true_hidden_size, config.hidden_size,
                                           config.layer_norm_eps, dropout=True)
        else:
            self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual, layer_input):
        x = self.dense(x)
        if not hasattr(self, "bottleneck"):
            return self.LayerNorm(self.dropout(x) + residual)
        return self.bottleneck(self.LayerNorm(x + residual), layer_input)


class BottleneckLayer(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intra_bottleneck_size)
        self.LayerNorm = norm(config, config.intra_bottleneck_size, config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.dense(x))


class Bottleneck(nn.Module):
    """The layer's input narrowed (`input`), and what the queries, keys and values read."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.use_bottleneck_attention = config.use_bottleneck_attention
        self.input = BottleneckLayer(config)
        if config.key_query_shared_bottleneck:
            self.attention = BottleneckLayer(config)

    def forward(self, x):
        """(q, k, v inputs, the attention's residual)"""
        narrow = self.input(x)
        if self.use_bottleneck_attention:
            return narrow, narrow, narrow, narrow
        if hasattr(self, "attention"):
            shared = self.attention(x)
            return shared, shared, x, narrow
        return x, x, x, narrow


class FFNLayer(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.intermediate = MobileBertIntermediate(config)
        self.output = ResidualNorm(config, config.intermediate_size, config.true_hidden_size,
                                   config.layer_norm_eps, dropout=False)

    def forward(self, x):
        return self.output(self.intermediate(x), x)


class MobileBertIntermediate(BertIntermediate):
    """BERT's dense and activation, from the narrow width."""

    def __init__(self, config: MobileBertConfig):
        nn.Module.__init__(self)
        self.dense = nn.Linear(config.true_hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]


class MobileBertLayer(nn.Module):
    """Bottleneck, attention, the extra feed-forward blocks, the last one and the way back up."""

    def __init__(self, config: MobileBertConfig, layer_idx: int = 0):
        super().__init__()
        if config.use_bottleneck:
            self.bottleneck = Bottleneck(config)
        self.attention = MobileBertAttention(config)
        if config.num_feedforward_networks > 1:
            self.ffn = nn.ModuleList(FFNLayer(config) for _ in range(config.num_feedforward_networks - 1))
        self.intermediate = MobileBertIntermediate(config)
        self.output = MobileBertOutput(config)

    def forward(self, x, mask, cache=None, attention_path="sdpa", rotary=None):  # rotary: RoFormer's, None here
        q, k, v, residual = self.bottleneck(x) if hasattr(self, "bottleneck") else (x, x, x, x)
        y, weights = self.attention(q, k, v, residual, mask, attention_path)
        for ffn in getattr(self, "ffn", ()):
            y = ffn(y)
        return self.output(self.intermediate(y), y, x), weights


class MobileBertEncoder(BertEncoder):
    def __init__(self, config: MobileBertConfig):
        nn.Module.__init__(self)
        self.layer = nn.ModuleList(MobileBertLayer(config) for _ in range(config.num_hidden_layers))


class MobileBertPooler(nn.Module):
    """The first token, through dense + tanh when `classifier_activation`."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        if config.classifier_activation:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        first = hidden[:, 0]
        return torch.tanh(self.dense(first)) if hasattr(self, "dense") else first


class MobileBertPreTrainedModel(BertPreTrainedModel):
    config_class = MobileBertConfig
    base_model_prefix = "mobilebert"

    def base_model_class(self, config: MobileBertConfig) -> type:
        return MobileBertModel

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, NoNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class MobileBertModel(MobileBertPreTrainedModel, BertModel):
    """The encoder: `last_hidden_state` (B, T, hidden_size) and, with the pooler, `pooler_output`."""

    embeddings_class, encoder_class, pooler_class = MobileBertEmbeddings, MobileBertEncoder, MobileBertPooler
    output_class = BaseModelOutputWithPooling


# Heads --------------------------------------------------------------------------------------------------------


class MobileBertLMPredictionHead(nn.Module):
    """The transform, then logits over [the token embeddings (the decoder, tied); `dense`'s hidden_size -
    embedding_size rows], plus the decoder's bias (the head's `bias` when tied)."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config, config.hidden_size)
        self.dense = nn.Linear(config.vocab_size, config.hidden_size - config.embedding_size, bias=False)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=not config.tie_word_embeddings)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x):
        weight = torch.cat([self.decoder.weight.T, self.dense.weight])  # (hidden_size, V)
        bias = self.decoder.bias if self.decoder.bias is not None else self.bias
        return self.transform(x) @ weight + bias


class MobileBertOnlyMLMHead(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.predictions = MobileBertLMPredictionHead(config)

    def forward(self, x):
        return self.predictions(x)


class MobileBertPreTrainingHeads(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.predictions = MobileBertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, hidden, pooled):
        return self.predictions(hidden), self.seq_relationship(pooled)


_TIED = {"cls.predictions.decoder.weight": "mobilebert.embeddings.word_embeddings.weight"}


class MobileBertForMaskedLM(MobileBertPreTrainedModel, BertForMaskedLM):
    tied_weights = _TIED

    def __init__(self, config: MobileBertConfig):
        HeadModel.__init__(self, config)
        self.cls = MobileBertOnlyMLMHead(config)
        self.tie_weights()


class MobileBertForPreTraining(MobileBertPreTrainedModel, BertForPreTraining):
    tied_weights = _TIED
    output_class = MobileBertForPreTrainingOutput

    def __init__(self, config: MobileBertConfig):
        HeadModel.__init__(self, config)
        self.cls = MobileBertPreTrainingHeads(config)
        self.tie_weights()



class MobileBertForNextSentencePrediction(MobileBertPreTrainedModel, BertForNextSentencePrediction):
    pass


class MobileBertForSequenceClassification(MobileBertPreTrainedModel, BertForSequenceClassification):
    pass


class MobileBertForTokenClassification(MobileBertPreTrainedModel, BertForTokenClassification):
    pass


class MobileBertForQuestionAnswering(MobileBertPreTrainedModel, BertForQuestionAnswering):
    pass


class MobileBertForMultipleChoice(MobileBertPreTrainedModel, BertForMultipleChoice):
    pass

