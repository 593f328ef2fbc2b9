"""Key/value caches for incremental decoding.

Every cache speaks one protocol, which is all a model knows of it:
    update(layer_idx, k, v) -> (k, v)   append this step's keys and values, return everything cached so far
    seq_len                             how many positions are cached (read it before the forward pass)
    reorder(beam_idx), crop(n)          for beam search and for rolling back speculative tokens
DynamicCache also has the batch operations of continuous batching: left_pad(n), append_rows(other) and
drop_front(n), with reorder(rows) to drop rows, and copy(n) (a new cache of the first n positions) and nbytes for
the server's prefix cache. MambaCache is a state-space model's: per layer a fixed-size state instead of keys and
values, with the same row operations but no crop back (`croppable`): `snapshot()` / `restore(snapshot)` go back to
an exact earlier point instead; HybridCache pairs the two for a model whose layers mix attention and states;
`new_cache(model)` is the kind a model decodes with. EncoderDecoderCache pairs two caches for an encoder-decoder's
decoder: self-attention (the protocol above) and cross-attention (the encoder's keys and values, stored once).
Keys and values are shaped (B, n_kv_heads, T, head_dim). `Cache` is the base class, with the reference's names
for the same operations (get_seq_length, reorder_cache, batch_select_indices, ...), so code written against the
reference's caches (isinstance(past, Cache), cache.get_seq_length()) runs unchanged.
"""

import torch

_GROWTH = 256  # grow in blocks, so decoding one token rarely reallocates (mlx-lm does the same)


