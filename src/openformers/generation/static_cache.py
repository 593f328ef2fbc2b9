"""A static KV cache and the compiled decoding step it allows: the portable fast path.

`StaticCache` preallocates one (B, n_kv, max_cache_len, hs) key buffer and one value buffer per layer and writes
each forward pass's keys and values at their positions in place; the model attends over the whole buffer with a
mask that hides the slots not written yet (models/layers.py, `static_cache_mask`). Shapes never change between
steps, and how much is written lives on the device as a tensor, so `torch.compile` traces a decoding step once
and replays it for every token (gpt-fast's recipe, and the reference's `cache_implementation="static"`). This is
the fast path wherever the CPU kernels do not run: GPUs, and CPUs without a compiler.

`generate` reaches this module through `cache_for_generation` (which cache to decode with) and
`forward_for_decoding` (what to call for each step: the model, or its compiled forward for one token per row).
"""

import warnings

import torch
import torch.nn.functional as F

from .cache import Cache
from .config import CompileConfig, GenerationConfig

# cache_implementation values that ask for a static cache. The reference sizes sliding-window and hybrid layers
# apart; here every layer keeps every position and the model's mask applies the window, which gives the same
# tokens. Offloading to the CPU saves GPU memory, never changes tokens, and is not done here.
STATIC_IMPLEMENTATIONS = ("static", "offloaded_static", "sliding_window", "hybrid", "hybrid_chunked",
                          "offloaded_hybrid", "offloaded_hybrid_chunked")
# Devices where generate compiles a static cache's decoding step unasked, as in the reference. Elsewhere (the CPU)
# compiling costs tens of seconds before the first token: it is done only with compile_config._compile_all_devices.
_AUTO_COMPILE_DEVICES = ("cuda", "xpu", "mps")


class StaticCache(Cache):
    """A cache of fixed size: buffers for `max_cache_len` positions, allocated on the first update of each layer.

    As the reference's StaticCache(config, max_cache_len): `config` is the model's config (accepted for the same
    call; the buffers take their shapes, dtype and device from the first keys and values they receive), and
    `max_batch_size`, `device` and `dtype`, the reference's older keywords, are accepted the same way.
    """

    def __init__(self, config=None, max_cache_len: int | None = None, offloading: bool = False,
                 offload_only_non_sliding: bool = True, *, max_batch_size=None, device=None, dtype=None):
        if not isinstance(max_cache_len, int) or isinstance(max_cache_len, bool) or max_cache_len < 1:
            raise ValueError(
                f"StaticCache needs max_cache_len, the most positions it will hold (prompt and new tokens), as a "
                f"positive int; got {max_cache_len!r}. For generate, pass cache_implementation='static' instead and "
                "the cache is sized for the call."
            )
        if offloading:
            raise ValueError("StaticCache(offloading=True) is not supported: the buffers stay on the model's device; "
                             "leave offloading at False.")
        self.max_cache_len = max_cache_len
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # Positions written, per layer: 0-d tensors on the buffers' device, updated in place, so that neither a step
        # nor the mask built from them reads a length back to the host (which would break or recompile a graph).
        self.lengths: list[torch.Tensor] = []

    @property
    def is_compileable(self) -> bool:
        return True

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return self.max_cache_len

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        """The reference's name for the number of positions the buffers hold."""
        return self.max_cache_len

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions written so far (reads the length back from the device)."""
        return int(self.lengths[layer_idx]) if layer_idx < len(self.lengths) else 0

    def next_positions(self, T: int, device: torch.device) -> torch.Tensor:
        """(T,) the slots the next T positions take: after those written, computed on the device."""
        positions = torch.arange(T, device=device)
        return positions + self.lengths[0].to(device) if self.lengths else positions

    def update(self, layer_idx, k, v, cache_kwargs=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k and v (B, n_kv, T, hs) after a layer's written positions; return its whole buffers
        (B, n_kv, max_cache_len, hs), whose unwritten slots the model's mask hides.

        Also takes the reference's order, update(key_states, value_states, layer_idx, cache_kwargs=None).
        """
        if isinstance(layer_idx, torch.Tensor):
            layer_idx, k, v = v, layer_idx, k
        if layer_idx == len(self.keys):
            self._allocate(k, v)
        T = k.shape[2]
        if layer_idx == 0 and not torch.compiler.is_compiling():  # one read of the length per forward pass
            self._check_room(layer_idx, T)
        slots = self.lengths[layer_idx] + torch.arange(T, device=k.device)
        self.keys[layer_idx].index_copy_(2, slots, k)
        self.values[layer_idx].index_copy_(2, slots, v)
        self.lengths[layer_idx].add_(T)
        return self.keys[layer_idx], self.values[layer_idx]

    def _allocate(self, k: torch.Tensor, v: torch.Tensor) -> None:
        # Zeros, not empty memory: a masked slot still enters the product q.k, and NaN garbage would survive the mask.
        self.keys.append(k.new_zeros(*k.shape[:2], self.max_cache_len, k.shape[3]))
        self.values.append(v.new_zeros(*v.shape[:2], self.max_cache_len, v.shape[3]))
        self.lengths.append(torch.zeros((), dtype=torch.long, device=k.device))

    def _check_room(self, layer_idx: int, T: int) -> None:
        written = int(self.lengths[layer_idx])
        if written + T > self.max_cache_len:
            raise ValueError(
                f"StaticCache(max_cache_len={self.max_cache_len}) holds {written} positions and cannot take {T} more: "
                "create it with a larger max_cache_len (prompt plus new tokens)."
            )

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Keep, for every row, the cache of the row `beam_idx` names (beam search; more rows expand the batch).

        For the same number of rows the buffers are rewritten in place, keeping the addresses a compiled step
        was traced with.
        """
        for i in range(len(self.keys)):
            index = beam_idx.to(self.keys[i].device)
            if index.numel() == self.keys[i].shape[0]:
                self.keys[i].copy_(self.keys[i].index_select(0, index))
                self.values[i].copy_(self.values[i].index_select(0, index))
            else:
                self.keys[i] = self.keys[i].index_select(0, index)
                self.values[i] = self.values[i].index_select(0, index)

    def crop(self, n: int) -> None:
        """Keep the first `n` positions; a negative `n` removes that many from the end. The slots past the kept
        ones are overwritten by later updates and hidden by the mask until then."""
        for length in self.lengths:
            if n >= 0:
                length.clamp_(max=n)
            else:
                length.sub_(-n).clamp_(min=0)

    def reset(self) -> None:
        """Forget every position and zero the buffers, keeping them (and their addresses) for the next prompt."""
        for keys, values, length in zip(self.keys, self.values, self.lengths):
            keys.zero_()
            values.zero_()
            length.zero_()


def cache_for_generation(model, config: GenerationConfig, past_key_values: Cache | None,
                         max_length: int) -> Cache | None:
    """The cache `generate` decodes with: the caller's `past_key_values`; a new StaticCache when
    config.cache_implementation asks for one; else None (the decoder makes a DynamicCache).

    The static cache holds `max_length` positions (prompt included), or more when config.max_cache_len or an
    earlier call of this model asked for more, as in the reference: a call that fits in an earlier call's size
    reuses its compiled step instead of compiling one for a new shape.
    """
    kind = config.cache_implementation
    if past_key_values is not None:
        if kind is not None:
            raise ValueError(
                f"generate() got both cache_implementation={kind!r} (which makes a new cache) and past_key_values "
                "(a cache object): pass only one of them."
            )
        return past_key_values
    if kind not in STATIC_IMPLEMENTATIONS:
        return None
    length = max(max_length, getattr(config, "max_cache_len", None) or 0, getattr(model, "_static_cache_length", 0))
    model._static_cache_length = length
    return StaticCache(config=getattr(model, "config", None), max_cache_len=length)


def forward_for_decoding(model, config: GenerationConfig, cache: Cache | None):
    """What the decoder calls for each forward pass: the model itself, or, when the cache is static and compiling
    is asked for (as the reference decides), a `CompiledDecodeStep` that runs prompts eagerly and each
    one-token-per-row step through the model's compiled forward."""
    if not _compiles(model, config, cache):
        return model
    compile_config = getattr(config, "compile_config", None) or CompileConfig()
    return CompiledDecodeStep(model, compiled_forward(model, compile_config), cache)


