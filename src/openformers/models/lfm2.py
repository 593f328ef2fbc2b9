"""LFM2 decoders (LiquidAI/LFM2-350M, 700M, 1.2B, 2.6B; model_type "lfm2") in plain torch.nn.

After the token embeddings, each layer is a pre-norm block of two halves: `operator_norm` then either a gated short
convolution (`conv`) or attention (`self_attn`), as `layer_types` says, added to the residual stream; then `ffn_norm`
and a SwiGLU MLP (`feed_forward`: w1 gate, w3 up, w2 down, mixtral.MixtralExpert's names) added too. The final norm
is `embedding_norm`, and the head is tied to the embeddings by default.
- The convolution: `in_proj` makes B, C and x (hidden_size each) from the normed input, Bx = B * x runs through a
  causal depthwise convolution of `conv_L_cache` taps (`conv`, biased with `conv_bias`, as in_proj and out_proj are),
  y = C * conv(Bx), then `out_proj`. Padding (a 0 in attention_mask) zeroes the block's input at those positions,
  as the reference does, so without biases a left-padded row's state stays zero until its first token (with
  `conv_bias`, in_proj's bias reaches the convolution at padded positions, in the reference as here).
- The attention: Qwen3's, an RMSNorm over each head's queries and keys before the rotation (`q_layernorm`,
  `k_layernorm`), no biases, the output projection named `out_proj`.
The cache is a `generation.HybridCache`: the attention layers' keys and values, and per convolution layer its last
conv_L_cache inputs (mamba.causal_conv's state; no scan state). It cannot be cropped, so assisted decoding is refused,
and a plain DynamicCache or a StaticCache handed to the model is refused by name (mamba.state_cache); the user's
DynamicCache(config=model.config) is a HybridCache, as the reference's is a cache with conv layers.
GGUF files of llama.cpp's "lfm2" architecture load here (`shortconv.in_proj`, `shortconv.conv` stored as
(hidden_size, conv_L_cache), `shortconv.out_proj`; `token_embd_norm` the final norm; `lfm2.attention.head_count_kv`
a per-layer list, 0 for a convolution layer; `lfm2.shortconv.l_cache`; `feed_forward_length` the MLP's adjusted
width). LFM2-MoE (lfm2_moe.py) builds on these layers. The CPU decoding kernel refuses the model type.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Lfm2Config
from ..generation.cache import HybridCache
from ..weights import rename
from .base import PreTrainedModel, token_embeddings
from .decoder import DecoderModel
from .gpt_neox import gguf_required
from .heads import CausalLM
from .layers import RMSNorm, RotaryEmbedding, decoder_attention
from .llama import LlamaAttention
from .mamba import causal_conv, masked, state_cache
from .mixtral import MixtralExpert
from .qwen3 import normed_heads


def gguf_config_values(gguf) -> dict:
    """What llama.cpp's "lfm2" and "lfm2moe" files state alike: sizes, the layers' kinds (head_count_kv 0 for a
    convolution layer), the convolution's taps and biases, the norms' epsilon, the rope base, tied embeddings when
    there is no output.weight, and the special tokens."""
    arch = gguf.get("general.architecture")
    layers = gguf_required(gguf, f"{arch}.block_count")
    kv_heads = gguf_required(gguf, f"{arch}.attention.head_count_kv")
    kv_heads = kv_heads if isinstance(kv_heads, list) else [kv_heads] * layers
    if len(kv_heads) != layers or not any(kv_heads) or len({n for n in kv_heads if n}) > 1:
        raise ValueError(f"{gguf.path} has {arch}.attention.head_count_kv={kv_heads}: openformers reads one count "
                         f"per layer ({layers}), 0 for a convolution layer, the same for every attention layer.")
    return {
        "vocab_size": gguf.get(f"{arch}.vocab_size") or gguf.tensors["token_embd.weight"].shape[-1],
        "hidden_size": gguf_required(gguf, f"{arch}.embedding_length"),
        "num_hidden_layers": layers,
        "num_attention_heads": gguf_required(gguf, f"{arch}.attention.head_count"),
        "num_key_value_heads": max(kv_heads),
        "layer_types": ["full_attention" if n else "conv" for n in kv_heads],
        "conv_L_cache": gguf_required(gguf, f"{arch}.shortconv.l_cache"),
        "conv_bias": any(name.endswith("shortconv.in_proj.bias") for name in gguf.tensor_names),
        "norm_eps": gguf.get(f"{arch}.attention.layer_norm_rms_eps", 1e-5),
        "rope_theta": gguf.get(f"{arch}.rope.freq_base", 1_000_000.0),
        "max_position_embeddings": gguf.get(f"{arch}.context_length", 128_000),
        "tie_word_embeddings": "output.weight" not in gguf.tensor_names,
        "bos_token_id": gguf.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": gguf.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": gguf.get("tokenizer.ggml.padding_token_id"),
    }


def config_from_gguf(gguf, **overrides) -> Lfm2Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "lfm2" architecture, whose feed_forward_length is
    the MLP's width as built (no further adjustment)."""
    values = {"architectures": ["Lfm2ForCausalLM"], **gguf_config_values(gguf),
              "intermediate_size": gguf_required(gguf, "lfm2.feed_forward_length"), "block_auto_adjust_ff_dim": False}
    return Lfm2Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["lfm2"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part.
GGUF_RENAMES = {
    "token_embd_norm": "model.embedding_norm",
    "token_embd": "model.embed_tokens",
    "blk": "model.layers",
    "attn_norm": "operator_norm",
    "attn_q_norm": "self_attn.q_layernorm",
    "attn_k_norm": "self_attn.k_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.out_proj",
    "shortconv": "conv",  # its in_proj, conv and out_proj keep their names
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_up": "feed_forward.w3",
    "ffn_down": "feed_forward.w2",
    "output": "lm_head",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names and give the convolution's (hidden_size, conv_L_cache) weight
    back its checkpoints' (hidden_size, 1, conv_L_cache) shape (no row permutation: llama.cpp rotates LFM2's halves
    as Hugging Face does)."""
    state_dict = rename(state_dict, GGUF_RENAMES)
    for name, tensor in state_dict.items():
        if name.endswith(".conv.conv.weight"):
            state_dict[name] = tensor.reshape(tensor.shape[0], 1, -1)
    return state_dict


class Lfm2ShortConv(nn.Module):
    """The gated short convolution (see the module docstring)."""

    def __init__(self, config: Lfm2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        C, K = config.hidden_size, config.conv_L_cache
        self.conv = nn.Conv1d(C, C, K, groups=C, bias=config.conv_bias, padding=K - 1)
        self.in_proj = nn.Linear(C, 3 * C, bias=config.conv_bias)
        self.out_proj = nn.Linear(C, C, bias=config.conv_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache) -> torch.Tensor:
        """x (B, T, C) and the (B, T) padding mask of its positions (None: no padding)."""
        b, c, h = self.in_proj(masked(x, mask)).transpose(1, 2).chunk(3, dim=1)  # (B, C, T) each
        state = None if cache is None else cache.state(self.layer_idx)
        y, conv_state = causal_conv(self.conv, b * h, None if state is None else state[0])
        if cache is not None:
            cache.store(self.layer_idx, conv_state, None, x.shape[1])
        return self.out_proj((c * y.to(c.dtype)).transpose(1, 2))


class Lfm2Attention(LlamaAttention):
    """Qwen3's attention under LFM2's names: q_layernorm, k_layernorm, and out_proj for the output projection."""

    def __init__(self, config: Lfm2Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.out_proj = self._modules.pop("o_proj")
        self.q_layernorm = RMSNorm(self.head_dim, config.norm_eps)
        self.k_layernorm = RMSNorm(self.head_dim, config.norm_eps)

    def project(self, x):
        return normed_heads(self, x, self.q_layernorm, self.k_layernorm)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        q, k, v = self.rotated(x, cos, sin)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, 0.0, attention_path)
        return self.out_proj(y), weights


class Lfm2DecoderLayer(nn.Module):
    """operator_norm, then the convolution or the attention, then ffn_norm and the feed-forward part, each added to
    the residual stream. A convolution layer takes the (B, T) padding mask where an attention layer takes its mask."""

    def __init__(self, config: Lfm2Config, layer_idx: int):
        super().__init__()
        self.is_attention_layer = config.attends(layer_idx)
        if self.is_attention_layer:
            self.self_attn = Lfm2Attention(config, layer_idx)
        else:
            self.conv = Lfm2ShortConv(config, layer_idx)
        self.feed_forward = self.new_feed_forward(config, layer_idx)
        self.operator_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.ffn_norm = RMSNorm(config.hidden_size, config.norm_eps)

    def new_feed_forward(self, config: Lfm2Config, layer_idx: int) -> nn.Module:
        return MixtralExpert(config.hidden_size, config.feed_forward_size)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        x, weights = self.attention_block(x, cos, sin, mask, cache, attention_path)
        return self.mlp_block(x), weights

    # The two residual halves, which gradient checkpointing checkpoints apart (models/layers.run_layer).
    def attention_block(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h = self.operator_norm(x)
        if self.is_attention_layer:
            h, weights = self.self_attn(h, cos, sin, mask, cache, attention_path)
        else:
            h, weights = self.conv(h, mask, cache), None
        return x + h, weights

    def mlp_block(self, x):
        return x + self.feed_forward(self.ffn_norm(x))


class Lfm2PreTrainedModel(PreTrainedModel):
    config_class = Lfm2Config
    base_model_prefix = "model"
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Lfm2Config) -> "Lfm2Model":
        return Lfm2Model(config)

    def new_cache(self) -> HybridCache:
        """The cache generate decodes with: keys and values for the attention layers, states for the others."""
        return HybridCache(config=self.config)


class Lfm2Model(Lfm2PreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state after embedding_norm."""

    layer_class = Lfm2DecoderLayer

    def __init__(self, config: Lfm2Config):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.rope_scaling, min(config.max_position_embeddings, 8192),
            config.max_position_embeddings,
        )
        self.embedding_norm = RMSNorm(config.hidden_size, config.norm_eps)

    def cache_for_call(self, past_key_values, cache, use_cache):
        return state_cache(past_key_values, cache, use_cache, self)

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        """Attention layers get the rotary tables and the attention mask; convolution layers the padding mask of
        the new positions, none for a single token (a decoding step's token is never padding)."""
        cos, sin, _ = super().layer_inputs(x, position_ids, mask, end, attention_mask, cache)(None)
        T = x.shape[1]
        padding = None if attention_mask is None or T == 1 else attention_mask[:, -T:]
        return lambda layer: (cos, sin, mask if layer.is_attention_layer else padding)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding_norm(x)


class Lfm2ForCausalLM(Lfm2PreTrainedModel, CausalLM):
    """The decoder with its language-model head (tied to the embeddings by default): next-token logits, and the loss
    when labels are given."""
