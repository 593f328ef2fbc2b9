"""ELECTRA: BERT's encoder (models/bert.py) over embeddings of `embedding_size`, projected up to `hidden_size` by
`embeddings_project` when the two differ, without a pooler.

The discriminator (`ElectraForPreTraining`: is each token the original or a replacement?) and the generator
(`ElectraForMaskedLM`, whose `generator_predictions` narrow back to `embedding_size` before the tied token
embeddings) are the same network at different sizes. The encoder's parameters keep BERT's names under `electra.`
(`electra.encoder.layer.0.attention.self.query.weight`); ElectraForCausalLM runs it as a decoder with a cache,
as BertLMHeadModel does.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ElectraConfig
from .base import PreTrainedModel
from .bert import BertEmbeddings, BertEncoder, BertLMHeadModel, BertModel, BertPreTrainedModel
from .heads import (
    HeadModel,
    MaskedLM,
    MultipleChoice,
    PooledSequenceClassification,
    QuestionAnswering,
    TokenClassification,
)
from .layers import ACTIVATIONS
from .outputs import BaseModelOutputWithPastAndCrossAttentions, ModelOutput

# The summary's activation may also be tanh (as in XLNet's configs).
SUMMARY_ACTIVATIONS = {**ACTIVATIONS, "tanh": torch.tanh}


@dataclass
class ElectraForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T): a token's score of having been replaced
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class ElectraPreTrainedModel(BertPreTrainedModel):
    config_class = ElectraConfig
    base_model_prefix = "electra"

    def new_base_model(self, config: ElectraConfig) -> "ElectraModel":
        return ElectraModel(config)


class ElectraModel(ElectraPreTrainedModel, BertModel):
    """The encoder: `last_hidden_state` (B, T, C); ELECTRA has no pooler. inputs_embeds are (B, T, embedding_size)."""

    learned_positions = True  # RoFormer (models/roformer.py) turns q and k by position in its encoder instead
    encoder_class = BertEncoder

    def __init__(self, config: ElectraConfig):
        PreTrainedModel.__init__(self, config)
        self.embeddings = BertEmbeddings(config, config.embedding_size, self.learned_positions)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = self.encoder_class(config)
        self.pooler = None

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """BERT's encoder output without the pooled vector, in the reference's ELECTRA output class."""
        encoded = BertModel.forward(
            self, input_ids, attention_mask, position_ids, past_key_values, token_type_ids=token_type_ids,
            labels=labels, cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        output = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=encoded.last_hidden_state, cache=encoded.cache, hidden_states=encoded.hidden_states,
            attentions=encoded.attentions, cross_attentions=encoded.cross_attentions,
        )
        return self.returned(output, return_dict)

    def embed(self, input_ids, position_ids, token_type_ids, inputs_embeds, task_type_ids=None) -> torch.Tensor:
        x = super().embed(input_ids, position_ids, token_type_ids, inputs_embeds, task_type_ids)  # (B, T, embedding_size)
        return self.embeddings_project(x) if hasattr(self, "embeddings_project") else x


# Heads --------------------------------------------------------------------------------------------------------


class ElectraDiscriminatorPredictions(nn.Module):
    """dense, the config's activation, and one score per token."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden):
        return self.dense_prediction(self.activation(self.dense(hidden))).squeeze(-1)  # (B, T)


class ElectraForPreTraining(ElectraPreTrainedModel, HeadModel):
    """The discriminator: a logit per token of it having been replaced by the generator.

    `labels` (B, T) are 1 for a replaced token and 0 for an original one; the loss is the binary cross-entropy
    over the tokens the attention_mask keeps (all of them without one).
    """

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, inputs_embeds=None, output_attentions=None,
        output_hidden_states=None, return_dict=None,
    ) -> ElectraForPreTrainingOutput | tuple:
        encoded = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, None,
                                      inputs_embeds, None, output_attentions, output_hidden_states)
        logits = self.discriminator_predictions(encoded.last_hidden_state)  # (B, T)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device).float()
            if attention_mask is not None:
                kept = attention_mask.to(logits.device).view_as(logits) == 1
                logits_kept, labels = logits[kept], labels[kept]
            else:
                logits_kept = logits
            loss = F.binary_cross_entropy_with_logits(logits_kept, labels)
        output = ElectraForPreTrainingOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                             attentions=encoded.attentions)
        return self.returned(output, return_dict)


