"""DistilBERT in plain torch.nn: BERT's post-LayerNorm blocks at half the depth, without token types or a pooler.

Parameter names are those of Hugging Face checkpoints (`distilbert.transformer.layer.0.attention.q_lin.weight`),
so checkpoints load without renaming. The heads differ from BERT's: sequence classification and multiple
choice read the first token through `pre_classifier` and a ReLU, masked LM predicts through `vocab_transform`,
`vocab_layer_norm` and `vocab_projector` (tied to the token embeddings), and QA applies a dropout of its own.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import DistilBertConfig
from .base import PreTrainedModel, check_encoder_inputs, embedded, recorded
from .bert import padding_mask
from .heads import (
    HeadModel,
    MaskedLM,
    MultipleChoice,
    PooledSequenceClassification,
    QuestionAnswering,
    TokenClassification,
)
from .layers import ACTIVATIONS, encoder_attention, run_layer, sinusoidal_positions
from .outputs import BaseModelOutput, ModelOutput

LAYER_NORM_EPS = 1e-12  # every DistilBERT LayerNorm's; the config has no field for it


class Embeddings(nn.Module):
    """Token plus position embeddings, then LayerNorm and dropout."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        # Explicit weights skip nn.Embedding's random init, which is slow on the meta device (see llama.py).
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id,
                                           _weight=torch.empty(config.vocab_size, config.dim))
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim,
                                                _weight=torch.empty(config.max_position_embeddings, config.dim))
        self.LayerNorm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids, position_ids, inputs_embeds=None):
        x = embedded(self.word_embeddings, input_ids) if inputs_embeds is None else inputs_embeds
        return self.dropout(self.LayerNorm(x + self.position_embeddings(position_ids)))


class DistilBertSelfAttention(nn.Module):
    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.q_lin = nn.Linear(config.dim, config.dim)
        self.k_lin = nn.Linear(config.dim, config.dim)
        self.v_lin = nn.Linear(config.dim, config.dim)
        self.out_lin = nn.Linear(config.dim, config.dim)
        self.dropout = config.attention_dropout

    def forward(self, x, mask, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, T) when computed step by step, else None."""
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.n_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
                   for proj in (self.q_lin, self.k_lin, self.v_lin))
        dropout = self.dropout if self.training else 0.0
        y, weights = encoder_attention(q, k, v, mask, dropout, attention_path)
        return self.out_lin(y), weights


class FFN(nn.Module):
    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.lin1 = nn.Linear(config.dim, config.hidden_dim)
        self.lin2 = nn.Linear(config.hidden_dim, config.dim)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.lin2(self.activation(self.lin1(x))))


class TransformerBlock(nn.Module):
    """Attention, add, LayerNorm; feed-forward, add, LayerNorm (normalized after each residual, as BERT)."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.ffn = FFN(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)

    def forward(self, x, mask, attention_path="sdpa"):
        y, weights = self.attention(x, mask, attention_path)
        x = self.sa_layer_norm(x + y)
        x = self.output_layer_norm(x + self.ffn(x))
        return x, weights


class Transformer(nn.Module):
    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))

    def forward(self, x, mask, attention_path="sdpa", output_hidden_states=False, output_attentions=False):
        """The last layer's output, the embeddings and every layer's output (output_hidden_states), and every
        layer's attention weights (output_attentions, which need an attention_path other than "sdpa")."""
        checkpointing = self.gradient_checkpointing if self.training else None
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layer:
            x, weights = run_layer(layer, checkpointing, x, mask, attention_path)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(weights)
        return x, recorded(hidden_states), recorded(attentions)


class DistilBertPreTrainedModel(PreTrainedModel):
    config_class = DistilBertConfig
    base_model_prefix = "distilbert"
    ignored_checkpoint_keys = (r"(^|\.)embeddings\.position_ids$",)  # a buffer older checkpoints store
    # The heads' settings (models/heads.py): the classifiers are named "classifier", and token classification's
    # dropout is the config's `dropout` (the first-token heads and QA have their own, below).
    projection_name = "classifier"
    hidden_dropout_field = "dropout"

    def new_base_model(self, config: DistilBertConfig) -> "DistilBertModel":
        return DistilBertModel(config)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Embeddings) and self.config.sinusoidal_pos_embds:
            weight = module.position_embeddings.weight
            weight.copy_(sinusoidal_positions(*weight.shape))


class DistilBertModel(DistilBertPreTrainedModel):
    """The encoder: `last_hidden_state` (B, T, C); DistilBERT has no pooler."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.transformer = Transformer(config)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> BaseModelOutput | tuple:
        """The last hidden state (B, T, C); with output_hidden_states, also the embeddings and every layer's
        output, and with output_attentions every layer's weights.

        DistilBERT has no token types: token_type_ids (which a BERT tokenizer returns) are ignored, as the
        reference ignores them.
        """
        check_encoder_inputs(self, input_ids, inputs_embeds, past_key_values, cache, labels)
        output_attentions, output_hidden_states, return_dict = self.output_options(
            output_attentions, output_hidden_states, return_dict
        )
        if position_ids is None:
            ids = input_ids if input_ids is not None else inputs_embeds[..., 0]
            position_ids = self.default_positions(ids)
        x = self.embeddings(input_ids, position_ids, inputs_embeds)  # (B, T, C)
        x, hidden_states, attentions = self.transformer(
            x, padding_mask(attention_mask), self.attention_path(output_attentions), output_hidden_states,
            output_attentions,
        )
        output = BaseModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions)
        return self.returned(output, return_dict)

    def default_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """0, 1, ... for every row of `ids` (B, T), padding included, as the reference counts them."""
        T = ids.shape[1]
        if T > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {T} tokens, more than the {self.config.max_position_embeddings} positions this "
                "model has (max_position_embeddings); truncate the input (tokenizer(..., truncation=True))."
            )
        return torch.arange(T, device=ids.device)[None]  # (1, T)


# Heads --------------------------------------------------------------------------------------------------------


class DistilBertForMaskedLM(DistilBertPreTrainedModel, MaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.activation = ACTIVATIONS[config.activation]
        self.vocab_transform = nn.Linear(config.dim, config.dim)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.vocab_projector = nn.Linear(config.dim, config.vocab_size)
        self.tie_weights()

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.vocab_projector(self.vocab_layer_norm(self.activation(self.vocab_transform(hidden))))


class FirstTokenScores(HeadModel):
    """The sequence classifier and the multiple-choice scorer: the first token ([CLS]) through pre_classifier,
    a ReLU and a dropout of `seq_classif_dropout` into the projection."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)

    def classifier_dropout(self) -> float:
        return self.config.seq_classif_dropout

    def sequence_logits(self, base: ModelOutput) -> torch.Tensor:
        first = base.last_hidden_state[:, 0]  # (B, C)
        return self.project(self.dropout(F.relu(self.pre_classifier(first))))


class DistilBertForSequenceClassification(DistilBertPreTrainedModel, FirstTokenScores, PooledSequenceClassification):
    """One label (or score) per sequence, from its first token."""


class DistilBertForTokenClassification(DistilBertPreTrainedModel, TokenClassification):
    """One label per token (named entities)."""


class DistilBertForQuestionAnswering(DistilBertPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.qa_dropout)

    def span_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.qa_outputs(self.dropout(hidden))


class DistilBertForMultipleChoice(DistilBertPreTrainedModel, FirstTokenScores, MultipleChoice):
    """One score per choice, from each choice's first token."""
