"""Gemma, Gemma 2 and Gemma 3 (text) decoders in plain torch.nn.

The first Gemma is Llama's decoder with RMSNorms that scale by `1 + weight` (a checkpoint stores the offset from
one), embeddings multiplied by sqrt(hidden_size), a GELU-tanh gated MLP and the head tied to the embeddings; its
layers are Gemma 2's parts in Llama's order (GemmaDecoderLayer).

What sets Gemma 2 and 3 apart from Llama: RMSNorms that scale by `1 + weight` (a checkpoint stores the offset from one),
a norm after attention and after the MLP as well as before each, embeddings multiplied by sqrt(hidden_size),
a GELU-tanh gated MLP, attention scores scaled by `query_pre_attn_scalar` and bounded by a tanh soft-cap, the
final logits soft-capped the same way, and layers alternating between a sliding window and full attention
(`config.layer_types`). Soft-capping cannot run in torch's fused attention, so Gemma 2 layers compute attention
step by step, as the reference does (it has no sdpa path for Gemma 2).

Gemma 3's text decoder adds an RMSNorm over each head's queries and keys (`config.qk_norm`) and rotates the
sliding layers' positions with a base of their own (`rope_local_base_freq`); it soft-caps the logits only when its
config asks, never the attention scores (its reference reads attn_logit_softcapping but does not apply it), and
attends with torch's fused kernel, as its reference does.

Gemma 3's image-and-text folders (model_type "gemma3": gemma-3-4b-it...) load as their text decoder: the config is
their text_config (configs.Gemma3Config) and `gemma3_text_weights` takes the language model's tensors, leaving out the
vision tower and projector (images are not supported).

Parameter names are those of Hugging Face checkpoints. GGUF files of llama.cpp's "gemma", "gemma2" and "gemma3"
architectures load too: `config_from_gguf` reads their metadata and `convert_gguf_state_dict` renames their tensors
and takes back the 1 llama.cpp's converter adds to every norm weight. The heads are the reference's: for Gemma and
Gemma 2 causal LM, sequence and token classification; for Gemma 3 text causal LM and sequence classification.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Gemma2Config, Gemma3TextConfig, GemmaConfig
from ..weights import rename
from .base import PreTrainedModel
from .decoder import DecoderModel, SlidingLayersDecoder
from .heads import CausalLM, SequenceClassification, TokenClassification
from .layers import (
    ACTIVATIONS,
    RotaryEmbedding,
    apply_rope,
    decoder_attention,
)
from .llama import GGUF_RENAMES, gguf_config_values


# GGUF `general.architecture` -> (config class, the reference's causal LM class, one full-attention layer in how many).
GGUF_ARCHITECTURES = {
    "gemma": (GemmaConfig, "GemmaForCausalLM", 1),
    "gemma2": (Gemma2Config, "Gemma2ForCausalLM", 2),
    "gemma3": (Gemma3TextConfig, "Gemma3ForCausalLM", 6),
}
# Depths at which llama.cpp takes a Gemma for its 27B model, whose query_pre_attn_scalar is hidden_size / heads.
_DEPTH_OF_27B = {"gemma2": 46, "gemma3": 62}


def config_from_gguf(gguf, **overrides) -> Gemma2Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "gemma2" or "gemma3" architecture.

    What the files do not say is what llama.cpp assumes: query_pre_attn_scalar is head_dim (hidden_size / heads
    for the 27B models), Gemma 3's sliding layers rotate with base 10000, one layer in 2 (Gemma 2) or 6 (Gemma 3)
    attends to everything unless `attention.sliding_window_pattern` says otherwise.
    """
    arch = gguf.get("general.architecture")
    config_class, causal_lm, period = GGUF_ARCHITECTURES[arch]
    values = gguf_config_values(gguf)
    if arch == "gemma":  # Llama's layers: nothing slides, nothing is capped
        return config_class.from_dict({**values, "architectures": [causal_lm]}, **overrides)
    layers = values["num_hidden_layers"]
    pattern = gguf.get(f"{arch}.attention.sliding_window_pattern", period)
    if isinstance(pattern, list):  # one flag per layer, True where it is windowed
        sliding = [bool(pattern[i]) for i in range(layers)]
    else:
        sliding = [(i + 1) % pattern != 0 for i in range(layers)]
    values.update(
        architectures=[causal_lm],
        layer_types=["sliding_attention" if windowed else "full_attention" for windowed in sliding],
        sliding_window=gguf.get(f"{arch}.attention.sliding_window", config_class.sliding_window),
        query_pre_attn_scalar=(values["hidden_size"] // values["num_attention_heads"]
                               if layers == _DEPTH_OF_27B[arch] else values["head_dim"]),
        # Absent, llama.cpp caps as the family's reference does by default (Gemma 2: 50 and 30; Gemma 3: neither).
        attn_logit_softcapping=gguf.get(f"{arch}.attn_logit_softcapping", config_class.attn_logit_softcapping),
        final_logit_softcapping=gguf.get(f"{arch}.final_logit_softcapping", config_class.final_logit_softcapping),
    )
    return config_class.from_dict(values, **overrides)


