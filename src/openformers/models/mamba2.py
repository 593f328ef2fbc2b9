"""Mamba-2 decoders (mistralai/Mamba-Codestral-7B-v0.1, state-spaces/mamba2-* ports; model_type "mamba2") in plain
torch.nn.

Mamba's network (mamba.py: token embeddings, per layer an RMSNorm and a mixer added to the float32 residual stream,
norm_f, the language-model head, here untied by default) with the state-space duality (SSD) mixer. Over
I = expand * hidden_size channels in H = num_heads heads of P = head_dim, with G = n_groups groups of B and C of
N = state_size each:
- `in_proj` makes, in this order, a gate z (I), the convolution's input xBC (I + 2 G N) and a time step per head (H);
- a causal depthwise convolution of `conv_kernel` taps (`conv1d`, with its bias) over xBC, then SiLU; split into
  x (H, P), B and C (G, N each, every group serving H / G heads);
- dt = softplus(dt + dt_bias), clamped to `time_step_limit`; A = -exp(A_log), one scalar per head;
- the scan: each head keeps a (P, N) state h, and at each position h = exp(dt A) h + dt x B^T, y = h C + D x;
- y gated and normalized (`norm`, the reference's gated RMSNorm: y * SiLU(z), then RMS-normalized over each of G
  groups of I / G channels, then scaled), then `out_proj` back to hidden_size.
A prompt's scan runs in chunks of `chunk_size` positions (`chunked_scan`): within a chunk the outputs are a masked
product of C and B (as attention's scores), and the states at chunk ends carry across chunks in a loop. A decoding step
(one position after a cached state) is the recurrence itself (`scan_step`) and, as the reference's and mamba_ssm's
step, does not clamp dt. For a 512-token prompt at hidden size 768 the chunked form is the faster on CPU (see the
docs/models.md row). Padding (a 0 in attention_mask) zeroes the mixer's input and the convolution's output there, as
the reference does, so a left-padded row's state stays zero until its first token.

The cache is Mamba's `generation.MambaCache`: per layer the convolution's last conv_kernel inputs (B, I + 2 G N, K)
and the scan's state (B, H, P, N). Parameter names are those of Hugging Face checkpoints
(`backbone.layers.0.mixer.dt_bias`). GGUF files of llama.cpp's "mamba2" architecture load here (`ssm_in`,
`ssm_conv1d`, `ssm_dt` holding only dt_bias, `ssm_a` stored as A = -exp(A_log), `ssm_d`, `ssm_norm` as (G, I / G),
`ssm_out`; `mamba2.ssm.*` metadata, the head count as time_step_rank). The CPU decoding kernel refuses the model type.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Mamba2Config
from ..generation.cache import HybridCache
from ..weights import rename
from .gpt_neox import gguf_required
from . import mamba
from .layers import ACTIVATIONS, RMSNorm
from .mamba import (
    MambaBlock,
    MambaForCausalLM,
    MambaMixer,
    MambaModel,
    MambaPreTrainedModel,
    causal_conv,
    gguf_state_space_values,
    init_a_and_d,
    init_conv_and_out_proj,
    masked,
    state_cache,
    time_step_bias,
)


def config_from_gguf(gguf, **overrides) -> Mamba2Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "mamba2" architecture."""
    values = {"architectures": ["Mamba2ForCausalLM"], **gguf_state_space_values(gguf, "mamba2"),
              **gguf_mixer_values(gguf, "mamba2")}
    return Mamba2Config.from_dict(values, **overrides)


