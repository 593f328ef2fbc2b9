"""Key/value caches for incremental decoding.

Every cache speaks one protocol, which is all a model knows of it:
    update(layer_idx, k, v) -> (k, v)   append this step's keys and values, return everything cached so far
    seq_len                             how many positions are cached (read it before the forward pass)
    reorder(beam_idx), crop(n)          for beam search and for rolling back speculative tokens
Keys and values are shaped (B, n_kv_heads, T, head_dim).
"""

import torch

_GROWTH = 256  # grow in blocks, so decoding one token rarely reallocates (mlx-lm does the same)


class DynamicCache:
    """A cache that grows as tokens arrive, in blocks of 256 positions, one key and value buffer per layer."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []

    @property
    def seq_len(self) -> int:
        return self.lengths[0] if self.lengths else 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The reference's name for `seq_len`."""
        return self.lengths[layer_idx] if layer_idx < len(self.lengths) else 0

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Keep, for every row, the cache of the row `beam_idx` names (beam search)."""
        for i in range(len(self.keys)):
            self.keys[i] = self.keys[i].index_select(0, beam_idx.to(self.keys[i].device))
            self.values[i] = self.values[i].index_select(0, beam_idx.to(self.values[i].device))

    def crop(self, n: int) -> None:
        """Forget every position from `n` on."""
        self.lengths = [min(length, n) for length in self.lengths]


def _grow(buffer: torch.Tensor, used: int, capacity: int) -> torch.Tensor:
    bigger = buffer.new_empty(*buffer.shape[:2], capacity, buffer.shape[3])
    bigger[:, :, :used] = buffer[:, :, :used]
    return bigger