class Cache:
    """The base class of the caches: the protocol above, and the reference's names built on it.

    A subclass implements `update`, `get_seq_length`, `reorder` and `crop`, and keeps `keys` and `values`, one
    (B, n_kv, capacity, hs) buffer per layer.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    # Whether `crop` can drop positions from the end (assisted decoding needs it; a state cache cannot).
    croppable = True

    def update(self, layer_idx, k, v, cache_kwargs=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must define update(layer_idx, k, v); Cache is only the base class.")

    def get_seq_length(self, layer_idx: int = 0) -> int:
        raise TypeError(f"{type(self).__name__} must define get_seq_length(); Cache is only the base class.")

    def reorder(self, beam_idx: torch.Tensor) -> None:
        raise TypeError(f"{type(self).__name__} must define reorder(beam_idx); Cache is only the base class.")

    def crop(self, n: int) -> None:
        raise TypeError(f"{type(self).__name__} must define crop(n); Cache is only the base class.")

    @property
    def seq_len(self) -> int:
        return self.get_seq_length()

    def __len__(self) -> int:
        """The number of layers cached so far (the reference's meaning)."""
        return len(self.keys)

    @property
    def batch_size(self) -> int:
        """Rows in the cache, -1 before the first update (as the reference)."""
        return self.keys[0].shape[0] if self.keys else -1

    @property
    def is_initialized(self) -> bool:
        return bool(self.keys)

    @property
    def is_compileable(self) -> bool:
        return False  # the buffers grow, so shapes change between steps

    def get_max_length(self, layer_idx: int | None = None) -> int:
        """-1: a growing cache has no maximum (as the reference's dynamic layers)."""
        return -1

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """The reference's name for `reorder`."""
        self.reorder(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows `indices`."""
        self.reorder(torch.as_tensor(indices, dtype=torch.long).flatten())

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each row `repeats` times, next to each other."""
        if self.is_initialized:
            self.reorder(torch.arange(self.batch_size).repeat_interleave(repeats))

    def reset(self) -> None:
        """Forget every position (the buffers are kept for reuse)."""
        self.crop(0)


class DynamicCache(Cache):
    """A cache that grows as tokens arrive, in blocks of 256 positions, one key and value buffer per layer.

    DynamicCache(config=model.config), as the reference's, makes the cache that config's layers need: where
    `config.layer_types` names layers that keep a state ("conv", "linear_attention", "mamba", "hybrid"), a
    HybridCache (a DynamicCache too) of the attending layers' keys and values and the others' states, or a
    MambaCache where no layer attends; else a plain DynamicCache, since sliding-window layers keep every position
    here (the model's mask applies the window).
    """

    def __new__(cls, *args, **kwargs):
        config = kwargs.get("config", args[0] if args else None)
        if cls is DynamicCache and config is not None:
            attends, states = layer_parts(config)
            if any(states):
                return super().__new__(HybridCache) if any(attends) else MambaCache()
        return super().__new__(cls)

    def __init__(self, config=None):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []

    @property
    def seq_len(self) -> int:
        return self.lengths[0] if self.lengths else 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx] if layer_idx < len(self.lengths) else 0

    def update(self, layer_idx, k, v, cache_kwargs=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k and v (B, n_kv, T, hs) to a layer; return its keys and values so far.

        Also takes the reference's order, update(key_states, value_states, layer_idx, cache_kwargs=None): the
        first argument is then a tensor.
        """
        if isinstance(layer_idx, torch.Tensor):
            layer_idx, k, v = v, layer_idx, k
        if layer_idx == len(self.keys):
            self.keys.append(k.new_empty(*k.shape[:2], 0, k.shape[3]))
            self.values.append(v.new_empty(*v.shape[:2], 0, v.shape[3]))
            self.lengths.append(0)
        keys, values, start = self.reserve(layer_idx, k.shape[2])
        end = self.lengths[layer_idx]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def reserve(self, layer_idx: int, new: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Count `new` more positions for a layer already in the cache, growing its buffers if they are full.

        Returns the whole key and value buffers (B, n_kv, capacity, hs) and the first new position, for a
        caller that writes the new keys and values in place (the compiled decoding kernel does).
        """
        start = self.lengths[layer_idx]
        end = start + new
        if end > self.keys[layer_idx].shape[2]:
            capacity = (end + _GROWTH - 1) // _GROWTH * _GROWTH
            self.keys[layer_idx] = _grow(self.keys[layer_idx], start, capacity)
            self.values[layer_idx] = _grow(self.values[layer_idx], start, capacity)
        self.lengths[layer_idx] = end
        return self.keys[layer_idx], self.values[layer_idx], start

    def start_layers(self, count: int, rows: int, heads: int, head_dim: int, dtype: torch.dtype) -> None:
        """Make an empty cache hold `count` empty layers of (rows, heads, 0, head_dim) buffers: what `update` makes
        of each layer's first keys, for a caller that writes every layer's keys in place (the compiled prompt step,
        through `reserve_all`)."""
        if self.keys:
            raise ValueError(f"start_layers makes the layers of an empty cache; this one holds {len(self.keys)}.")
        for _ in range(count):
            self.keys.append(torch.empty(rows, heads, 0, head_dim, dtype=dtype))
            self.values.append(torch.empty(rows, heads, 0, head_dim, dtype=dtype))
            self.lengths.append(0)

    def reserve_all(self, new: int) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
        """`reserve(i, new)` for every layer, all holding as many positions: the lists of key and value buffers
        (the cache's own) and the first new position. The compiled decoding step's one call a token, where a call
        of `reserve` per layer cost ~20 us a token (SmolLM2's 30 layers)."""
        start = self.lengths[0]
        if self.lengths.count(start) != len(self.lengths):
            raise ValueError(f"reserve_all needs every layer at one length; the layers hold {self.lengths} positions.")
        end = start + new
        for i, keys in enumerate(self.keys):
            if end > keys.shape[2]:
                self.reserve(i, new)
        self.lengths = [end] * len(self.lengths)
        return self.keys, self.values, start

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Keep, for every row, the cache of the row `beam_idx` names (beam search)."""
        for i, used in enumerate(self.lengths):
            self.keys[i] = _take_rows(self.keys[i], beam_idx, used)
            self.values[i] = _take_rows(self.values[i], beam_idx, used)

    def crop(self, n: int) -> None:
        """Keep the first `n` positions; a negative `n` removes that many from the end (the reference's 5.x use)."""
        keep = n if n >= 0 else max(0, self.seq_len + n)
        self.lengths = [min(length, keep) for length in self.lengths]

    # Batch surgery for continuous batching (generation/steps.py): rows of different lengths share one cache,
    # aligned at their ends, the attention mask hiding the padding in front of the shorter ones.

    def left_pad(self, n: int) -> None:
        """Put `n` empty positions before every row."""
        if not n:
            return
        for i, length in enumerate(self.lengths):
            self.keys[i] = _left_pad(self.keys[i][:, :, :length], n)
            self.values[i] = _left_pad(self.values[i][:, :, :length], n)
            self.lengths[i] = length + n

    def append_rows(self, other: "DynamicCache") -> None:
        """Add the rows of `other` after this cache's rows; both must hold as many positions per layer."""
        if other.lengths != self.lengths:
            raise ValueError(
                f"append_rows needs caches of equal lengths, got {other.lengths[:1]} and {self.lengths[:1]} "
                "positions: left_pad the shorter one first."
            )
        for i, length in enumerate(self.lengths):
            self.keys[i] = torch.cat([self.keys[i][:, :, :length], other.keys[i][:, :, :length]])
            self.values[i] = torch.cat([self.values[i][:, :, :length], other.values[i][:, :, :length]])

    def drop_front(self, n: int) -> None:
        """Forget the first `n` positions of every row (padding that no row needs any more)."""
        for i in range(len(self.keys)):
            self.keys[i] = self.keys[i][:, :, n:]
            self.values[i] = self.values[i][:, :, n:]
            self.lengths[i] -= n

    def copy(self, positions: int | None = None) -> "DynamicCache":
        """A new cache holding the first `positions` positions of this one (all it holds by default), copied into
        buffers of their size: what the server's prefix cache keeps of a prompt and what each choice of a prompt
        starts from."""
        copy = DynamicCache()
        self._copy_positions_into(copy, positions)
        return copy

    def _copy_positions_into(self, copy: "DynamicCache", positions: int | None) -> None:
        if positions is not None and not 0 <= positions <= self.seq_len:
            raise ValueError(f"copy(positions) takes 0 to the {self.seq_len} positions held, got {positions}.")
        copy.lengths = [length if positions is None else min(length, positions) for length in self.lengths]
        copy.keys = [k[:, :, :n].clone() for k, n in zip(self.keys, copy.lengths)]
        copy.values = [v[:, :, :n].clone() for v, n in zip(self.values, copy.lengths)]

    @property
    def nbytes(self) -> int:
        """The bytes of the positions held (not of the room grown ahead of them)."""
        return sum(k[:, :, :n].nbytes + v[:, :, :n].nbytes for k, v, n in zip(self.keys, self.values, self.lengths))


# The reference's layer_types, by what a layer keeps in the cache (its cache_utils' layer classes).
_STATE_LAYERS = ("conv", "linear_attention", "mamba")
_STATE_AND_ATTENTION_LAYERS = ("hybrid", "hybrid_sliding")


def layer_parts(config) -> tuple[list[bool], list[bool]]:
    """Per layer of `config.layer_types` (its decoder's), whether it attends and whether it keeps a state."""
    kinds = list(getattr(config.get_text_config(decoder=True), "layer_types", None) or [])
    attends = [kind not in _STATE_LAYERS for kind in kinds]
    states = [kind in _STATE_LAYERS or kind in _STATE_AND_ATTENTION_LAYERS for kind in kinds]
    return attends, states


def _take_rows(buffer: torch.Tensor, rows: torch.Tensor, used: int) -> torch.Tensor:
    """The buffer's rows `rows`, at the same capacity; only the `used` positions are copied (beam search reorders
    every step, while the buffer holds up to 255 positions more)."""
    taken = buffer.new_empty(rows.shape[0], *buffer.shape[1:])
    taken[:, :, :used] = buffer[:, :, :used].index_select(0, rows.to(buffer.device))
    return taken


def _grow(buffer: torch.Tensor, used: int, capacity: int) -> torch.Tensor:
    bigger = buffer.new_empty(*buffer.shape[:2], capacity, buffer.shape[3])
    bigger[:, :, :used] = buffer[:, :, :used]
    return bigger


def _left_pad(buffer: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([buffer.new_zeros(*buffer.shape[:2], n, buffer.shape[3]), buffer], dim=2)


class MambaCache(Cache):
    """The cache of a state-space decoder (Mamba, Falcon-Mamba, Mamba-2): per layer, not keys and values but a
    fixed-size state, whatever the length fed so far: the convolution's state, the last `conv_kernel` inputs of its
    depthwise convolution (B, channels, conv_kernel), and the scan's state, float32 as the scan keeps it (Mamba's
    (B, intermediate_size, state_size), Mamba-2's (B, num_heads, head_dim, state_size), None for a layer that has
    a convolution alone, as LFM2's); the model gives the shapes. `seq_len` counts the positions fed (left padding
    included).

    A layer reads its pair with `state(layer_idx)` (None before its first call) and writes the pair after its
    call with `store(layer_idx, conv, ssm, new)`. Rows follow beams and batches as a DynamicCache's do (`reorder`,
    `append_rows`, and `left_pad` / `drop_front`, which count positions and leave the states alone: a padded
    position changes no state). What it cannot do is go back: the state after n positions is not kept once more
    are fed, so `crop` below the length fed is refused, and the model cannot use a StaticCache or a DynamicCache
    instead of it. Going back to an exact earlier point is `restore(snapshot())`: a layer stores new tensors and
    never writes a stored state in place, so a snapshot is the lists of the states held then, nothing copied
    (assisted decoding takes one before the model checks its candidates, restores it after a rejected one and
    feeds the kept tokens again).
    """

    croppable = False

    def __init__(self, config=None):
        # `config` as DynamicCache(config=...) takes it; the states take their shapes from the first call.
        self.conv_states: list[torch.Tensor] = []
        self.ssm_states: list[torch.Tensor] = []
        self.lengths: list[int] = []

    @property
    def keys(self) -> list[torch.Tensor]:
        return self.conv_states  # what the base class counts layers and rows by

    @property
    def seq_len(self) -> int:
        return self.lengths[0] if self.lengths else 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx] if layer_idx < len(self.lengths) else 0

    def update(self, layer_idx, k, v, cache_kwargs=None):
        raise TypeError("A MambaCache holds each layer's convolution and scan states, not keys and values: an "
                        "attention layer needs a DynamicCache.")

    def state(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A layer's (conv, ssm) states after the positions fed so far, or None before its first call."""
        if layer_idx < len(self.conv_states):
            return self.conv_states[layer_idx], self.ssm_states[layer_idx]
        return None

    def store(self, layer_idx: int, conv: torch.Tensor, ssm: torch.Tensor | None, new: int) -> None:
        """Keep a layer's states after `new` more positions."""
        if layer_idx == len(self.conv_states):
            self.conv_states.append(conv)
            self.ssm_states.append(ssm)
            self.lengths.append(new)
            return
        self.conv_states[layer_idx], self.ssm_states[layer_idx] = conv, ssm
        self.lengths[layer_idx] += new

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Keep, for every row, the states of the row `beam_idx` names (beams, return sequences, dropped rows)."""
        self.conv_states = [_select_rows(conv, beam_idx) for conv in self.conv_states]
        self.ssm_states = [_select_rows(ssm, beam_idx) for ssm in self.ssm_states]

    def crop(self, n: int) -> None:
        """Only a crop that keeps every position fed (n >= seq_len, or n = 0 to start over) is possible."""
        keep = n if n >= 0 else self.seq_len + n
        if keep >= self.seq_len:
            return
        if keep == 0:
            self.conv_states, self.ssm_states, self.lengths = [], [], []
            return
        raise ValueError(
            f"A MambaCache cannot be cropped to {keep} of its {self.seq_len} positions: it keeps only the state after "
            "the last one. Take a snapshot() at the point to go back to, and restore(snapshot) there."
        )

    def snapshot(self) -> tuple[list, list, list[int]]:
        """The states and lengths held now, for `restore`."""
        return list(self.conv_states), list(self.ssm_states), list(self.lengths)

    def restore(self, snapshot: tuple[list, list, list[int]]) -> None:
        """Go back to the states a `snapshot()` of this cache held (the same rows), forgetting what was fed since."""
        self.conv_states, self.ssm_states, self.lengths = (list(part) for part in snapshot)

    def copy(self, positions: int | None = None) -> "MambaCache":
        """A new cache holding a copy of the states; `positions`, if given, must be all those fed: the states after
        fewer are gone."""
        if positions is not None and positions != self.seq_len:
            raise ValueError(f"A MambaCache holds only the states after its {self.seq_len} positions, so it cannot be "
                             f"copied with {positions}: copy it whole.")
        copy = MambaCache()
        copy.conv_states = [conv.clone() for conv in self.conv_states]
        copy.ssm_states = [None if ssm is None else ssm.clone() for ssm in self.ssm_states]
        copy.lengths = list(self.lengths)
        return copy

    @property
    def nbytes(self) -> int:
        """The bytes of the states, the same however many positions were fed."""
        ssm_bytes = sum(ssm.nbytes for ssm in self.ssm_states if ssm is not None)
        return sum(conv.nbytes for conv in self.conv_states) + ssm_bytes

    def left_pad(self, n: int) -> None:
        self.lengths = [length + n for length in self.lengths]

    def append_rows(self, other: "MambaCache") -> None:
        """Add the rows of `other` after this cache's rows; both must count as many positions (left_pad first)."""
        if other.lengths != self.lengths:
            raise ValueError(f"append_rows needs caches of equal lengths, got {other.lengths[:1]} and "
                             f"{self.lengths[:1]} positions: left_pad the shorter one first.")
        self.conv_states = [torch.cat(pair) for pair in zip(self.conv_states, other.conv_states)]
        self.ssm_states = [None if ssm is None else torch.cat([ssm, more])
                           for ssm, more in zip(self.ssm_states, other.ssm_states)]

    def drop_front(self, n: int) -> None:
        self.lengths = [length - n for length in self.lengths]

    def __repr__(self) -> str:
        return f"MambaCache(layers={len(self.conv_states)}, rows={self.batch_size}, seq_len={self.seq_len})"


def _select_rows(state: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if state is None else state.index_select(0, rows.to(state.device))


class HybridCache(DynamicCache):
    """The cache of a decoder whose layers mix attention with state-space or convolution layers (LFM2, Granite 4's
    hybrids, Bamba, Jamba) or run both side by side (Falcon-H1): a DynamicCache of the attending layers' keys and
    values and a MambaCache (`states`) of the layers' states, each layer reaching its own through its index in the
    model. `attends[i]` says whether layer i attends, `states[i]` whether it keeps a state (by default: the layers that
    do not attend; a Falcon-H1 layer does both). HybridCache(config=config) reads both from config.layer_types, as
    DynamicCache(config=config) does for such a config (which makes this class).

    Attention layers call `update(layer_idx, k, v)` and state layers `state(layer_idx)` / `store(...)`, as they do on
    a DynamicCache or a MambaCache; every row operation applies to both parts. Like a MambaCache it cannot go back
    (`crop` below the length fed is refused): the states after earlier positions are gone, and `restore(snapshot())`
    goes back to an exact earlier point of both parts instead.
    """

    croppable = False

    def __init__(self, attends=None, states=None, *, config=None):
        if config is None and hasattr(attends, "get_text_config"):  # DynamicCache(config), the config by position
            attends, config = None, attends
        if config is not None:
            if attends is not None or states is not None:
                raise TypeError("HybridCache takes attends (and states) or config=, not both.")
            attends, states = layer_parts(config)
        if attends is None:
            raise TypeError("HybridCache needs each layer's kind: HybridCache(attends, states) or "
                            "HybridCache(config=model.config).")
        super().__init__()
        self.attends = [bool(a) for a in attends]
        self.keeps_state = [not a for a in self.attends] if states is None else [bool(s) for s in states]
        if len(self.keeps_state) != len(self.attends):
            raise ValueError(f"HybridCache got {len(self.attends)} layers in attends but {len(self.keeps_state)} in "
                             "states: one entry per layer in each.")
        # each layer's index among the layers holding the same part: its place in that part
        self.slots = {part: [kinds[:i].count(True) for i in range(len(kinds))]
                      for part, kinds in ((True, self.attends), (False, self.keeps_state))}
        self.states = MambaCache()

    def _slot(self, layer_idx: int, attends: bool) -> int:
        holds = self.attends if attends else self.keeps_state
        if layer_idx >= len(holds) or not holds[layer_idx]:
            kind, use = ("keys and values", "an attention") if attends else ("state", "a state")
            raise TypeError(f"Layer {layer_idx} keeps no {kind} in this HybridCache, but was used as {use} layer: "
                            "make the cache with DynamicCache(config=model.config) or the model's new_cache().")
        return self.slots[attends][layer_idx]

    def __len__(self) -> int:
        return len(self.keys) + len(self.states.conv_states)

    @property
    def batch_size(self) -> int:
        return super().batch_size if self.keys else self.states.batch_size

    @property
    def is_initialized(self) -> bool:
        return len(self) > 0

    @property
    def seq_len(self) -> int:
        return max(super().seq_len, self.states.seq_len)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seq_len

    def update(self, layer_idx, k, v, cache_kwargs=None) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(layer_idx, torch.Tensor):  # the reference's order, as DynamicCache.update takes it
            layer_idx, k, v = v, layer_idx, k
        return super().update(self._slot(layer_idx, True), k, v)

    def state(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        return self.states.state(self._slot(layer_idx, False))

    def store(self, layer_idx: int, conv: torch.Tensor, ssm: torch.Tensor | None, new: int) -> None:
        self.states.store(self._slot(layer_idx, False), conv, ssm, new)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        super().reorder(beam_idx)
        self.states.reorder(beam_idx)

    def crop(self, n: int) -> None:
        keep = n if n >= 0 else self.seq_len + n
        if keep < self.seq_len and keep != 0:
            raise ValueError(
                f"A HybridCache cannot be cropped to {keep} of its {self.seq_len} positions: its state layers keep "
                "only the state after the last one. Take a snapshot() at the point to go back to, and "
                "restore(snapshot) there."
            )
        self.states.crop(keep)
        super().crop(keep)

    def snapshot(self) -> tuple[list[int], tuple]:
        """The attention layers' lengths and the states held now, for `restore`."""
        return list(self.lengths), self.states.snapshot()

    def restore(self, snapshot: tuple[list[int], tuple]) -> None:
        """Go back to what a `snapshot()` of this cache held: the keys and values past it dropped, the states then."""
        lengths, states = snapshot
        self.lengths = [min(now, then) for now, then in zip(self.lengths, lengths)]
        self.states.restore(states)

    def copy(self, positions: int | None = None) -> "HybridCache":
        """A new cache holding a copy of both parts; `positions`, if given, must be all those fed (see MambaCache)."""
        copy = HybridCache(self.attends, self.keeps_state)
        copy.states = self.states.copy(positions)
        self._copy_positions_into(copy, positions)
        return copy

    @property
    def nbytes(self) -> int:
        return super().nbytes + self.states.nbytes

    def left_pad(self, n: int) -> None:
        super().left_pad(n)
        self.states.left_pad(n)

    def append_rows(self, other: "HybridCache") -> None:
        super().append_rows(other)
        self.states.append_rows(other.states)

    def drop_front(self, n: int) -> None:
        super().drop_front(n)
        self.states.drop_front(n)

    def __repr__(self) -> str:
        return (f"HybridCache(attention_layers={self.attends.count(True)}, "
                f"state_layers={self.keeps_state.count(True)}, "
                f"rows={self.batch_size}, seq_len={self.seq_len})")


def new_cache(model) -> Cache:
    """The empty cache `model` decodes with: its own kind (`model.new_cache()`: a state-space model's MambaCache),
    else a DynamicCache."""
    make = getattr(model, "new_cache", None)
    return make() if make is not None else DynamicCache()


def cut_back(cache: Cache, positions: int, snapshot) -> int:
    """Cut `cache` back to at most its first `positions` positions (assisted decoding, past rejected candidates);
    returns how many it holds. A cache that crops holds `positions`. One that keeps states (MambaCache, HybridCache)
    and holds more goes back to `snapshot`, its snapshot() taken at or before `positions` (or to nothing, where it
    was taken later), and the caller feeds the positions from there again with the next ones: the tokens come out
    as with a crop, at the cost of feeding a few positions twice."""
    if cache.croppable:
        cache.crop(positions)
        return positions
    if cache.seq_len > positions:
        cache.restore(snapshot)
        if cache.seq_len > positions:
            cache.crop(0)
    return cache.seq_len


class EncoderDecoderCache(Cache):
    """The two caches of an encoder-decoder's decoder: its self-attention and its cross-attention.

    `self_attention_cache` grows by one position per generated token, as a decoder-only model's cache does;
    `cross_attention_cache` holds each layer's keys and values of the encoder output, computed by the first forward
    pass and read by every later one (`cross_attention(layer_idx)`, `store_cross_attention(...)`; `is_updated`
    is the reference's record of which layers hold them). Lengths, `crop` and the mask follow the self-attention
    part; reordering rows (beams, dropped rows) moves both.

    As the reference: EncoderDecoderCache(self_attention_cache, cross_attention_cache), or one iterable of
    per-layer tuples (self_k, self_v, cross_k, cross_v), what iterating a cache gives.
    """

    def __init__(self, *caches):
        if len(caches) == 2:
            if not all(isinstance(cache, Cache) for cache in caches):
                raise TypeError(
                    "EncoderDecoderCache(self_attention_cache, cross_attention_cache) takes two caches, got "
                    f"{type(caches[0]).__name__} and {type(caches[1]).__name__}."
                )
            self.self_attention_cache, self.cross_attention_cache = caches
        elif len(caches) == 1:
            self.self_attention_cache, self.cross_attention_cache = DynamicCache(), DynamicCache()
            for layer_idx, tensors in enumerate(caches[0]):
                if len(tensors) not in (4, 6):
                    raise ValueError(
                        f"EncoderDecoderCache's layer {layer_idx} has {len(tensors)} tensors; expected 4 (self-attention "
                        "keys and values, then cross-attention keys and values) or 6 (each pair followed by a third)."
                    )
                half = len(tensors) // 2
                self.self_attention_cache.update(layer_idx, tensors[0], tensors[1])
                self.cross_attention_cache.update(layer_idx, tensors[half], tensors[half + 1])
        else:
            raise ValueError(
                f"EncoderDecoderCache takes a self-attention and a cross-attention cache, got {len(caches)} arguments."
            )
        cross = self.cross_attention_cache
        self.is_updated = {i: cross.get_seq_length(i) > 0 for i in range(len(cross))}

    # -- what the models use --------------------------------------------------------------------------------------

    def update(self, layer_idx, k, v, cache_kwargs=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The self-attention cache's update (a decoder layer that treats this cache as a plain one)."""
        return self.self_attention_cache.update(layer_idx, k, v, cache_kwargs)

    def cross_attention(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A layer's cross-attention keys and values (B, n_kv, S, hs), or None before a forward pass stored them."""
        return self._layer(self.cross_attention_cache, layer_idx) if self.is_updated.get(layer_idx) else None

    def store_cross_attention(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        """Keep a layer's cross-attention keys and values for the later steps; returns them as stored."""
        k, v = self.cross_attention_cache.update(layer_idx, k, v)
        self.is_updated[layer_idx] = True
        return k, v

    # -- the protocol, on the self-attention part ---------------------------------------------------------------

    @property
    def keys(self) -> list[torch.Tensor]:
        return self.self_attention_cache.keys

    @property
    def values(self) -> list[torch.Tensor]:
        return self.self_attention_cache.values

    @property
    def seq_len(self) -> int:
        return self.self_attention_cache.seq_len

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.self_attention_cache.get_seq_length(layer_idx)

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return self.self_attention_cache.get_max_length(layer_idx)

    @property
    def is_compileable(self) -> bool:
        return self.self_attention_cache.is_compileable

    @property
    def batch_size(self) -> int:
        size = self.self_attention_cache.batch_size
        return size if size >= 0 else self.cross_attention_cache.batch_size

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Keep, for every row, both caches of the row `beam_idx` names."""
        self.self_attention_cache.reorder(beam_idx)
        self.cross_attention_cache.reorder(beam_idx)

    def crop(self, n: int) -> None:
        """Keep the first `n` decoder positions (the encoder's keys and values stay whole)."""
        self.self_attention_cache.crop(n)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.self_attention_cache.batch_repeat_interleave(repeats)
        self.cross_attention_cache.batch_repeat_interleave(repeats)

    def reset(self) -> None:
        """Forget both caches' positions: the next forward pass computes the cross-attention keys again."""
        self.self_attention_cache.reset()
        self.cross_attention_cache.reset()
        self.is_updated = {i: False for i in self.is_updated}

    def __iter__(self):
        """Per layer, (self_k, self_v, cross_k, cross_v): what EncoderDecoderCache(iterable) takes back."""
        for i in range(len(self.self_attention_cache)):
            self_k, self_v = self._layer(self.self_attention_cache, i)
            cross_k, cross_v = self._layer(self.cross_attention_cache, i)
            yield self_k, self_v, cross_k, cross_v

    @staticmethod
    def _layer(cache: Cache, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = cache.get_seq_length(i)
        return cache.keys[i][:, :, :length], cache.values[i][:, :, :length]

    def __repr__(self) -> str:
        return (f"EncoderDecoderCache(self_attention_cache={self.self_attention_cache!r}, "
                f"cross_attention_cache={self.cross_attention_cache!r})")
