"""T5, Flan-T5 and mT5 in plain torch.nn: a pre-norm encoder-decoder without position embeddings.

Where positions come in: each stack's first layer owns a table of learned biases, one per head and per bucket of
the distance between a query and a key (exact for short distances, logarithmic up to
relative_attention_max_distance, then one bucket); the encoder's buckets tell left from right, the decoder's see
only the past. The bias is computed once per forward pass and added to the scores of every layer of its stack.
Attention is not scaled by 1/sqrt(head_dim) (T5 folds that into its initialization). Norms scale without centring
(RMS). The feed-forward is ReLU (T5) or gated, act(wi_0 x) * wi_1 x (T5 v1.1, Flan-T5, mT5).

Parameter names are those of Hugging Face checkpoints (`encoder.block.0.layer.0.SelfAttention.q.weight`); one
token table (`shared`) feeds both stacks and, tied, the LM head, whose input is scaled by d_model ** -0.5 when
config.scale_decoder_outputs says so (the original T5). Flan-T5 and mT5 store their own LM head, which is kept.
The decoder keeps an EncoderDecoderCache: its own keys and values per step, and the encoder output's keys and
values, projected once (docs/architecture.md, "Encoder-decoders").

GGUF files of llama.cpp's "t5" and "t5encoder" architectures (its converter's T5, Flan-T5, mT5 and UMT5 files) load
too: `config_from_gguf` reads the sizes from `t5.*` metadata and the rest from which tensors the file holds (gated
feed-forward where ffn_gate is, UMT5 where later layers hold a position table, the tied and scaled head of the
original T5 where output.weight is missing), and `convert_gguf_state_dict` gives the tensors their checkpoint names.
"""

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, MT5Config, T5Config, UMT5Config
from ..generation.cache import DynamicCache, EncoderDecoderCache
from .base import PreTrainedModel, check_inputs, embedded, recorded, seq2seq_cache
from .gpt_neox import gguf_required
from .heads import TokenClassification
from .layers import ACTIVATIONS, attention_mask_for, run_layer
from .losses import question_answering_loss, sequence_classification_loss, shift_tokens_right, token_loss
from .outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions, ModelOutput, Seq2SeqLMOutput
from .outputs import Seq2SeqModelOutput, Seq2SeqQuestionAnsweringModelOutput, Seq2SeqSequenceClassifierOutput


def relative_position_buckets(distance: torch.Tensor, bidirectional: bool, num_buckets: int,
                              max_distance: int) -> torch.Tensor:
    """The bucket of each key-minus-query distance. Bidirectional: half the buckets for keys on the right. Then
    half of the rest for the exact distances 0, 1, ...; the other half spaced logarithmically up to max_distance,
    the last bucket holding everything farther. Causal (decoder): keys on the right all fall in bucket 0."""
    buckets = torch.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        buckets += (distance > 0).long() * num_buckets
        distance = distance.abs()
    else:
        distance = (-distance).clamp(min=0)
    exact = num_buckets // 2
    # The float math of the reference (log of a float32 ratio, truncated), so boundary distances land alike.
    spread = torch.log(distance.float() / exact) / math.log(max_distance / exact) * (num_buckets - exact)
    far = (exact + spread.long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, far)


