"""MPNet in plain torch.nn: BERT's post-LayerNorm blocks with a learned relative-position bias on attention.

Each attention score gets a bias per head read from `encoder.relative_attention_bias` at the bucket of the
key's offset from the query (T5's buckets: 16 each way, exact up to 8, logarithmic up to 128), one table for
every layer. Positions count as RoBERTa's, from 2 with padding at 1; there are no token types. Sequence
classification reuses RoBERTa's head, whose names MPNet's checkpoints share (`classifier.dense`, `classifier.out_proj`).
Parameter names are those of Hugging Face checkpoints (`mpnet.encoder.layer.0.attention.attn.q.weight`).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import MPNetConfig
from .base import PreTrainedModel, check_encoder_inputs, embedded, recorded
from .bert import BertPooler, RobertaClassificationHead, padding_mask
from .heads import (
    HeadModel,
    MaskedLM,
    MultipleChoice,
    PooledSequenceClassification,
    QuestionAnswering,
    TokenClassification,
)
from .layers import ACTIVATIONS, fairseq_positions_of, run_layers
from .outputs import BaseModelOutputWithPooling, ModelOutput

PADDING_IDX = 1  # the padding row of both embedding tables, and the position padding sits at, whatever the config says
BUCKETS, MAX_DISTANCE = 32, 128  # the reference's relative-position buckets, fixed whatever the config's table size


def relative_position_buckets(T: int, device: torch.device) -> torch.Tensor:
    """(T, T) bucket of key j seen from query i: 0-15 for keys at or before the query, 16-31 after; offsets below 8
    exactly, larger ones on a log scale up to 128 (and the last bucket past it)."""
    positions = torch.arange(T, device=device)
    behind = positions[:, None] - positions[None, :]  # query - key: > 0 for a key before the query
    half = BUCKETS // 2
    bucket = (behind < 0).long() * half
    distance = behind.abs()
    exact = half // 2
    # Clamped at 1 so the log of an exact distance (taken but unused, including 0) stays finite.
    log_scaled = exact + (torch.log(distance.clamp(min=1).float() / exact) / math.log(MAX_DISTANCE / exact)
                          * (half - exact)).long()
    return bucket + torch.where(distance < exact, distance, log_scaled.clamp(max=half - 1))


class MPNetEmbeddings(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        # Explicit weights skip nn.Embedding's random init, which is slow on the meta device (see llama.py).
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=PADDING_IDX,
                                            _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=PADDING_IDX,
            _weight=torch.empty(config.max_position_embeddings, config.hidden_size),
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, position_ids, inputs_embeds=None):
        x = embedded(self.word_embeddings, input_ids) if inputs_embeds is None else inputs_embeds
        return self.dropout(self.LayerNorm(x + self.position_embeddings(position_ids)))


class MPNetSelfAttention(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.q = nn.Linear(config.hidden_size, config.hidden_size)
        self.k = nn.Linear(config.hidden_size, config.hidden_size)
        self.v = nn.Linear(config.hidden_size, config.hidden_size)
        self.o = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x, bias, attention_path="sdpa"):
        """`bias` (B or 1, nh, T, T) is added to the scores: the relative positions, and the lowest value at padding
        keys. Returns the projected output and the weights (B, nh, T, T) when computed step by step, else None."""
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, -1).transpose(1, 2) for proj in (self.q, self.k, self.v))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if attention_path == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)  # (B, nh, T, hs)
        else:
            weights = F.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]) + bias, dim=-1)
            y = F.dropout(weights, p=dropout) @ v if dropout else weights @ v
        return self.o(y.transpose(1, 2).reshape(B, T, C)), weights


class MPNetAttention(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.attn = MPNetSelfAttention(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, bias, attention_path="sdpa"):
        y, weights = self.attn(x, bias, attention_path)
        return self.LayerNorm(self.dropout(y) + x), weights


class MPNetIntermediate(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class MPNetOutput(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class MPNetLayer(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.attention = MPNetAttention(config)
        self.intermediate = MPNetIntermediate(config)
        self.output = MPNetOutput(config)

    def forward(self, x, bias, attention_path="sdpa"):
        x, weights = self.attention(x, bias, attention_path)
        return self.output(self.intermediate(x), x), weights


class MPNetEncoder(nn.Module):
    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)

    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.layer = nn.ModuleList(MPNetLayer(config) for _ in range(config.num_hidden_layers))
        self.relative_attention_bias = nn.Embedding(
            config.relative_attention_num_buckets, config.num_attention_heads,
            _weight=torch.empty(config.relative_attention_num_buckets, config.num_attention_heads),
        )

    def forward(self, x, mask, attention_path="sdpa", output_hidden_states=False, output_attentions=False):
        """The last layer's output, the embeddings and every layer's output (output_hidden_states), and every
        layer's attention weights (output_attentions). `mask` (B, 1, 1, T) marks the keys that are not padding."""
        buckets = relative_position_buckets(x.shape[1], x.device)
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1)[None].to(x.dtype)  # (1, nh, T, T)
        if mask is not None:
            bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)  # (B, nh, T, T)
        checkpointing = self.gradient_checkpointing if self.training else None
        x, inputs, attentions = run_layers(self.layer, x, checkpointing, lambda layer: (bias, attention_path),
                                           output_hidden_states, output_attentions)
        return x, recorded(None if inputs is None else [*inputs, x]), recorded(attentions)


