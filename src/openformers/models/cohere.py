"""Cohere decoders in plain torch.nn (model_type "cohere": Command R, Command R+, Aya 23, Aya Expanse).

Llama's attention (grouped-query, biases on every projection with `attention_bias`) and SwiGLU MLP, arranged
otherwise: each layer normalizes its input once and attention and the MLP both read it, their outputs added to the
residual together (`x + attn(norm(x)) + mlp(norm(x))`). The norms are LayerNorms without a bias (mean-centred,
unlike RMSNorm), computed in float32 as the reference computes them; Command R+ also norms each head's queries and
keys (`use_qk_norm`) with one weight per head (`q_norm.weight` of shape (heads, head_dim)). Rotary embeddings turn
interleaved pairs (2i, 2i + 1) of every head, GPT-J's form (`layers.apply_interleaved_rope`), in float32. The head
is tied to the embeddings and its logits are multiplied by `logit_scale`. The reference has a base model and a causal
LM for Cohere, and so does this file.

GGUF files of llama.cpp's "command-r" architecture keep Llama's tensor names, the query and key rows as they are
(llama.cpp rotates consecutive pairs, as Cohere does), no ffn_norm, the per-head q/k norms as (heads, head_dim)
tensors, and `command-r.logit_scale` and `command-r.attention.layer_norm_epsilon` in their metadata. The CPU decoding
kernel runs Cohere's step (kernels/llama.py: LayerNorms without biases, interleaved pairs, logit_scale after the
head, use_qk_norm's per-head norms a weight row for each head).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, CohereConfig
from ..weights import rename
from .base import PreTrainedModel, token_embeddings
from .decoder import DecoderModel
from .heads import CausalLM
from .layers import RotaryEmbedding, apply_interleaved_rope_in_float32
from .llama import GGUF_RENAMES, LlamaAttention, LlamaMLP, gguf_config_values


def gguf_cohere_values(gguf, arch: str) -> dict:
    """The config values llama.cpp's Cohere architectures ("command-r", "cohere2") state alike: Llama's, with the
    logit scale and the LayerNorms' epsilon from `<arch>.*` and the attention's biases from the tensors."""
    values = gguf_config_values(gguf)
    for key in ("logit_scale", "attention.layer_norm_epsilon"):
        if gguf.get(f"{arch}.{key}") is None:
            raise ValueError(f"{gguf.path} lacks the GGUF metadata key {arch}.{key}, which a {arch} model needs.")
    del values["rms_norm_eps"]  # Cohere norms are LayerNorms (their epsilon read below)
    values.update(
        logit_scale=gguf.get(f"{arch}.logit_scale"),
        layer_norm_eps=gguf.get(f"{arch}.attention.layer_norm_epsilon"),
        attention_bias="blk.0.attn_q.bias" in gguf.tensor_names,
    )
    if values["head_dim"] == values["hidden_size"] // values["num_attention_heads"]:
        del values["head_dim"]  # not a Cohere field; kept (in extra) only where it differs from the derived one
    return values


def config_from_gguf(gguf, **overrides) -> CohereConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "command-r" architecture (whose converter writes the
    context length from model_max_length, the one Command R was trained on, and no rope scaling)."""
    values = gguf_cohere_values(gguf, "command-r")
    values.update(architectures=["CohereForCausalLM"], use_qk_norm="blk.0.attn_q_norm.weight" in gguf.tensor_names)
    return CohereConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["command-r"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, and the per-head norms of the queries and keys.
COHERE_GGUF_RENAMES = {**GGUF_RENAMES, "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: CohereConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the rows are in the reference's order already)."""
    return rename(state_dict, COHERE_GGUF_RENAMES)


class CohereLayerNorm(nn.Module):
    """A LayerNorm without a bias over the last dimension, in float32; a (heads, head_dim) weight scales each head
    by its own row (the per-head q/k norms)."""

    def __init__(self, shape: int | tuple[int, ...], eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x.float(), x.shape[-1:], eps=self.eps)
        return (self.weight.float() * normed).to(x.dtype)


class CohereAttention(LlamaAttention):
    """Llama's attention rotating interleaved pairs, each head's queries and keys normed first with `use_qk_norm`."""

    rope = staticmethod(apply_interleaved_rope_in_float32)  # as the reference rotates Cohere's

    def __init__(self, config: CohereConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.use_qk_norm = config.use_qk_norm
        if self.use_qk_norm:
            self.q_norm = CohereLayerNorm((self.n_head, self.head_dim), config.layer_norm_eps)
            self.k_norm = CohereLayerNorm((self.n_kv_head, self.head_dim), config.layer_norm_eps)

    def project(self, x):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim)
        if self.use_qk_norm:  # on (B, T, heads, hs), each head's row of the weight on its own head
            q, k = self.q_norm(q), self.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs), (B, n_kv, T, hs) twice


class CohereDecoderLayer(nn.Module):
    attention_class = CohereAttention  # Cohere 2's leaves its full-attention layers unrotated

    def __init__(self, config: CohereConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = CohereLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.self_attn = self.attention_class(config, layer_idx)
        self.mlp = LlamaMLP(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h = self.input_layernorm(x)  # one norm for both branches
        y, weights = self.self_attn(h, cos, sin, mask, cache, attention_path)
        return x + y + self.mlp(h), weights  # summed in the reference's order


class CoherePreTrainedModel(PreTrainedModel):
    config_class = CohereConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: CohereConfig) -> "CohereModel":
        return CohereModel(config)


class CohereModel(CoherePreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = CohereDecoderLayer  # Cohere 2 names its own

    def __init__(self, config: CohereConfig):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.num_hidden_layers))
        self.norm = CohereLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling,
                                          min(config.max_position_embeddings, 8192), config.max_position_embeddings)


class CohereForCausalLM(CoherePreTrainedModel, CausalLM):
    """The decoder with its language-model head (tied to the embeddings by default): next-token logits multiplied by
    logit_scale, and the loss when labels are given."""

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden) * self.config.logit_scale