def config_from_gguf(gguf, **overrides) -> T5Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "t5" (encoder-decoder) or "t5encoder" architecture.

    The converter writes the sizes (`<arch>.embedding_length`, feed_forward_length, block_count and
    decoder_block_count, attention.head_count, key_length, relative_buckets_count, layer_norm_rms_epsilon,
    decoder_start_token_id) but not what tells the variants apart, which the tensors do, as llama.cpp reads them: a
    gated GELU feed-forward (T5 v1.1, Flan-T5, mT5, UMT5) where ffn_gate is, else ReLU; a position table in every
    layer (UMT5, read as a UMT5Config) where a layer after the first holds attn_rel_b; without output.weight, the
    original T5's head tied to the embeddings, with the decoder output scaled by d_model ** -0.5 as the Hugging Face
    model it was converted from scales it (llama.cpp leaves it unscaled: the same greedy tokens, flatter
    probabilities). relative_attention_max_distance is llama.cpp's fixed 128, which every released T5 has. mT5's
    files read as T5's, the same network."""
    arch = gguf.get("general.architecture")
    names = gguf.tensor_names
    every_layer = any(re.fullmatch(r"(enc|dec)\.blk\.[1-9]\d*\.attn_rel_b\.weight", name) for name in names)
    config_class = UMT5Config if every_layer else T5Config
    family = "UMT5" if every_layer else "T5"
    heads = gguf_required(gguf, f"{arch}.attention.head_count")
    d_model = gguf_required(gguf, f"{arch}.embedding_length")
    epsilon = gguf.get(f"{arch}.attention.layer_norm_rms_epsilon", gguf.get(f"{arch}.attention.layer_norm_epsilon"))
    if epsilon is None:
        raise ValueError(f"{gguf.path} lacks the GGUF metadata key {arch}.attention.layer_norm_rms_epsilon, which a "
                         f"{arch} model needs.")
    values = {
        "architectures": [f"{family}EncoderModel" if arch == "t5encoder" else f"{family}ForConditionalGeneration"],
        "vocab_size": gguf.get(f"{arch}.vocab_size") or gguf.array_length("tokenizer.ggml.tokens"),
        "d_model": d_model,
        "d_ff": gguf_required(gguf, f"{arch}.feed_forward_length"),
        "num_layers": gguf_required(gguf, f"{arch}.block_count"),
        "num_heads": heads,
        "d_kv": gguf.get(f"{arch}.attention.key_length") or d_model // heads,
        "relative_attention_num_buckets": gguf_required(gguf, f"{arch}.attention.relative_buckets_count"),
        "layer_norm_epsilon": epsilon,
        "feed_forward_proj": "gated-gelu" if any(name.endswith(".ffn_gate.weight") for name in names) else "relu",
        "n_positions": gguf.get(f"{arch}.context_length", 512),
        "eos_token_id": gguf.get("tokenizer.ggml.eos_token_id", 1),
        "pad_token_id": gguf.get("tokenizer.ggml.padding_token_id", 0),
    }
    if "output.weight" in names:  # a head of its own, unscaled (T5Config's rule for tie_word_embeddings=False)
        values["tie_word_embeddings"] = False
    for key, field_name in (("decoder_block_count", "num_decoder_layers"),
                            ("decoder_start_token_id", "decoder_start_token_id")):
        if gguf.get(f"{arch}.{key}") is not None:
            values[field_name] = gguf.get(f"{arch}.{key}")
    return config_class.from_dict(values, **overrides)


GGUF_CONFIG_READERS.update(t5=config_from_gguf, t5encoder=config_from_gguf)