GGUF_CONFIG_READERS.update(dict.fromkeys(GGUF_ARCHITECTURES, config_from_gguf))

# llama.cpp name part -> Hugging Face name part, beyond Llama's ("ffn_norm" is the norm before the MLP here).
GEMMA_GGUF_RENAMES = {
    **GGUF_RENAMES,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Gemma2Config | GemmaConfig
                            ) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the first Gemma's as Llama's: its "ffn_norm" is the norm before
    the MLP, post_attention_layernorm); its converter stores each norm's weight as 1 + w (the scale it applies), so 1
    comes off again. The q/k rows keep their order (llama.cpp rotates Gemma as Hugging Face does)."""
    state_dict = rename(state_dict, GGUF_RENAMES if isinstance(config, GemmaConfig) else GEMMA_GGUF_RENAMES)
    return {name: t - 1 if name.endswith("norm.weight") else t for name, t in state_dict.items()}


class GemmaRMSNorm(nn.Module):
    """RMSNorm whose weight is stored as its offset from one (zeros: the identity scale)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32 whatever the model dtype, scale included, as the reference does; cast back at the end.
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)


class GemmaScaledEmbedding(nn.Embedding):
    """Token embeddings multiplied by sqrt(hidden_size), in the weights' dtype (so a bfloat16 model rounds the
    factor as the reference does). Inputs given as `inputs_embeds` are taken as they are."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None):
        # An explicit weight skips nn.Embedding's random init (see base.token_embeddings).
        super().__init__(num_embeddings, embedding_dim, padding_idx,
                         _weight=torch.empty(num_embeddings, embedding_dim))
        self.scale = embedding_dim**0.5

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) * torch.tensor(self.scale, dtype=self.weight.dtype)


class Gemma2Attention(nn.Module):
    """Every Gemma's attention: scores scaled by query_pre_attn_scalar ** -0.5 (the first Gemma's head_dim ** -0.5),
    soft-capped where `softcap` is set (Gemma 2), each head's queries and keys normed where `qk_norm` (Gemma 3)."""

    def __init__(self, config: Gemma2Config | GemmaConfig, layer_idx: int, query_pre_attn_scalar: float,
                 softcap: float | None = None, qk_norm: bool = False):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim
        )
        self.scale = query_pre_attn_scalar**-0.5
        self.softcap = softcap
        self.dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_head * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_head * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.hidden_size, bias=bias)
        self.qk_norm = qk_norm
        if self.qk_norm:
            self.q_norm = GemmaRMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = GemmaRMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, attention_path):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path, self.scale, self.softcap)
        return self.o_proj(y), weights


class Gemma2MLP(nn.Module):
    """Every Gemma's gated MLP, its gate through `activation` (a GELU)."""

    def __init__(self, config: Gemma2Config | GemmaConfig, activation: str):
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)
        self.act_fn = ACTIVATIONS[activation]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Gemma2DecoderLayer(nn.Module):
    def __init__(self, config: Gemma2Config, layer_idx: int):
        super().__init__()
        self.is_sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        softcap = config.attn_logit_softcapping if config.caps_attention else None
        self.self_attn = Gemma2Attention(config, layer_idx, config.query_pre_attn_scalar, softcap, config.qk_norm)
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Gemma2MLP(config, config.hidden_activation)
        self.post_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, attention_path):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + self.post_attention_layernorm(h)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x))), weights


class Gemma2PreTrainedModel(PreTrainedModel):
    config_class = Gemma2Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)
    # The reference computes Gemma 2's attention step by step whatever attn_implementation says (it has no sdpa
    # path), which shows at queries that may see no key (left padding): they get the mean of the values.
    has_sdpa_path = False

    def attention_path(self, output_attentions: bool) -> str:
        return super().attention_path(output_attentions) if self.has_sdpa_path else "eager"

    def new_base_model(self, config: Gemma2Config) -> "Gemma2Model":
        return Gemma2Model(config)


