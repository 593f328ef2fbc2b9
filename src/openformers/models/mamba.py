"""Mamba decoders (state-spaces/mamba-130m-hf ... mamba-2.8b-hf; model_type "mamba") in plain torch.nn.

No attention: after the token embeddings, each layer is an RMSNorm and a selective state-space mixer added to the
residual stream (kept float32 with `residual_in_fp32`), then a final RMSNorm and the language-model head, tied to
the embeddings. The mixer, over D = intermediate_size channels:
- `in_proj` makes x and a gate z (D each) from the hidden state;
- a causal depthwise convolution of `conv_kernel` taps (`conv1d`, with its bias) over x, then SiLU;
- `x_proj` makes from x a time step of `time_step_rank` dimensions and the scan's input and output vectors B and
  C (`state_size` each), per position; `dt_proj` widens the time step to D and softplus makes it positive;
- the selective scan: each channel keeps `state_size` states h, and at each position
  h = exp(dt * A) * h + dt * B * x, y = C . h + D * x, with A = -exp(A_log) (D, state_size) and D (D,) learned;
- y times SiLU(z), then `out_proj` back to hidden_size.
The scan (`selective_scan`) runs in the compiled library on the CPU once a load has built it (kernels/scan.cpp: a
thread's block of channels through the positions, the states in a few kilobytes, and a backward pass from one state
in 64 kept), else position after position (`sequential_scan`), as the reference's plain path does; a decoding step
is one position. Padding (a 0 in attention_mask) zeroes the mixer's input and its convolution's output at
those positions, as the reference does, so a left-padded row's state stays zero until its first token.

The cache is a `generation.MambaCache`: per layer the convolution's last `conv_kernel` inputs and the scan's
state, which beams and batches reorder but which cannot be cropped back (assisted decoding is refused), and a
StaticCache or a plain DynamicCache is refused by name (DynamicCache(config=model.config) makes a MambaCache). Parameter names are those of Hugging Face checkpoints
(`backbone.layers.0.mixer.A_log`); older files' `backbone.embedding` is read as `backbone.embeddings`, as the
reference reads it. GGUF files of llama.cpp's "mamba" architecture load here (`ssm_in`, `ssm_conv1d`, `ssm_x`,
`ssm_dt`, `ssm_a` stored as A = -exp(A_log), `ssm_d`, `ssm_out`; `mamba.ssm.*` metadata), Falcon-Mamba's among
them (`mamba.ssm.dt_b_c_rms`: falcon_mamba.py). The CPU decoding kernel does not apply (kernels/llama.py refuses the
model type); its linear layers can still be quantized.
"""

import re

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, FalconMambaConfig, MambaConfig
from ..generation.cache import Cache, HybridCache, MambaCache
from ..weights import rename
from .base import PreTrainedModel, check_inputs, embedded, recorded
from .gpt_neox import gguf_required
from .heads import CausalLM
from .layers import ACTIVATIONS, RMSNorm, run_layer
from .outputs import BaseModelOutputWithPast


