"""ModernBERT in plain torch.nn: a pre-LayerNorm encoder with rotary positions, alternating global and local attention.

What sets it apart from BERT: no position embeddings (the token embeddings are normed, then every layer rotates its
queries and keys, with one base on the full-attention layers and another on the sliding ones); every layer but one
in `global_attn_every_n_layers` attends only within a band of `local_attention` tokens centred on the query (half on
each side, both directions); the MLP is a GeGLU whose single input projection `Wi` holds the input half and the gate
half; LayerNorms come before attention and MLP (the first layer's attention takes the embeddings, already normed, as
they are) and once more after the last layer; norms and projections have biases only when the config says so.
The heads read the hidden states through a shared `head` (dense, activation, norm): the masked LM then projects to
the vocabulary with `decoder` (tied to the token embeddings), the others with `classifier`. Sequence classification
and multiple choice pool the first token or the mean of the real tokens (`classifier_pooling`).

A padded batch runs unpadded: the real tokens of all rows are gathered into one (N, C) tensor, on which every
per-token step runs (norms, projections, MLP), and only attention sees them padded again, (B, T), with masks. The
padding's share of the work is saved (34% of the CPU time of a ModernBERT-base forward on 8 sequences of up to 512
tokens, 48% of them real: benchmarks/modernbert.py). The reference unpads only through flash-attn on GPUs and
otherwise computes the padding positions too; here they are zeros in `last_hidden_state` and `hidden_states` (as the
reference's unpadded path in transformers 4.x gave them), and per-token logits there are the head's output for that
zero state. Every real position, pooled output and loss is the reference's, but for two readings of the padding:
sequence classification's "cls" pooling of a left-padded row (position 0, padding, in both) and QA's loss over a
padded batch (whose softmax counts the padding positions' logits in both).

On sequences longer than two blocks of `local_attention` tokens the sliding layers attend block by block
(`LocalBand`), each block of queries to its own keys and half a window on each side, instead of through a (T, T)
mask: at 8192 tokens a sliding layer runs 4.3 times faster (the result is the mask's within float rounding).
Parameter names are those of Hugging Face checkpoints (`model.layers.0.attn.Wqkv.weight`).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ModernBertConfig
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
from .layers import ACTIVATIONS, RotaryEmbedding, apply_rope, encoder_attention, run_layers
from .outputs import BaseModelOutput, BaseModelOutputWithPooling, ModelOutput


def layer_norm(config: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


class ModernBertEmbeddings(nn.Module):
    """Token embeddings, normed, then dropout; positions enter later, as rotations inside attention."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        # An explicit weight skips nn.Embedding's random init, which is slow on the meta device (see llama.py).
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id,
                                           _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.norm = layer_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids, inputs_embeds=None):
        x = embedded(self.tok_embeddings, input_ids) if inputs_embeds is None else inputs_embeds
        return self.drop(self.norm(x))


class ModernBertAttention(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attention_dropout)

    def forward(self, x, cos, sin, mask, attention_path, rows):
        """The attention output, and its weights (B, nh, T, T) when computed step by step, else None.

        `x` is (B, T, C), or the (N, C) real tokens of an unpadded batch (`rows`), which attend padded again.
        """
        qkv = self.Wqkv(x)
        if rows is not None:
            qkv = rows.pad(qkv)
        B, T, _ = qkv.shape
        q, k, v = qkv.view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        # Rotated in float32 whatever the model's dtype, as the reference rotates them.
        q, k = (apply_rope(t.float(), cos, sin).to(v.dtype) for t in (q, k))
        dropout = self.dropout if self.training else 0.0
        if isinstance(mask, LocalBand):
            y, weights = mask.attend(q, k, v, dropout).transpose(1, 2).reshape(B, T, -1), None
        else:
            y, weights = encoder_attention(q, k, v, mask, dropout, attention_path)
        if rows is not None:
            y = rows.unpad(y)
        return self.out_drop(self.Wo(y)), weights


