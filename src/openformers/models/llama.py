"""Llama-style decoders in plain torch.nn: RMSNorm, rotary positions, grouped-query attention, SwiGLU.

Parameter names are those of Hugging Face checkpoints (`model.layers.0.self_attn.q_proj.weight`), so a
checkpoint loads without renaming. GGUF files (llama.cpp) are read here too: `config_from_gguf` builds the
config from their metadata (Llama 3.x's rope_freqs tensor gives its llama3 rope_scaling), and
`convert_gguf_state_dict` renames their tensors and undoes the permutation of the query and key rows.

Mistral (attention over a sliding window) and Qwen2 (biases on q/k/v) are configurations of these
classes (configs.MistralConfig, configs.Qwen2Config); MistralForCausalLM, Qwen2Model... are subclasses
that only carry the reference's class names, so their checkpoints load as the class the reference names.
EXAONE 3.0/3.5 (configs.ExaoneConfig) runs these very classes, as in the reference; its checkpoints' other module
names (transformer.h.N.attn.attention...) are renamed at load and written back at save (EXAONE_STACK_NAMES,
EXAONE_LAYER_NAMES). Its GGUF files (llama.cpp's "exaone" architecture: LG's EXAONE-3.5 GGUFs) are Llama's files with
the query and key rows in the reference's order.
The heads: causal LM, sequence classification (pooled at the last token that is not padding), token
classification and extractive QA.
"""

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, ExaoneConfig, LlamaConfig, MistralConfig, Qwen2Config
from ..weights import rename
from .base import PreTrainedModel, token_embeddings
from .decoder import DecoderModel
from .layers import (
    RMSNorm,
    RotaryEmbedding,
    apply_rope,
    decoder_attention,
    rope_inverse_frequencies,
)
from .heads import CausalLM, QuestionAnswering, SequenceClassification, TokenClassification

# GGUF `general.architecture` -> the config class of the files this family reads (Mistral's say "llama").
GGUF_ARCHITECTURES = {"llama": LlamaConfig, "qwen2": Qwen2Config, "exaone": ExaoneConfig}


def config_from_gguf(gguf, **overrides) -> LlamaConfig:
    """The config of an opened `weights.GGUFFile`, as the class its `general.architecture` names (EXAONE 3's as
    Llama's classes, which the reference runs for it)."""
    config_class = GGUF_ARCHITECTURES[gguf.get("general.architecture")]
    architectures = [f"{FAMILY_NAMES.get(config_class.model_type, 'Llama')}ForCausalLM"]
    return config_class.from_dict({"architectures": architectures, **gguf_config_values(gguf)}, **overrides)


# The architectures whose norms' epsilon llama.cpp requires: a file without it is damaged (others default to 1e-5).
_EPSILON_REQUIRED = {"exaone"}