# llama.cpp's names of a block's tensors (enc.blk.N.<name>, dec.blk.N.<name>) -> the checkpoint's, after
# "encoder.block.N." or "decoder.block.N.". The feed-forward's layer is the encoder's second and the decoder's third.
GGUF_BLOCK_RENAMES = {
    "attn_norm": "layer.0.layer_norm",
    "attn_q": "layer.0.SelfAttention.q",
    "attn_k": "layer.0.SelfAttention.k",
    "attn_v": "layer.0.SelfAttention.v",
    "attn_o": "layer.0.SelfAttention.o",
    "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
    "cross_attn_norm": "layer.1.layer_norm",
    "cross_attn_q": "layer.1.EncDecAttention.q",
    "cross_attn_k": "layer.1.EncDecAttention.k",
    "cross_attn_v": "layer.1.EncDecAttention.v",
    "cross_attn_o": "layer.1.EncDecAttention.o",
    "cross_attn_rel_b": "layer.1.EncDecAttention.relative_attention_bias",
    "ffn_norm": "layer.{ff}.layer_norm",
    "ffn_gate": "layer.{ff}.DenseReluDense.wi_0",
    "ffn_up": "layer.{ff}.DenseReluDense.{up}",
    "ffn_down": "layer.{ff}.DenseReluDense.wo",
}
GGUF_STACKS = {"enc": ("encoder", 1), "dec": ("decoder", 2)}  # name, the feed-forward's layer
GGUF_TOP_RENAMES = {"token_embd": "shared", "output": "lm_head"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: T5Config) -> dict[str, torch.Tensor]:
    """llama.cpp's T5 tensor names to the checkpoint's ("enc.blk.0.ffn_up.weight" ->
    "encoder.block.0.layer.1.DenseReluDense.wi_1.weight", wi without a gate). The tensors need no change: the
    position tables are (buckets, heads) in both. A name not listed stays as it is, for the loader to report."""
    up = "wi_1" if config.is_gated_act else "wi"
    renamed = {}
    for name, tensor in state_dict.items():
        parts = name.split(".")
        if parts[0] in GGUF_STACKS and len(parts) == 3 and parts[1] == "output_norm":
            name = f"{GGUF_STACKS[parts[0]][0]}.final_layer_norm.{parts[2]}"
        elif parts[0] in GGUF_STACKS and len(parts) == 5 and parts[1] == "blk" and parts[3] in GGUF_BLOCK_RENAMES:
            stack, ff = GGUF_STACKS[parts[0]]
            part = GGUF_BLOCK_RENAMES[parts[3]].format(ff=ff, up=up)
            name = f"{stack}.block.{parts[2]}.{part}.{parts[4]}"
        elif len(parts) == 2 and parts[0] in GGUF_TOP_RENAMES:
            name = f"{GGUF_TOP_RENAMES[parts[0]]}.{parts[1]}"
        renamed[name] = tensor
    return renamed


class T5LayerNorm(nn.Module):
    """Scale-only (RMS) norm computed in float32; the result takes the weight's dtype when that is half precision.
    A float16 model keeps its feed-forward output projections in float32 (`kept_in_float32`), so its residual
    stream runs in float32 between the norms, as in the reference."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


def clamp_half(x: torch.Tensor) -> torch.Tensor:
    """float16 hidden states pulled back inside the float16 range (further in when one overflowed), as the
    reference does after each branch so that a float16 T5 does not turn an overflow into NaNs."""
    if x.dtype != torch.float16:
        return x
    largest = torch.finfo(torch.float16).max
    bound = torch.where(torch.isinf(x).any(), largest - 1000, largest)
    return torch.clamp(x, min=-bound, max=bound)


def with_mask(bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The additive attention bias with the masked keys at the dtype's lowest value (what the softmax sees)."""
    return bias if mask is None else bias.masked_fill(~mask, torch.finfo(bias.dtype).min)


class T5Attention(nn.Module):
    """Multi-head attention without biases or scaling; the stack's first self-attention owns the position table."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False, bidirectional: bool = True):
        super().__init__()
        self.n_heads, self.d_kv = config.num_heads, config.d_kv
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.dropout = config.dropout_rate
        inner = config.num_heads * config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(self.num_buckets, config.num_heads)

    def position_bias(self, T: int, S: int, past: int, device: torch.device) -> torch.Tensor:
        """(1, nh, T, S): the learned bias of query past + t attending to key s."""
        queries = torch.arange(past, past + T, device=device)[:, None]
        keys = torch.arange(S, device=device)[None, :]
        buckets = relative_position_buckets(keys - queries, self.bidirectional, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.d_kv).transpose(1, 2)  # (B, nh, T, hs)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split_heads(self.k(source)), self.split_heads(self.v(source))

    def forward(self, x, k, v, bias, eager: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from x (B, T, C) over k, v (B, nh, S, hs) with the additive `bias` (masks included); the output,
        and the softmax weights (B, nh, T, S) on the eager path."""
        B, T, _ = x.shape
        q = self.split_heads(self.q(x))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if eager:
            scores = q @ k.transpose(-2, -1) + bias  # (B, nh, T, S)
            weights = F.softmax(scores.float(), dim=-1).type_as(scores)
            y = F.dropout(weights, p=dropout, training=self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout, scale=1.0)
        return self.o(y.transpose(1, 2).reshape(B, T, -1)), weights


