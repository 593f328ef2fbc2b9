"""The KV caches of recent prompts, so that a prompt starting like one of them prefills only the rest.

Chat requests share their template's system prompt, and a conversation resends its history each turn; the
server (serving/scheduler.py) looks each prompt up here before its prefill and stores it after.
"""

import collections

from .cache import DynamicCache


class PrefixCache:
    """Holds at most `max_tokens` positions in all, dropping the least recently used prompts first."""

    MIN_REUSE = 16  # shorter common starts are not worth splitting the prefill for

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: collections.OrderedDict[tuple[int, ...], list] = collections.OrderedDict()
        self.tokens = 0

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
        """Keep the positions of `prompt` that `cache` (one row) holds, unless it is too short or too long."""
        if not self.MIN_REUSE <= len(prompt) <= self.max_tokens:
            return
        key = tuple(prompt)
        if key not in self.entries:
            self.tokens += len(key)
        self.entries[key] = [(k[:, :, : len(key)].clone(), v[:, :, : len(key)].clone())
                             for k, v in zip(cache.keys, cache.values)]
        self.entries.move_to_end(key)
        while self.tokens > self.max_tokens:
            dropped, _ = self.entries.popitem(last=False)
            self.tokens -= len(dropped)


def _common_prefix_length(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