# The pooler's weights, which a model built without the pooler leaves unused.
POOLER_KEYS = r"^(mpnet\.)?pooler\."


class MPNetPreTrainedModel(PreTrainedModel):
    config_class = MPNetConfig
    base_model_prefix = "mpnet"
    ignored_checkpoint_keys = (r"(^|\.)embeddings\.position_ids$",)  # a buffer older checkpoints store
    # A checkpoint saved from a head without the pooler (masked LM) still loads into MPNetModel.
    initialized_if_missing = (r"(^|\.)pooler\.",)
    projection_name = "classifier"

    def new_base_model(self, config: MPNetConfig) -> "MPNetModel":
        if not self.add_pooling_layer:  # a checkpoint's pooler is left unused, as the reference does
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, POOLER_KEYS)
        return MPNetModel(config, add_pooling_layer=self.add_pooling_layer)

    def classifier_dropout(self) -> float:
        return self.config.hidden_dropout_prob  # every MPNet head's, as in the reference

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MPNetLMHead):
            nn.init.zeros_(module.bias)


class MPNetModel(MPNetPreTrainedModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` (B, C) unless built without the pooler."""

    def __init__(self, config: MPNetConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = MPNetEmbeddings(config)
        self.encoder = MPNetEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        if not add_pooling_layer:  # a checkpoint's pooler is left unused, as the reference does
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, POOLER_KEYS)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> BaseModelOutputWithPooling | tuple:
        """The last hidden state (B, T, C) and the pooled first token; with output_hidden_states, also the
        embeddings and every layer's output, and with output_attentions every layer's weights.

        MPNet has no token types: token_type_ids (which a BERT tokenizer returns) are ignored, as the reference
        ignores them.
        """
        check_encoder_inputs(self, input_ids, inputs_embeds, past_key_values, cache, labels)
        output_attentions, output_hidden_states, return_dict = self.output_options(
            output_attentions, output_hidden_states, return_dict
        )
        if position_ids is None:
            position_ids = self.default_positions(input_ids, inputs_embeds)
        x = self.embeddings(input_ids, position_ids, inputs_embeds)  # (B, T, C)
        x, hidden_states, attentions = self.encoder(
            x, padding_mask(attention_mask), self.attention_path(output_attentions), output_hidden_states,
            output_attentions,
        )
        pooled = self.pooler(x) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states,
                                            attentions=attentions)
        return self.returned(output, return_dict)

    def default_positions(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        """Real tokens count from 2; padding tokens (id 1) sit at 1. Given inputs_embeds every token counts."""
        if input_ids is None:
            T = inputs_embeds.shape[1]
            positions = torch.arange(PADDING_IDX + 1, T + PADDING_IDX + 1, device=inputs_embeds.device)[None]
        else:
            positions = fairseq_positions_of(input_ids, PADDING_IDX)  # (B, T)
        if positions.max() >= self.config.max_position_embeddings:
            raise ValueError(
                f"The input has {int(positions.max()) - PADDING_IDX} tokens, more than the "
                f"{self.config.max_position_embeddings - PADDING_IDX - 1} positions this model has; truncate the input "
                "(tokenizer(..., truncation=True))."
            )
        return positions


# Heads --------------------------------------------------------------------------------------------------------


class MPNetLMHead(nn.Module):
    """dense, GELU, layer_norm, then the decoder: the token embeddings and `bias` when tie_word_embeddings is set
    (both tied), else weights and a bias of its own (`bias` then unused, as the reference)."""

    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x):
        return self.decoder(self.layer_norm(F.gelu(self.dense(x))))  # GELU whatever hidden_act says


class MPNetForMaskedLM(MPNetPreTrainedModel, MaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = {
        "lm_head.decoder.weight": "mpnet.embeddings.word_embeddings.weight", "lm_head.decoder.bias": "lm_head.bias",
    }

    def __init__(self, config: MPNetConfig):
        super().__init__(config)
        self.lm_head = MPNetLMHead(config)
        self.tie_weights()

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


class MPNetForSequenceClassification(MPNetPreTrainedModel, PooledSequenceClassification):
    """One label (or score) per sequence, from the first token (<s>) through RoBERTa's classification head."""

    add_pooling_layer = False

    def __init__(self, config: MPNetConfig):
        HeadModel.__init__(self, config)
        self.classifier = RobertaClassificationHead(config, self.classifier_dropout())

    def sequence_logits(self, base: ModelOutput) -> torch.Tensor:
        return self.classifier(base.last_hidden_state)


class MPNetForTokenClassification(MPNetPreTrainedModel, TokenClassification):
    """One label per token (named entities)."""


class MPNetForQuestionAnswering(MPNetPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class MPNetForMultipleChoice(MPNetPreTrainedModel, MultipleChoice):
    """One score per choice, from each choice's pooled first token."""