class T5LayerSelfAttention(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool, bidirectional: bool):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, bidirectional)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, bias, layer_idx, cache, eager):
        h = self.layer_norm(x)
        k, v = self.SelfAttention.keys_values(h)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)
        y, weights = self.SelfAttention(h, k, v, bias, eager)
        return x + self.dropout(y), weights


class T5LayerCrossAttention(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.EncDecAttention = T5Attention(config)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, encoder_states, bias, layer_idx, cache, eager):
        h = self.layer_norm(x)
        stored = cache.cross_attention(layer_idx) if isinstance(cache, EncoderDecoderCache) else None
        if stored is not None:  # the encoder output does not change while decoding: projected at the first step
            k, v = stored
        else:
            k, v = self.EncDecAttention.keys_values(encoder_states)
            if isinstance(cache, EncoderDecoderCache):
                k, v = cache.store_cross_attention(layer_idx, k, v)
        y, weights = self.EncDecAttention(h, k, v, bias, eager)
        return x + self.dropout(y), weights


class T5DenseActDense(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = ACTIVATIONS[config.dense_act_fn]

    def forward(self, x):
        return output_projection(self.wo, self.dropout(self.act(self.wi(x))))


class T5DenseGatedActDense(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = ACTIVATIONS[config.dense_act_fn]

    def forward(self, x):
        return output_projection(self.wo, self.dropout(self.act(self.wi_0(x)) * self.wi_1(x)))


def output_projection(wo: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """`wo(h)`, h cast to wo's dtype first: float32 in a float16 model (kept_in_float32)."""
    weight = wo.weight
    if weight.is_floating_point() and h.dtype != weight.dtype:
        h = h.to(weight.dtype)
    return wo(h)


class T5LayerFF(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(config) if config.is_gated_act else T5DenseActDense(config)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x):
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Block(nn.Module):
    """Self-attention, then (decoder) cross-attention over the encoder output, then the feed-forward; each a
    residual branch over its own norm (`layer.0`, `layer.1`, `layer.2` in checkpoints)."""

    def __init__(self, config: T5Config, layer_idx: int, is_decoder: bool):
        super().__init__()
        self.layer_idx = layer_idx
        owns_table = layer_idx == 0 or config.relative_attention_in_every_layer  # UMT5: every block
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, owns_table, bidirectional=not is_decoder)])
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config))
        self.layer.append(T5LayerFF(config))

    def forward(self, x, self_bias, encoder_states, cross_bias, cache, eager):
        x, weights = self.layer[0](x, self_bias, self.layer_idx, cache, eager)
        x = clamp_half(x)
        cross_weights = None
        if len(self.layer) == 3:
            x, cross_weights = self.layer[1](x, encoder_states, cross_bias, self.layer_idx, cache, eager)
            x = clamp_half(x)
        return clamp_half(self.layer[-1](x)), (weights, cross_weights)


