"""The KV caches of recent prompts, so that a prompt starting like one of them prefills only the rest.

Chat requests share their template's system prompt, and a conversation resends its history each turn; the
server (serving/scheduler.py) looks each prompt up here before its prefill and stores it after. The bound is in
bytes, not positions, because the server's memory is what it protects: a position of a 7B model's cache takes
ten times what one of a 135M model's takes.
"""

import collections

from .cache import DynamicCache


class PrefixCache:
    """Holds at most `max_bytes` of keys and values in all, dropping the least recently used prompts first.

    A prompt whose cache alone is larger than the bound is not kept.
    """

    MIN_REUSE = 16  # shorter common starts are not worth splitting the prefill for

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: collections.OrderedDict[tuple[int, ...], list] = collections.OrderedDict()
        self.bytes = 0

    def reuse(self, prompt: list[int], cache: DynamicCache) -> int:
        """Fill the empty `cache` with the longest start of `prompt` held here (keeping at least its last
        token to compute); return how many positions it holds."""
        best, best_key = 0, None
        for key in self.entries:
            n = _common_prefix_length(key, prompt)
            if n > best:
                best, best_key = n, key
        best = min(best, len(prompt) - 1)
        if best < self.MIN_REUSE:
            return 0
        self.entries.move_to_end(best_key)
        for layer, (k, v) in enumerate(self.entries[best_key]):
            cache.update(layer, k[:, :, :best], v[:, :, :best])  # copies: the entry stays as it is
        return best

    def store(self, prompt: list[int], cache: DynamicCache) -> None:
        """Keep the positions of `prompt` that `cache` (one row) holds, unless it is too short or too large."""
        if len(prompt) < self.MIN_REUSE:
            return
        key = tuple(prompt)
        size = len(key) * sum(k[:1, :, :1].nbytes + v[:1, :, :1].nbytes for k, v in zip(cache.keys, cache.values))
        if size > self.max_bytes:
            return
        if key in self.entries:
            self.bytes -= _entry_bytes(self.entries.pop(key))
        self.entries[key] = [(k[:, :, : len(key)].clone(), v[:, :, : len(key)].clone())
                             for k, v in zip(cache.keys, cache.values)]
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= _entry_bytes(dropped)


def _entry_bytes(entry: list) -> int:
    return sum(k.nbytes + v.nbytes for k, v in entry)


def _common_prefix_length(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
