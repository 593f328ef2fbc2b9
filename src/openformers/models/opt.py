"""OPT decoders in plain torch.nn (model_type "opt": facebook/opt-125m to opt-66b).

Learned positions are added to the token embeddings: a table of max_position_embeddings + 2 rows, read at each
position plus 2 (fairseq's offset). Without position_ids the positions count each row's real tokens in the attention
mask, so a left-padded row's first token is at position 0, as the reference counts them. Each layer has LayerNorms
around attention and a ReLU MLP (`fc1`, `fc2`): before them with `do_layer_norm_before` (every size but opt-350m),
else after each residual sum (opt-350m), which then has no LayerNorm after the last layer. Where
`word_embed_proj_dim` differs from hidden_size (opt-350m) the embeddings are that narrow: `project_in` widens them
for the layers and `project_out` narrows the last hidden state for the heads, whose projections take that width.
Queries are scaled before their product with the keys, as the reference scales them.

The checkpoints nest the stack under `model.decoder` (`model.decoder.layers.0.self_attn.q_proj`); `OPTDecoder`
holds those parameters under their names and `OPTModel` runs them. llama.cpp has no OPT architecture, so there is no
GGUF reader. The CPU kernel's decoding step takes the pre-LayerNorm layout with embeddings as wide as the layers
(kernels/llama.py); opt-350m's layout runs its layers.
"""

import torch
from torch import nn

from ..configs import OPTConfig
from .bart import layer_dropped
from .base import PreTrainedModel, embedded
from .bert import _embedding
from .decoder import DecoderModel, check_learned_positions
from .heads import CausalLM, QuestionAnswering, SequenceClassification
from .layers import ACTIVATIONS, decoder_attention

POSITION_OFFSET = 2  # the position table's first rows are never read by a real token (fairseq kept them for padding)


class OPTAttention(nn.Module):
    def __init__(self, config: OPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx, self.n_head = layer_idx, config.num_attention_heads
        self.scaling = config.head_dim**-0.5
        self.dropout = config.attention_dropout
        C = config.hidden_size
        self.k_proj = nn.Linear(C, C, bias=config.enable_bias)
        self.v_proj = nn.Linear(C, C, bias=config.enable_bias)
        self.q_proj = nn.Linear(C, C, bias=config.enable_bias)
        self.out_proj = nn.Linear(C, C, bias=config.enable_bias)

    def forward(self, x, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, _ = x.shape
        q = (self.q_proj(x) * self.scaling).view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs), scaled
        k = self.k_proj(x).view(B, T, self.n_head, -1).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_head, -1).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, dropout, attention_path, scale=1.0)
        return self.out_proj(y), weights


class OPTDecoderLayer(nn.Module):
    def __init__(self, config: OPTConfig, layer_idx: int):
        super().__init__()
        self.norm_first, self.layerdrop = config.do_layer_norm_before, config.layerdrop
        affine = config.layer_norm_elementwise_affine
        self.self_attn = OPTAttention(config, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=affine)
        self.fc1 = nn.Linear(config.hidden_size, config.ffn_dim, bias=config.enable_bias)
        self.fc2 = nn.Linear(config.ffn_dim, config.hidden_size, bias=config.enable_bias)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=affine)
        self.act = ACTIVATIONS[config.activation_function]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """cos and sin are None: the positions were added to the embeddings."""
        if layer_dropped(self, self.layerdrop):  # LayerDrop: the layer skipped while training
            return x, None
        if self.norm_first:  # every OPT but opt-350m
            h, weights = self.self_attn(self.self_attn_layer_norm(x), mask, cache, attention_path)
            x = x + self.dropout(h)
            return x + self.feed_forward(self.final_layer_norm(x)), weights
        h, weights = self.self_attn(x, mask, cache, attention_path)  # opt-350m: normed after each residual sum
        x = self.self_attn_layer_norm(x + self.dropout(h))
        return self.final_layer_norm(x + self.feed_forward(x)), weights

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(x))))


class OPTDecoder(nn.Module):
    """The stack's parameters under the checkpoints' names (`decoder.embed_tokens`, `decoder.layers.0`...);
    `OPTModel` runs them."""

    def __init__(self, config: OPTConfig):
        super().__init__()
        C, E = config.hidden_size, config.word_embed_proj_dim
        self.embed_tokens = _embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.embed_positions = _embedding(config.max_position_embeddings + POSITION_OFFSET, C)
        self.project_out = nn.Linear(C, E, bias=False) if E != C else None
        self.project_in = nn.Linear(E, C, bias=False) if E != C else None
        final_norm = config.do_layer_norm_before and not config._remove_final_layer_norm
        affine = config.layer_norm_elementwise_affine
        self.final_layer_norm = nn.LayerNorm(C, elementwise_affine=affine) if final_norm else None
        self.layers = nn.ModuleList(OPTDecoderLayer(config, i) for i in range(config.num_hidden_layers))


class OPTPreTrainedModel(PreTrainedModel):
    config_class = OPTConfig
    base_model_prefix = "model"
    hidden_size_field = "word_embed_proj_dim"  # the width the heads' projections take (heads.HeadModel)

    def new_base_model(self, config: OPTConfig) -> "OPTModel":
        return OPTModel(config)


class OPTModel(OPTPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state (word_embed_proj_dim wide)."""

    positions_from_mask = True

    def __init__(self, config: OPTConfig):
        super().__init__(config)
        self.decoder = OPTDecoder(config)

    @property
    def layers(self) -> nn.ModuleList:
        return self.decoder.layers

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        x = embedded(self.decoder.embed_tokens, input_ids) if inputs_embeds is None else inputs_embeds
        return x if self.decoder.project_in is None else self.decoder.project_in(x)

    def add_position_embeddings(self, x: torch.Tensor, position_ids: torch.Tensor, end: int) -> torch.Tensor:
        limit = self.config.max_position_embeddings
        check_learned_positions(position_ids, end, limit, "OPT", "max_position_embeddings")
        return x + self.decoder.embed_positions(position_ids + POSITION_OFFSET)

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        return lambda layer: (None, None, mask)  # no rotation: positions were added to the embeddings

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.decoder.final_layer_norm is not None:
            x = self.decoder.final_layer_norm(x)
        return x if self.decoder.project_out is None else self.decoder.project_out(x)


class OPTForCausalLM(OPTPreTrainedModel, CausalLM):
    """The decoder with its language-model head (tied to the token embeddings): next-token logits, and the loss when
    labels are given."""

    tied_weights = {"lm_head.weight": "model.decoder.embed_tokens.weight"}


class OPTForSequenceClassification(OPTPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class OPTForQuestionAnswering(OPTPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
