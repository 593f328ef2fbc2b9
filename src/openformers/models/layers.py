"""The few pieces the model families share: RMSNorm, rotary embeddings, ALiBi biases, attention with a cache and
masks."""

import functools
import math
import threading

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

# `enable_gqa` (query heads sharing key/value heads without copying them) arrived in torch 2.5, and so did
# zeros (instead of NaN) for a query that may see no key.
_SDPA_HAS_GQA = _SDPA_ZEROES_EMPTY_ROWS = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)


# Activation functions by their config.json names (`hidden_act`, `activation_function`).
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    # The tanh form written out as the reference's FastGELUActivation computes it (SantaCoder's configs name it).
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),  # Nemotron's squared ReLU
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,  # DeBERTa-v2's convolution and pooler may name it
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "mish": F.mish,
    "hardswish": F.hardswish,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # CLIP's approximation
}


def sinusoidal_positions(count: int, dim: int, halves: bool = False) -> torch.Tensor:
    """(count, dim) fixed position embeddings at frequencies 10000^(-j/dim) for the pair j, computed in float64 as
    the reference: sin in even columns and cos in odd ones (DistilBERT's `sinusoidal_pos_embds`), or with `halves`
    all the sines first and then the cosines (Marian's table)."""
    positions = torch.arange(count, dtype=torch.float64)[:, None]
    pair_start = torch.arange(dim, dtype=torch.float64) // 2 * 2
    angles = positions / 10000 ** (pair_start / dim)  # (count, dim)
    sines, cosines = angles[:, 0::2].sin(), angles[:, 1::2].cos()
    if halves:
        return torch.cat([sines, cosines], dim=1).float()
    table = torch.empty(count, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = sines, cosines
    return table.float()


class SinusoidalPositions(nn.Module):
    """A fixed table of sinusoidal position embeddings (`sinusoidal_positions` with `halves`), looked up like an
    nn.Embedding by position ids. It is a buffer computed when built (and again after loading on the meta device),
    never stored in a checkpoint's parameters, and kept in float32: callers cast the rows to their hidden states'
    dtype."""

    def __init__(self, count: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.empty(count, dim), persistent=False)
        self.reset_tables()

    def reset_tables(self, device: torch.device | None = None, length: int | None = None) -> None:
        """Compute the table (of `length` rows, default as many as now) on `device` (default its own)."""
        device = device or self.weight.device
        count = length or self.weight.shape[0]
        if device.type != "meta":
            self.weight = self.table(count, self.weight.shape[1]).to(device)

    def table(self, count: int, dim: int) -> torch.Tensor:
        return sinusoidal_positions(count, dim, halves=True)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(position_ids, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one fused kernel, same numbers
        # Normalized in float32 whatever the model dtype, as the reference does, then cast back before the scale.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def fairseq_positions_of(input_ids: torch.Tensor, padding_idx: int, past: int = 0) -> torch.Tensor:
    """fairseq's positions of a (B, T) batch after `past` cached tokens: each real token at padding_idx plus its count
    among its row's real tokens (so left padding does not move them), each padding token at padding_idx itself
    (RoBERTa's, MPNet's and M2M100's tables keep that row for it)."""
    real = input_ids.ne(padding_idx).long()
    return (real.cumsum(dim=1) + past) * real + padding_idx


def run_layer(layer: nn.Module, checkpoint_options: dict | None, *inputs, last: bool = False):
    """`layer(*inputs)`; with checkpoint options (gradient checkpointing while training), the layer keeps no
    activations for the backward pass, which runs it again to recompute them. The `last` layer of a stack whose
    output goes straight to a head is not checkpointed: its backward pass comes right after the head's, so
    recomputing it would repeat its forward for nothing (torch.utils.checkpoint.checkpoint_sequential leaves its
    last segment alone too). Its activations wait through the head's forward and backward, about the memory the
    recomputation would have held during its backward; the gradients are the same, bit for bit."""
    if checkpoint_options is None or not torch.is_grad_enabled():
        return layer(*inputs)
    if last:
        with _backward_next():
            return layer(*inputs)
    halves = _residual_halves(layer)
    if halves is None:
        return torch.utils.checkpoint.checkpoint(_Checkpointed(layer), *inputs, **checkpoint_options)
    attention_block, mlp_block = halves
    x, weights = torch.utils.checkpoint.checkpoint(_Checkpointed(attention_block), *inputs, **checkpoint_options)
    return torch.utils.checkpoint.checkpoint(_Checkpointed(mlp_block), x, **checkpoint_options), weights


def _residual_halves(layer: nn.Module) -> tuple | None:
    """A decoder layer's `attention_block` (x + attention(norm(x)), and the weights) and `mlp_block`
    (x + mlp(norm(x))), which run_layer checkpoints apart: the backward pass then keeps the residual stream
    between them, one (B, T, C) tensor per layer more, and the attention's recomputation stops after the attention
    itself, before the output projection (o_proj), which only gave the MLP's norm its input (a frozen product saves
    its weight, if anything, before it multiplies, and the recomputation stops at the last saved tensor): a LoRA
    layer's products 20 -> 19. None for a layer without the halves, or one whose calls something wraps (hooks:
    FSDP's; torch.compile) or whose class runs a forward of its own (the halves would leave it out): it runs whole."""
    if not hasattr(layer, "mlp_block") or getattr(layer, "_compiled_call_impl", None) is not None:
        return None
    halves_class = next(kind for kind in type(layer).__mro__ if "mlp_block" in vars(kind))
    if type(layer).forward is not halves_class.forward:
        return None
    if layer._forward_pre_hooks or layer._forward_hooks or layer._backward_pre_hooks or layer._backward_hooks:
        return None
    return layer.attention_block, layer.mlp_block


_backward = threading.local()


def backward_follows() -> bool:
    """Whether the layer running now under gradient checkpointing is one whose backward pass comes next: a
    checkpointed layer running again in the backward pass to recompute its activations, or a checkpointed stack's
    last layer (run_layer). A frozen quantized product may then keep its unpacked weights for that backward
    (kernels/linear.py) instead of unpacking them again."""
    return getattr(_backward, "next", False)


class _backward_next:
    """`backward_follows()` holds inside, on this thread."""

    def __enter__(self):
        self.outer = backward_follows()
        _backward.next = True

    def __exit__(self, *exception):
        _backward.next = self.outer


class _Checkpointed:
    """A layer as torch.utils.checkpoint calls it: the first call is the forward pass, every later one a
    recomputation (`backward_follows()` holds during it, on the thread that runs it)."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.calls = 0

    def __call__(self, *inputs):
        self.calls += 1
        if self.calls == 1:
            return self.layer(*inputs)
        with _backward_next():
            return self.layer(*inputs)


def run_layers(layers, x: torch.Tensor, checkpoint_options: dict | None, inputs_of, record_inputs: bool,
               record_attentions: bool) -> tuple[torch.Tensor, list | None, list | None]:
    """Each layer in turn on `x`, called with `inputs_of(layer)` after it (run_layer; the stack's output goes to a
    head, so its last layer is not checkpointed): the last layer's output, and when asked the input of every layer
    and every attending layer's attention weights (lists, else None)."""
    inputs = [] if record_inputs else None
    attentions = [] if record_attentions else None
    layers = list(layers)
    for index, layer in enumerate(layers):
        if record_inputs:
            inputs.append(x)
        x, weights = run_layer(layer, checkpoint_options, x, *inputs_of(layer), last=index == len(layers) - 1)
        if record_attentions and weights is not None:  # a layer that does not attend (LFM2's convolutions) has none
            attentions.append(weights)
    return x, inputs, attentions


def rope_inverse_frequencies(
    head_dim: int, theta: float, scaling: dict | None, long_context: bool = False
) -> torch.Tensor:
    """The rotation speed of each pair of dimensions, (head_dim // 2,), with the config's scaling applied
    (`long_context`: longrope's long factors, for sequences past its original_max_position_embeddings)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "longrope":  # each pair slowed by its own factor, in the reference's order of operations
        factors = torch.tensor(scaling["long_factor" if long_context else "short_factor"], dtype=torch.float32)
        return 1.0 / (factors * theta**exponents)
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        return _llama3_frequencies(inv_freq, scaling)
    if kind == "yarn":
        return _yarn_frequencies(head_dim, theta, scaling)
    if kind == "dynamic":  # Hunyuan's, with a fixed alpha: the base stretched, the same at every length
        return 1.0 / ((theta * scaling["alpha"] ** (head_dim / (head_dim - 2))) ** exponents)
    # configs.py refuses the other kinds when it reads the config; dynamic NTK scaling, whose frequencies depend on
    # the length, is RotaryEmbedding's (dynamic_ntk_frequencies)
    assert kind == "default", kind
    return inv_freq


def dynamic_ntk_frequencies(head_dim: int, theta: float, factor: float, context: int, length: int) -> torch.Tensor:
    """Dynamic NTK scaling: for a sequence of `length` positions past the model's `context` (max_position_embeddings),
    the base stretched to theta * (factor * length / context - (factor - 1)) ** (hs / (hs - 2)); within the context,
    the plain base (up to the reference's rounding of factor * context / context - (factor - 1), in float64). Past
    the context the reference computes the base from the position tensor, in float32, and so does this."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    span = torch.tensor(length) if length > context else context  # the reference's tensor or its int
    base = theta * ((factor * span / context) - (factor - 1)) ** (head_dim / (head_dim - 2))
    return 1.0 / (base**exponents)


def _llama3_frequencies(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1: slow rotations are stretched by `factor`, fast ones kept, the band between blended smoothly."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    stretched = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelength - low) / (high - low)
    blended = (1 - smooth) * stretched / factor + smooth * stretched
    in_between = (wavelength >= context / high) & (wavelength <= context / low)
    return torch.where(in_between, blended, stretched)


def _yarn_frequencies(head_dim: int, theta: float, scaling: dict) -> torch.Tensor:
    """YaRN (gpt-oss, DeepSeek, the Qwen2.5 / Qwen3 long-context configs, OLMo 3's full layers): pairs turning more
    than `beta_fast` times over original_max_position_embeddings keep their speed, those turning fewer than
    `beta_slow` times are slowed by `factor`, and the pairs between blend linearly in their index; the band's ends are
    rounded outwards to whole pairs unless `truncate` is False. The speeds are computed in the reference's order of
    operations: other orders differ in float32's last bits, which the cos and sin of long positions magnify past
    1e-5."""
    factor, context = scaling["factor"], scaling["original_max_position_embeddings"]

    def pair_of(turns: float) -> float:  # the (fractional) pair index that turns `turns` times over the context
        return head_dim * math.log(context / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low, high = pair_of(scaling.get("beta_fast") or 32), pair_of(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if high == low:
        high += 0.001
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    periods = theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    kept = 1 - ramp  # each pair's share of its own speed (1 - (1 - ramp) is not ramp in float32's last bit)
    return 1.0 / (factor * periods) * (1 - kept) + 1.0 / periods * kept


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's magnitude correction for a context stretched by `factor`: 0.1 * mscale * ln(factor) + 1 (1 when the
    context is not stretched)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_attention_factor(scaling: dict | None, long_context: bool = False) -> float:
    """The factor longrope and YaRN scale cos and sin by (so q.k by its square): the config's `attention_factor`,
    else the one each paper derives from the stretch `factor`; 1 for the other kinds. With `long_context`, longrope's
    `long_attention_factor` where there is one (PhiMoE's long_mscale)."""
    kind = (scaling or {}).get("rope_type")
    if kind not in ("longrope", "yarn"):
        return 1.0
    if long_context and scaling.get("long_attention_factor") is not None:
        return scaling["long_attention_factor"]
    if scaling.get("attention_factor") is not None:
        return scaling["attention_factor"]
    if kind == "yarn":  # its mscale, or the ratio of two such with DeepSeek's mscale and mscale_all_dim
        factor, mscale, mscale_all_dim = scaling["factor"], scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        return yarn_mscale(factor)
    factor, context = scaling["factor"], scaling["original_max_position_embeddings"]
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(context))


class RotaryEmbedding(nn.Module):
    """cos and sin of every position, computed once and looked up by position id.

    The tables are non-persistent buffers (they are not in checkpoints): `reset_tables(device)` fills them
    after the model is built on the meta device, and `ensure_length` grows them when a sequence outruns them.
    Longrope keeps a second pair (`long_cos`, `long_sin`) for calls that reach past its
    original_max_position_embeddings. Dynamic NTK scaling ("dynamic" without Hunyuan's alpha) rebuilds the tables for
    the longest call past `context` (the config's max_position_embeddings) since the last call within it, as the
    reference does (see `follow_length`).
    """

    def __init__(self, head_dim: int, theta: float, scaling: dict | None, length: int, context: int | None = None):
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        longrope = (scaling or {}).get("rope_type") == "longrope"
        self.long_after = scaling["original_max_position_embeddings"] if longrope else None
        dynamic = (scaling or {}).get("rope_type") == "dynamic" and scaling.get("alpha") is None
        assert context is not None or not dynamic, "dynamic NTK scaling needs the model's max_position_embeddings"
        # Dynamic NTK: the context past which the base stretches, and the length the tables' base is stretched for.
        self.dynamic_after = context if dynamic else None
        self.stretched_for = context
        for name in ("cos", "sin") + (("long_cos", "long_sin") if longrope else ()):
            self.register_buffer(name, torch.empty(0, head_dim), persistent=False)
        self.reset_tables(length=length)

    def reset_tables(self, device: torch.device | None = None, length: int | None = None) -> None:
        device = device or self.cos.device
        length = length or self.cos.shape[0]
        self.cos, self.sin = self._tables(device, length, long_context=False)
        if self.long_after is not None:
            self.long_cos, self.long_sin = self._tables(device, length, long_context=True)

    def _tables(self, device: torch.device, length: int, long_context: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if device.type == "meta":
            return torch.empty(length, self.head_dim, device="meta"), torch.empty(length, self.head_dim, device="meta")
        # Computed in float32 on the CPU, as the reference computes them, whatever the model's device and dtype.
        if self.dynamic_after is not None:
            inv_freq = dynamic_ntk_frequencies(self.head_dim, self.theta, self.scaling["factor"], self.dynamic_after,
                                               self.stretched_for)
        else:
            inv_freq = rope_inverse_frequencies(self.head_dim, self.theta, self.scaling, long_context)
        angles = torch.arange(length, dtype=torch.int64).float()[:, None] * inv_freq  # (T, hs/2)
        scale = rope_attention_factor(self.scaling, long_context)  # 1.0 (exact) except for longrope and YaRN
        # Pair i is (x[i], x[i + hs/2]); its rotation needs -sin on the first half and +sin on the second.
        cos = torch.cat([angles.cos(), angles.cos()], dim=-1) * scale  # (T, hs)
        sin = torch.cat([-angles.sin(), angles.sin()], dim=-1) * scale
        return cos.to(device), sin.to(device)

    def ensure_length(self, length: int) -> None:
        if length > self.cos.shape[0]:
            self.reset_tables(length=max(length, 2 * self.cos.shape[0]))

    def follow_length(self, length: int) -> None:
        """Dynamic NTK scaling's tables for a call whose furthest position is `length` - 1, by the reference's rule: a
        call longer than any since the last reset stretches the base for its length, and keeps it for the calls after
        it up to that length; a call shorter than the context goes back to the plain base. Keys already cached keep
        the rotation they were made with."""
        if length > self.stretched_for:
            self.stretched_for = length
            self.reset_tables(length=max(length, self.cos.shape[0]))
        elif length < self.dynamic_after < self.stretched_for:
            self.stretched_for = self.dynamic_after
            self.reset_tables()

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) positions -> cos, sin shaped (B, 1, T, hs) to broadcast over the heads."""
        if self.dynamic_after is not None:
            self.follow_length(int(position_ids.max()) + 1)  # one read of the device a call, as the reference's
        cos, sin = self.cos[position_ids], self.sin[position_ids]
        if self.long_after is not None:
            # The reference's rule: a call whose furthest position is past original_max_position_embeddings rotates
            # every position it computes with the long factors (chosen on the device: no sync, one compiled graph).
            long = position_ids.max() + 1 > self.long_after
            cos = torch.where(long, self.long_cos[position_ids], cos)
            sin = torch.where(long, self.long_sin[position_ids], sin)
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (i, i + hs/2) pair of x (B, nh, T, hs) by its position's angle (`sin` is signed per half)."""
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    return x * cos + swapped * sin


def apply_rope_in_float32(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` computed in float32 and rounded once to x's dtype (OLMo 1, 2 and 3 rotate so, with float32
    tables: their decoders set `float32_rotation_tables`)."""
    return apply_rope(x.float(), cos.float(), sin.float()).to(x.dtype)


def apply_interleaved_rope_in_float32(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_interleaved_rope` computed in float32 and rounded once to x's dtype (Cohere's rotation, with tables
    rounded to the model's dtype first; DeepSeek-V2's, with float32 tables)."""
    return apply_interleaved_rope(x.float(), cos.float(), sin.float()).to(x.dtype)


def apply_interleaved_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (2i, 2i + 1) pair of x (B, nh, T, hs) by pair i's angle, with the tables `apply_rope` takes: GPT-J's
    form (mesh-transformer-jax's rotate_every_two), where `apply_rope` pairs dimension i with i + hs/2."""
    half = cos.shape[-1] // 2
    cos, sin = cos[..., :half], sin[..., half:]  # each pair's cos, and its sin unsigned (apply_rope's second half)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).flatten(-2)


def attention_mask_for(
    attention_mask: torch.Tensor | None, past: int, T: int, device: torch.device, sliding_window: int | None = None,
    causal_as_none: bool = False,
) -> torch.Tensor | None:
    """The mask for `attention`: None when plain causal attention is enough, else (B, 1, T, past + T) booleans.
    With `causal_as_none`, None also for T new tokens after `past` cached ones, for callers whose attention reads
    None as the T queries seeing the keys up to their own positions, the last T (`decoder_attention`), so that a
    prompt's chunk after the first, or a chat's next turn, takes the same path as a fresh prompt.

    `attention_mask` is the tokenizer's (B, past + T) mask over the cached and the current positions,
    1 for a real token and 0 for padding; None means every position is real. With a `sliding_window`,
    a query sees only the keys less than `sliding_window` positions behind it (Mistral).
    """
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    total = past + T
    windowed = sliding_window is not None and total > sliding_window
    if attention_mask is None and not windowed and (T == 1 or past == 0 or causal_as_none):
        return None  # one new token sees everything; a fresh prompt is `is_causal`
    if attention_mask is not None and attention_mask.shape[-1] != total:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions, but there are {past} cached and {T} new "
            f"ones: it must cover all {total}."
        )
    query_positions = torch.arange(past, total, device=device)[:, None]
    key_positions = torch.arange(total, device=device)[None, :]
    mask = key_positions <= query_positions  # (T, past + T) causal
    if windowed:
        mask &= key_positions > query_positions - sliding_window
    if attention_mask is None:
        return mask[None, None]
    # A padding query of a left-padded row sees no key at all: its attention output is zeros, as in the
    # reference (users see it in hidden states at padding positions, and in a loss over labels that include them).
    mask = mask[None, None] & attention_mask[:, None, None, :].bool()
    if not _SDPA_ZEROES_EMPTY_ROWS:
        # torch 2.4 gives such a query NaN, which would spread through the values: let it see every key instead.
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask


def positions_and_mask(
    cache, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, T: int, device: torch.device,
    sliding_window: int | None = None, causal_as_none: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """For T new tokens after what `cache` holds: their position ids (`position_ids` when given, else counted from
    the cache, (1, T)), the mask for `attention` over the keys the cache will return, and how many positions those
    keys span (for position tables).

    A static cache (`is_compileable`) returns its whole buffer, so its mask covers every slot; its length stays a
    tensor on the device, so a compiled decoding step neither reads it back nor changes shape from step to step.
    """
    if getattr(cache, "is_compileable", False):
        slots = cache.next_positions(T, device)  # (T,)
        mask = static_cache_mask(attention_mask, slots, cache.max_cache_len, sliding_window)
        return (slots[None] if position_ids is None else position_ids), mask, cache.max_cache_len
    past = cache.seq_len if cache is not None else 0
    if position_ids is None:
        position_ids = torch.arange(past, past + T, device=device)[None]  # (1, T)
    return position_ids, attention_mask_for(attention_mask, past, T, device, sliding_window, causal_as_none), past + T


def static_cache_mask(
    attention_mask: torch.Tensor | None, slots: torch.Tensor, capacity: int, sliding_window: int | None = None
) -> torch.Tensor:
    """The mask for `attention` over a static cache's whole buffer: (1 or B, 1, T, capacity) booleans.

    `slots` (T,) are the new tokens' places in the buffer; a query sees the slots up to its own, so those not
    written yet stay hidden. `attention_mask` (B, S <= capacity) marks the padding among the first S slots.
    """
    key_slots = torch.arange(capacity, device=slots.device)[None, :]
    mask = key_slots <= slots[:, None]  # (T, capacity)
    if sliding_window is not None:
        mask &= key_slots > slots[:, None] - sliding_window
    mask = mask[None, None]
    if attention_mask is None:
        return mask
    padding = F.pad(attention_mask.bool(), (0, capacity - attention_mask.shape[-1]), value=True)
    mask = mask & padding[:, None, None, :]
    if not _SDPA_ZEROES_EMPTY_ROWS:
        mask = mask | ~mask.any(dim=-1, keepdim=True)  # torch 2.4 (see attention_mask_for)
    return mask


def alibi_slopes(n_head: int, device: torch.device) -> torch.Tensor:
    """ALiBi's slope of each head, (nh,) float32: a geometric series over the largest power of two of heads, then
    every other slope of the series for twice as many heads."""
    power = 2 ** math.floor(math.log2(n_head))
    ratio = torch.tensor(2.0 ** (-8.0 / power), device=device)
    slopes = torch.pow(ratio, torch.arange(1, power + 1, device=device, dtype=torch.int32))
    if power < n_head:
        finer = torch.tensor(2.0 ** (-4.0 / power), device=device)  # the series for 2 * power heads
        odd = torch.arange(1, 2 * (n_head - power), 2, device=device, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(finer, odd)])
    return slopes


def alibi_mask(
    attention_mask: torch.Tensor | None, mask: torch.Tensor | None, n_head: int, T: int, S: int, x: torch.Tensor,
    product_dtype: torch.dtype = torch.float32, divisor: float = 1.0,
) -> torch.Tensor:
    """The float mask an ALiBi decoder's attention adds to its scaled scores, (B, nh, T, S) in x's dtype: each
    key's slope x position, then divided by `divisor`, and the dtype's lowest value where the boolean `mask`
    (B or 1, 1, T, S; None: plain causal) hides the key.

    A key's position is counted over the real tokens of `attention_mask` (B, <= S; None: all real), so a
    left-padded row is biased as the row alone; a static cache's slots past the mask are hidden by `mask`.
    The product is taken in `product_dtype`: BLOOM's reference multiplies in float32 and adds the biases to the
    scaled scores, Falcon's in bfloat16 before scaling them with the scores (divisor sqrt(head_dim)).
    """
    B = x.shape[0]
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)[None, None]
    keys = torch.ones(B, S, dtype=torch.long, device=x.device) if attention_mask is None else attention_mask.long()
    if keys.shape[-1] < S:  # a static cache's slots past the mask: hidden by `mask`, counted as real
        keys = F.pad(keys, (0, S - keys.shape[-1]), value=1)
    positions = ((keys.cumsum(-1) - 1) * keys)[:, None, :]  # (B, 1, S)
    bias = (alibi_slopes(n_head, x.device)[:, None].to(product_dtype) * positions).to(x.dtype)  # (B, nh, S)
    bias = bias[:, :, None, :] / divisor  # (B, nh, 1, S)
    return bias.masked_fill(~mask, torch.finfo(x.dtype).min)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention, q (B, nh, T, hs) and k, v (B, n_kv, S, hs) with nh a multiple of n_kv.

    Each group of nh / n_kv query heads shares one key/value head (`enable_gqa`, no copies of the cache).
    `scale` replaces 1/sqrt(hs) (Gemma's query_pre_attn_scalar). A `mask` of None is plain causal attention with
    the queries the last T positions: after S - T cached ones, query t sees keys up to S - T + t.
    """
    T, S = q.shape[2], k.shape[2]
    if mask is None and T > 1 and _compiled_prompt_attention_applies(q, k, v, dropout):
        return torch.ops.openformers.prompt_attention(q, k, v, q.shape[-1] ** -0.5 if scale is None else scale)
    if mask is None and 1 < T < S:  # SDPA's is_causal would have query t see keys up to t
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)[None, None]
    is_causal = mask is None and T > 1
    if not _SDPA_HAS_GQA and k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))  # torch 2.4
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal,
                                              scale=scale)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal, enable_gqa=True, scale=scale
    )


def _compiled_prompt_attention_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> bool:
    """Whether a prompt's plain causal attention (no mask) may take the compiled library's
    `prompt_attention` (kernels/decode.cpp), SDPA's computation in float32 inside: on the CPU, once the accelerator
    has loaded the library (never with OPENFORMERS_KERNELS=0), with no gradient or dropout to give, for float32 or
    bfloat16 heads of 64 or 128 where the build has its AVX-512 loops (without them it runs at half of SDPA's speed).
    A 512-token SmolLM2 prompt's attention, one layer at two threads: bfloat16 4.2 -> 1.4 ms, float32 4.0 -> 1.8 ms
    against torch's CPU flash attention; the whole float32 forward 7-8% faster.

    Its float32 sums in another order than SDPA's: SmolLM2's logits (up to ~35) differ from the reference's by up to
    8.1e-5 at 128 and 512 tokens, where SDPA's are equal to them bit for bit: within float32's tolerance, the bar
    the tests hold every model to against the reference."""
    return (
        q.device.type == "cpu" and not dropout and q.shape[-1] in (64, 128) and v.shape[-1] == q.shape[-1]
        and q.dtype == k.dtype == v.dtype and q.dtype in (torch.float32, torch.bfloat16)
        and type(q) is type(k) is type(v) is torch.Tensor  # not a tensor subclass (DTensor, fake tensors)
        and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
        and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
        and not torch.compiler.is_compiling()
        and hasattr(torch.ops.openformers, "prompt_attention")
        and _prompt_attention_vectorized(q.shape[-1])
    )


@functools.cache
def _prompt_attention_vectorized(head_dim: int) -> bool:
    """Whether the loaded library's prompt_attention has vector loops for heads of `head_dim` (asked once)."""
    return torch.ops.openformers.prompt_attention_vectorized(head_dim)


def decoder_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, cache, layer_idx: int,
    dropout: float, attention_path: str, scale: float | None = None, softcap: float | None = None,
    float32_scores: bool = False, sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A decoder layer's attention once its queries and keys are rotated: the new keys and values joined to what
    `cache` holds for the layer, then the fused path ("sdpa") or the step-by-step one, which alone gives the
    weights (B, nh, T, S) and soft-caps, and computes the scores in float32 with `float32_scores` (GPT-J's eager
    path, as the reference's). A `mask` of None is plain causal attention. `sinks` (nh,): one more score per head
    that joins every query's softmax and attends to nothing (gpt-oss's attention sinks, `with_sinks`).

    Returns the heads merged, (B, T, nh * hs), and the weights (None on the fused path).
    """
    if cache is not None:
        k, v = cache.update(layer_idx, k, v)  # (B, n_kv, past + T, hs)
    B, _, T, _ = q.shape
    if sinks is not None:
        k, v, mask = with_sinks(k, v, mask, sinks, q)
    if attention_path == "sdpa" and softcap is None:
        y, weights = attention(q, k, v, mask, dropout, scale), None  # (B, nh, T, hs)
    else:
        y, weights = eager_attention(q, k, v, mask, dropout, is_causal=mask is None and T > 1, scale=scale,
                                     softcap=softcap, float32_scores=float32_scores)
        if sinks is not None:
            weights = weights[..., :-1]  # the sink's share is not a key's
    return y.transpose(1, 2).reshape(B, T, -1), weights


def with_sinks(
    k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, sinks: torch.Tensor, q: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys and values (B, n_kv, S, hs) with one more position, all zeros, and the float mask (B or 1, nh, T, S + 1)
    that adds each head's sink to that position's score (zero: its key is zeros) and hides what the boolean `mask`
    hides (None: plain causal). Its softmax is then the reference's over the scores and the sink, and the sink's
    share multiplies a zero value: the sink only takes weight from the keys. The mask holds a score per head, as
    the reference's step-by-step scores do."""
    B, n_kv, S, hs = k.shape
    T = q.shape[2]
    zeros = k.new_zeros(B, n_kv, 1, hs)
    k, v = torch.cat([k, zeros], dim=2), torch.cat([v, zeros], dim=2)
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)[None, None]
    hidden = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    sink = sinks.to(q.dtype)[None, :, None, None].expand(hidden.shape[0], -1, T, 1)  # (B or 1, nh, T, 1)
    return k, v, torch.cat([hidden.expand(-1, sinks.shape[0], -1, -1), sink], dim=-1)


def encoder_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float,
    attention_path: str, is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention where a `mask` of None means no mask at all (encoders, cross-attention), or plain causal
    attention with `is_causal` (BART's decoder): the fused path ("sdpa") or the step-by-step one, which alone
    gives the weights (B, nh, T, S).

    Returns the heads merged, (B, T, nh * hs), and the weights (None on the fused path).
    """
    B, _, T, _ = q.shape
    if attention_path == "sdpa":
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        weights = None
    else:
        y, weights = eager_attention(q, k, v, mask, dropout, is_causal=is_causal)
    return y.transpose(1, 2).reshape(B, T, -1), weights


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float = 0.0,
    is_causal: bool = False, scale: float | None = None, softcap: float | None = None, float32_scores: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention computed step by step, as the reference's "eager" path: the output and the softmax weights.

    Used when the weights are asked for (output_attentions=True) or attn_implementation="eager". `mask`
    is a boolean mask as for `attention` (True: may attend), or None for none at all (`is_causal`: for
    plain causal attention). A masked score has the dtype's lowest value added, not -inf, so a query that may
    see no key (left padding) spreads its weight evenly over all of them and its output is the mean of the
    values, as in the reference (`attention` gives it zeros, as the reference's sdpa path does), and its
    scores' gradient is the reference's.
    `scale` replaces 1/sqrt(hs) (Gemma's query_pre_attn_scalar); `softcap` bounds the scores to (-softcap, softcap)
    with a tanh before masking (Gemma 2's attention soft-capping, which torch's fused kernel cannot do).
    `float32_scores` multiplies queries and keys in float32 whatever their dtype (GPT-J's scores overflow float16).
    A float `mask` is added to the scores instead, as torch's fused kernel adds one (Falcon's ALiBi biases).
    Returns (B, nh, T, hs) and the weights (B, nh, T, S).
    """
    if k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    if float32_scores:
        q, k = q.float(), k.float()
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)  # (B, nh, T, S)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if is_causal:
        T, S = scores.shape[-2:]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)  # query t sees keys up to S - T + t
    if mask is not None and mask.dtype != torch.bool:
        scores = scores + mask
    elif mask is not None:  # added, not filled: a query that sees no key still passes its gradient to its scores
        scores = scores + torch.zeros((), dtype=scores.dtype, device=scores.device).masked_fill(
            ~mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    if dropout:
        weights = F.dropout(weights, p=dropout)
    return weights @ v, weights