class Gemma2Model(Gemma2PreTrainedModel, SlidingLayersDecoder):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Gemma2DecoderLayer

    def __init__(self, config: Gemma2Config):
        super().__init__(config)
        self.embed_tokens = GemmaScaledEmbedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.num_hidden_layers))
        self.norm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.rope_scaling, min(config.max_position_embeddings, 8192),
            config.max_position_embeddings,
        )
        self.local_rotary_emb = self.rotary_emb  # the sliding layers' positions (Gemma 3 gives them their own base)


class Gemma2ForCausalLM(Gemma2PreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits (soft-capped), and the loss when labels are given."""

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap  # bounded to (-cap, cap), as the model was trained
        return logits

class Gemma2ForSequenceClassification(Gemma2PreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Gemma2ForTokenClassification(Gemma2PreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""


# Gemma 3 text --------------------------------------------------------------------------------------------------------
# Gemma 2's network with the differences its config states (q/k norms, no soft-caps by default) and a rotary table of
# its own for the sliding layers; the classes carry the reference's names and config class.


# Gemma 3's image-and-text checkpoints (model_type "gemma3"): the language model's tensors under these prefixes (the
# reference's save_pretrained writes the first, the released folders the second), and the parts skipped.
GEMMA3_LANGUAGE_MODEL_PREFIXES = {"model.language_model.": "model.", "language_model.model.": "model.",
                                  "language_model.lm_head.": "lm_head."}
GEMMA3_VISION_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.", "vision_tower.",
                          "multi_modal_projector.")


def gemma3_text_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Gemma 3 checkpoint's text decoder weights under Gemma3ForCausalLM's names: an image-and-text checkpoint's
    language model renamed and its vision tower and projector left out; a text checkpoint's as they are."""
    weights = {}
    for name, tensor in state_dict.items():
        if name.startswith(GEMMA3_VISION_PREFIXES):
            continue
        prefix = next((p for p in GEMMA3_LANGUAGE_MODEL_PREFIXES if name.startswith(p)), None)
        weights[GEMMA3_LANGUAGE_MODEL_PREFIXES[prefix] + name[len(prefix):] if prefix else name] = tensor
    return weights


class Gemma3PreTrainedModel(Gemma2PreTrainedModel):
    config_class = Gemma3TextConfig
    has_sdpa_path = True
    from_checkpoint_layout = staticmethod(gemma3_text_weights)

    def new_base_model(self, config: Gemma3TextConfig) -> "Gemma3TextModel":
        return Gemma3TextModel(config)


class Gemma3TextModel(Gemma3PreTrainedModel, Gemma2Model):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: Gemma3TextConfig):
        super().__init__(config)
        self.local_rotary_emb = RotaryEmbedding(
            config.head_dim, config.rope_local_base_freq, None, min(config.max_position_embeddings, 8192)
        )


class Gemma3ForCausalLM(Gemma3PreTrainedModel, Gemma2ForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class Gemma3TextForSequenceClassification(Gemma3PreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


# Gemma (the first) ----------------------------------------------------------------------------------------------------
# Gemma 2's parts in Llama's layer: a norm before the attention and one before the MLP, neither after, no window and no
# soft-cap. The classes carry the reference's names and config class.


class GemmaDecoderLayer(nn.Module):
    is_sliding = False  # every layer attends to every position (the decoding step reads the flag)

    def __init__(self, config: GemmaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Gemma2Attention(config, layer_idx, config.head_dim)
        # The norm of the MLP's input, named as in Llama's layer (and the reference's checkpoints).
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Gemma2MLP(config, config.hidden_act)

    def forward(self, x, cos, sin, mask, cache, attention_path):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), weights


class GemmaPreTrainedModel(Gemma2PreTrainedModel):
    config_class = GemmaConfig
    has_sdpa_path = True

    def new_base_model(self, config: GemmaConfig) -> "GemmaModel":
        return GemmaModel(config)


class GemmaModel(GemmaPreTrainedModel, Gemma2Model):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = GemmaDecoderLayer
    layer_inputs = DecoderModel.layer_inputs  # no window: a sliding_window a config.json may hold is not Gemma's


class GemmaForCausalLM(GemmaPreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class GemmaForSequenceClassification(GemmaPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class GemmaForTokenClassification(GemmaPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""
