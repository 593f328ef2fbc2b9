"""StableLM decoders in plain torch.nn (model_type "stablelm": StableLM-3B-4E1T, Stable Code 3B, StableLM 2).

Llama's attention and SwiGLU MLP with StableLM's parts: LayerNorms with biases (`layer_norm_eps`) before attention,
before the MLP and after the last layer; rotary embeddings over the first `partial_rotary_factor` of each head
(0.25 in every checkpoint); a bias on q/k/v with `use_qkv_bias` (none on o_proj or the MLP); with `qk_layernorm`
(StableLM 2 12B) a LayerNorm without a bias for each query head and each key head, each with its own weight
(`self_attn.q_layernorm.norms.{h}`), before the rotation; and with `use_parallel_residual` one normed input for
attention and the MLP, whose outputs are added to the residual together (the layer then has no
post_attention_layernorm). The MLP's output goes through `hidden_dropout`. The heads are the reference's: causal LM
(its head untied unless `tie_word_embeddings`), sequence and token classification.

GGUF files of llama.cpp's "stablelm" architecture load too (`config_from_gguf`, `convert_gguf_state_dict`): their
rows need no un-permuting (llama.cpp rotates StableLM the way Hugging Face does), the per-head norms come stacked as
one (heads, head_dim) tensor per layer, and a layer without ffn_norm is a parallel one. The CPU decoding kernel runs
StableLM's step (kernels/llama.py: LayerNorms with biases, sequential or parallel branches, qk_layernorm's per-head
LayerNorms a weight row for each head).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, StableLmConfig
from ..weights import rename
from .base import PreTrainedModel, token_embeddings
from .decoder import DecoderModel
from .gpt_neox import gguf_layer_norm_decoder_values, gguf_required
from .heads import CausalLM, SequenceClassification, TokenClassification
from .layers import RotaryEmbedding
from .llama import GGUF_RENAMES, LlamaAttention, LlamaMLP
from .phi3 import apply_partial_rope


def config_from_gguf(gguf, **overrides) -> StableLmConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "stablelm" architecture; the biases, the q/k norms
    and the parallel residual are read from which tensors the file has, as llama.cpp reads them."""
    values = gguf_layer_norm_decoder_values(gguf, "stablelm", "layer_norm_eps")
    heads = values["num_attention_heads"]
    head_dim = values["hidden_size"] // heads
    tensors = gguf.tensor_names
    values.update(
        architectures=["StableLmForCausalLM"],
        intermediate_size=gguf_required(gguf, "stablelm.feed_forward_length"),
        num_key_value_heads=gguf.get("stablelm.attention.head_count_kv", heads),
        partial_rotary_factor=gguf.get("stablelm.rope.dimension_count", head_dim) / head_dim,
        use_qkv_bias="blk.0.attn_q.bias" in tensors,
        qk_layernorm="blk.0.attn_q_norm.weight" in tensors,
        use_parallel_residual="blk.0.ffn_norm.weight" not in tensors,
    )
    return StableLmConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["stablelm"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, and the q/k norms (split per head by convert_gguf_state_dict).
STABLELM_GGUF_RENAMES = {**GGUF_RENAMES, "attn_q_norm": "self_attn.q_layernorm", "attn_k_norm": "self_attn.k_layernorm"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: StableLmConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names and give each head its own norm weight (llama.cpp's converter
    stacks a layer's per-head weights into one (heads, head_dim) tensor); the rows are in the reference's order."""
    converted = {}
    for name, tensor in rename(state_dict, STABLELM_GGUF_RENAMES).items():
        if name.endswith(("q_layernorm.weight", "k_layernorm.weight")):
            for h, weight in enumerate(tensor.reshape(-1, config.head_dim)):
                converted[name.replace(".weight", f".norms.{h}.weight")] = weight
        else:
            converted[name] = tensor
    return converted


class LayerNormPerHead(nn.Module):
    """A LayerNorm without a bias over each head's dimensions, with a weight of its own for each head (`norms.{h}`,
    the checkpoints' names)."""

    def __init__(self, head_dim: int, heads: int, eps: float):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(head_dim, eps=eps, bias=False) for _ in range(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, heads, T, hs), each head normed and scaled by its own weight."""
        weight = torch.stack([norm.weight for norm in self.norms])[:, None, :]  # (heads, 1, hs)
        return F.layer_norm(x, x.shape[-1:], eps=self.norms[0].eps) * weight


class StableLmAttention(LlamaAttention):
    """Llama's attention turning the first rotary_dim dimensions of each head, its queries and keys normed head by
    head before that with `qk_layernorm`."""

    rope = staticmethod(apply_partial_rope)

    def __init__(self, config: StableLmConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.qk_layernorm = config.qk_layernorm
        if self.qk_layernorm:
            self.q_layernorm = LayerNormPerHead(self.head_dim, self.n_head, config.layer_norm_eps)
            self.k_layernorm = LayerNormPerHead(self.head_dim, self.n_kv_head, config.layer_norm_eps)

    def project(self, x):
        q, k, v = super().project(x)  # (B, nh, T, hs), (B, n_kv, T, hs) twice
        if self.qk_layernorm:
            q, k = self.q_layernorm(q), self.k_layernorm(k)
        return q, k, v


class StableLmDecoderLayer(nn.Module):
    def __init__(self, config: StableLmConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = StableLmAttention(config, layer_idx)
        self.parallel = config.use_parallel_residual
        if not self.parallel:
            self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = LlamaMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        normed = self.input_layernorm(x)
        h, weights = self.self_attn(normed, cos, sin, mask, cache, attention_path)
        if self.parallel:  # the MLP reads attention's input; both are added in the reference's order
            return x + h + self.dropout(self.mlp(normed)), weights
        x = x + h
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x))), weights


class StableLmPreTrainedModel(PreTrainedModel):
    config_class = StableLmConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: StableLmConfig) -> "StableLmModel":
        return StableLmModel(config)


class StableLmModel(StableLmPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: StableLmConfig):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(StableLmDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling,
                                          min(config.max_position_embeddings, 8192), config.max_position_embeddings)


class StableLmForCausalLM(StableLmPreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class StableLmForSequenceClassification(StableLmPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class StableLmForTokenClassification(StableLmPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""
