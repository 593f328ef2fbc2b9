"""NomicBERT (nomic-ai/nomic-embed-text-v1 and v1.5): BERT's model and heads (models/bert.py) with rotary positions,
a SwiGLU feed-forward and no biases in the layers. GTE and Jina embeddings v3 are this encoder with other parts
(models/gte.py, models/jina_embeddings_v3.py).

What differs from BERT: the embeddings have no position table (token and token-type embeddings, LayerNorm); each
layer turns its queries and keys by position, the (i, i + hs/2) pairs as Llama's (`rope_theta`, positions from 0
in every row, padding or not), then, normalizing after each residual as BERT does, runs attention through `o_proj`
and a gated feed-forward `down_proj(act(gate_proj(x)) * up_proj(x))`. The layers sit on the model itself
(`nomic_bert.layers.0.self_attn.q_proj`), the reference's names; checkpoints in Nomic's own layout
(`encoder.layers.0.attn.Wqkv`, `emb_ln`, `mlp.fc11`/`fc12`/`fc2`, `norm1`/`norm2`) are renamed and their fused
q/k/v split on loading, as the reference does. The masked LM's transform names its norm `layer_norm`; only sequence
classification reads the pooler.
"""

import torch
from torch import nn

from ..configs import NomicBertConfig
from .base import recorded
from .bert import (
    BertEmbeddings,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertLMPredictionHead,
    BertModel,
    BertPredictionHeadTransform,
    BertPreTrainedModel,
)
from .layers import ACTIVATIONS, RotaryEmbedding, apply_rope, encoder_attention, run_layers
from .outputs import BaseModelOutputWithPooling


class RotaryEmbeddings(BertEmbeddings):
    """Token and token-type embeddings, LayerNorm and dropout: no position table."""

    def __init__(self, config: NomicBertConfig):
        super().__init__(config, learned_positions=False)


class RotaryAttention(nn.Module):
    """q, k and v projections (with biases where `bias`), q and k turned by position, attention, then `o_proj`."""

    def __init__(self, config: NomicBertConfig, bias: bool):
        super().__init__()
        self.n_head, self.head_dim = config.num_attention_heads, config.rotary_head_dim()
        width = self.n_head * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, width, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, width, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, width, bias=bias)
        self.o_proj = nn.Linear(width, config.hidden_size, bias=bias)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x, mask, cos, sin, attention_path):
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y, weights = encoder_attention(q, k, v, mask, self.dropout if self.training else 0.0, attention_path)
        return self.o_proj(y), weights


class NomicBertMLP(nn.Module):
    """SwiGLU: down_proj(act(gate_proj(x)) * up_proj(x)), without biases."""

    def __init__(self, config: NomicBertConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class NomicBertLayer(nn.Module):
    """x = norm(x + attention(x)), then x = norm(x + mlp(x)): BERT's post-norm block over rotary attention."""

    attention_bias = False  # GTE's and Jina's attention have biases
    mlp_class = NomicBertMLP

    def __init__(self, config: NomicBertConfig, layer_idx: int = 0):
        super().__init__()
        self.self_attn = RotaryAttention(config, self.attention_bias)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.mlp = self.mlp_class(config)
        self.post_mlp_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_mlp_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, mask, cos, sin, attention_path):
        y, weights = self.self_attn(x, mask, cos, sin, attention_path)
        x = self.post_attention_layernorm(x + self.post_attention_dropout(y))
        return self.post_mlp_layernorm(x + self.post_mlp_dropout(self.mlp(x))), weights


class NomicBertPreTrainedModel(BertPreTrainedModel):
    config_class = NomicBertConfig
    base_model_prefix = "nomic_bert"
    # Nomic's own checkpoint names -> the reference's (the fused Wqkv is split in from_checkpoint_layout).
    checkpoint_renames = (("encoder.layers.", "layers."), ("emb_ln.", "embeddings.LayerNorm."),
                          ("attn.out_proj.", "self_attn.o_proj."), ("mlp.fc11.", "mlp.up_proj."),
                          ("mlp.fc12.", "mlp.gate_proj."), ("mlp.fc2.", "mlp.down_proj."),
                          ("norm1.", "post_attention_layernorm."), ("norm2.", "post_mlp_layernorm."))
    # A fused projection of the original checkpoints -> the reference's projections its rows are split into.
    fused_projections = {"attn.Wqkv.": ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")}

    def base_model_class(self, config: NomicBertConfig) -> type:
        return NomicBertModel

    @classmethod
    def from_checkpoint_layout(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The family's original checkpoint names as the reference's: renamed, and the fused projections split."""
        converted = {}
        for name, tensor in state_dict.items():
            for old, new in cls.checkpoint_renames:
                name = name.replace(old, new)
            fused = next((part for part in cls.fused_projections if part in name), None)
            if fused is None:
                converted[name] = tensor
                continue
            parts = cls.fused_projections[fused]
            for part, rows in zip(parts, tensor.chunk(len(parts), dim=0)):
                converted[name.replace(fused, part)] = rows
        return converted


class NomicBertModel(NomicBertPreTrainedModel, BertModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` when built with the pooler."""

    embeddings_class = RotaryEmbeddings
    layer_class = NomicBertLayer
    output_class = BaseModelOutputWithPooling
    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)

    def __init__(self, config: NomicBertConfig, add_pooling_layer: bool = False):
        BertModel.__init__(self, config, add_pooling_layer)

    def add_encoder(self, config: NomicBertConfig) -> None:
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = RotaryEmbedding(config.rotary_head_dim(), config.rope_theta, config.rope_scaling,
                                          config.max_position_embeddings, config.max_position_embeddings)

    def encode(self, x, mask, cache, attention_path, output_hidden_states, output_attentions, position_ids):
        """The last layer's output; with output_hidden_states the embeddings and every layer's output."""
        cos, sin = self.rotary_emb(position_ids, x.dtype)  # (1, 1, T, hs)
        checkpointing = self.gradient_checkpointing if self.training else None
        x, hidden_states, attentions = run_layers(self.layers, x, checkpointing,
                                                  lambda layer: (mask, cos, sin, attention_path),
                                                  output_hidden_states, output_attentions)
        if output_hidden_states:
            hidden_states.append(x)
        return x, recorded(hidden_states), recorded(attentions)


# Heads --------------------------------------------------------------------------------------------------------


class NomicBertPredictionHeadTransform(BertPredictionHeadTransform):
    """dense, activation, then the norm, which the reference names `layer_norm`."""

    def __init__(self, config: NomicBertConfig):
        super().__init__(config)
        self.layer_norm = self.LayerNorm
        del self.LayerNorm

    def forward(self, x):
        return self.layer_norm(self.act(self.dense(x)))


class NomicBertLMPredictionHead(BertLMPredictionHead):
    def __init__(self, config: NomicBertConfig):
        super().__init__(config)
        self.transform = NomicBertPredictionHeadTransform(config)


class NomicBertForMaskedLM(NomicBertPreTrainedModel, BertForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = {"cls.predictions.decoder.weight": "nomic_bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: NomicBertConfig):
        super().__init__(config)
        self.cls.predictions = NomicBertLMPredictionHead(config)
        self.tie_weights()


class NomicBertForSequenceClassification(NomicBertPreTrainedModel, BertForSequenceClassification):
    """One label (or score) per sequence, from the pooled first token."""


class NomicBertForTokenClassification(NomicBertPreTrainedModel, BertForTokenClassification):
    """One label per token."""