class ElectraGeneratorPredictions(nn.Module):
    """The generator's head before the vocabulary: dense down to embedding_size, GELU, LayerNorm."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(self, hidden):
        return self.LayerNorm(F.gelu(self.dense(hidden)))  # GELU whatever hidden_act says, as the reference


class GeneratorHead(HeadModel):
    """The generator's vocabulary logits: generator_predictions, then generator_lm_head (tied to the token
    embeddings, with its own bias)."""

    tied_weights = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}

    def add_lm_head(self, config: ElectraConfig) -> None:
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.generator_lm_head(self.generator_predictions(hidden))


class ElectraForMaskedLM(ElectraPreTrainedModel, GeneratorHead, MaskedLM):
    """The generator: logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.add_lm_head(config)
        self.tie_weights()


class ElectraForCausalLM(ElectraPreTrainedModel, GeneratorHead, BertLMHeadModel):
    """The generator as a left-to-right language model (built with config.is_decoder=True): next-token logits,
    loss and generate."""


class ElectraClassificationHead(nn.Module):
    """dropout, dense, GELU (RoFormer's: the config's activation), dropout, out_proj over the first token (where
    BERT's pooler has tanh)."""

    def __init__(self, config: ElectraConfig, dropout: float, activation=F.gelu):
        super().__init__()
        self.activation = activation
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden):
        x = self.activation(self.dense(self.dropout(hidden[:, 0])))
        return self.out_proj(self.dropout(x))


class ElectraForSequenceClassification(ElectraPreTrainedModel, PooledSequenceClassification):
    """One label (or score) per sequence, from the first token through ElectraClassificationHead."""

    def __init__(self, config: ElectraConfig):
        HeadModel.__init__(self, config)
        self.classifier = ElectraClassificationHead(config, self.classifier_dropout())

    def sequence_logits(self, base: ModelOutput) -> torch.Tensor:
        return self.classifier(base.last_hidden_state)


class ElectraForTokenClassification(ElectraPreTrainedModel, TokenClassification):
    """One label per token (named entities)."""


class ElectraForQuestionAnswering(ElectraPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class ElectraSequenceSummary(nn.Module):
    """One vector per sequence: the token `summary_type` names (or the mean), then the optional dropout,
    projection (`summary`), activation and dropout the config's summary_* fields set."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.summary_type = config.summary_type
        self.summary = nn.Linear(config.hidden_size, config.hidden_size) if config.summary_use_proj else nn.Identity()
        activation = config.summary_activation
        self.activation = SUMMARY_ACTIVATIONS[activation] if activation else (lambda x: x)
        self.first_dropout = nn.Dropout(getattr(config, "summary_first_dropout", 0.0))
        self.last_dropout = nn.Dropout(config.summary_last_dropout)

    def forward(self, hidden):
        if self.summary_type == "first":
            x = hidden[:, 0]
        elif self.summary_type == "mean":
            x = hidden.mean(dim=1)
        else:  # "last", and "cls_index" without indices, which reads the last token
            x = hidden[:, -1]
        return self.last_dropout(self.activation(self.summary(self.first_dropout(x))))


class ElectraForMultipleChoice(ElectraPreTrainedModel, MultipleChoice):
    """One score per choice, from each choice's summary vector (the first token by default)."""

    def __init__(self, config: ElectraConfig):
        HeadModel.__init__(self, config)
        self.sequence_summary = ElectraSequenceSummary(config)
        self.add_projection(1)

    def sequence_logits(self, base: ModelOutput) -> torch.Tensor:
        return self.project(self.sequence_summary(base.last_hidden_state))
