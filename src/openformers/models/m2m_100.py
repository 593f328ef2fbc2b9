"""M2M100 and NLLB (Facebook's many-to-many translation models; model_type m2m_100) over BART's layers: the same
encoder and decoder with cross-attention, caches, LM head and generation path, and these differences:

- pre-LayerNorm layers (each sublayer normalizes its input, then adds its output to it) and a LayerNorm after each
  stack (`encoder.layer_norm`, `decoder.layer_norm`), no LayerNorm over the embeddings;
- fixed sinusoidal positions (fairseq's: frequencies 10000^(-j / (C/2 - 1)), the sines then the cosines), counted
  from padding_idx + 1 over a row's non-padding tokens, so that a padding token reads the zero row padding_idx and a
  left-padded row gets the positions it gets alone; given embeddings count every position. The table grows when a
  sequence outruns it (as the reference's does), so max_position_embeddings bounds nothing;
- no `final_logits_bias`, and no shifting of input_ids into decoder inputs.

Decoding starts from </s> (decoder_start_token_id); translation forces the target language's code as the first
generated token (`forced_bos_token_id`, which the tokenizers' translation inputs give the pipeline).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import M2M100Config
from .bart import (
    BartDecoder,
    BartDecoderLayer,
    BartEncoder,
    BartEncoderLayer,
    BartForConditionalGeneration,
    BartModel,
    BartPreTrainedModel,
)
from .layers import SinusoidalPositions, fairseq_positions_of


def fairseq_positions(count: int, dim: int, padding_idx: int) -> torch.Tensor:
    """(count, dim) fairseq sinusoidal embeddings, computed in float32 as the reference: for the frequency
    10000^(-j / (dim/2 - 1)) of pair j, all the sines, then all the cosines (a zero column more for an odd dim), and
    the row padding_idx zero."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half).float() * -(math.log(10000) / (half - 1)))
    angles = torch.arange(count).float()[:, None] * frequencies[None]  # (count, half)
    table = F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim % 2))
    table[padding_idx] = 0
    return table


class M2M100SinusoidalPositions(SinusoidalPositions):
    """The fixed position table, `fairseq_positions`, of max_position_embeddings + 2 rows (rebuilt larger when a
    sequence needs more), looked up by position ids; positions count from padding_idx + 1."""

    def __init__(self, config: M2M100Config):
        self.padding_idx = config.pad_token_id
        super().__init__(config.max_position_embeddings + 2, config.d_model)

    def table(self, count: int, dim: int) -> torch.Tensor:
        return fairseq_positions(count, dim, self.padding_idx)

    def of_tokens(self, input_ids: torch.Tensor | None, T: int, past: int) -> torch.Tensor:
        """The embeddings (B or 1, T, C) of T tokens after `past` ones: a token's position is padding_idx plus its
        count among its row's non-padding tokens (plus `past`), a padding token's is padding_idx; without input_ids
        (given embeddings) every token counts."""
        end = self.padding_idx + 1 + past + T
        if end > self.weight.shape[0]:
            self.reset_tables(length=end + 2)
        if input_ids is None:
            position_ids = torch.arange(end - T, end, device=self.weight.device)[None]  # (1, T)
        else:
            position_ids = fairseq_positions_of(input_ids, self.padding_idx, past)  # (B, T)
        return self(position_ids)


class M2M100EncoderLayer(BartEncoderLayer):
    """Normalize, self-attention, add; normalize, feed-forward, add (mBART's and Pegasus's layer too). In float16 the
    output is clamped to 1000 inside the largest value, as the reference's, so that no infinity reaches the next
    layer."""

    def forward(self, x, mask, attention_path="sdpa"):
        h = self.self_attn_layer_norm(x)
        y, weights = self.self_attn(h, *self.self_attn.keys_values(h), mask, False, attention_path)
        x = pre_norm_feed_forward(self, x + self.dropout(y))
        if x.dtype == torch.float16:
            bound = torch.finfo(x.dtype).max - 1000
            x = x.clamp(-bound, bound)
        return x, weights


def pre_norm_feed_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A pre-LayerNorm layer's last step: final_layer_norm, fc1, activation, fc2, added to the input."""
    y = layer.fc2(layer.activation_dropout(layer.activation(layer.fc1(layer.final_layer_norm(x)))))
    return x + layer.dropout(y)


class M2M100DecoderLayer(BartDecoderLayer):
    """Causal self-attention, cross-attention to the encoder's output (when there is one), feed-forward; each reads
    its normalized input and adds its output to it (mBART's and Pegasus's layer too)."""

    def forward(self, x, mask, encoder_states, encoder_mask, cache, attention_path="sdpa"):
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:  # an EncoderDecoderCache updates its self-attention part
            k, v = cache.update(self.layer_idx, k, v)  # (B, nh, past + T, hs)
        causal = mask is None and x.shape[1] > 1
        y, weights = self.self_attn(h, k, v, mask, causal, attention_path)
        x = x + self.dropout(y)
        cross_weights = None
        if encoder_states is not None:
            k, v = self.cross_keys_values(encoder_states, cache)
            y, cross_weights = self.encoder_attn(self.encoder_attn_layer_norm(x), k, v, encoder_mask, False,
                                                 attention_path)
            x = x + self.dropout(y)
        return pre_norm_feed_forward(self, x), weights, cross_weights


class M2M100Encoder(BartEncoder):
    """BART's encoder with pre-LayerNorm layers, a LayerNorm after them, and positions counted over the tokens."""

    layer_class = M2M100EncoderLayer

    def __init__(self, config: M2M100Config):
        super().__init__(config)
        self.embed_positions = M2M100SinusoidalPositions(config)
        self.layernorm_embedding = nn.Identity()
        self.layer_norm = nn.LayerNorm(config.d_model)

    def position_embeddings(self, input_ids, position_ids, end) -> torch.Tensor:
        T = position_ids.shape[-1]
        return self.embed_positions.of_tokens(input_ids, T, end - T)


class M2M100Decoder(BartDecoder):
    """BART's decoder with pre-LayerNorm layers, a LayerNorm after them, and positions counted over the tokens
    after the cache's (`position_ids` are not read, as in the reference)."""

    layer_class = M2M100DecoderLayer
    takes_position_ids = False
    position_embeddings = M2M100Encoder.position_embeddings

    def __init__(self, config: M2M100Config):
        super().__init__(config)
        self.embed_positions = M2M100SinusoidalPositions(config)
        self.layernorm_embedding = nn.Identity()
        self.layer_norm = nn.LayerNorm(config.d_model)


class M2M100PreTrainedModel(BartPreTrainedModel):
    config_class = M2M100Config
    encoder_class, decoder_class = M2M100Encoder, M2M100Decoder
    # fairseq conversions may store the computed position tables.
    ignored_checkpoint_keys = (*BartPreTrainedModel.ignored_checkpoint_keys,
                               r"(^|\.)embed_positions\.(weights?|_float_tensor)$")

    def new_base_model(self, config: M2M100Config) -> "M2M100Model":
        return M2M100Model(config)


class M2M100Model(M2M100PreTrainedModel, BartModel):
    """The encoder and the decoder without a head: the decoder's last hidden state, and the encoder's."""

    shifts_input_ids = False


class M2M100ForConditionalGeneration(M2M100PreTrainedModel, BartForConditionalGeneration):
    """Translation: vocabulary logits for every decoder position, and their loss against `labels` (whose shift
    right, after </s>, is the decoder's input when none is given)."""

    has_logits_bias = False