def gguf_config_values(gguf, partial_rotary: bool = False) -> dict:
    """A Llama-style config's values from an opened `weights.GGUFFile` (Qwen3's too): hyper-parameters from its
    `<arch>.*` metadata, special tokens from `tokenizer.ggml.*`, tied embeddings when it has no `output.weight`.
    With `partial_rotary` (GLM-4's), the rotated share of each head as `partial_rotary_factor`; else a file that
    rotates part of each head is refused."""
    arch = gguf.get("general.architecture")

    def required(key: str):
        value = gguf.get(f"{arch}.{key}")
        if value is None:
            raise ValueError(f"{gguf.path} lacks the GGUF metadata key {arch}.{key}, which a {arch} model needs.")
        return value

    heads = required("attention.head_count")
    hidden = required("embedding_length")
    head_dim = gguf.get(f"{arch}.attention.key_length") or hidden // heads
    rotary_dims = gguf.get(f"{arch}.rope.dimension_count", head_dim)
    if rotary_dims != head_dim and not partial_rotary:
        raise ValueError(
            f"{gguf.path} rotates {rotary_dims} of {head_dim} dimensions per head ({arch}.rope.dimension_count); "
            "openformers supports rotary embeddings over the whole head only."
        )
    values = {"partial_rotary_factor": rotary_dims / head_dim} if partial_rotary else {}
    return values | {
        "vocab_size": gguf.get(f"{arch}.vocab_size") or gguf.array_length("tokenizer.ggml.tokens"),
        "hidden_size": hidden,
        "intermediate_size": required("feed_forward_length"),
        "num_hidden_layers": required("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": gguf.get(f"{arch}.attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": (required("attention.layer_norm_rms_epsilon") if arch in _EPSILON_REQUIRED
                         else gguf.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": gguf.get(f"{arch}.rope.freq_base", 10000.0),
        "rope_scaling": gguf_rope_scaling(gguf, arch, head_dim),
        "max_position_embeddings": gguf.get(f"{arch}.context_length", 2048),
        "tie_word_embeddings": "output.weight" not in gguf.tensor_names,
        "bos_token_id": gguf.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": gguf.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": gguf.get("tokenizer.ggml.padding_token_id"),
    }


def gguf_rope_scaling(gguf, arch: str, head_dim: int) -> dict | None:
    """The rope_scaling of a file of llama.cpp's architecture `arch`: Llama 3.1's from a rope_freqs tensor, else YaRN or
    linear scaling from `<arch>.rope.scaling.*`, else None."""
    if "rope_freqs.weight" in gguf.tensor_names:
        return _llama3_scaling_of_rope_freqs(gguf, head_dim, gguf.get(f"{arch}.rope.freq_base", 10000.0))
    kind = gguf.get(f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return None
    if kind == "yarn":  # gpt-oss's, DeepSeek's, Qwen2's and Qwen3's; the band's ends when the file states them
        betas = {name: gguf.get(f"{arch}.rope.scaling.yarn_{name}") for name in ("beta_fast", "beta_slow")}
        return {"rope_type": "yarn", "factor": float(gguf.get(f"{arch}.rope.scaling.factor")),
                "original_max_position_embeddings": gguf.get(f"{arch}.rope.scaling.original_context_length"),
                **{name: value for name, value in betas.items() if value is not None}}
    if kind != "linear":
        raise ValueError(
            f"{gguf.path} uses {kind!r} rope scaling ({arch}.rope.scaling.type); openformers reads 'linear' and "
            "'yarn' rope scaling from GGUF files only."
        )
    return {"rope_type": "linear", "factor": float(gguf.get(f"{arch}.rope.scaling.factor"))}


def _llama3_scaling_of_rope_freqs(gguf, head_dim: int, theta: float) -> dict | None:
    """Llama 3.1's rope_scaling, from the `rope_freqs` tensor llama.cpp's converter writes in its place.

    The tensor holds the number each pair's frequency is divided by: 1 for wavelengths below the band
    [original_max_position_embeddings / high_freq_factor, original_max_position_embeddings / low_freq_factor],
    `factor` above it, and inside 1 / ((1 - s) / factor + s), where s grows linearly with 1 / wavelength from 0 at the
    band's top to 1 at its bottom. Only the band's two ends and `factor` shape the frequencies, so the ends are
    solved from the first and last pair inside the band and written as low_freq_factor 1 with
    original_max_position_embeddings at the top end (Llama 3.x's own values: 1, 4 and 8192). The frequencies of the
    result are checked against the file's.
    """
    factors = gguf.tensor("rope_freqs.weight").double()
    inv_freq = rope_inverse_frequencies(head_dim, theta, None).double()
    if factors.shape != inv_freq.shape:
        raise ValueError(f"{gguf.path}: rope_freqs.weight has {factors.numel()} factors, but a head of {head_dim} "
                         f"dimensions rotates {inv_freq.numel()} pairs.")
    factor = factors.max().item()
    if factor == 1.0:
        return None
    inside = (factors > 1.0 + 1e-6) & (factors < factor * (1 - 1e-6))
    if int(inside.sum()) < 2:
        raise ValueError(
            f"{gguf.path}: rope_freqs.weight has {int(inside.sum())} factor(s) between 1 and its largest, {factor:g}; "
            "openformers reads Llama 3.1 rope scaling from such a tensor only when at least two pairs rotate inside "
            "the band where it blends, which fixes the band's ends."
        )
    smooth = (1 / factors[inside] - 1 / factor) / (1 - 1 / factor)  # s of each pair inside the band
    x = inv_freq[inside] / (2 * math.pi)  # 1 / wavelength
    slope = (smooth[-1] - smooth[0]) / (x[-1] - x[0])
    top = 1 / (x[0] - smooth[0] / slope).item()  # the wavelength where s is 0
    bottom = 1 / (x[0] + (1 - smooth[0]) / slope).item()  # where s is 1
    expected = (inv_freq / factors).float()
    # Round numbers as a config.json holds them, unless the file's frequencies need the exact solution.
    for stretch, context, high in ((round(factor, 5), round(top), round(round(top) / bottom, 5)),
                                   (factor, top, top / bottom)):
        scaling = {"rope_type": "llama3", "factor": stretch, "low_freq_factor": 1.0, "high_freq_factor": high,
                   "original_max_position_embeddings": context}
        if torch.allclose(rope_inverse_frequencies(head_dim, theta, scaling), expected, rtol=1e-5, atol=0):
            return scaling
    raise ValueError(
        f"{gguf.path}: the factors of rope_freqs.weight are not those of Llama 3.1 rope scaling (1, then a smooth "
        "band, then one factor), the only per-pair scaling openformers reads from GGUF files."
    )


GGUF_CONFIG_READERS.update(dict.fromkeys(GGUF_ARCHITECTURES, config_from_gguf))


# llama.cpp name part -> Hugging Face name part ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight").
GGUF_RENAMES = {
    "token_embd": "model.embed_tokens",
    "blk": "model.layers",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_norm": "post_attention_layernorm",
    "output_norm": "model.norm",
    "output": "lm_head",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: LlamaConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names and put the query and key rows back in their order.

    llama.cpp's converter regroups each head's rows from (two halves, hs/2 pairs) to (hs/2 pairs, two
    halves) to suit its rotary kernel; reading the rows as (heads, hs/2, 2) and swapping the last two
    axes restores the original order. Qwen2 files keep the original order (llama.cpp rotates them the
    way Hugging Face does), and so do EXAONE 3's ("exaone": the reference's names, which the converter maps to
    Llama's llama.cpp names, and its rows).
    """
    # rope_freqs (Llama 3.1's scaled frequencies) is read into the config's rope_scaling.
    state_dict = rename({name: t for name, t in state_dict.items() if name != "rope_freqs.weight"}, GGUF_RENAMES)
    if config.model_type in ("qwen2", "exaone"):
        return state_dict
    for i in range(config.num_hidden_layers):
        for name, heads in (("q_proj", config.num_attention_heads), ("k_proj", config.num_key_value_heads)):
            for kind in ("weight", "bias"):
                key = f"model.layers.{i}.self_attn.{name}.{kind}"
                if key in state_dict:
                    state_dict[key] = _unpermute_rows(state_dict[key], heads)
    return state_dict


def _unpermute_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    rest = w.shape[1:]
    return w.reshape(heads, -1, 2, *rest).transpose(1, 2).reshape(w.shape)


class LlamaAttention(nn.Module):
    # How queries and keys turn by position: the whole head here; StableLM's turn their first dimensions only
    # (phi3.apply_partial_rope).
    rope = staticmethod(apply_rope)

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim
        )
        bias = config.attention_bias
        qkv_bias = bias or config.qkv_bias
        self.q_proj = nn.Linear(config.hidden_size, self.n_head * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_head * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_head * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.hidden_size, bias=self.output_bias(config))
        # Dropout on the attention weights while training (a Llama config.json's attention_dropout stays in extra).
        self.dropout = getattr(config, "attention_dropout", 0.0)
        self.rotates = True  # False: queries and keys attend as projected (SmolLM3's unrotated layers)
        self.scale = None  # the scores' factor; None: head_dim ** -0.5 (Granite's attention_multiplier)
        self.sinks = None  # a score per head that joins each query's softmax and attends to nothing (gpt-oss's)

    @staticmethod
    def output_bias(config) -> bool:
        """Whether o_proj has a bias: with attention_bias here (Seed-OSS has a switch of its own, Helium none)."""
        return config.attention_bias

    def project(self, x):
        """Queries (B, nh, T, hs), keys and values (B, n_kv, T, hs) before the rotation: what a family varies."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        return q, k, v

    def rotated(self, x, cos, sin):
        """Queries, keys and values as they attend: projected, then turned by position (Hunyuan norms them after)."""
        q, k, v = self.project(x)
        if self.rotates:
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        return q, k, v

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        q, k, v = self.rotated(x, cos, sin)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path, self.scale, sinks=self.sinks)
        return self.output(y), weights

    def output(self, y):
        """The heads' outputs (B, T, nh * hs) projected back to the hidden size (BitNet norms them first)."""
        return self.o_proj(y)


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    attention_class = LlamaAttention  # a family with other attention (Qwen3's q/k norms) names its own
    mlp_class = LlamaMLP  # and one with another MLP (GLM's fused gate/up projection) its own
    norm_class = RMSNorm  # and one whose norms scale otherwise (Helium's, in float32) its own

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = self.norm_class(config.hidden_size, config.rms_norm_eps)
        self.self_attn = self.attention_class(config, layer_idx)
        self.post_attention_layernorm = self.norm_class(config.hidden_size, config.rms_norm_eps)
        self.mlp = self.mlp_class(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        x, weights = self.attention_block(x, cos, sin, mask, cache, attention_path)
        return self.mlp_block(x), weights

    # The two residual halves, which gradient checkpointing checkpoints apart (models/layers.run_layer).
    def attention_block(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        return x + h, weights

    def mlp_block(self, x):
        return x + self.mlp(self.post_attention_layernorm(x))


# model_type -> the reference's class-name prefix, so saved configs name the reference's classes.
FAMILY_NAMES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}

# EXAONE 3.0/3.5 (model_type "exaone") is Llama's network, which the reference runs as Llama's classes; its checkpoints
# name the modules as the original code did (the reference's conversion map, which its save_pretrained undoes): a causal
# LM's stack under "transformer" (a base model's keeps Llama's names there), and every layer's parts.
EXAONE_STACK_NAMES = {"wte": "embed_tokens", "h": "layers", "ln_f": "norm"}
EXAONE_LAYER_NAMES = {
    "attn.attention": "self_attn", "out_proj": "o_proj", "ln_1": "input_layernorm", "ln_2": "post_attention_layernorm",
    "c_fc_0": "gate_proj", "c_fc_1": "up_proj", "c_proj": "down_proj",
}


def _exaone_renames(to_exaone: bool) -> list[tuple[re.Pattern, str]]:
    """(pattern, replacement) pairs taking EXAONE's names to Llama's, or back with `to_exaone`."""
    stack = {v: k for k, v in EXAONE_STACK_NAMES.items()} if to_exaone else EXAONE_STACK_NAMES
    layer = {v: k for k, v in EXAONE_LAYER_NAMES.items()} if to_exaone else EXAONE_LAYER_NAMES
    prefix, new_prefix = ("model", "transformer") if to_exaone else ("transformer", "model")
    renames = [(re.compile(rf"^{prefix}\.{re.escape(old)}\."), f"{new_prefix}.{new}.") for old, new in stack.items()]
    return renames + [(re.compile(rf"\.{re.escape(old)}\."), f".{new}.") for old, new in layer.items()]


def _renamed(state_dict: dict[str, torch.Tensor], renames: list) -> dict[str, torch.Tensor]:
    renamed = {}
    for name, tensor in state_dict.items():
        for pattern, new in renames:
            name = pattern.sub(new, name)
        renamed[name] = tensor
    return renamed


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    @staticmethod
    def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # EXAONE 3's names (its attention under attn.attention), which no other Llama checkpoint has, become Llama's.
        if any(".attn.attention." in name for name in state_dict):
            return _renamed(state_dict, _exaone_renames(to_exaone=False))
        return state_dict

    def to_checkpoint_layout(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.config.model_type == "exaone":  # saved under EXAONE's names, as the reference saves it
            return _renamed(state_dict, _exaone_renames(to_exaone=True))
        return state_dict

    def architecture_name(self) -> str:
        # Mistral and Qwen2 run Llama's own classes; the families built on them have classes of their own names.
        name = super().architecture_name()
        family = FAMILY_NAMES.get(self.config.model_type)
        return name.replace("Llama", family, 1) if family and name.startswith("Llama") else name

    def new_base_model(self, config: LlamaConfig) -> "LlamaModel":
        """The decoder stack a head builds on: LlamaModel here, MistralModel or Qwen2Model in those families."""
        return LlamaModel(config)


class LlamaModel(LlamaPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = LlamaDecoderLayer  # a family with other layers (Qwen3) names its own

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.num_hidden_layers))
        self.norm = self.new_norm(config)
        self.sliding_window = config.sliding_window
        self.rotary_emb = self.new_rotary(config)

    def new_norm(self, config: LlamaConfig) -> nn.Module:
        """The norm after the last layer (OLMo 2 and StarCoder2 build their own kinds)."""
        return RMSNorm(config.hidden_size, config.rms_norm_eps)

    def new_rotary(self, config: LlamaConfig, scaling: dict | None = None) -> RotaryEmbedding:
        """The rotary tables of every layer, by the config's rope_scaling or the `scaling` a family reads otherwise
        (PhiMoE's longrope with its mscales)."""
        scaling = config.rope_scaling if scaling is None else scaling
        return RotaryEmbedding(config.head_dim, config.rope_theta, scaling, min(config.max_position_embeddings, 8192),
                               config.max_position_embeddings)


class LlamaForCausalLM(LlamaPreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""

class LlamaForSequenceClassification(LlamaPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class LlamaForTokenClassification(LlamaPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""


class LlamaForQuestionAnswering(LlamaPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

    base_model_prefix = "transformer"  # the reference's name in Llama and Qwen2 QA checkpoints ("model" in Mistral's)


# Mistral and Qwen2 under their own names -------------------------------------------------------------------------
# The same network and heads as Llama's (their differences are config fields); the classes exist so that a
# checkpoint comes back as the class the reference names (MistralForCausalLM...), with that family's config class.


class MistralPreTrainedModel(LlamaPreTrainedModel):
    config_class = MistralConfig

    def new_base_model(self, config: LlamaConfig) -> "MistralModel":
        return MistralModel(config)


class MistralModel(MistralPreTrainedModel, LlamaModel):
    pass


class MistralForCausalLM(MistralPreTrainedModel, LlamaForCausalLM):
    pass


class MistralForSequenceClassification(MistralPreTrainedModel, LlamaForSequenceClassification):
    pass


class MistralForTokenClassification(MistralPreTrainedModel, LlamaForTokenClassification):
    pass


class MistralForQuestionAnswering(MistralPreTrainedModel, LlamaForQuestionAnswering):
    base_model_prefix = "model"


class Qwen2PreTrainedModel(LlamaPreTrainedModel):
    config_class = Qwen2Config

    def new_base_model(self, config: LlamaConfig) -> "Qwen2Model":
        return Qwen2Model(config)


class Qwen2Model(Qwen2PreTrainedModel, LlamaModel):
    pass


class Qwen2ForCausalLM(Qwen2PreTrainedModel, LlamaForCausalLM):
    pass


class Qwen2ForSequenceClassification(Qwen2PreTrainedModel, LlamaForSequenceClassification):
    pass


class Qwen2ForTokenClassification(Qwen2PreTrainedModel, LlamaForTokenClassification):
    pass


class Qwen2ForQuestionAnswering(Qwen2PreTrainedModel, LlamaForQuestionAnswering):
    pass