class ModernBertMLP(nn.Module):
    """GeGLU: `Wi` projects to an input half and a gate half; the activated input, scaled by the gate, goes out
    through `Wo`."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = ACTIVATIONS[config.hidden_activation]
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x):
        h, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(h) * gate))


class ModernBertEncoderLayer(nn.Module):
    def __init__(self, config: ModernBertConfig, layer_idx: int):
        super().__init__()
        self.attention_type = config.layer_types[layer_idx]
        # The embeddings end with a norm, so the first layer's attention takes them as they are.
        self.attn_norm = nn.Identity() if layer_idx == 0 else layer_norm(config)
        self.attn = ModernBertAttention(config)
        self.mlp_norm = layer_norm(config)
        self.mlp = ModernBertMLP(config)

    def forward(self, x, cos, sin, mask, attention_path, rows):
        h, weights = self.attn(self.attn_norm(x), cos, sin, mask, attention_path, rows)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), weights


def band_mask(attention_mask: torch.Tensor | None, T: int, half_window: int, device) -> torch.Tensor | None:
    """The sliding layers' mask: (B or 1, 1, T, T) booleans letting query i see key j when |i - j| <= half_window
    and j is not padding; None when the band covers the whole sequence and nothing is padding."""
    padding = padding_mask(attention_mask)  # (B, 1, 1, T) or None
    if T - 1 <= half_window:
        return padding
    positions = torch.arange(T, device=device)
    band = (positions[:, None] - positions[None, :]).abs() <= half_window  # (T, T)
    return band[None, None] if padding is None else band[None, None] & padding


class LocalBand:
    """The sliding layers' attention on long sequences, block by block: each block of `2 * half_window` queries
    attends to its own keys and `half_window` more on each side, masked to the band and the real tokens. The work
    grows with T * window instead of T * T (at 8192 tokens and ModernBERT-base's window of 128, 32 times less than
    attending through a (T, T) mask); the result is the banded mask's."""

    def __init__(self, attention_mask: torch.Tensor | None, T: int, half_window: int, device):
        self.half, self.block = half_window, max(2 * half_window, 1)
        self.blocks = -(-T // self.block)
        width = self.block + 2 * half_window
        extra = self.blocks * self.block - T  # queries added to fill the last block
        starts = torch.arange(self.blocks, device=device)[:, None, None] * self.block
        queries = starts + torch.arange(self.block, device=device)[:, None]  # (nb, bs, 1)
        keys = starts - half_window + torch.arange(width, device=device)  # (nb, 1, W)
        band = ((keys - queries).abs() <= half_window) & (keys >= 0) & (keys < T)  # (nb, bs, W)
        if attention_mask is None:
            self.mask = band[None]  # (1, nb, bs, W)
        else:
            real = F.pad(attention_mask.to(device).bool(), (half_window, half_window + extra), value=False)
            self.mask = band[None] & real.unfold(1, width, self.block)[:, :, None, :]  # (B, nb, bs, W)

    def attend(self, q, k, v, dropout: float) -> torch.Tensor:
        """q, k, v (B, nh, T, hs) -> (B, nh, T, hs)."""
        B, nh, T, hs = q.shape
        nb, bs, width = self.blocks, self.block, self.block + 2 * self.half
        extra = nb * bs - T
        q = F.pad(q, (0, 0, 0, extra)).view(B, nh, nb, bs, hs).transpose(1, 2).reshape(B * nb, nh, bs, hs)
        k, v = (F.pad(t, (0, 0, self.half, self.half + extra)).unfold(2, width, bs)  # (B, nh, nb, hs, W)
                .permute(0, 2, 1, 4, 3).reshape(B * nb, nh, width, hs) for t in (k, v))
        mask = self.mask.expand(B, -1, -1, -1).reshape(B * nb, 1, bs, width)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B * nb, nh, bs, hs)
        return y.view(B, nb, nh, bs, hs).transpose(1, 2).reshape(B, nh, nb * bs, hs)[:, :, :T]


class Unpadded:
    """The real tokens of a padded batch as the rows of one (N, ...) tensor, and the way back to (B, T, ...) with
    zeros at the padding."""

    def __init__(self, attention_mask: torch.Tensor):
        self.shape = tuple(attention_mask.shape)  # (B, T)
        self.index = attention_mask.flatten().nonzero().squeeze(-1)  # (N,) places in the flattened batch

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(0, 1).index_select(0, self.index)  # (B, T, ...) -> (N, ...)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        B, T = self.shape
        return x.new_zeros(B * T, *x.shape[1:]).index_copy(0, self.index, x).view(B, T, *x.shape[1:])