class T5Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, with cross-attention): token embeddings, dropout, the
    blocks, a final norm and dropout."""

    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)

    def __init__(self, config: T5Config, is_decoder: bool):
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder
        # Explicit weights skip nn.Embedding's random init, which is slow on the meta device (see llama.py).
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model,
                                         _weight=torch.empty(config.vocab_size, config.d_model))
        layers = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList(T5Block(config, i, is_decoder) for i in range(layers))
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=True, *, encoder_hidden_states=None,
                encoder_attention_mask=None, cache=None) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """The stack's last hidden state (B, T, C), and when asked every layer's input and the final output
        (hidden_states), every layer's attention weights and (decoder) cross-attention weights. Called alone it is
        the encoder of get_encoder(); the model passes the decoder the encoder output and the cache."""
        check_inputs(input_ids, inputs_embeds)
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        eager = output_attentions or config._attn_implementation == "eager"
        argument = "decoder_input_ids" if self.is_decoder else "input_ids"  # what the model was given
        x = embedded(self.embed_tokens, input_ids, argument) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        past = cache.get_seq_length() if cache is not None else 0
        self_mask = self.self_attention_mask(attention_mask, past, T, x.device)
        cross_bias = None
        if encoder_hidden_states is not None:
            S = encoder_hidden_states.shape[1]
            cross_bias = with_mask(x.new_zeros(1, self.config.num_heads, T, S), padding_mask(encoder_attention_mask))
        x = self.dropout(x)
        checkpointing = self.gradient_checkpointing if self.training else None
        hidden_states = [] if output_hidden_states else None
        attentions = [] if output_attentions else None
        cross_attentions = [] if output_attentions and encoder_hidden_states is not None else None
        for block in self.block:
            attention = block.layer[0].SelfAttention
            if hasattr(attention, "relative_attention_bias"):  # the first block's bias serves the others (not UMT5's)
                self_bias = with_mask(attention.position_bias(T, past + T, past, x.device), self_mask)
            if output_hidden_states:
                hidden_states.append(x)
            x, (weights, cross_weights) = run_layer(block, checkpointing, x, self_bias, encoder_hidden_states,
                                                    cross_bias, cache, eager)
            if output_attentions:
                attentions.append(weights)
            if cross_attentions is not None:
                cross_attentions.append(cross_weights)
        x = self.dropout(self.final_layer_norm(x))
        if output_hidden_states:
            hidden_states.append(x)
        output = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=x, cache=cache, hidden_states=recorded(hidden_states), attentions=recorded(attentions),
            cross_attentions=recorded(cross_attentions),
        )
        return output if return_dict is not False else output.to_tuple()

    def self_attention_mask(self, attention_mask, past: int, T: int, device) -> torch.Tensor | None:
        """(B or 1, 1, T, past + T) booleans, or None when every query may see every key (an unpadded encoder)."""
        if not self.is_decoder:
            return padding_mask(attention_mask)
        mask = attention_mask_for(attention_mask, past, T, device)
        if mask is None and T > 1:  # plain causal: the bias needs it spelled out
            mask = torch.ones(T, past + T, dtype=torch.bool, device=device).tril(past)[None, None]
        return mask


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) ones and zeros -> (B, 1, 1, S) booleans, True where a key may be seen; None when nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


class T5PreTrainedModel(PreTrainedModel):
    config_class = T5Config
    base_model_prefix = "transformer"
    input_embeddings_name = "shared"
    # Older checkpoints store a position table for the decoder's first cross-attention, which never used it.
    ignored_checkpoint_keys = (*PreTrainedModel.ignored_checkpoint_keys,
                               r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$")
    projection_name = "classifier"  # token classification's (models/heads.py)
    kept_in_float32 = ("wo",)
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: T5Config) -> "T5EncoderModel":
        return T5EncoderModel(config)

    def _init_weights(self, module: nn.Module) -> None:
        """The reference's init: each projection with std 1/sqrt(its input size) times initializer_factor (the
        query's also over d_kv, standing in for the missing attention scaling), embeddings with std 1."""
        factor = self.config.initializer_factor
        d_model, d_ff, inner = self.config.d_model, self.config.d_ff, self.config.num_heads * self.config.d_kv
        if isinstance(module, T5LayerNorm):
            nn.init.constant_(module.weight, factor)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=factor)
        elif isinstance(module, T5Attention):  # after its children: the position table is set here
            if hasattr(module, "relative_attention_bias"):
                nn.init.normal_(module.relative_attention_bias.weight, std=factor * d_model**-0.5)
            nn.init.normal_(module.q.weight, std=factor * (d_model * self.config.d_kv) ** -0.5)
            nn.init.normal_(module.k.weight, std=factor * d_model**-0.5)
            nn.init.normal_(module.v.weight, std=factor * d_model**-0.5)
            nn.init.normal_(module.o.weight, std=factor * inner**-0.5)
        elif isinstance(module, (T5DenseActDense, T5DenseGatedActDense)):
            for name in ("wi", "wi_0", "wi_1"):
                if hasattr(module, name):
                    nn.init.normal_(getattr(module, name).weight, std=factor * d_model**-0.5)
            nn.init.normal_(module.wo.weight, std=factor * d_ff**-0.5)
        elif isinstance(module, T5ClassificationHead):
            for linear in (module.dense, module.out_proj):
                nn.init.normal_(linear.weight, std=factor * d_model**-0.5)
                nn.init.zeros_(linear.bias)
        elif isinstance(module, nn.Linear) and module.weight.shape[1] == d_model:  # lm_head, classifier, qa_outputs
            is_lm_head = module.weight.shape[0] == self.config.vocab_size
            nn.init.normal_(module.weight, std=factor if is_lm_head else factor * d_model**-0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _output_embeddings_path(self) -> str | None:
        return "lm_head" if hasattr(self, "lm_head") else None  # the stacks' tied tables are inputs, not outputs

    def _shift_right(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The decoder's inputs for `input_ids` (labels): decoder_start_token_id, then all but the last id."""
        return shift_tokens_right(input_ids, self.config.pad_token_id,
                                  getattr(self.config, "decoder_start_token_id", None))

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self._shift_right(labels)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.tie_weights()  # the stacks' tables follow `shared`, also when the LM head is stored apart
        return embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        super().set_input_embeddings(value)
        self.tie_weights()


class T5Seq2Seq(T5PreTrainedModel):
    """The shared token table, the encoder and the decoder, and the pass through both that every encoder-decoder
    class of the family makes."""

    tied_weights = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model,
                                   _weight=torch.empty(config.vocab_size, config.d_model))
        self.encoder = T5Stack(config, is_decoder=False)
        self.decoder = T5Stack(config, is_decoder=True)

    def get_encoder(self) -> T5Stack:
        return self.encoder

    def get_decoder(self) -> T5Stack:
        return self.decoder

    def encode_decode(
        self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
        cache, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states,
    ) -> Seq2SeqModelOutput:
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids, attention_mask, inputs_embeds, output_attentions,
                                           output_hidden_states)
        elif not isinstance(encoder_outputs, ModelOutput):  # a tuple: (last_hidden_state, hidden_states, attentions)
            encoder_outputs = BaseModelOutput(*encoder_outputs[:3])
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.training and self.decoder.gradient_checkpointing is not None:
            use_cache = False  # a checkpointed layer runs twice, which would store its keys twice
        decoded = self.decoder(
            decoder_input_ids, decoder_attention_mask, decoder_inputs_embeds, output_attentions, output_hidden_states,
            encoder_hidden_states=encoder_outputs.last_hidden_state, encoder_attention_mask=attention_mask,
            cache=seq2seq_cache(past_key_values, cache, use_cache),
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoded.last_hidden_state, cache=decoded.cache,
            decoder_hidden_states=decoded.hidden_states, decoder_attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.get("hidden_states"),
            encoder_attentions=encoder_outputs.get("attentions"),
        )