def config_from_gguf(gguf, **overrides) -> MambaConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "mamba" architecture: a FalconMambaConfig where
    `mamba.ssm.dt_b_c_rms` says the time step, B and C are normalized (llama.cpp writes no epsilon for it: the
    reference's default 1e-6)."""
    hidden_size = gguf_required(gguf, "mamba.embedding_length")
    inner_size = gguf_required(gguf, "mamba.ssm.inner_size")
    if inner_size % hidden_size:
        raise ValueError(f"{gguf.path} has mamba.ssm.inner_size={inner_size}, not a multiple of "
                         f"mamba.embedding_length={hidden_size}, which a Mamba model's expand needs.")
    falcon = bool(gguf.get("mamba.ssm.dt_b_c_rms", False))
    values = {
        "architectures": ["FalconMambaForCausalLM" if falcon else "MambaForCausalLM"],
        "expand": inner_size // hidden_size,
        "time_step_rank": gguf_required(gguf, "mamba.ssm.time_step_rank"),
        **gguf_state_space_values(gguf, "mamba"),
    }
    return (FalconMambaConfig if falcon else MambaConfig).from_dict(values, **overrides)


GGUF_CONFIG_READERS["mamba"] = config_from_gguf


def gguf_state_space_values(gguf, arch: str) -> dict:
    """The config values llama.cpp's "mamba" and "mamba2" files state alike: sizes, the norms' epsilon, the biases
    (from the tensors present), tied embeddings when there is no output.weight, and the special tokens."""
    return {
        "vocab_size": gguf.tensors["token_embd.weight"].shape[-1],
        "hidden_size": gguf_required(gguf, f"{arch}.embedding_length"),
        "num_hidden_layers": gguf_required(gguf, f"{arch}.block_count"),
        "state_size": gguf_required(gguf, f"{arch}.ssm.state_size"),
        "conv_kernel": gguf_required(gguf, f"{arch}.ssm.conv_kernel"),
        "layer_norm_epsilon": gguf.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        "use_conv_bias": "blk.0.ssm_conv1d.bias" in gguf.tensor_names,
        "use_bias": "blk.0.ssm_in.bias" in gguf.tensor_names,
        "tie_word_embeddings": "output.weight" not in gguf.tensor_names,
        "bos_token_id": gguf.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": gguf.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": gguf.get("tokenizer.ggml.padding_token_id"),
    }

# llama.cpp name part -> Hugging Face name part.
GGUF_RENAMES = {
    "token_embd": "backbone.embeddings",
    "blk": "backbone.layers",
    "attn_norm": "norm",
    "ssm_in": "mixer.in_proj",
    "ssm_conv1d": "mixer.conv1d",
    "ssm_x": "mixer.x_proj",
    "ssm_dt": "mixer.dt_proj",
    "ssm_a": "mixer.A_log",
    "ssm_d": "mixer.D",
    "ssm_out": "mixer.out_proj",
    "output_norm": "backbone.norm_f",
    "output": "lm_head",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: MambaConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names; A back to A_log (llama.cpp stores -exp(A_log)) and the
    convolution's (D, conv_kernel) weight back to the checkpoints' (D, 1, conv_kernel)."""
    return mixers_from_gguf(rename(state_dict, GGUF_RENAMES), "mixer")


def mixers_from_gguf(state_dict: dict[str, torch.Tensor], mixer: str) -> dict[str, torch.Tensor]:
    """A renamed GGUF state dict with each mixer's (its modules named `mixer`: Mamba's `mixer`, Jamba's `mamba`)
    A_log back from llama.cpp's A = -exp(A_log) and its convolution's (D, conv_kernel) weight back to (D, 1, K)."""
    for name, tensor in state_dict.items():
        if name.endswith(f".{mixer}.A_log"):
            state_dict[name] = torch.log(-tensor)
        elif name.endswith(f".{mixer}.conv1d.weight"):
            state_dict[name] = tensor.reshape(tensor.shape[0], 1, -1)
    return state_dict


def _from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Older files name the token table backbone.embedding (the reference's load hook renames it too).
    return {re.sub(r"^backbone\.embedding\.", "backbone.embeddings.", name): t for name, t in state_dict.items()}


def state_cache(past_key_values, cache, use_cache: bool | None, model) -> Cache | None:
    """The cache a forward call of a model with state layers uses: the one given (under either name), else the
    model's `new_cache()` (a MambaCache, or a HybridCache where layers also attend) when use_cache=True, else None.
    The user's DynamicCache(config=model.config) is such a cache. A cache of another kind, or a HybridCache of other
    layers, is refused: it cannot hold the layers' states."""
    if past_key_values is not None and cache is not None and past_key_values is not cache:
        raise ValueError("Got both past_key_values= and cache=, two names for the same argument; pass one.")
    cache = past_key_values if past_key_values is not None else cache
    expected = model.new_cache()
    if cache is None:
        return expected if use_cache else None
    if not isinstance(cache, type(expected)):
        kind, wanted = type(cache).__name__, type(expected).__name__
        hint = ("leave cache_implementation unset" if getattr(cache, "is_compileable", False)
                else "pass DynamicCache(config=model.config), the model's new_cache() or none")
        raise TypeError(
            f"{type(model).__name__} keeps a state in its layers, not keys and values alone: its cache is a {wanted}, "
            f"got {kind}; {hint} (generate makes one)."
        )
    if isinstance(expected, HybridCache) and (cache.attends, cache.keeps_state) != (expected.attends,
                                                                                     expected.keeps_state):
        raise ValueError(
            f"{type(model).__name__}'s layers attend {expected.attends} and keep states {expected.keeps_state}, but "
            f"the HybridCache given was made for layers attending {cache.attends} and keeping states "
            f"{cache.keeps_state}: make it with DynamicCache(config=model.config)."
        )
    return cache


def masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x (B, T, ...) with the padded positions of the (B, T) mask zeroed, as the reference zeroes them."""
    return x if mask is None else (x * mask[:, :, None]).to(x.dtype)


def causal_conv(conv1d: nn.Conv1d, h: torch.Tensor, conv_state: torch.Tensor | None):
    """The causal depthwise convolution `conv1d` (with its bias) of h (B, C, T), continuing from `conv_state`, the
    last conv_kernel inputs before h (B, C, K; None: zeros). Returns the output (B, C, T) in the weight's dtype and
    the new conv state, the last K inputs."""
    K = conv1d.kernel_size[0]
    if conv_state is None:
        conv_state = h.new_zeros(*h.shape[:2], K)
    window = torch.cat([conv_state, h], dim=-1)  # (B, C, K + T): the last K inputs before the new ones
    weight = conv1d.weight
    out = F.conv1d(window.to(weight.dtype), weight, conv1d.bias, groups=weight.shape[0])[..., 1:]
    return out, window[..., -K:]


def product_then_bias(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """linear(x), its bias added after the product is rounded: what torch computes for a non-contiguous input, such
    as the reference mixers' transposed scan output (in bfloat16 other bits than the fused product and bias). A layer
    without float weights (quantized) or not a linear one (LoRA's) runs as it is."""
    if not isinstance(linear, nn.Linear) or linear.bias is None or not linear.weight.is_floating_point():
        return linear(x)
    return F.linear(x, linear.weight) + linear.bias


def selective_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                   state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan over x (B, T, D) with the time step dt (B, T, D, float32), A (D, N), B and C (B, T, N), from `state`
    (B, D, N, float32; None: zeros): at each position h = exp(dt * A) * h + dt * B * x, y = C . h, each state rounded
    to C's dtype for the product, as the reference's. Returns y (B, T, D) in C's dtype and the last state (B, D, N).

    On the CPU, once the compiled library is loaded (kernels/scan.cpp; a model's load builds it), the scan runs there
    with the states in a thread's few kilobytes, and through its backward pass when gradients are asked for; else
    (no library, another device, torch.compile, float16) position after position here (`sequential_scan`)."""
    if state is None:
        state = dt.new_zeros(x.shape[0], *A.shape)
    if not _compiled_scan_applies(x, c):
        return sequential_scan(x, dt, A, b, c, state)
    inputs = [t.float().contiguous() for t in (x, dt, A, b, c, state)]
    bfloat16_output = c.dtype == torch.bfloat16
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        y, last = _CompiledScan.apply(*inputs, bfloat16_output)
    else:
        y, last, _ = torch.ops.openformers.selective_scan(*inputs, bfloat16_output, False)
    return y.to(c.dtype), last


def sequential_scan(x, dt, A, b, c, state) -> tuple[torch.Tensor, torch.Tensor]:
    """`selective_scan` one position after another, as the reference's plain path runs it (a product, then a sum:
    torch.addcmul's fused multiply-add would round once), every (B, T, D, N) state kept."""
    dA = torch.exp(dt[..., None] * A)  # (B, T, D, N)
    dBx = dt[..., None] * b[:, :, None, :].float() * x[..., None].float()
    states = []
    # unbind: one gradient for all positions in a backward pass, where indexing each position makes a whole one each
    for decay, added in zip(dA.unbind(1), dBx.unbind(1)):
        state = decay * state + added
        states.append(state)
    states = torch.stack(states, dim=1)  # (B, T, D, N)
    return (states.to(c.dtype) @ c[..., None]).squeeze(-1), states[:, -1]


def _compiled_scan_applies(x: torch.Tensor, c: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.shape[1] > 0 and x.dtype in (torch.float32, torch.bfloat16)
            and c.dtype in (torch.float32, torch.bfloat16) and type(x) is torch.Tensor
            and not torch.compiler.is_compiling() and hasattr(torch.ops.openformers, "selective_scan"))


class _CompiledScan(torch.autograd.Function):
    """The compiled scan with its backward pass (float32 inputs): the forward keeps one state in 64 positions, and
    the backward recomputes the others from them."""

    @staticmethod
    def forward(ctx, x, dt, A, b, c, state, bfloat16_output: bool):
        y, last, checkpoints = torch.ops.openformers.selective_scan(x, dt, A, b, c, state, bfloat16_output, True)
        ctx.save_for_backward(x, dt, A, b, c, checkpoints)
        ctx.bfloat16_output = bfloat16_output
        return y, last

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        x, dt, A, b, c, checkpoints = ctx.saved_tensors
        grad_y = torch.zeros_like(x) if grad_y is None else grad_y.float().contiguous()
        grad_last = (x.new_zeros(x.shape[0], *A.shape) if grad_last is None
                     else grad_last.float().contiguous())
        gx, gdt, gA, gb, gc, gstate = torch.ops.openformers.selective_scan_backward(
            grad_y, grad_last, x, dt, A, b, c, checkpoints, ctx.bfloat16_output)
        # A's gradient comes per sequence, B's and C's per block of channels (see scan.cpp)
        return gx, gdt, gA.sum(0), gb.sum(1), gc.sum(1), gstate, None


class MambaMixer(nn.Module):
    """The selective state-space mixer (see the module docstring); `normalized` is Falcon-Mamba's hook."""

    def __init__(self, config: MambaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        D, N, R = config.intermediate_size, config.state_size, config.time_step_rank
        self.sizes = (R, N, N)
        self.in_proj = nn.Linear(config.hidden_size, 2 * D, bias=config.use_bias)
        self.conv1d = nn.Conv1d(D, D, config.conv_kernel, groups=D, bias=config.use_conv_bias,
                                padding=config.conv_kernel - 1)
        self.act = ACTIVATIONS[config.hidden_act]
        self.x_proj = nn.Linear(D, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, D, bias=True)
        self.A_log = nn.Parameter(torch.empty(D, N))
        self.D = nn.Parameter(torch.empty(D))
        self.out_proj = nn.Linear(D, config.hidden_size, bias=config.use_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: MambaCache | None) -> torch.Tensor:
        T = x.shape[1]
        dtype = x.dtype
        xz = self.in_proj(masked(x, mask)).transpose(1, 2)  # (B, 2D, T)
        h, z = xz.chunk(2, dim=1)  # (B, D, T) each
        state = None if cache is None else cache.state(self.layer_idx)
        h, conv_state = causal_conv(self.conv1d, h, None if state is None else state[0])
        h = masked(self.act(h).to(dtype).transpose(1, 2), mask)  # (B, T, D)
        dt, b, c = self.normalized(*torch.split(self.x_proj(h), self.sizes, dim=-1))
        dt = F.softplus(self.widened(dt)).float()  # (B, T, D): softplus in the model's dtype, as the reference's
        A = -torch.exp(self.A_log.float())  # (D, N)
        y, ssm = selective_scan(h, dt, A, b, c, None if state is None else state[1])  # (B, T, D), (B, D, N)
        y = (y + h * self.D.float()) * F.silu(z.transpose(1, 2))
        if cache is not None:
            cache.store(self.layer_idx, conv_state, ssm, T)
        return product_then_bias(self.out_proj, y.to(dtype))

    def normalized(self, dt: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
        """The time step (B, T, time_step_rank), B and C (B, T, state_size) as the scan takes them: as projected."""
        return dt, b, c

    def widened(self, dt: torch.Tensor) -> torch.Tensor:
        """The time step (B, T, D) before softplus: dt_proj of the normalized one, its bias added in the product."""
        return self.dt_proj(dt)


class MambaBlock(nn.Module):
    """RMSNorm, the mixer, and the residual add (in float32 with residual_in_fp32, as the reference adds it)."""

    mixer_class = MambaMixer

    def __init__(self, config: MambaConfig, layer_idx: int):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.hidden_size, config.layer_norm_epsilon)
        self.mixer = self.mixer_class(config, layer_idx)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: MambaCache | None) -> torch.Tensor:
        residual = x.float() if self.residual_in_fp32 else x
        return residual + self.mixer(self.norm(x.to(self.norm.weight.dtype)), mask, cache)


class MambaPreTrainedModel(PreTrainedModel):
    config_class = MambaConfig
    base_model_prefix = "backbone"
    from_checkpoint_layout = staticmethod(_from_checkpoint_layout)
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)
    block_class = MambaBlock

    def new_base_model(self, config: MambaConfig) -> "MambaModel":
        return MambaModel(config)

    def new_cache(self) -> Cache:
        """The cache generate decodes with: a MambaCache."""
        return MambaCache()

    def _init_weights(self, module: nn.Module) -> None:
        """The reference's init of a new model: the default, then per mixer A = 1..state_size per channel, D = 1,
        the time step's bias at the inverse softplus of steps drawn log-uniformly in [time_step_min, time_step_max],
        and dt_proj's weights uniform within time_step_rank ** -0.5 * time_step_scale."""
        super()._init_weights(module)
        if not isinstance(module, MambaMixer):
            return
        config = self.config
        init_a_and_d(module)
        D = module.D.shape[0]
        scale = config.time_step_rank**-0.5 * config.time_step_scale
        if config.time_step_init_scheme == "constant":
            nn.init.constant_(module.dt_proj.weight, scale)
        else:
            nn.init.uniform_(module.dt_proj.weight, -scale, scale)
        module.dt_proj.bias.copy_(time_step_bias(D, config))
        init_conv_and_out_proj(module, config)


def init_a_and_d(module: MambaMixer) -> None:
    """A mixer's A = 1..state_size in each channel (A_log their logarithms) and D = 1, as the reference's init sets
    them (Mamba's, Falcon-Mamba's, Jamba's)."""
    D, N = module.A_log.shape
    module.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(D, N))
    module.D.fill_(1.0)


def time_step_bias(n: int, config) -> torch.Tensor:
    """n time-step biases as the reference initializes them (Mamba's and Mamba-2's): the inverse softplus of steps
    drawn log-uniformly in [time_step_min, time_step_max], floored at time_step_floor."""
    low, high = torch.log(torch.tensor([config.time_step_min, config.time_step_max]))
    dt = torch.exp(torch.rand(n) * (high - low) + low).clamp(min=config.time_step_floor)
    return dt + torch.log(-torch.expm1(-dt))


def init_conv_and_out_proj(module: nn.Module, config) -> None:
    """A mixer's convolution and out_proj as the reference initializes them: Kaiming-uniform weights, a zero conv bias,
    out_proj scaled by 1 / sqrt(num_hidden_layers) with rescale_prenorm_residual."""
    nn.init.kaiming_uniform_(module.conv1d.weight, a=5**0.5)
    if module.conv1d.bias is not None:
        nn.init.zeros_(module.conv1d.bias)
    nn.init.kaiming_uniform_(module.out_proj.weight, a=5**0.5)
    if config.rescale_prenorm_residual:
        module.out_proj.weight /= config.num_hidden_layers**0.5


class MambaModel(MambaPreTrainedModel):
    """The layer stack without a head: returns the last hidden state (B, T, hidden_size) after norm_f."""

    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)
    # Which of the embeddings and the layers' outputs output_hidden_states records before the normed last one: as the
    # reference, each layer's output for Mamba; each layer's input for Mamba-2.
    recorded_layer_states = slice(1, None)

    def __init__(self, config: MambaConfig):
        super().__init__(config)
        # An explicit weight skips nn.Embedding's random init (see base.token_embeddings); no padding row, as the
        # reference's table has none.
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                       _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(self.block_class(config, i) for i in range(config.num_hidden_layers))
        self.norm_f = RMSNorm(config.hidden_size, config.layer_norm_epsilon)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, cache_position=None,
    ) -> BaseModelOutputWithPast | tuple:
        """The last hidden state after norm_f; with output_hidden_states, every layer's output (Mamba-2: input) then
        the normed last one, as the reference records them. Positions, token types and attention weights do not apply: a layer
        reads its past from the cache's states, in order."""
        if labels is not None:
            raise ValueError(f"{type(self).__name__} has no head to compute a loss with; use its ForCausalLM class.")
        check_inputs(input_ids, inputs_embeds)
        _, output_hidden_states, _ = self.output_options(None, output_hidden_states, None)
        cache = state_cache(past_key_values, cache, use_cache, self)
        x = embedded(self.embeddings, input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        mask = None if attention_mask is None else attention_mask[:, -x.shape[1]:]  # the new positions' columns
        checkpointing = self.gradient_checkpointing if self.training and cache is None else None
        hidden_states = [x] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            x = run_layer(layer, checkpointing, x, mask, cache, last=i == len(self.layers) - 1)
            if hidden_states is not None:
                hidden_states.append(x)
        x = self.norm_f(x)
        if hidden_states is not None:
            hidden_states = [*hidden_states[self.recorded_layer_states], x]
        output = BaseModelOutputWithPast(last_hidden_state=x, cache=cache, hidden_states=recorded(hidden_states))
        return self.returned(output, return_dict)


class MambaForCausalLM(MambaPreTrainedModel, CausalLM):
    """The layer stack with its language-model head (tied to the embeddings): next-token logits in float32, as the
    reference gives them whatever the model's dtype, and the loss when labels are given."""

    tied_weights = {"lm_head.weight": "backbone.embeddings.weight"}

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # The float32 residual stream back in the model's dtype (the embeddings': a quantized head's weight is not)
        return self.lm_head(hidden.to(self.backbone.embeddings.weight.dtype)).float()
