"""DeBERTa-v2 and DeBERTa-v3 in plain torch.nn: BERT's post-LayerNorm encoder with disentangled attention.

Each attention score adds, to the content-to-content product q_i . k_j, a content-to-position term q_i . P_k[r]
("c2p") and a position-to-content term k_j . P_q[r] ("p2c"), where r is the relative distance i - j (clamped,
or put in log-spaced buckets with `position_buckets`) and P_k, P_q project one shared table of relative-position
embeddings (`encoder.rel_embeddings`); the scores are scaled by sqrt(head size * (1 + the number of such terms)).
A padded position neither attends nor is attended to, and its hidden states are zero (as in the reference).

DeBERTa (v1, `DebertaConfig`) is this encoder with clamped distances only, its q, k, v from one fused projection
with a query and a value bias (`DebertaSelfAttention`) and LayerNorms that normalize in float32 (`DebertaLayerNorm`).

Parameter names are those of Hugging Face checkpoints (`deberta.encoder.layer.0.attention.self.query_proj.weight`),
so checkpoints load without renaming.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import DebertaConfig, DebertaV2Config
from .base import PreTrainedModel, check_encoder_inputs, embedded, recorded
from .bert import BertIntermediate, BertResidualOutput
from .heads import (
    HeadModel,
    MaskedLM,
    MultipleChoice,
    PooledSequenceClassification,
    QuestionAnswering,
    TokenClassification,
)
from .layers import ACTIVATIONS, run_layer
from .losses import sequence_classification_loss
from .outputs import BaseModelOutput, ModelOutput, SequenceClassifierOutput


class DebertaLayerNorm(nn.LayerNorm):
    """DeBERTa (v1)'s LayerNorm: normalized in float32, then scaled and shifted in the input's dtype."""

    def forward(self, x):
        return self.weight * F.layer_norm(x.float(), self.normalized_shape, eps=self.eps).to(x.dtype) + self.bias


def layer_norm(config: DebertaV2Config) -> nn.LayerNorm:
    """The encoder's LayerNorm over the hidden size: v1's own, or torch's."""
    norm = DebertaLayerNorm if isinstance(config, DebertaConfig) else nn.LayerNorm
    return norm(config.hidden_size, eps=config.layer_norm_eps)


def residual_output(config: DebertaV2Config, in_features: int) -> BertResidualOutput:
    """BERT's dense, dropout, residual and LayerNorm, the LayerNorm v1's in v1."""
    output = BertResidualOutput(config, in_features)
    if isinstance(config, DebertaConfig):
        output.LayerNorm = layer_norm(config)
    return output


