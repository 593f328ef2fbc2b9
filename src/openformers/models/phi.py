"""Phi-1, Phi-1.5 and Phi-2 decoders in plain torch.nn (model_type "phi").

Each layer normalizes its input once, with a LayerNorm that has a bias; attention and the GELU MLP (`fc1`, `fc2`)
both read that normed input, and their outputs (after `resid_pdrop` dropout) are added to the residual together.
Attention has q/k/v projections with biases (grouped-query with `num_key_value_heads`), an optional LayerNorm over
each head's queries and keys (`qk_layernorm`), rotary embeddings over the first `partial_rotary_factor` of each
head's dimensions (Phi-2: 0.4) and an output projection named `dense`. The embeddings go through `embd_pdrop`
dropout, the last layer through `final_layernorm`, and the language-model head has a bias. The heads are the
reference's: causal LM, sequence and token classification (no QA head).

GGUF files of llama.cpp's "phi2" architecture are read here too (`config_from_gguf`, `convert_gguf_state_dict`):
its converter writes attn_q/attn_k/attn_v apart for Hugging Face checkpoints and one fused attn_qkv (all queries,
then all keys, then all values) for the original ones, which is split back; neither needs its rows un-permuted.
The CPU decoding kernel runs Phi's decoding step (kernels/llama.py: both branches from the one norm, the head's bias
added in the step, qk_layernorm's q/k LayerNorms with the layer's norms).
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, PhiConfig
from ..weights import rename
from .base import PreTrainedModel, embedded, token_embeddings
from .decoder import DecoderModel
from .gpt_neox import gguf_layer_norm_decoder_values, gguf_required
from .heads import CausalLM, SequenceClassification, TokenClassification
from .layers import ACTIVATIONS, RotaryEmbedding, decoder_attention
from .llama import GGUF_RENAMES
from .phi3 import apply_partial_rope


def config_from_gguf(gguf, **overrides) -> PhiConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "phi2" architecture."""
    values = gguf_layer_norm_decoder_values(gguf, "phi2", "layer_norm_eps")
    heads = values["num_attention_heads"]
    head_dim = values["hidden_size"] // heads
    values.update(
        architectures=["PhiForCausalLM"],
        intermediate_size=gguf_required(gguf, "phi2.feed_forward_length"),
        num_key_value_heads=gguf.get("phi2.attention.head_count_kv", heads),
        partial_rotary_factor=gguf.get("phi2.rope.dimension_count", head_dim) / head_dim,
    )
    return PhiConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["phi2"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, with Phi's output projection, MLP and norms.
PHI_GGUF_RENAMES = {
    **GGUF_RENAMES,
    "attn_qkv": "self_attn.qkv",  # split into q_proj, k_proj and v_proj by convert_gguf_state_dict
    "attn_output": "self_attn.dense",
    "ffn_up": "mlp.fc1",
    "ffn_down": "mlp.fc2",
    "output_norm": "model.final_layernorm",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: PhiConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names and split a fused attn_qkv into the three projections."""
    sizes = [config.num_attention_heads * config.head_dim] + 2 * [config.num_key_value_heads * config.head_dim]
    converted = {}
    for name, tensor in rename(state_dict, PHI_GGUF_RENAMES).items():
        if ".self_attn.qkv." in name:
            for part, rows in zip(("q_proj", "k_proj", "v_proj"), tensor.split(sizes)):
                converted[name.replace(".qkv.", f".{part}.")] = rows
        else:
            converted[name] = tensor
    return converted


class PhiAttention(nn.Module):
    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim
        )
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, self.n_head * self.head_dim)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_head * self.head_dim)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_head * self.head_dim)
        self.dense = nn.Linear(self.n_head * self.head_dim, config.hidden_size)
        self.qk_layernorm = config.qk_layernorm
        if self.qk_layernorm:
            self.q_layernorm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)
            self.k_layernorm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.qk_layernorm:
            q, k = self.q_layernorm(q), self.k_layernorm(k)
        q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path)
        return self.dense(y), weights


class PhiMLP(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PhiDecoderLayer(nn.Module):
    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = PhiAttention(config, layer_idx)
        self.mlp = PhiMLP(config)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        normed = self.input_layernorm(x)  # both branches read it; summed in the reference's order
        h, weights = self.self_attn(normed, cos, sin, mask, cache, attention_path)
        return self.resid_dropout(h) + self.resid_dropout(self.mlp(normed)) + x, weights


class PhiPreTrainedModel(PreTrainedModel):
    config_class = PhiConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: PhiConfig) -> "PhiModel":
        return PhiModel(config)


class PhiModel(PhiPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: PhiConfig):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)  # the padding row gets no gradient, as in the reference
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.layers = nn.ModuleList(PhiDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling,
                                          min(config.max_position_embeddings, 8192), config.max_position_embeddings)

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        return self.embed_dropout(embedded(self.embed_tokens, input_ids) if inputs_embeds is None else inputs_embeds)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layernorm(x)


class PhiForCausalLM(PhiPreTrainedModel, CausalLM):
    """The decoder with its language-model head (which has a bias): next-token logits, and the loss when labels are
    given."""

    lm_head_bias = True


class PhiForSequenceClassification(PhiPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class PhiForTokenClassification(PhiPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""
