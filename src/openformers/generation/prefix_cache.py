"""The caches of recent prompts, so that a prompt starting like one of them prefills only the rest.

Chat requests share their template's system prompt, and a conversation resends its history each turn; the
server (serving/scheduler.py) looks each prompt up here before its prefill and stores it after. The bound is in
bytes, not positions, because the server's memory is what it protects: a position of a 7B model's cache takes
ten times what one of a 135M model's takes.

A key/value cache gives any start of its prompt. A cache that keeps states (Mamba's MambaCache, the hybrids'
HybridCache) holds only the state after its prompt's last position: it is reused only by a prompt that starts
with that whole prompt (a conversation's next turn), never cropped to a shorter common start.
"""

import collections

from .cache import Cache


class PrefixCache:
    """Holds at most `max_bytes` of caches in all, dropping the least recently used prompts first.

    A prompt whose cache alone is larger than the bound is not kept.
    """

    MIN_REUSE = 16  # shorter common starts are not worth splitting the prefill for

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: collections.OrderedDict[tuple[int, ...], Cache] = collections.OrderedDict()
        self.bytes = 0

    def reuse(self, prompt: list[int]) -> Cache | None:
        """A copy of the cache of the longest start of `prompt` held here (keeping at least its last token to
        compute), or None where no start of MIN_REUSE tokens or more is held."""
        best, best_key = 0, None
        for key, entry in self.entries.items():
            n = min(_common_prefix_length(key, prompt), len(prompt) - 1)
            if n > best and (entry.croppable or n == len(key)):  # a state is reused only whole
                best, best_key = n, key
        if best < self.MIN_REUSE:
            return None
        self.entries.move_to_end(best_key)
        return self.entries[best_key].copy(best)  # a copy: the entry stays as it is

    def store(self, prompt: list[int], cache: Cache) -> None:
        """Keep a copy of `cache`, one row holding the positions of `prompt` and no more, unless it is too short
        or too large."""
        if len(prompt) < self.MIN_REUSE:
            return
        size = cache.nbytes
        if size > self.max_bytes:
            return
        key = tuple(prompt)
        if key in self.entries:
            self.bytes -= self.entries.pop(key).nbytes
        self.entries[key] = cache.copy()
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.nbytes


def _common_prefix_length(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
