"""ALBERT in plain torch.nn: BERT's post-LayerNorm blocks over factorized embeddings, with layers shared across depth.

Tokens are embedded in `embedding_size` (BERT's embeddings, narrower) and projected up to `hidden_size` by
`encoder.embedding_hidden_mapping_in`. The encoder holds `num_hidden_groups` groups of `inner_group_num` layers;
its `num_hidden_layers` steps each run one group, consecutive steps sharing it, so the weights are those of
`num_hidden_groups * inner_group_num` layers whatever the depth. Parameter names are those of Hugging Face
checkpoints (`albert.encoder.albert_layer_groups.0.albert_layers.0.attention.query.weight`).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import AlbertConfig
from .base import PreTrainedModel, check_encoder_inputs, recorded
from .bert import BertEmbeddings, padding_mask
from .heads import (
    HeadModel,
    MaskedLM,
    MultipleChoice,
    PooledSequenceClassification,
    QuestionAnswering,
    TokenClassification,
)
from .layers import ACTIVATIONS, encoder_attention, run_layers
from .losses import token_loss
from .outputs import BaseModelOutputWithPooling, ModelOutput


class AlbertAttention(nn.Module):
    """Self-attention with its output projection, dropout, residual and LayerNorm in one module (ALBERT's layout)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, mask, attention_path="sdpa"):
        """The normalized residual output, and the weights (B, nh, T, T) when computed step by step, else None."""
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, -1).transpose(1, 2) for proj in (self.query, self.key, self.value))
        dropout = self.attention_dropout if self.training else 0.0
        y, weights = encoder_attention(q, k, v, mask, dropout, attention_path)
        y = self.output_dropout(self.dense(y))
        return self.LayerNorm(x + y), weights


class AlbertLayer(nn.Module):
    """Attention, then the feed-forward (`ffn`, `ffn_output`) added back and normalized by full_layer_layer_norm."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.full_layer_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, mask, attention_path="sdpa"):
        x, weights = self.attention(x, mask, attention_path)
        # The reference defines a dropout here but never applies it: neither do we.
        return self.full_layer_layer_norm(x + self.ffn_output(self.activation(self.ffn(x)))), weights


class AlbertLayerGroup(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.albert_layers = nn.ModuleList(AlbertLayer(config) for _ in range(config.inner_group_num))


class AlbertTransformer(nn.Module):
    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.embedding_hidden_mapping_in = nn.Linear(config.embedding_size, config.hidden_size)
        self.albert_layer_groups = nn.ModuleList(AlbertLayerGroup(config) for _ in range(config.num_hidden_groups))

    def steps(self) -> list[AlbertLayer]:
        """The layers in the order they run: each of the num_hidden_layers steps runs its group's layers."""
        depth, groups = self.config.num_hidden_layers, self.config.num_hidden_groups
        # Step i runs group int(i / (depth / groups)), the reference's float arithmetic.
        groups_run = (self.albert_layer_groups[int(i / (depth / groups))] for i in range(depth))
        return [layer for group in groups_run for layer in group.albert_layers]

    def forward(self, x, mask, attention_path="sdpa", output_hidden_states=False, output_attentions=False):
        """The last layer's output; with output_hidden_states the projected embeddings and every layer step's
        output, with output_attentions every step's attention weights (a shared layer is counted each time it runs)."""
        x = self.embedding_hidden_mapping_in(x)  # (B, T, embedding_size) -> (B, T, C)
        checkpointing = self.gradient_checkpointing if self.training else None
        x, inputs, attentions = run_layers(self.steps(), x, checkpointing, lambda layer: (mask, attention_path),
                                           output_hidden_states, output_attentions)
        return x, recorded(None if inputs is None else [*inputs, x]), recorded(attentions)


# The pooler's weights, which a model built without the pooler leaves unused.
POOLER_KEYS = r"^(albert\.)?pooler\."


class AlbertPreTrainedModel(PreTrainedModel):
    config_class = AlbertConfig
    base_model_prefix = "albert"
    # Buffers older checkpoints store.
    ignored_checkpoint_keys = (r"(^|\.)embeddings\.position_ids$", r"(^|\.)embeddings\.token_type_ids$")
    # A checkpoint saved from a head without the pooler (masked LM) still loads into AlbertModel.
    initialized_if_missing = (r"(^|\.)pooler\.",)
    projection_name = "classifier"

    def new_base_model(self, config: AlbertConfig) -> "AlbertModel":
        """The encoder a head builds on, with the pooler when the head reads it."""
        if not self.add_pooling_layer:  # a checkpoint's pooler is left unused, as the reference does
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, POOLER_KEYS)
        return AlbertModel(config, add_pooling_layer=self.add_pooling_layer)

    def classifier_dropout(self) -> float:
        """classifier_dropout_prob, else hidden_dropout_prob (as the reference's token classifier reads them)."""
        value = self.config.classifier_dropout_prob
        return self.config.hidden_dropout_prob if value is None else value

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, AlbertMLMHead):
            nn.init.zeros_(module.bias)