def _decoder_inputs(model: T5PreTrainedModel, input_ids, decoder_input_ids, decoder_inputs_embeds):
    """As the reference's classification and QA heads: without decoder inputs, the encoder's ids shifted right."""
    if decoder_input_ids is None and decoder_inputs_embeds is None:
        if input_ids is None:
            raise ValueError(f"{type(model).__name__} needs decoder_input_ids (or decoder_inputs_embeds) when called "
                             "without input_ids, from which it would make them.")
        return model._shift_right(input_ids)
    return decoder_input_ids


class T5Model(T5Seq2Seq):
    """The encoder-decoder without a head: the decoder's last hidden state (B, T, C) and the encoder's."""

    def forward(
        self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
        encoder_outputs=None, past_key_values=None, *, cache=None, inputs_embeds=None, decoder_inputs_embeds=None,
        use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> Seq2SeqModelOutput | tuple:
        output = self.encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            cache, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states,
        )
        return self.returned(output, return_dict)


class T5ForConditionalGeneration(T5Seq2Seq):
    """Text to text: vocabulary logits at every decoder position, and their loss against `labels` (shifted right,
    they are the decoder's input when none is given)."""

    tied_weights = {**T5Seq2Seq.tied_weights, "lm_head.weight": "shared.weight"}
    # The original T5 scales the decoder output by d_model ** -0.5 before its tied head (config.scale_decoder_outputs).
    scales_decoder_output = True

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def forward(
        self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
        encoder_outputs=None, past_key_values=None, *, cache=None, inputs_embeds=None, decoder_inputs_embeds=None,
        labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
        logits_to_keep=0,
    ) -> Seq2SeqLMOutput | tuple:
        if labels is not None:
            if logits_to_keep:
                raise ValueError("labels need the logits of every position: leave logits_to_keep at 0 with labels.")
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self._shift_right(labels)
        base = self.encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            cache, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states,
        )
        hidden = base.last_hidden_state
        hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        if self.scales_decoder_output and getattr(self.config, "scale_decoder_outputs", False):
            hidden = hidden * self.config.d_model**-0.5
        logits = self.lm_head(hidden)
        loss = None if labels is None else token_loss(logits, labels)
        output = Seq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(base))
        return self.returned(output, return_dict)


