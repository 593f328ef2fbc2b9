"""Falcon decoders in plain torch.nn (model_type "falcon"), in both of the checkpoints' layouts.

Attention has one fused `query_key_value` projection, whose rows the layouts order differently:
- the new decoder architecture (Falcon-40B/180B, Falcon 2): per key/value group, that group's queries, then its key
  and its value; attention's and the MLP's inputs are normalized apart (`ln_attn`, `ln_mlp`), or by one
  `input_layernorm` when `num_ln_in_parallel_attn` is 1, and both branches add to the residual together;
- the older one: with `multi_query` (Falcon-7B) every query head, then one key and one value head; without it
  (Falcon-RW) each head's query, key and value in turn. One `input_layernorm` feeds attention and the MLP in
  parallel (`parallel_attn`), or the MLP reads the residual after attention through `post_attention_layernorm`.
Positions are rotary over the whole head, or ALiBi (`alibi`): a bias of slope x key position per head, added to the
attention scores, computed in bfloat16 as the reference computes it. Every projection multiplies, then adds its
bias (`bias`), as two operations (FalconLinear), which rounds as the reference does in bfloat16.

GGUF files of llama.cpp's "falcon" architecture are read here too: its converter stores the fused rows as all
queries, then all keys, then all values, which `convert_gguf_state_dict` puts back in groups. The CPU decoding
kernel's step runs these layers in every layout (kernels/llama.py), reading the fused rows in place.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, FalconConfig
from ..weights import rename
from .base import PreTrainedModel, embedded
from .decoder import DecoderModel
from .gpt_neox import gguf_layer_norm_decoder_values
from .heads import CausalLM, QuestionAnswering, SequenceClassification, TokenClassification
from .layers import (
    ACTIVATIONS,
    RotaryEmbedding,
    alibi_mask,
    apply_rope,
    decoder_attention,
)


def config_from_gguf(gguf, **overrides) -> FalconConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "falcon" architecture.

    llama.cpp keeps no layout flags: a second norm per layer (attn_norm_2) or several key/value heads mean the new
    decoder architecture, one key/value head and one norm Falcon-7B's multi-query layout; attention and MLP always
    run in parallel, with rotary positions.
    """
    values = gguf_layer_norm_decoder_values(gguf, "falcon", "layer_norm_epsilon")
    kv_heads = gguf.get("falcon.attention.head_count_kv", 1)
    two_norms = "blk.0.attn_norm_2.weight" in gguf.tensor_names
    new_layout = two_norms or kv_heads > 1
    values.update(
        architectures=["FalconForCausalLM"],
        ffn_hidden_size=gguf.get("falcon.feed_forward_length", 4 * values["hidden_size"]),
        num_kv_heads=kv_heads,
        new_decoder_architecture=new_layout,
        num_ln_in_parallel_attn=(2 if two_norms else 1) if new_layout else None,
        multi_query=not new_layout,
        parallel_attn=True,
        bias="blk.0.attn_qkv.bias" in gguf.tensor_names,
    )
    return FalconConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["falcon"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part (attn_norm is ln_attn when a layer has two norms).
GGUF_RENAMES = {
    "token_embd": "transformer.word_embeddings",
    "blk": "transformer.h",
    "attn_norm": "input_layernorm",
    "attn_norm_2": "ln_mlp",
    "attn_qkv": "self_attention.query_key_value",
    "attn_output": "self_attention.dense",
    "ffn_up": "mlp.dense_h_to_4h",
    "ffn_down": "mlp.dense_4h_to_h",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: FalconConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names and regroup the fused rows: (queries, keys, values) ->
    (per key/value group: its queries, its key, its value)."""
    two_norms = config.new_decoder_architecture and config.num_ln_in_parallel_attn == 2
    state_dict = rename(state_dict, {**GGUF_RENAMES, "attn_norm": "ln_attn" if two_norms else "input_layernorm"})
    n_kv, hs = config.num_key_value_heads, config.head_dim
    group = config.num_attention_heads // n_kv
    for name, tensor in state_dict.items():
        if ".self_attention.query_key_value." in name:
            rest = tensor.shape[1:]
            q, k, v = tensor.split([n_kv * group * hs, n_kv * hs, n_kv * hs])
            grouped = torch.cat([q.reshape(n_kv, group, hs, *rest), k.reshape(n_kv, 1, hs, *rest),
                                 v.reshape(n_kv, 1, hs, *rest)], dim=1)  # (n_kv, group + 2, hs, ...)
            state_dict[name] = grouped.reshape(tensor.shape)
    return state_dict


class FalconLinear(nn.Linear):
    """A linear layer whose product and bias are two operations, as Falcon was trained and as the reference keeps it
    (in bfloat16 the product is rounded before the bias is added)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias


class FalconAttention(nn.Module):
    def __init__(self, config: FalconConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim
        )
        # Each head's query, key and value in turn (Falcon-RW), else grouped: a group's queries, its key, its value.
        self.interleaved = not config.new_decoder_architecture and not config.multi_query
        self.rotary, self.dropout = config.rotary, config.attention_dropout
        out = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.query_key_value = FalconLinear(config.hidden_size, out, bias=config.bias)
        self.dense = FalconLinear(config.hidden_size, config.hidden_size, bias=config.bias)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, _ = x.shape
        qkv = self.query_key_value(x)
        if self.interleaved:
            q, k, v = qkv.view(B, T, self.n_head, 3, self.head_dim).unbind(3)  # (B, T, nh, hs) each
        else:
            groups = qkv.view(B, T, self.n_kv_head, -1, self.head_dim)  # (B, T, n_kv, nh / n_kv + 2, hs)
            q, k, v = groups[..., :-2, :].flatten(2, 3), groups[..., -2, :], groups[..., -1, :]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh or n_kv, T, hs)
        if self.rotary:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path)
        return self.dense(y), weights


