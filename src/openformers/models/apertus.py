"""The Swiss AI Initiative's Apertus decoders (Apertus-8B and 70B, Base and Instruct; model_type "apertus") in plain
torch.nn.

Llama's network (grouped-query attention, RMSNorm, rotary positions with llama3 scaling, attention_bias on q, k, v and
o) with Qwen3's RMSNorm over each head's queries and keys before the rotation (`self_attn.q_norm`, `k_norm`), norms
named `attention_layernorm` and `feedforward_layernorm`, and an MLP without gate or biases: up_proj, xIELU, down_proj.
xIELU (https://arxiv.org/abs/2411.13010) holds per layer two learned parameters and two stored constants,
`mlp.act_fn.alpha_p`, `alpha_n`, `beta` and `eps`, and computes, in the model's dtype,
    x > 0:  softplus(alpha_p) * x * x + beta * x
    x <= 0: (expm1(min(x, eps)) - x) * (beta + softplus(alpha_n)) + beta * x
The heads are the reference's: causal LM and token classification. llama.cpp's "apertus" files keep xIELU's values as
per-layer metadata arrays, which these loaders do not read (no GGUF reader here). The CPU decoding kernel's step runs
these layers, with each layer's xIELU values read from its module.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ApertusConfig
from .llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
)
from .qwen3 import Qwen3Attention


class XIELU(nn.Module):
    """xIELU with the reference's parameter names and initial values (alpha_p 0.8, alpha_n 0.8, beta 0.5, eps -1e-6,
    the alphas stored as the inverse softplus of what they scale by)."""

    def __init__(self):
        super().__init__()
        self.alpha_p = nn.Parameter(torch.empty(1))
        self.alpha_n = nn.Parameter(torch.empty(1))
        self.register_buffer("beta", torch.empty(()))
        self.register_buffer("eps", torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.alpha_p.is_meta:
            return
        with torch.no_grad():
            self.alpha_p.fill_(math.log(math.expm1(0.8)))
            self.alpha_n.fill_(math.log(math.expm1(0.8 - 0.5)))
            self.beta.fill_(0.5)
            self.eps.fill_(-1e-6)

    def forward(self, x):
        alpha_p, alpha_n = F.softplus(self.alpha_p), self.beta + F.softplus(self.alpha_n)
        positive = alpha_p * x * x + self.beta * x
        negative = (torch.expm1(torch.minimum(x, self.eps)) - x) * alpha_n + self.beta * x
        return torch.where(x > 0, positive, negative)


class ApertusMLP(nn.Module):
    def __init__(self, config: ApertusConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = XIELU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.up_proj(x)))


class ApertusDecoderLayer(LlamaDecoderLayer):
    """Llama's layer with Qwen3's attention, the xIELU MLP, and its two norms under the checkpoints' names."""

    attention_class = Qwen3Attention
    mlp_class = ApertusMLP

    def __init__(self, config: ApertusConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.attention_layernorm = self.input_layernorm
        self.feedforward_layernorm = self.post_attention_layernorm
        del self.input_layernorm, self.post_attention_layernorm

    def attention_block(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.self_attn(self.attention_layernorm(x), cos, sin, mask, cache, attention_path)
        return x + h, weights

    def mlp_block(self, x):
        return x + self.mlp(self.feedforward_layernorm(x))


class ApertusPreTrainedModel(LlamaPreTrainedModel):
    config_class = ApertusConfig

    def new_base_model(self, config: ApertusConfig) -> "ApertusModel":
        return ApertusModel(config)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, XIELU):
            module.reset_parameters()


class ApertusModel(ApertusPreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = ApertusDecoderLayer


class ApertusForCausalLM(ApertusPreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class ApertusForTokenClassification(ApertusPreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""