def _seq2seq_fields(base: Seq2SeqModelOutput) -> dict:
    """What a head passes on from the encoder-decoder's output besides its own logits and loss."""
    return {name: base.get(name) for name in ("cache", "decoder_hidden_states", "decoder_attentions",
                                              "cross_attentions", "encoder_last_hidden_state",
                                              "encoder_hidden_states", "encoder_attentions")}


class T5EncoderModel(T5PreTrainedModel):
    """The encoder alone (sentence embeddings, T5-based retrievers): its last hidden state (B, T, C)."""

    tied_weights = {"encoder.embed_tokens.weight": "shared.weight"}
    # A full T5 checkpoint loads into the encoder alone: the decoder and the LM head are left out.
    ignored_checkpoint_keys = (*T5PreTrainedModel.ignored_checkpoint_keys, r"^decoder\.", r"^lm_head\.")

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model,
                                   _weight=torch.empty(config.vocab_size, config.d_model))
        self.encoder = T5Stack(config, is_decoder=False)

    def get_encoder(self) -> T5Stack:
        return self.encoder

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *, token_type_ids=None,
        cache=None, inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
        return_dict=None,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """T5 has no position ids or token types; an encoder keeps no cache (those arguments must be None)."""
        if past_key_values is not None or cache is not None:
            raise ValueError(f"{type(self).__name__} is an encoder and keeps no cache: pass past_key_values=None.")
        encoded = self.encoder(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        return self.returned(encoded, return_dict)


class T5ClassificationHead(nn.Module):
    """dense, tanh, out_proj over the decoder's state at the last EOS, with dropout before each projection."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.out_proj = nn.Linear(config.d_model, config.num_labels)

    def forward(self, x):
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))


class T5ForSequenceClassification(T5PreTrainedModel):
    """One label (or score) per sequence, read from the decoder's state at the last EOS token of the input (the
    decoder runs on the input shifted right when no decoder_input_ids are given), as the reference."""

    tied_weights = {f"transformer.{k}": f"transformer.{v}" for k, v in T5Seq2Seq.tied_weights.items()}
    input_embeddings_name = "transformer.shared"
    # A T5ForConditionalGeneration checkpoint's LM head is not used by the classifier.
    ignored_checkpoint_keys = (*T5PreTrainedModel.ignored_checkpoint_keys, r"(^|\.)lm_head\.weight$")

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.transformer = T5Model(config)
        self.classification_head = T5ClassificationHead(config)

    def get_encoder(self) -> T5Stack:
        return self.transformer.encoder

    def forward(
        self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
        encoder_outputs=None, *, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> Seq2SeqSequenceClassifierOutput | tuple:
        if input_ids is None:
            raise ValueError(f"{type(self).__name__} reads the EOS positions of input_ids: pass input_ids, not "
                             "inputs_embeds.")
        base = self.transformer(
            input_ids, attention_mask, _decoder_inputs(self, input_ids, decoder_input_ids, decoder_inputs_embeds),
            decoder_attention_mask, encoder_outputs, inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds, use_cache=False if labels is not None else use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden = base.last_hidden_state
        eos = input_ids.eq(self.config.eos_token_id).to(hidden.device)
        counts = eos.sum(dim=1)
        if bool((counts == 0).any()) or bool((counts != counts[0]).any()):
            raise ValueError(f"{type(self).__name__} needs the same number (at least one) of EOS tokens (id "
                             f"{self.config.eos_token_id}) in every row of input_ids; got {counts.tolist()}.")
        last_eos = hidden[eos].view(hidden.shape[0], -1, hidden.shape[-1])[:, -1]  # (B, C)
        logits = self.classification_head(last_eos)
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config)
        output = Seq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **_seq2seq_fields(base))
        return self.returned(output, return_dict)


class T5ForTokenClassification(T5PreTrainedModel, TokenClassification):
    """One label per token, from the encoder alone."""

    tied_weights = {"transformer.encoder.embed_tokens.weight": "transformer.shared.weight"}
    input_embeddings_name = "transformer.shared"
    ignored_checkpoint_keys = T5EncoderModel.ignored_checkpoint_keys + (r"^transformer\.decoder\.",)


class T5ForQuestionAnswering(T5Seq2Seq):
    """Extractive QA over the decoder's states (the decoder reads the input shifted right unless given its own):
    start and end logits per decoder position."""

    ignored_checkpoint_keys = T5ForSequenceClassification.ignored_checkpoint_keys

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.qa_outputs = nn.Linear(config.d_model, config.num_labels)

    def forward(
        self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
        encoder_outputs=None, *, start_positions=None, end_positions=None, inputs_embeds=None,
        decoder_inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
        return_dict=None,
    ) -> Seq2SeqQuestionAnsweringModelOutput | tuple:
        training = start_positions is not None and end_positions is not None
        base = self.encode_decode(
            input_ids, attention_mask, _decoder_inputs(self, input_ids, decoder_input_ids, decoder_inputs_embeds),
            decoder_attention_mask, encoder_outputs, None, None, inputs_embeds, decoder_inputs_embeds,
            False if training else use_cache, output_attentions, output_hidden_states,
        )
        start, end = self.qa_outputs(base.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()
        loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions) if training else None
        output = Seq2SeqQuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                                     **_seq2seq_fields(base))
        return self.returned(output, return_dict)


# mT5: the same architecture; its config never scales the decoder output.


class MT5PreTrainedModel(T5PreTrainedModel):
    config_class = MT5Config


class MT5Model(MT5PreTrainedModel, T5Model):
    """mT5's encoder-decoder without a head."""


class MT5ForConditionalGeneration(MT5PreTrainedModel, T5ForConditionalGeneration):
    """mT5 text to text; the decoder output goes to the LM head unscaled."""

    scales_decoder_output = False


class MT5EncoderModel(MT5PreTrainedModel, T5EncoderModel):
    """mT5's encoder alone."""


class MT5ForSequenceClassification(MT5PreTrainedModel, T5ForSequenceClassification):
    """One label per sequence, from the decoder's state at the last EOS."""


class MT5ForTokenClassification(MT5PreTrainedModel, T5ForTokenClassification):
    """One label per token, from the encoder alone."""

    def new_base_model(self, config: MT5Config) -> "MT5EncoderModel":
        return MT5EncoderModel(config)


class MT5ForQuestionAnswering(MT5PreTrainedModel, T5ForQuestionAnswering):
    """Extractive QA over the decoder's states."""