class ModernBertPreTrainedModel(PreTrainedModel):
    config_class = ModernBertConfig
    base_model_prefix = "model"
    # The heads' settings (models/heads.py): the projections are named "classifier".
    projection_name = "classifier"
    span_projection_name = "classifier"

    def new_base_model(self, config: ModernBertConfig) -> "ModernBertModel":
        return ModernBertModel(config)

    def _init_weights(self, module: nn.Module) -> None:
        """The reference's init: normals cut off at `initializer_cutoff_factor` standard deviations, with a smaller
        spread on the projections back into the residual stream and on the prediction head, hidden_size ** -0.5
        on the classifiers; zero biases, unit norms."""
        super()._init_weights(module)
        config = self.config
        std = config.initializer_range
        out_std = std / math.sqrt(2.0 * config.num_hidden_layers)
        spreads = {}  # the layer -> its weights' standard deviation
        if isinstance(module, ModernBertEmbeddings):
            spreads[module.tok_embeddings] = std
        elif isinstance(module, (ModernBertAttention, ModernBertMLP)):
            spreads[module.Wqkv if isinstance(module, ModernBertAttention) else module.Wi] = std
            spreads[module.Wo] = out_std
        elif isinstance(module, ModernBertPredictionHead):
            spreads[module.dense] = out_std
        elif isinstance(module, ModernBertForMaskedLM):
            spreads[module.decoder] = out_std
        elif isinstance(module, HeadModel) and isinstance(getattr(module, "classifier", None), nn.Linear):
            spreads[module.classifier] = config.hidden_size**-0.5
        cutoff = config.initializer_cutoff_factor if config.initializer_cutoff_factor is not None else 3
        for layer, spread in spreads.items():
            nn.init.trunc_normal_(layer.weight, std=spread, a=-cutoff * spread, b=cutoff * spread)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)


class ModernBertModel(ModernBertPreTrainedModel):
    """The encoder: `last_hidden_state` (B, T, C) after the final norm."""

    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = layer_norm(config)
        head_dim = config.hidden_size // config.num_attention_heads
        length = min(config.max_position_embeddings, 8192)
        self.rotary_emb = nn.ModuleDict({  # layer type -> its rotary table (a base of its own)
            kind: RotaryEmbedding(head_dim, entry["rope_theta"], entry, length, config.max_position_embeddings)
            for kind, entry in config.rope_parameters.items()
        })

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> BaseModelOutput | tuple:
        """The last hidden state (B, T, C); with output_hidden_states, also each layer's input (the embeddings
        first) and the last hidden state, and with output_attentions every layer's weights.

        Positions count from 0 in every row, padding included (rotations only see the distance between two
        tokens, so a left-padded row gives what it gives alone). token_type_ids are ignored, as the reference
        ignores them.
        """
        check_encoder_inputs(self, input_ids, inputs_embeds, past_key_values, cache, labels)
        output_attentions, output_hidden_states, return_dict = self.output_options(
            output_attentions, output_hidden_states, return_dict
        )
        x = self.embeddings(input_ids, inputs_embeds)  # (B, T, C)
        T = x.shape[1]
        if position_ids is None:
            position_ids = torch.arange(T, device=x.device)[None]  # (1, T)
        attention_path = self.attention_path(output_attentions)
        half_window = self.config.sliding_window
        # Block by block once the blocks' keys (4 half windows) are fewer than the sequence's; the weights for
        # output_attentions come from the step-by-step path, over the whole (T, T) mask.
        local = LocalBand if attention_path == "sdpa" and T > 4 * half_window else band_mask
        masks = {"full_attention": padding_mask(attention_mask),
                 "sliding_attention": local(attention_mask, T, half_window, x.device)}
        rope = {}  # layer type -> (cos, sin), float32
        for kind, rotary in self.rotary_emb.items():
            rotary.ensure_length(int(position_ids.max()) + 1)
            rope[kind] = rotary(position_ids, torch.float32)
        # Every step but attention works token by token: with padding, it runs on the real tokens only (N, C).
        rows = None if masks["full_attention"] is None else Unpadded(attention_mask.to(x.device))
        if rows is not None:
            x = rows.unpad(x)
        checkpointing = self.gradient_checkpointing if self.training else None
        x, hidden_states, attentions = run_layers(
            self.layers, x, checkpointing,
            lambda layer: (*rope[layer.attention_type], masks[layer.attention_type], attention_path, rows),
            output_hidden_states, output_attentions,
        )
        x = self.final_norm(x)
        if output_hidden_states:
            hidden_states.append(x)
        if rows is not None:
            x = rows.pad(x)
            if output_hidden_states:
                hidden_states = [rows.pad(h) for h in hidden_states]
        output = BaseModelOutput(last_hidden_state=x, hidden_states=recorded(hidden_states),
                                 attentions=recorded(attentions))
        return self.returned(output, return_dict)


