"""Encoding a large batch on several cores, as the reference's Rust tokenizer does with threads.

Python threads would take turns on one core, so the batch is split between forked worker processes:
each starts with a copy of the tokenizer (and its word caches) and sends back only the ids. Forking
costs tens of milliseconds, so only batches of at least `MIN_CHARACTERS` go this way, and only where
fork exists (Linux). `TOKENIZERS_PARALLELISM=false`, the reference's switch, turns it off, as does
running inside a worker process already.
"""

import array
import multiprocessing
import os
import threading

MIN_CHARACTERS = 1_000_000
CHUNKS_PER_WORKER = 4  # smaller pieces of work, so that a worker with the easy half does not wait idle

_lock = threading.Lock()
_work = None  # (pipeline, items, add_special_tokens): what the forked workers read, set while they run


def worker_count(items: list[tuple[str, str | None]]) -> int:
    """How many processes to encode `items` with: 1 unless the batch is large and parallelism is allowed."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < 2 or os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("0", "false", "no", "off"):
        return 1
    if "fork" not in multiprocessing.get_all_start_methods() or multiprocessing.current_process().daemon:
        return 1
    characters = sum(len(text) + len(pair or "") for text, pair in items)
    return min(cores, characters // MIN_CHARACTERS + 1)


def encode_batch(pipeline, items: list[tuple[str, str | None]], add_special_tokens: bool) -> list[list[int]]:
    """The ids of each `(text, pair)`, encoded on as many cores as `worker_count` allows."""
    workers = worker_count(items)
    if workers == 1:
        return [pipeline.encode(text, pair, add_special_tokens) for text, pair in items]
    global _work
    size = -(-len(items) // (workers * CHUNKS_PER_WORKER))
    ranges = [(start, min(start + size, len(items))) for start in range(0, len(items), size)]
    with _lock:
        _work = (pipeline, items, add_special_tokens)
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                chunks = pool.map(_encode_range, ranges)
        finally:
            _work = None
    rows = []
    for flat, lengths in chunks:
        flat, start = flat.tolist(), 0
        for length in lengths:
            rows.append(flat[start : start + length])
            start += length
    return rows


def _encode_range(bounds: tuple[int, int]) -> tuple[array.array, array.array]:
    """The ids of items[start:end], sent back as one flat array and the row lengths: copied in one
    piece, where lists of lists would be pickled an int at a time."""
    pipeline, items, add_special_tokens = _work
    start, end = bounds
    flat, lengths = array.array("q"), array.array("q")
    for text, pair in items[start:end]:
        ids = pipeline.encode(text, pair, add_special_tokens)
        flat.extend(ids)
        lengths.append(len(ids))
    return flat, lengths
