"""Phi-3 and Phi-4 decoders in plain torch.nn (model_type "phi3"): Llama's network with fused projections.

Differences from llama.py: one `qkv_proj` (queries, keys, values stacked by rows) and one `gate_up_proj` (gate
then up), as the checkpoints store them; dropout on both residual branches (`resid_pdrop`); rotary embeddings over
the first `partial_rotary_factor` of each head's dimensions (Phi-4-mini: 0.75); and LongRoPE scaling, whose short
or long factors a forward call picks by its furthest position (layers.RotaryEmbedding). Parameter names are those
of Hugging Face checkpoints; GGUF files of llama.cpp's "phi3" architecture are read here too (`config_from_gguf`,
`convert_gguf_state_dict`: the fused tensors keep their layout, the longrope factors are tensors there). On the
CPU, kernels/llama.py runs the decoding step of these layers as one compiled call, reading the fused weights as
they are.

One difference from the reference remains: a generation whose prompt fits in original_max_position_embeddings but
whose output runs past it keeps the keys cached with the short factors, where the reference's generate recomputes
the whole sequence once with the long ones at that step.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Phi3Config
from ..weights import rename
from .base import PreTrainedModel, token_embeddings
from .decoder import DecoderModel
from .heads import CausalLM, SequenceClassification, TokenClassification
from .layers import (
    ACTIVATIONS,
    RMSNorm,
    RotaryEmbedding,
    apply_rope,
    decoder_attention,
)


def config_from_gguf(gguf, **overrides) -> Phi3Config:
    """The config of an opened `weights.GGUFFile` of architecture "phi3": hyper-parameters from its `phi3.*`
    metadata, the longrope factors from its rope_factors_long/short tensors, special tokens from `tokenizer.ggml.*`."""

    def required(key: str):
        value = gguf.get(f"phi3.{key}")
        if value is None:
            raise ValueError(f"{gguf.path} lacks the GGUF metadata key phi3.{key}, which a phi3 model needs.")
        return value

    heads, hidden = required("attention.head_count"), required("embedding_length")
    context = gguf.get("phi3.context_length", 4096)
    values = {
        "architectures": ["Phi3ForCausalLM"],
        "vocab_size": gguf.get("phi3.vocab_size") or gguf.array_length("tokenizer.ggml.tokens"),
        "hidden_size": hidden,
        "intermediate_size": required("feed_forward_length"),
        "num_hidden_layers": required("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": gguf.get("phi3.attention.head_count_kv", heads),
        "rms_norm_eps": gguf.get("phi3.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": gguf.get("phi3.rope.freq_base", 10000.0),
        "partial_rotary_factor": gguf.get("phi3.rope.dimension_count", hidden // heads) / (hidden // heads),
        "max_position_embeddings": context,
        "original_max_position_embeddings": gguf.get("phi3.rope.scaling.original_context_length", context),
        "sliding_window": gguf.get("phi3.attention.sliding_window") or None,  # llama.cpp writes 0 for none
        "tie_word_embeddings": "output.weight" not in gguf.tensor_names,
        "bos_token_id": gguf.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": gguf.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": gguf.get("tokenizer.ggml.padding_token_id"),
    }
    if "rope_factors_long.weight" in gguf.tensor_names:
        values["rope_scaling"] = {"rope_type": "longrope", **gguf_longrope_factors(gguf)}
    return Phi3Config.from_dict(values, **overrides)


def gguf_longrope_factors(gguf) -> dict:
    """longrope's per-pair long_factor and short_factor, from the rope_factors_long and rope_factors_short tensors in
    which llama.cpp's converter writes them (Phi-3's, PhiMoE's)."""
    return {"long_factor": gguf.tensor("rope_factors_long.weight").tolist(),
            "short_factor": gguf.tensor("rope_factors_short.weight").tolist()}


GGUF_CONFIG_READERS["phi3"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part; llama.cpp keeps Phi-3's fused qkv and gate_up tensors as they are.
GGUF_RENAMES = {
    "token_embd": "model.embed_tokens",
    "blk": "model.layers",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_norm": "post_attention_layernorm",
    "output_norm": "model.norm",
    "output": "lm_head",
}


# The tensors llama.cpp's converter writes for longrope scaling, which the config holds (gguf_longrope_factors).
GGUF_LONGROPE_TENSORS = ("rope_factors_long.weight", "rope_factors_short.weight")


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Phi3Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names; the rope factor tensors are in the config already."""
    return rename({name: t for name, t in state_dict.items() if name not in GGUF_LONGROPE_TENSORS}, GGUF_RENAMES)


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotate=apply_rope) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dimensions of each head of x (B, nh, T, hs) with `rotate` (`apply_rope`, or
    GPT-J's `apply_interleaved_rope`); the others pass unchanged."""
    rotated = cos.shape[-1]
    if rotated == x.shape[-1]:
        return rotate(x, cos, sin)
    return torch.cat([rotate(x[..., :rotated], cos, sin), x[..., rotated:]], dim=-1)


class Phi3Attention(nn.Module):
    def __init__(self, config: Phi3Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim
        )
        self.dropout = config.attention_dropout
        self.qkv_proj = nn.Linear(config.hidden_size, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, _ = x.shape
        kv_size = self.n_kv_head * self.head_dim
        q, k, v = self.qkv_proj(x).split([self.n_head * self.head_dim, kv_size, kv_size], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path)
        return self.o_proj(y), weights


class Phi3MLP(nn.Module):
    def __init__(self, config: Phi3Config):
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


class Phi3DecoderLayer(nn.Module):
    def __init__(self, config: Phi3Config, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Phi3Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Phi3MLP(config)
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_mlp_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + self.resid_attn_dropout(h)
        return x + self.resid_mlp_dropout(self.mlp(self.post_attention_layernorm(x))), weights


class Phi3PreTrainedModel(PreTrainedModel):
    config_class = Phi3Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Phi3Config) -> "Phi3Model":
        return Phi3Model(config)


class Phi3Model(Phi3PreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: Phi3Config):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(Phi3DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.sliding_window = config.sliding_window
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.model_rope_scaling(),
                                          min(config.max_position_embeddings, 8192), config.max_position_embeddings)


class Phi3ForCausalLM(Phi3PreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""

class Phi3ForSequenceClassification(Phi3PreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Phi3ForTokenClassification(Phi3PreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""