class AlbertModel(AlbertPreTrainedModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` (tanh of `pooler` over the first token)
    unless built without the pooler."""

    def __init__(self, config: AlbertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config, config.embedding_size)
        self.encoder = AlbertTransformer(config)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        if not add_pooling_layer:  # a checkpoint's pooler is left unused, as the reference does
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, POOLER_KEYS)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> BaseModelOutputWithPooling | tuple:
        """The last hidden state (B, T, C) and the pooled first token; with output_hidden_states also the projected
        embeddings and each layer step's output, with output_attentions each step's weights.

        inputs_embeds are (B, T, embedding_size), as the token embeddings give them.
        """
        check_encoder_inputs(self, input_ids, inputs_embeds, past_key_values, cache, labels)
        output_attentions, output_hidden_states, return_dict = self.output_options(
            output_attentions, output_hidden_states, return_dict
        )
        if position_ids is None:
            ids = input_ids if input_ids is not None else inputs_embeds[..., 0]
            T = ids.shape[1]
            if T > self.config.max_position_embeddings:
                raise ValueError(
                    f"input_ids has {T} tokens, more than the {self.config.max_position_embeddings} positions this "
                    "model has (max_position_embeddings); truncate the input (tokenizer(..., truncation=True))."
                )
            position_ids = torch.arange(T, device=ids.device)[None]  # (1, T)
        x = self.embeddings(input_ids, position_ids, token_type_ids, inputs_embeds)  # (B, T, embedding_size)
        x, hidden_states, attentions = self.encoder(
            x, padding_mask(attention_mask), self.attention_path(output_attentions), output_hidden_states,
            output_attentions,
        )
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states,
                                            attentions=attentions)
        return self.returned(output, return_dict)


# Heads --------------------------------------------------------------------------------------------------------


class AlbertMLMHead(nn.Module):
    """dense to embedding_size, the activation, LayerNorm, then the decoder: the token embeddings and `bias` when
    tie_word_embeddings is set (both tied), else weights and a bias of its own (`bias` unused, as the reference)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x):
        return self.decoder(self.LayerNorm(self.activation(self.dense(x))))


class AlbertSOPHead(nn.Module):
    """Sentence-order prediction: dropout and a classifier over the pooled first token."""

    def __init__(self, config: AlbertConfig, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled):
        return self.classifier(self.dropout(pooled))


TIED_DECODER = {
    "predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
    "predictions.decoder.bias": "predictions.bias",
}


@dataclass
class AlbertForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None  # (B, T, vocab_size)
    sop_logits: torch.Tensor | None = None  # (B, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class AlbertForPreTraining(AlbertPreTrainedModel, HeadModel):
    """ALBERT as pretrained: masked LM logits and sentence-order logits; the loss is their sum.

    The loss needs both `labels` (B, T), -100 where a token is not predicted, and `sentence_order_label` (B,):
    0 when the two segments are in their original order, 1 when swapped.
    """

    add_pooling_layer = True
    tied_weights = TIED_DECODER

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.predictions = AlbertMLMHead(config)
        self.sop_classifier = AlbertSOPHead(config, self.classifier_dropout())
        self.tie_weights()

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, sentence_order_label=None, logits_to_keep=0, inputs_embeds=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> AlbertForPreTrainingOutput | tuple:
        encoded = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, None,
                                      inputs_embeds, None, output_attentions, output_hidden_states)
        prediction_logits = self.predictions(encoded.last_hidden_state)  # (B, T, vocab_size)
        sop_logits = self.sop_classifier(encoded.pooler_output)  # (B, num_labels)
        loss = None
        if labels is not None and sentence_order_label is not None:
            order_loss = F.cross_entropy(sop_logits.view(-1, 2), sentence_order_label.to(sop_logits.device).view(-1))
            loss = token_loss(prediction_logits, labels) + order_loss
        output = AlbertForPreTrainingOutput(
            loss=loss, prediction_logits=prediction_logits, sop_logits=sop_logits,
            hidden_states=encoded.hidden_states, attentions=encoded.attentions,
        )
        return self.returned(output, return_dict)


class AlbertForMaskedLM(AlbertPreTrainedModel, MaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = TIED_DECODER
    ignored_checkpoint_keys = (*AlbertPreTrainedModel.ignored_checkpoint_keys, r"^sop_classifier\.")

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.predictions = AlbertMLMHead(config)
        self.tie_weights()

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)


class AlbertForSequenceClassification(AlbertPreTrainedModel, PooledSequenceClassification):
    """One label (or score) per sequence, from the pooled first token."""


class AlbertForTokenClassification(AlbertPreTrainedModel, TokenClassification):
    """One label per token (named entities)."""


class AlbertForQuestionAnswering(AlbertPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class AlbertForMultipleChoice(AlbertPreTrainedModel, MultipleChoice):
    """One score per choice, from each choice's pooled first token."""

