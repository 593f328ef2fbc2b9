"""GPT-Neo decoders in plain torch.nn (model_type "gpt_neo": EleutherAI/gpt-neo-125m, 1.3B, 2.7B).

GPT-2's layout under the reference's names (`transformer.wte`, `wpe`, `h.N.ln_1`, `attn.attention.{q,k,v}_proj`
without biases, `attn.attention.out_proj` with one, `ln_2`, `mlp.c_fc`, `mlp.c_proj`, `ln_f`, an `lm_head` tied to
`wte`): learned positions counted from the cache, pre-LayerNorm blocks and an MLP with the config's
`activation_function`. Attention scores are not scaled by 1/sqrt(head_dim), and the eager path multiplies queries
and keys in float32, as the reference's attention does. Layers alternate between "global" attention and "local"
attention (`config.attention_layers`), a local query seeing its own position and the `window_size - 1` before it:
decoder.SlidingLayersDecoder's masks, without rotations. token_type_ids, as in the reference, add their rows of the
token table to the embeddings.

GGUF: llama.cpp has no GPT-Neo architecture, so there is no file to read. The CPU kernel's decoding step takes its
models with a tanh GELU (kernels/llama.py), its local layers' windows and unscaled scores; a padded prompt runs the
layers, whose padding positions attend as `added_mask` says.
"""

import torch
from torch import nn

from ..configs import GPTNeoConfig
from .base import PreTrainedModel
from .decoder import GPT2NamedDecoder, SlidingLayersDecoder, check_learned_positions
from .heads import CausalLM, QuestionAnswering, SequenceClassification, TokenClassification
from .layers import ACTIVATIONS, decoder_attention, positions_and_mask