def _compiles(model, config: GenerationConfig, cache: Cache | None) -> bool:
    """The reference's rule: a static cache, disable_compile not set, and an accelerator, or the CPU when
    compile_config._compile_all_devices is set."""
    if getattr(config, "disable_compile", None):
        return False
    compile_config = getattr(config, "compile_config", None)
    device = next(model.parameters()).device
    hardware = device.type in _AUTO_COMPILE_DEVICES or bool(getattr(compile_config, "_compile_all_devices", None))
    compiles = hardware and getattr(cache, "is_compileable", False)
    if compile_config is not None and not compiles:
        warnings.warn(
            "compile_config is set, but generate compiles only the decoding step of a static cache "
            "(cache_implementation='static'), on a GPU, or on the CPU with compile_config._compile_all_devices = "
            "True: this call decodes without compiling.", UserWarning, stacklevel=5,  # generate's caller
        )
    return compiles


def compiled_forward(model, compile_config: CompileConfig):
    """`torch.compile(model.__call__)` with the options of `compile_config`, kept on the model so that later
    generate calls with the same options reuse its graphs (the reference's get_compiled_call)."""
    options = {name: getattr(compile_config, name) for name in ("fullgraph", "dynamic", "backend", "mode", "options")}
    kept = getattr(model, "_compiled_decode_step", None)
    if kept is None or kept[0] != options:
        kept = (options, torch.compile(model.__call__, **options))
        model._compiled_decode_step = kept
    return kept[1]


class CompiledDecodeStep:
    """Calls the model as the decoder does, sending one-token-per-row steps to the compiled forward.

    Prompts (many tokens, a shape per prompt) run eagerly: compiling them would trace a graph for every prompt
    length; so do steps that return attentions or hidden states. Before a compiled step, the padding mask is
    widened to the cache's whole length, so its shape is the same for every step, and the cache's buffers are
    marked as static addresses, which CUDA graphs need to replay in-place writes. The logits are copied out:
    CUDA graphs write every step's outputs to the same memory.
    """

    def __init__(self, model, compiled, cache: Cache):
        self.model, self.compiled, self.cache = model, compiled, cache

    def __call__(self, input_ids, attention_mask=None, **kwargs):
        extras = kwargs.get("output_attentions") or kwargs.get("output_hidden_states")
        if input_ids is None or input_ids.shape[1] != 1 or not self.cache.keys or extras:  # (None: embeddings)
            return self.model(input_ids, attention_mask=attention_mask, **kwargs)
        for tensor in (*self.cache.keys, *self.cache.values, *self.cache.lengths):
            torch._dynamo.mark_static_address(tensor)  # a new buffer (a beam search's wider batch) needs it too
        if attention_mask is not None:
            attention_mask = F.pad(attention_mask, (0, self.cache.max_cache_len - attention_mask.shape[-1]), value=1)
        output = self.compiled(input_ids, attention_mask=attention_mask, **kwargs)
        output.logits = output.logits.clone()
        return output