# Heads --------------------------------------------------------------------------------------------------------


class ModernBertPredictionHead(nn.Module):
    """What every head reads the hidden states through: dense, activation, LayerNorm."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = ACTIVATIONS[config.classifier_activation]
        self.norm = layer_norm(config)

    def forward(self, x):
        return self.norm(self.act(self.dense(x)))


class TransformedHead(HeadModel):
    """A head with the prediction head (`head`) between the encoder and its projection."""

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.head = ModernBertPredictionHead(config)


class ModernBertForMaskedLM(ModernBertPreTrainedModel, TransformedHead, MaskedLM):
    """Logits over the vocabulary at every position (only at the labelled ones with config.sparse_prediction and
    labels, shaped (N, vocab_size)); the loss over positions whose label is not -100."""

    tied_weights = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.tie_weights()

    def predicted_positions(self, hidden, labels):
        if not (self.config.sparse_prediction and labels is not None):
            return hidden, labels
        labels = labels.to(hidden.device).flatten()
        kept = labels != self.config.sparse_pred_ignore_index
        return hidden.flatten(0, 1)[kept], labels[kept]  # (N, C), (N,)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.head(hidden))


class PooledScores(TransformedHead):
    """Sequence classification and multiple choice: each sequence pooled as `classifier_pooling` says, through
    the prediction head and a dropout into the classifier."""

    # Multiple choice pools "cls" at each row's first real token (left padding too); sequence classification at
    # position 0 whatever it holds. Both as the reference.
    pools_first_real_token = False

    def run_base_model(self, input_ids, attention_mask, *rest) -> ModelOutput:
        base = super().run_base_model(input_ids, attention_mask, *rest)
        hidden = base.last_hidden_state  # (B, T, C)
        if self.config.classifier_pooling == "mean":
            if attention_mask is None:
                pooled = hidden.mean(dim=1)
            else:
                mask = attention_mask.to(hidden.device)[..., None]  # (B, T, 1)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        elif self.pools_first_real_token and attention_mask is not None:
            first = attention_mask.to(hidden.device).argmax(dim=-1)  # (B,)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
        else:
            pooled = hidden[:, 0]
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled,
                                          hidden_states=base.hidden_states, attentions=base.attentions)

    def sequence_logits(self, base: ModelOutput) -> torch.Tensor:
        return self.project(self.dropout(self.head(base.pooler_output)))


class ModernBertForSequenceClassification(ModernBertPreTrainedModel, PooledScores, PooledSequenceClassification):
    """One label (or score) per sequence, from its first token or its mean (`classifier_pooling`)."""


class ModernBertForTokenClassification(ModernBertPreTrainedModel, TransformedHead, TokenClassification):
    """One label per token (named entities)."""

    def token_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.project(self.dropout(self.head(hidden)))


class ModernBertForQuestionAnswering(ModernBertPreTrainedModel, TransformedHead, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(self.classifier_dropout())

    def span_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.head(hidden)))


class ModernBertForMultipleChoice(ModernBertPreTrainedModel, PooledScores, MultipleChoice):
    """One score per choice, from each choice's first real token or its mean (`classifier_pooling`)."""

    pools_first_real_token = True