def added_mask(unpadded: torch.Tensor | None, padded: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float (B, 1, T, S) mask the reference adds to a layer's scores, from the layer's boolean mask without the
    padding (`unpadded`, (1, 1, T, S); None: plain causal) and the causal mask with it (`padded`, (B, 1, T, S)).

    The reference sets the scores its layer hides to float32's lowest value, then adds its causal padding mask, the
    lowest value of the model's dtype where it hides a key: a key hidden both ways gets -inf, one hidden one way the
    lowest value whatever its score. A query that padding leaves no key (left padding, or a local layer's window over
    right padding) then attends evenly to the keys hidden one way only, where a boolean mask would give it zeros
    (SDPA) or the mean of every value (eager)."""
    if unpadded is None:
        T, S = padded.shape[-2:]
        unpadded = torch.ones(T, S, dtype=torch.bool, device=padded.device).tril(S - T)
    by_layer = torch.where(unpadded, 0.0, torch.finfo(torch.float32).min)
    by_padding = torch.where(padded, 0.0, torch.finfo(dtype).min)
    return (by_layer + by_padding).to(dtype)  # float32's lowest value is -inf in a narrower dtype, as in the reference


class GPTNeoSelfAttention(nn.Module):
    def __init__(self, config: GPTNeoConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.head_dim = config.num_heads, config.head_dim
        C = config.hidden_size
        self.k_proj = nn.Linear(C, C, bias=False)
        self.v_proj = nn.Linear(C, C, bias=False)
        self.q_proj = nn.Linear(C, C, bias=False)
        self.out_proj = nn.Linear(C, C)
        self.dropout = config.attention_dropout
        self.resid_dropout = nn.Dropout(config.resid_dropout)

    def forward(self, x, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        if mask is not None and mask.is_floating_point() and torch.is_grad_enabled():
            # A padded batch's mask (`added_mask`): torch's fused kernel computes its forward right, but its backward
            # loses a score next to the lowest value added to it (and with it the softmax of evenly hidden keys).
            attention_path = "eager"
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path, scale=1.0, float32_scores=True)
        return self.resid_dropout(self.out_proj(y)), weights


class GPTNeoAttention(nn.Module):
    """The checkpoints' wrapper around the self-attention (`attn.attention`), and the kind of its layer."""

    def __init__(self, config: GPTNeoConfig, layer_idx: int):
        super().__init__()
        self.attention_type = config.attention_layers[layer_idx]  # "global" or "local"
        self.attention = GPTNeoSelfAttention(config, layer_idx)

    def forward(self, x, mask, cache, attention_path="sdpa"):
        return self.attention(x, mask, cache, attention_path)


class GPTNeoMLP(nn.Module):
    def __init__(self, config: GPTNeoConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.inner_size)
        self.c_proj = nn.Linear(config.inner_size, config.hidden_size)
        self.act = ACTIVATIONS[config.activation_function]
        self.dropout = nn.Dropout(config.resid_dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPTNeoBlock(nn.Module):
    def __init__(self, config: GPTNeoConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = GPTNeoAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = GPTNeoMLP(config)
        self.is_sliding = self.attn.attention_type == "local"  # which mask layer_inputs gives it

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """cos and sin are None: the positions were added to the embeddings."""
        h, weights = self.attn(self.ln_1(x), mask, cache, attention_path)
        x = x + h
        return x + self.mlp(self.ln_2(x)), weights


class GPTNeoPreTrainedModel(PreTrainedModel):
    config_class = GPTNeoConfig
    base_model_prefix = "transformer"
    # The causal-mask buffers older checkpoints store ("h.0.attn.attention.bias", "...masked_bias": the released
    # EleutherAI files).
    ignored_checkpoint_keys = PreTrainedModel.ignored_checkpoint_keys + (r"(^|\.)attn\.attention\.(masked_)?bias$",)

    def new_base_model(self, config: GPTNeoConfig) -> "GPTNeoModel":
        return GPTNeoModel(config)


class GPTNeoModel(GPTNeoPreTrainedModel, GPT2NamedDecoder, SlidingLayersDecoder):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: GPTNeoConfig):
        super().__init__(config)
        C, P = config.hidden_size, config.max_position_embeddings
        # Explicit weights skip nn.Embedding's random init (see base.token_embeddings).
        self.wte = nn.Embedding(config.vocab_size, C, _weight=torch.empty(config.vocab_size, C))
        self.wpe = nn.Embedding(P, C, _weight=torch.empty(P, C))
        self.drop = nn.Dropout(config.embed_dropout)
        self.h = nn.ModuleList(GPTNeoBlock(config, i) for i in range(config.num_layers))
        self.ln_f = nn.LayerNorm(C, eps=config.layer_norm_epsilon)

    def add_position_embeddings(self, x: torch.Tensor, position_ids: torch.Tensor, end: int) -> torch.Tensor:
        check_learned_positions(position_ids, end, self.config.max_position_embeddings, "GPT-Neo",
                                "max_position_embeddings")
        return self.drop(x + self.wpe(position_ids))

    def rotations(self, x, position_ids, end: int) -> dict[bool, tuple]:
        return {False: (None, None), True: (None, None)}  # no rotation: positions were added to the embeddings

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        """Each kind of layer's mask: SlidingLayersDecoder's without padding, else as the reference adds it to the
        scores (`added_mask`), over the causal padding mask `mask`."""
        if mask is None:  # no padding: plain causal attention in the global layers, a window in the local ones
            return super().layer_inputs(x, position_ids, mask, end, attention_mask, cache)
        masks = {}  # is_sliding -> the float mask of that kind of layer
        for is_sliding in (False, True):
            window = self.config.sliding_window if is_sliding else None
            _, unpadded, _ = positions_and_mask(cache, None, position_ids, x.shape[1], x.device, window)
            masks[is_sliding] = added_mask(unpadded, mask, x.dtype)
        return lambda layer: (None, None, masks[layer.is_sliding])


class GPTNeoForCausalLM(GPTNeoPreTrainedModel, CausalLM):
    """The decoder with its language-model head (tied to the token embeddings): next-token logits, and the loss when
    labels are given."""

    tied_weights = {"lm_head.weight": "transformer.wte.weight"}


class GPTNeoForSequenceClassification(GPTNeoPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class GPTNeoForTokenClassification(GPTNeoPreTrainedModel, TokenClassification):
    """One label per token, after a dropout of config.classifier_dropout."""

    projection_name = "classifier"  # the reference's name (Llama-style decoders say "score")


class GPTNeoForQuestionAnswering(GPTNeoPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""