class FalconMLP(nn.Module):
    def __init__(self, config: FalconConfig):
        super().__init__()
        self.dense_h_to_4h = FalconLinear(config.hidden_size, config.ffn_hidden_size, bias=config.bias)
        self.act = ACTIVATIONS[config.activation]
        self.dense_4h_to_h = FalconLinear(config.ffn_hidden_size, config.hidden_size, bias=config.bias)

    def forward(self, x):
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(x)))


class FalconDecoderLayer(nn.Module):
    def __init__(self, config: FalconConfig, layer_idx: int):
        super().__init__()
        C, eps = config.hidden_size, config.layer_norm_epsilon
        self.self_attention = FalconAttention(config, layer_idx)
        self.mlp = FalconMLP(config)
        self.parallel = config.parallel_attn
        self.two_norms = config.parallel_attn and config.num_ln_in_parallel_attn == 2
        self.attention_dropout, self.hidden_dropout = config.attention_dropout, config.hidden_dropout
        if self.two_norms:
            self.ln_attn = nn.LayerNorm(C, eps=eps)
            self.ln_mlp = nn.LayerNorm(C, eps=eps)
        else:
            self.input_layernorm = nn.LayerNorm(C, eps=eps)
        if not self.parallel:
            self.post_attention_layernorm = nn.LayerNorm(C, eps=eps)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        normed = self.ln_attn(x) if self.two_norms else self.input_layernorm(x)
        h, weights = self.self_attention(normed, cos, sin, mask, cache, attention_path)
        if not self.parallel:  # the MLP reads the residual after attention
            x = x + F.dropout(h, self.attention_dropout, self.training)
            y = self.mlp(self.post_attention_layernorm(x))
        else:
            y = self.mlp(self.ln_mlp(x) if self.two_norms else normed) + h
        return x + F.dropout(y, self.hidden_dropout, self.training), weights


class FalconPreTrainedModel(PreTrainedModel):
    config_class = FalconConfig
    base_model_prefix = "transformer"
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: FalconConfig) -> "FalconModel":
        return FalconModel(config)


class FalconModel(FalconPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: FalconConfig):
        super().__init__(config)
        # An explicit weight skips nn.Embedding's random init (see base.token_embeddings).
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.h = nn.ModuleList(FalconDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        if config.rotary:
            self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling,
                                              min(config.max_position_embeddings, 8192), config.max_position_embeddings)

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers, under the checkpoints' name `h`."""
        return self.h

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        return embedded(self.word_embeddings, input_ids) if inputs_embeds is None else inputs_embeds

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        if self.config.rotary:
            return super().layer_inputs(x, position_ids, mask, end, attention_mask, cache)
        # ALiBi (Falcon-RW): no rotation; the positions are biases in the float mask attention adds to its scores.
        # Falcon's reference multiplies slopes by positions in bfloat16 (positions past 256 round) and scales the
        # biases with the scores.
        alibi = alibi_mask(attention_mask, mask, self.config.num_attention_heads, x.shape[1], end, x,
                           product_dtype=torch.bfloat16, divisor=math.sqrt(self.config.head_dim))
        return lambda layer: (None, None, alibi)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_f(x)


class FalconForCausalLM(FalconPreTrainedModel, CausalLM):
    """The decoder with its language-model head (tied to the word embeddings by default): next-token logits, and the
    loss when labels are given."""

    tied_weights = {"lm_head.weight": "transformer.word_embeddings.weight"}


class FalconForSequenceClassification(FalconPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class FalconForTokenClassification(FalconPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""

    projection_name = "classifier"


class FalconForQuestionAnswering(FalconPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