def gguf_mixer_values(gguf, arch: str, own_width: bool = False) -> dict:
    """A Mamba-2 mixer's sizes (Mamba2Config's fields) from the `<arch>.ssm.*` metadata of llama.cpp's "mamba2",
    "granitehybrid" and "falcon-h1" files, whose time_step_rank is the head count (head_dim = inner_size / heads).
    The width is expand * hidden_size, or with `own_width` (Falcon-H1's) inner_size itself (`intermediate_size`)."""
    hidden_size = gguf_required(gguf, f"{arch}.embedding_length")
    inner_size = gguf_required(gguf, f"{arch}.ssm.inner_size")
    heads = gguf_required(gguf, f"{arch}.ssm.time_step_rank")
    if (inner_size % hidden_size and not own_width) or inner_size % heads:
        needs = "" if own_width else f"both {arch}.embedding_length={hidden_size} and "
        raise ValueError(f"{gguf.path} has {arch}.ssm.inner_size={inner_size}, not a multiple of {needs}"
                         f"{arch}.ssm.time_step_rank={heads} (the heads), which a Mamba-2 mixer's sizes need.")
    width = {"intermediate_size": inner_size} if own_width else {"expand": inner_size // hidden_size}
    return {
        **width,
        "num_heads": heads,
        "head_dim": inner_size // heads,
        "n_groups": gguf.get(f"{arch}.ssm.group_count", 1),
        "state_size": gguf_required(gguf, f"{arch}.ssm.state_size"),
        "conv_kernel": gguf_required(gguf, f"{arch}.ssm.conv_kernel"),
    }


def gguf_attending_layers(gguf, arch: str, layers: int, kv_heads) -> list[int]:
    """The key/value head count of each layer of a "granitehybrid" file (`<arch>.attention.head_count_kv`, one per
    layer, 0 for a Mamba layer; one number: every layer attends)."""
    kv_heads = list(kv_heads) if isinstance(kv_heads, (list, tuple)) else [kv_heads] * layers
    if len(kv_heads) != layers:
        raise ValueError(f"{gguf.path} has {len(kv_heads)} entries in {arch}.attention.head_count_kv for "
                         f"{layers} layers ({arch}.block_count); it needs one per layer.")
    return kv_heads


GGUF_CONFIG_READERS["mamba2"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Mamba's, without x_proj and dt_proj (ssm_dt.bias is dt_bias: see
# convert_gguf_state_dict), with the gated norm.
GGUF_RENAMES = {**{k: v for k, v in mamba.GGUF_RENAMES.items() if k not in ("ssm_x", "ssm_dt")},
                "ssm_norm": "mixer.norm"}


def convert_gguf_mixers(state_dict: dict[str, torch.Tensor], config, name: str) -> dict[str, torch.Tensor]:
    """A hybrid's `blk.N.ssm_*` tensors as the mamba2 reader converts them, under `model.layers.N.<name>.*` (the
    hybrid's name for its mixer: Granite 4's and Falcon-H1's `mamba`)."""
    return {k.replace("backbone.layers.", "model.layers.").replace(".mixer.", f".{name}."): t
            for k, t in convert_gguf_state_dict(state_dict, config).items()}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Mamba2Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names; A back to A_log (llama.cpp stores -exp(A_log)); A, D and the
    gated norm's weight back to vectors (llama.cpp stores (H, 1), (H, 1) and (G, I / G)); the convolution's
    (C, conv_kernel) weight back to (C, 1, conv_kernel)."""
    state_dict = rename({name.replace("ssm_dt.bias", "mixer.dt_bias"): t for name, t in state_dict.items()},
                        GGUF_RENAMES)
    for name, tensor in state_dict.items():
        if name.endswith(".mixer.A_log"):
            state_dict[name] = torch.log(-tensor).reshape(-1)
        elif name.endswith((".mixer.D", ".mixer.norm.weight")):
            state_dict[name] = tensor.reshape(-1)
        elif name.endswith(".mixer.conv1d.weight"):
            state_dict[name] = tensor.reshape(tensor.shape[0], 1, -1)
    return state_dict


def segment_sums(a: torch.Tensor) -> torch.Tensor:
    """(..., L) -> (..., L, L): at [l, s] the sum of a over positions s < k <= l, -inf above the diagonal (s > l).
    Summed from the terms, not as a difference of cumulative sums, which loses precision over long chunks."""
    ones = torch.ones(a.shape[-1], a.shape[-1], dtype=torch.bool, device=a.device)
    terms = a[..., :, None].expand(*a.shape, a.shape[-1]).masked_fill(~ones.tril(-1), 0)  # [k, s]: a_k where k > s
    return terms.cumsum(-2).masked_fill(~ones.tril(), float("-inf"))  # [l, s]: the sum over s < k <= l


def chunked_scan(x, dt, A, b, c, state, chunk_size: int):
    """The scan over a prompt, chunk by chunk, in float32: x (B, T, H, P), dt (B, T, H), A (H,), b and c (B, T, H, N)
    (each group's repeated for its heads), from `state` (B, H, P, N; None: zeros). Returns y (B, T, H, P), without
    the D term, and the state after the last position."""
    Bsz, T, H, P = x.shape
    L = min(chunk_size, T)
    pad = -T % L  # zero steps at the end: dt = 0 neither decays nor adds to the state

    def chunks(t):  # (B, T, ...) -> (B, T / L, L, ...)
        return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)).unflatten(1, (-1, L))

    xdt, dt, b, c = (chunks(t) for t in (x * dt[..., None], dt, b, c))  # xdt (B, n, L, H, P)
    a = (dt * A).transpose(2, 3)  # (B, n, H, L): each step's log decay
    decay_from_start = a.cumsum(-1)  # (B, n, H, L)
    # Within a chunk: y_l = sum over s <= l of exp(a_(s+1) + ... + a_l) (C_l . B_s) dt_s x_s.
    scores = torch.einsum("bclhn,bcshn->bchls", c, b) * torch.exp(segment_sums(a))
    y = torch.einsum("bchls,bcshp->bclhp", scores, xdt)
    # Each chunk's inputs as they stand in the state at its end.
    to_end = torch.exp(decay_from_start[..., -1:] - decay_from_start)  # (B, n, H, L)
    added = torch.einsum("bchl,bclhn,bclhp->bchpn", to_end, b, xdt)  # (B, n, H, P, N)
    # The state entering each chunk, carried chunk after chunk.
    state = x.new_zeros(Bsz, H, P, b.shape[-1]) if state is None else state
    starts = []
    for i in range(added.shape[1]):
        starts.append(state)
        state = torch.exp(decay_from_start[:, i, :, -1])[..., None, None] * state + added[:, i]
    starts = torch.stack(starts, dim=1)  # (B, n, H, P, N)
    y = y + torch.einsum("bclhn,bchpn->bclhp", c, starts) * torch.exp(decay_from_start).permute(0, 1, 3, 2)[..., None]
    return y.flatten(1, 2)[:, :T], state


def scan_step(x, dt, A, b, c, state):
    """One position of the scan: x (B, H, P), dt (B, H), A (H,), b and c (B, H, N), state (B, H, P, N), in float32.
    Returns y (B, H, P), without the D term, and the new state."""
    state = torch.exp(dt * A)[..., None, None] * state + (dt[..., None] * x)[..., None] * b[:, :, None, :]
    return (state @ c[..., None]).squeeze(-1), state


class GatedRMSNorm(RMSNorm):
    """The reference's gated RMSNorm: y times SiLU(gate), RMS-normalized in float32 over each group of `group_size`
    channels, cast back to y's dtype, then scaled by the weight."""

    def __init__(self, dim: int, group_size: int, eps: float):
        super().__init__(dim, eps)
        self.group_size = group_size

    def forward(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        dtype = y.dtype
        y = (y.float() * F.silu(gate.float())).unflatten(-1, (-1, self.group_size))  # (..., G, I / G)
        y = F.rms_norm(y, (self.group_size,), eps=self.eps).flatten(-2)
        return self.weight * y.to(dtype)


class Mamba2Mixer(nn.Module):
    """The state-space duality mixer (see the module docstring)."""

    def __init__(self, config: Mamba2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        I, H, G, N = config.intermediate_size, config.num_heads, config.n_groups, config.state_size
        self.heads, self.head_dim, self.groups, self.state_size = H, config.head_dim, G, N
        self.chunk_size, self.time_step_limit = config.chunk_size, tuple(config.time_step_limit)
        conv_dim = I + 2 * G * N
        self.sizes = (I, conv_dim, H)  # z, xBC, dt
        self.in_proj = nn.Linear(config.hidden_size, I + conv_dim + H, bias=config.use_bias)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, config.conv_kernel, groups=conv_dim, bias=config.use_conv_bias,
                                padding=config.conv_kernel - 1)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = GatedRMSNorm(I, I // G, config.layer_norm_epsilon)
        self.out_proj = nn.Linear(I, config.hidden_size, bias=config.use_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache) -> torch.Tensor:
        B, T, _ = x.shape
        dtype = x.dtype
        H, P, G, N = self.heads, self.head_dim, self.groups, self.state_size
        z, xbc, dt = self.projected(x, mask).split(self.sizes, dim=-1)
        state = None if cache is None else cache.state(self.layer_idx)
        xbc, conv_state = causal_conv(self.conv1d, xbc.transpose(1, 2), None if state is None else state[0])
        xbc = masked(self.act(xbc).to(dtype).transpose(1, 2), mask)  # (B, T, I + 2 G N)
        h, b, c = xbc.split((H * P, G * N, G * N), dim=-1)
        h = h.unflatten(-1, (H, P)).float()  # (B, T, H, P)
        b, c = (t.unflatten(-1, (G, N)).repeat_interleave(H // G, dim=2).float() for t in (b, c))  # (B, T, H, N)
        dt = F.softplus(dt + self.dt_bias.to(dt.dtype))  # (B, T, H), in the model's dtype as the reference's
        A = -torch.exp(self.A_log.float())  # (H,)
        if state is not None and T == 1:  # a decoding step: the recurrence, dt unclamped as the reference's step
            y, ssm = scan_step(h[:, 0], dt[:, 0].float(), A, b[:, 0], c[:, 0], state[1])
            y = y[:, None]
        else:
            dt = dt.clamp(*self.time_step_limit).float()
            y, ssm = chunked_scan(h, dt, A, b, c, None if state is None else state[1], self.chunk_size)
        y = (y + h * self.D.float()[:, None]).flatten(2)  # (B, T, I)
        if cache is not None:
            cache.store(self.layer_idx, conv_state, ssm, T)
        return self.out_proj(self.gated(y, z).to(dtype))

    def projected(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """in_proj of x with its padded positions zeroed: z, xBC and dt side by side (Falcon-H1 scales them)."""
        return self.in_proj(masked(x, mask))

    def gated(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The scan's output y (B, T, I) gated by z and normed, as out_proj takes it (Falcon-H1 varies the norm)."""
        return self.norm(y, z)


class HybridMixers:
    """What a decoder with Mamba-2 mixers among or beside its attention shares (Granite 4's hybrids, Bamba, Falcon-H1;
    Jamba, with Mamba's mixers; its config says which layers attend, `attends(i)`, and which hold a mixer,
    `has_mixer(i)`): the HybridCache it
    decodes with, its forward's cache resolved by mamba.state_cache, and the reference's init of a new mixer."""

    def new_cache(self) -> HybridCache:
        """The cache generate decodes with: the attending layers' keys and values and the mixers' states."""
        return HybridCache(config=self.config)

    def cache_for_call(self, past_key_values, cache, use_cache):
        """The model's HybridCache (the user's DynamicCache(config=model.config) is one): a plain DynamicCache cannot
        hold the mixers' states."""
        return state_cache(past_key_values, cache, use_cache, self)

    def _init_weights(self, module: nn.Module) -> None:
        """The family's init, then per Mamba-2 mixer A = 1..heads, D = 1 and dt_bias = 1, as the reference's hybrids
        do; per Mamba mixer (Jamba's) A = 1..state_size in each channel and D = 1."""
        super()._init_weights(module)
        if isinstance(module, Mamba2Mixer):
            H = module.A_log.shape[0]
            module.A_log.copy_(torch.log(torch.arange(1, H + 1, dtype=torch.float32)))
            module.D.fill_(1.0)
            module.dt_bias.fill_(1.0)
        elif isinstance(module, MambaMixer):
            init_a_and_d(module)


class MixerOrAttentionLayer(nn.Module):
    """A layer mixing its tokens by a Mamba-2 mixer (`mamba`) or by attention (`self_attn`), the other None (Granite
    4's hybrids, Bamba; Jamba's a Mamba mixer); `HybridMixerLayers.layer_inputs` gives a mixer layer its tokens'
    padding mask as `mask`."""

    def mix_tokens(self, x, cos, sin, mask, cache, attention_path):
        """The mixer's or the attention's output for the normed x, and the attention weights (None for a mixer)."""
        if self.mamba is not None:
            return self.mamba(x, mask, cache), None
        return self.self_attn(x, cos, sin, mask, cache, attention_path)


class HybridMixerLayers(HybridMixers):
    """HybridMixers for a stack of MixerOrAttentionLayer: an attention layer takes the decoder's (cos, sin, mask),
    unrotated where `rotates` is False (Granite 4's "nope"), a mixer layer the (B, T) padding mask of its tokens."""

    rotates = True

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        rotated = super().layer_inputs(x, position_ids, mask, end, attention_mask, cache) if self.rotates else None
        padding = padding_of(x, attention_mask)

        def inputs(layer):
            if layer.mamba is not None:
                return None, None, padding
            return rotated(layer) if rotated is not None else (None, None, mask)

        return inputs


def padding_of(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The (B, T) padding mask of x's T new tokens (None without a mask): what a mixer zeroes."""
    return None if attention_mask is None else attention_mask[:, -x.shape[1]:]


class Mamba2Block(MambaBlock):
    mixer_class = Mamba2Mixer


class Mamba2PreTrainedModel(MambaPreTrainedModel):
    config_class = Mamba2Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)
    block_class = Mamba2Block

    def new_base_model(self, config: Mamba2Config) -> "Mamba2Model":
        return Mamba2Model(config)

    def _init_weights(self, module: nn.Module) -> None:
        """The reference's init of a new model: the default, then per mixer A = 1..num_heads, D = 1, dt_bias at the
        inverse softplus of steps drawn log-uniformly in [time_step_min, time_step_max], and Mamba's convolution and
        out_proj init."""
        super()._init_weights(module)
        if not isinstance(module, Mamba2Mixer):
            return
        H = module.A_log.shape[0]
        module.A_log.copy_(torch.log(torch.arange(1, H + 1, dtype=torch.float32)))
        module.D.fill_(1.0)
        module.dt_bias.copy_(time_step_bias(H, self.config))
        init_conv_and_out_proj(module, self.config)


class Mamba2Model(Mamba2PreTrainedModel, MambaModel):
    """The layer stack without a head: returns the last hidden state after norm_f."""

    recorded_layer_states = slice(None, -1)  # the embeddings and each later layer's input, as the reference's


class Mamba2ForCausalLM(Mamba2PreTrainedModel, MambaForCausalLM):
    """The layer stack with its language-model head (untied unless tie_word_embeddings): logits in float32, and the
    loss when labels are given."""