def _embedding(count: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    # An explicit weight skips nn.Embedding's random init, which is slow on the meta device (see llama.py).
    return nn.Embedding(count, dim, padding_idx=padding_idx, _weight=torch.empty(count, dim))


class DebertaV2Embeddings(nn.Module):
    """Token embeddings (plus absolute positions and token types when the config has them), projected from
    `embedding_size` to the hidden size when they differ, then LayerNorm; padding positions are zeroed."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        E = config.embedding_size
        self.word_embeddings = _embedding(config.vocab_size, E, config.pad_token_id)
        absolute = config.position_biased_input
        self.position_embeddings = _embedding(config.max_position_embeddings, E) if absolute else None
        self.token_type_embeddings = _embedding(config.type_vocab_size, E) if config.type_vocab_size > 0 else None
        self.embed_proj = nn.Linear(E, config.hidden_size, bias=False) if E != config.hidden_size else None
        self.LayerNorm = layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids, keep, inputs_embeds=None):
        x = embedded(self.word_embeddings, input_ids) if inputs_embeds is None else inputs_embeds
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
            x = x + embedded(self.token_type_embeddings, token_type_ids, "token_type_ids",
                             ": its config's type_vocab_size.")
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        x = self.LayerNorm(x)
        if keep is not None:
            x = x * keep
        return self.dropout(x)


def log_buckets(distances: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa-v3's bucket of each relative distance: exact up to buckets // 2 either way, then log-spaced so that
    max_position - 1 lands on the last bucket. Computed in float32 step for step as the reference does, since
    ceil() turns a rounding difference into another bucket."""
    mid = buckets // 2
    far = distances.abs().clamp(min=mid - 1)  # the near ones are not used; this keeps log() finite
    log_base = torch.tensor((max_position - 1) / mid).log()  # a float32 scalar, as the reference rounds it
    log_position = torch.ceil(torch.log(far / mid) / log_base * (mid - 1)) + mid
    return torch.where(distances.abs() <= mid, distances, (log_position * distances.sign()).long())


class DisentangledSelfAttention(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.terms = list(dict.fromkeys(config.pos_att_type or []))
        self.share_att_key = config.share_att_key
        self.add_projections(config, config.num_attention_heads * config.attention_head_size)
        if config.relative_attention:
            self.pos_dropout = nn.Dropout(config.hidden_dropout_prob)
        # The reference counts the position terms in the scale even when relative_attention is off.
        self.scale = math.sqrt(config.attention_head_size * (1 + len(self.terms)))
        self.dropout = config.attention_probs_dropout_prob

    def add_projections(self, config: DebertaV2Config, inner: int) -> None:
        """The q, k, v projections, and the relative-position table's own where they are not shared."""
        self.query_proj = nn.Linear(config.hidden_size, inner)
        self.key_proj = nn.Linear(config.hidden_size, inner)
        self.value_proj = nn.Linear(config.hidden_size, inner)
        if config.relative_attention and not config.share_att_key:
            if "c2p" in self.terms:
                self.pos_key_proj = nn.Linear(config.hidden_size, inner)
            if "p2c" in self.terms:
                self.pos_query_proj = nn.Linear(config.hidden_size, inner)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v (B, nh, T, hs)"""
        return tuple(self.heads(proj(x)) for proj in (self.query_proj, self.key_proj, self.value_proj))

    def position_projections(self) -> tuple[nn.Linear | None, nn.Linear | None]:
        """What projects the relative-position table into keys (c2p) and into queries (p2c)."""
        if self.share_att_key:
            return self.key_proj, self.query_proj
        return getattr(self, "pos_key_proj", None), getattr(self, "pos_query_proj", None)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, nh * hs) -> (..., nh, T, hs)"""
        return x.unflatten(-1, (self.n_head, -1)).transpose(-3, -2)

    def forward(self, x, mask, relative=None, output_attentions=False):
        """The attention output (B, T, nh * hs), and its weights (B, nh, T, T) when asked for, else None.

        `mask` (B, 1, T, T) is True where query i may attend to key j (None: everywhere); `relative` is the
        encoder's (table, index): the rows of the relative-position table this length uses and, for each query
        and key, the row of their distance."""
        q, k, v = self.project(x)  # (B, nh, T, hs)
        # Every score is a product with a query or a key: scaling those is cheaper than scaling (B, nh, T, T) terms.
        q = q / self.scale
        scores = q @ k.transpose(-1, -2)  # (B, nh, T, T)
        if relative is not None and self.terms:
            self.add_position_scores(scores, q, k / self.scale, *relative)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = F.dropout(F.softmax(scores, dim=-1), self.dropout, self.training)
        y = (weights @ v).transpose(1, 2).flatten(2)  # (B, T, nh * hs)
        return y, weights if output_attentions else None

    def add_position_scores(self, scores, q, k, table, index) -> None:
        """Add to `scores` (B, nh, T, T) the c2p and p2c terms q_i . P_k[index[i, j]] and k_j . P_q[index[i, j]], for
        the scaled queries and keys."""
        B, nh, T, _ = q.shape
        table = self.pos_dropout(table)  # (W, C), the rows `index` points into
        index = index.expand(B, nh, T, T)
        key_proj, query_proj = self.position_projections()
        if "c2p" in self.terms:
            scores += torch.gather(q @ self.heads(key_proj(table)).transpose(-1, -2), -1, index)  # from (B, nh, T, W)
        if "p2c" in self.terms:  # gathered down the rows of (B, nh, W, T keys), which keeps the scores' layout
            scores += torch.gather(self.heads(query_proj(table)) @ k.transpose(-1, -2), -2, index)


class DebertaSelfAttention(DisentangledSelfAttention):
    """DeBERTa (v1)'s attention: q, k, v from one projection without bias, whose rows hold each head's q, k and v in
    turn, then a query and a value bias (the keys have none); the table projected by `pos_proj` (c2p, no bias) and
    `pos_q_proj` (p2c)."""

    def add_projections(self, config: DebertaConfig, inner: int) -> None:
        self.in_proj = nn.Linear(config.hidden_size, 3 * inner, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(inner))
        self.v_bias = nn.Parameter(torch.zeros(inner))
        if config.relative_attention and "c2p" in self.terms:
            self.pos_proj = nn.Linear(config.hidden_size, inner, bias=False)
        if config.relative_attention and "p2c" in self.terms:
            self.pos_q_proj = nn.Linear(config.hidden_size, inner)

    def project(self, x):
        q, k, v = self.in_proj(x).unflatten(-1, (self.n_head, 3, -1)).transpose(1, 2).unbind(-2)  # (B, nh, T, hs)
        return q + self.q_bias.view(self.n_head, 1, -1), k, v + self.v_bias.view(self.n_head, 1, -1)

    def position_projections(self):
        return getattr(self, "pos_proj", None), getattr(self, "pos_q_proj", None)


class DebertaV2Attention(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.self = (DebertaSelfAttention if isinstance(config, DebertaConfig) else DisentangledSelfAttention)(config)
        self.output = residual_output(config, config.num_attention_heads * config.attention_head_size)

    def forward(self, x, mask, relative=None, output_attentions=False):
        y, weights = self.self(x, mask, relative, output_attentions)
        return self.output(y, x), weights


class DebertaV2Layer(nn.Module):
    """Attention, add, LayerNorm; feed-forward, add, LayerNorm (BERT's block)."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.attention = DebertaV2Attention(config)
        self.intermediate = BertIntermediate(config)
        self.output = residual_output(config, config.intermediate_size)

    def forward(self, x, mask, relative=None, output_attentions=False):
        x, weights = self.attention(x, mask, relative, output_attentions)
        return self.output(self.intermediate(x), x), weights


class ConvLayer(nn.Module):
    """DeBERTa-v2-xlarge's convolution over the embeddings, added to the first layer's output: conv, activation,
    add, LayerNorm, padding zeroed."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        size = config.conv_kernel_size
        self.conv = nn.Conv1d(config.hidden_size, config.hidden_size, size, padding=(size - 1) // 2,
                              groups=config.conv_groups)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = ACTIVATIONS[config.conv_act]

    def forward(self, embeddings, residual, keep):
        y = self.conv(embeddings.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
        if keep is not None:
            y = y.masked_fill(keep == 0, 0.0)
        y = self.LayerNorm(residual + self.act(self.dropout(y)))
        return y if keep is None else y * keep


class DebertaV2Encoder(nn.Module):
    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList(DebertaV2Layer(config) for _ in range(config.num_hidden_layers))
        if config.relative_attention:
            self.rel_embeddings = _embedding(2 * config.relative_span, config.hidden_size)
        if config.normalizes_rel_embeddings:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conv = ConvLayer(config) if config.conv_kernel_size > 0 else None

    def forward(self, x, mask, keep, output_hidden_states=False, output_attentions=False):
        """The last layer's output; the embeddings and every layer's output (output_hidden_states); every layer's
        attention weights (output_attentions). `mask` (B, 1, T, T) pairs the positions that see each other,
        `keep` (B, T, 1) is 1 at tokens and 0 at padding (None: no padding)."""
        checkpointing = self.gradient_checkpointing if self.training else None
        relative = self.relative_positions(x.shape[1], x.device) if self.config.relative_attention else None
        embeddings = x
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for i, layer in enumerate(self.layer):
            x, weights = run_layer(layer, checkpointing, x, mask, relative, output_attentions)
            if i == 0 and self.conv is not None:
                x = self.conv(embeddings, x, keep)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(weights)
        return x, recorded(hidden_states), recorded(attentions)

    def relative_positions(self, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of the relative-position table that T positions use (normalized if the config says so), and
        for each query i and key j the row of i - j among them (T, T).

        The distance i - j becomes a row through its bucket, clamped to the table; only the rows between the
        farthest distances each way are projected by the layers (a few dozen for short inputs, not 2 * 256)."""
        span = self.config.relative_span
        distances = torch.arange(1 - T, T, device=device)  # i - j for every pair, from the most negative
        if self.config.position_buckets > 0:
            distances = log_buckets(distances, self.config.position_buckets, self.config.relative_distance_limit)
        rows = (distances + span).clamp(0, 2 * span - 1)  # (2T - 1,), rising with the distance
        first, last = rows[[0, -1]].tolist()
        table = self.rel_embeddings.weight[first : last + 1]  # (W, C)
        if self.config.normalizes_rel_embeddings:
            table = self.LayerNorm(table)
        positions = torch.arange(T, device=device)
        index = rows[positions[:, None] - positions[None, :] + T - 1] - first  # (T, T)
        return table, index


class DebertaV2PreTrainedModel(PreTrainedModel):
    config_class = DebertaV2Config
    base_model_prefix = "deberta"
    ignored_checkpoint_keys = (r"(^|\.)embeddings\.position_ids$",)
    # The heads' settings (models/heads.py): the projections are named "classifier".
    projection_name = "classifier"

    def __init__(self, config: DebertaV2Config):
        super().__init__(config)
        if not config.position_biased_input:  # checkpoints may keep a table the model does not use (the reference's)
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, r"(^|\.)embeddings\.position_embeddings\.")

    def new_base_model(self, config: DebertaV2Config) -> "DebertaV2Model":
        return DebertaV2Model(config)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, nn.Conv1d):  # the v2-xlarge convolution, initialized as the reference's linear layers
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)
        if isinstance(module, DebertaSelfAttention):
            nn.init.zeros_(module.q_bias)
            nn.init.zeros_(module.v_bias)


class DebertaV2Model(DebertaV2PreTrainedModel):
    """The encoder: `last_hidden_state` (B, T, C); DeBERTa has no pooler in its base model."""

    def __init__(self, config: DebertaV2Config):
        super().__init__(config)
        self.embeddings = DebertaV2Embeddings(config)
        self.encoder = DebertaV2Encoder(config)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> BaseModelOutput | tuple:
        """The last hidden state (B, T, C); with output_hidden_states, also the embeddings and every layer's
        output, and with output_attentions every layer's weights."""
        check_encoder_inputs(self, input_ids, inputs_embeds, past_key_values, cache, labels)
        output_attentions, output_hidden_states, return_dict = self.output_options(
            output_attentions, output_hidden_states, return_dict
        )
        ids = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if position_ids is None and self.config.position_biased_input:
            position_ids = self.default_positions(ids)
        mask, keep = padding_masks(attention_mask, ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids, keep, inputs_embeds)  # (B, T, C)
        x, hidden_states, attentions = self.encoder(x, mask, keep, output_hidden_states, output_attentions)
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


def padding_masks(attention_mask: torch.Tensor | None, ids: torch.Tensor):
    """The (B, T) attention mask as the pairs of positions that see each other (B, 1, T, T) and as a (B, T, 1)
    multiplier of the hidden states; both None when nothing is padding."""
    if attention_mask is not None and attention_mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; DeBERTa-v2 takes the tokenizer's (batch, length) "
            f"mask, here {tuple(ids.shape)}."
        )
    if attention_mask is None or bool(attention_mask.all()):
        return None, None
    real = attention_mask.bool()
    return real[:, None, :, None] & real[:, None, None, :], attention_mask[..., None]


# Heads --------------------------------------------------------------------------------------------------------


class LegacyDebertaV2PredictionHeadTransform(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class LegacyDebertaV2LMPredictionHead(nn.Module):
    """The transform, then the output embedding (tied to the token embeddings) whose bias is `bias`."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.transform = LegacyDebertaV2PredictionHeadTransform(config)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x):
        return self.decoder(self.transform(x))


class LegacyDebertaV2OnlyMLMHead(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.predictions = LegacyDebertaV2LMPredictionHead(config)

    def forward(self, x):
        return self.predictions(x)


class DebertaV2LMPredictionHead(nn.Module):
    """DeBERTa's own MLM head (legacy=False): dense, activation, LayerNorm, then the token embeddings, plus a bias."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x, word_embeddings: torch.Tensor):
        return self.LayerNorm(self.act(self.dense(x))) @ word_embeddings.T + self.bias


class DebertaV2OnlyMLMHead(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.lm_head = DebertaV2LMPredictionHead(config)

    def forward(self, x, word_embeddings: torch.Tensor):
        return self.lm_head(x, word_embeddings)


class DebertaV2ForMaskedLM(DebertaV2PreTrainedModel, MaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100.

    `config.legacy` (the reference's default) keeps BERT's head under `cls.predictions`; legacy=False is
    DeBERTa's own, `lm_predictions.lm_head`, which reads the token embeddings directly.
    """

    ignored_checkpoint_keys = (*DebertaV2PreTrainedModel.ignored_checkpoint_keys, r"^mask_predictions\.")

    def __init__(self, config: DebertaV2Config):
        super().__init__(config)
        if config.legacy:
            self.cls = LegacyDebertaV2OnlyMLMHead(config)
            self.tied_weights = {
                "cls.predictions.decoder.weight": "deberta.embeddings.word_embeddings.weight",
                "cls.predictions.decoder.bias": "cls.predictions.bias",
            }
        else:
            self.lm_predictions = DebertaV2OnlyMLMHead(config)
        self.tie_weights()

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """As PreTrainedModel's, with a bias of zero for each new token (the legacy decoder's bias, which is the
        head's `bias` again after it, as the reference pads it; DeBERTa's own head's, which the reference cannot
        resize)."""
        old_rows = self.config.vocab_size
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        rows = embeddings.weight.shape[0]
        head = self.cls.predictions if self.config.legacy else self.lm_predictions.lm_head
        with torch.no_grad():
            kept = head.bias[: min(old_rows, rows)]
            bias = torch.cat([kept, kept.new_zeros(rows - kept.shape[0])])
        head.bias = nn.Parameter(bias, head.bias.requires_grad)
        self.tie_weights()
        return embeddings

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.legacy:
            return self.cls(hidden)
        return self.lm_predictions(hidden, self.deberta.embeddings.word_embeddings.weight)


class ContextPooler(nn.Module):
    """The first token ([CLS]) through dropout, dense and `pooler_hidden_act`."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.dense = nn.Linear(config.pooler_hidden_size, config.pooler_hidden_size)
        self.dropout = nn.Dropout(config.pooler_dropout)
        self.act = ACTIVATIONS[config.pooler_hidden_act]

    def forward(self, hidden):
        return self.act(self.dense(self.dropout(hidden[:, 0])))


class PooledScores(HeadModel):
    """The sequence classifier and the multiple-choice scorer: the ContextPooler's output, a dropout of
    `cls_dropout` (else hidden_dropout_prob), the projection."""

    def __init__(self, config: DebertaV2Config):
        super().__init__(config)
        self.pooler = ContextPooler(config)

    def classifier_dropout(self) -> float:
        return self.config.hidden_dropout_prob if self.config.cls_dropout is None else self.config.cls_dropout

    def sequence_logits(self, base: ModelOutput) -> torch.Tensor:
        return self.project(self.dropout(self.pooler(base.last_hidden_state)))


class DebertaV2ForSequenceClassification(DebertaV2PreTrainedModel, PooledScores, PooledSequenceClassification):
    """One label (or score) per sequence, from the pooled first token.

    Without config.problem_type the loss follows DeBERTa's rules: one label is a regression; integer labels
    (B,) are classes, rows labelled below 0 left out; labels (B, num_labels) are a distribution to match.
    """

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> SequenceClassifierOutput | tuple:
        output = super().forward(
            input_ids, attention_mask, position_ids, past_key_values, token_type_ids=token_type_ids, labels=labels,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        if labels is not None and self.config.problem_type is None and self.config.num_labels == 1:
            output.logits = output.logits.view(-1).to(labels.dtype)  # the reference returns what it regressed
        return self.returned(output, return_dict)

    def sequence_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is not None:
            return sequence_classification_loss(logits, labels, self.config)
        labels = labels.to(logits.device)
        if self.config.num_labels == 1:
            return F.mse_loss(logits.view(-1).to(labels.dtype), labels.view(-1))
        if labels.dim() == 1 or labels.shape[-1] == 1:
            labels = labels.view(-1)
            kept = labels >= 0
            if not kept.any():
                return logits.new_zeros(())
            return F.cross_entropy(logits[kept].float(), labels[kept].long())
        return -(F.log_softmax(logits, dim=-1) * labels).sum(-1).mean()


class DebertaV2ForTokenClassification(DebertaV2PreTrainedModel, TokenClassification):
    """One label per token (named entities)."""

    def classifier_dropout(self) -> float:
        return self.config.hidden_dropout_prob  # the reference's, whatever classifier_dropout says


class DebertaV2ForQuestionAnswering(DebertaV2PreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class DebertaV2ForMultipleChoice(DebertaV2PreTrainedModel, PooledScores, MultipleChoice):
    """One score per choice, from each choice's pooled first token."""


# DeBERTa (v1) ------------------------------------------------------------------------------------------------


class DebertaPreTrainedModel(DebertaV2PreTrainedModel):
    """DeBERTa (v1)'s classes are v2's over a DebertaConfig, which picks v1's attention and LayerNorms; v1 has no
    multiple-choice head."""

    config_class = DebertaConfig

    def new_base_model(self, config: DebertaConfig) -> "DebertaModel":
        return DebertaModel(config)


class DebertaModel(DebertaPreTrainedModel, DebertaV2Model):
    """The encoder: `last_hidden_state` (B, T, C), no pooler."""


class DebertaForMaskedLM(DebertaPreTrainedModel, DebertaV2ForMaskedLM):
    """Logits over the vocabulary at every position (`cls.predictions`, or `lm_predictions` with legacy=False)."""


class DebertaForSequenceClassification(DebertaPreTrainedModel, DebertaV2ForSequenceClassification):
    """One label (or score) per sequence from the pooled first token, with v2's loss rules."""


class DebertaForTokenClassification(DebertaPreTrainedModel, DebertaV2ForTokenClassification):
    """One label per token."""


class DebertaForQuestionAnswering(DebertaPreTrainedModel, DebertaV2ForQuestionAnswering):
    """Extractive QA: start and end logits per token."""
