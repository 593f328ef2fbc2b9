"""Batched decoding of many independent requests: a worker thread and a queue around generation's decoding core.

A server gets requests at any time, each with its own prompt, sampling options and stop conditions. Decoding
them one after another wastes the hardware: one decode step costs about the same for 1 row as for 32, because
reading the weights dominates. So every request becomes a `Sequence` of the decoding core (generation/steps.py),
with the sampler and stopping criteria that `generate` builds from the same options, and `BatchScheduler`'s
worker thread keeps them in running `Batch`es: one for the rows of short prompts (light), a few for those of long
prompts (heavy), each few enough that its step reads a bounded amount of cache. Each turn it:
- admits the requests that arrived, up to `max_batch`; each prompt is prefilled alone (as `generate` runs it), in
  chunks so a long prompt never stalls the running rows for long; a prompt that starts like a recent one (a chat
  template's system prompt, a conversation's history) reuses that start's cache (generation/prefix_cache.py) and
  prefills only the rest, and the n choices of one prompt share one prefill; then it chooses its first token and
  joins a batch, its cache's rows appended to the batch's (and dropped when it finishes);
- runs one step of the light batch, and at most one unit of heavy work (a heavy batch's step, a prefill chunk,
  or the start of one more of a long prompt's n choices) when the heavy work's share of the time allows it
  (`TurnPolicy`), each unit short enough that a short request arriving meanwhile waits little for it; a step
  is one forward pass for every row of the batch, each request choosing its own next token;
- hands each request's new text to its callback, and takes out the requests that finished (EOS, a stop string,
  max_tokens, a cancel or an error).
At rest, it hands the memory the load freed back to the system (`release_free_memory`).

The scheduler itself samples nothing and matches no stop string: a request's tokens are what `model.generate`
gives for its prompt alone with the same options and seed (up to float rounding in a padded batch or a prefill in
parts); its text ends before the first stop string (generation/streamers.TextBeforeStop). Results go to each
request's `on_update` callback, called in the worker thread: it must not block (a server hands the update to its
event loop), so a slow reader never stalls the others.

A model whose layers keep a state (Mamba's MambaCache, the hybrids' HybridCache: LFM2, Granite 4, Bamba, Falcon-H1,
Jamba) is served the same way: its cache's rows are appended and dropped as a key/value cache's are, its states
counted in the memory bound whatever the length, and a prompt reuses a recent prompt's cache only where it starts
with that whole prompt, since a state cannot be cropped back to a shorter common start.
"""

import ctypes
import functools
import gc
import logging
import queue
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..generation.cache import Cache, DynamicCache, HybridCache, new_cache
from ..generation.config import resolve_generation_config
from ..generation.options import OPTIONS_BY_NAME
from ..generation.prefix_cache import PrefixCache
from ..generation.processors import build_processors
from ..generation.sampling import Sampler
from ..generation.steps import Batch, Decoder, Sequence, build_stopping_criteria
from ..generation.streamers import TextBeforeStop

_log = logging.getLogger(__name__)

IDLE_TRIM_SECONDS = 2.0  # how often a worker at rest hands freed memory back to the system


@dataclass
class SamplingOptions:
    """How one request is decoded (the OpenAI options): temperature 0 is greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)  # the text ends before the first of these strings
    seed: int | None = None

    def __post_init__(self):
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}.")
        for name in ("temperature", "top_p"):  # checked as GenerationConfig checks them (generation/options.py)
            option, value = OPTIONS_BY_NAME[name], getattr(self, name)
            if value is None or not option.is_possible(value):
                raise ValueError(f"{name} must be {option.expected}, got {value!r}.")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {self.stop!r}.")


@dataclass
class Update:
    """What a request's callback receives: new text, and at the end the reason it finished.

    finish_reason: None while running; "stop" (EOS or a stop string), "length" (max_tokens), "cancelled",
    or "error" (the message is in `error`).
    """

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Completion:
    """The whole answer of `BatchScheduler.complete`."""

    text: str
    finish_reason: str
    completion_tokens: int


class Request:
    """A submitted request; `cancel()` stops it at the next step (safe from any thread, idempotent)."""

    def __init__(self, prompt_ids: list[int], options: SamplingOptions, on_update: Callable[[Update], None]):
        self.prompt_ids = prompt_ids
        self.options = options
        self.on_update = on_update
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class BatchScheduler:
    """Decodes submitted requests together in one worker thread; see the module docstring.

    `max_batch` bounds the rows decoded at once; more requests wait in a queue. `prefill_chunk` bounds the
    prompt tokens prefilled between two decode steps. `prefix_cache_bytes` bounds the caches of recent prompts
    kept for reuse (0 turns the reuse off). `max_cache_bytes` bounds the cache the admitted requests may grow to
    (each counted at its prompt plus max_tokens, plus its states where the model's layers keep one): a request that
    would pass it waits until others finish, so memory follows the bound rather than the load; None: no bound. `decode_steps` counts the
    batched decode steps run so far (prefills not included), which shows how much decoding was shared.
    `eos_token_ids` end every request: the model's generation config's and the tokenizer's.

    The turns (`TurnPolicy`): a request whose prompt has at most `short_prompt_tokens` tokens is light, the others
    heavy. Light rows decode in one batch every turn; heavy rows decode in groups whose step reads at most
    `step_cache_bytes` of key/value cache (None: as many bytes as the model's weights), and heavy work (a group's step, a chunk of
    `busy_prefill_chunk` prompt tokens) takes at most `heavy_share` of the worker's time while light work waits;
    with nothing light waiting, a chunk has as many tokens (up to `prefill_chunk`) as take about UNIT_LIGHT_TURNS
    light turns, or `heavy_unit_seconds` if longer, so that a light request arriving then waits little for the
    unit under way.
    `clock` (seconds) times the turns; tests give a counter.
    """

    def __init__(self, model, tokenizer, max_batch: int = 32, prefill_chunk: int = 512,
                 prefix_cache_bytes: int = 64 * 2**20, max_cache_bytes: int | None = None,
                 short_prompt_tokens: int = 512, heavy_share: float = 0.25, busy_prefill_chunk: int = 32,
                 step_cache_bytes: int | None = None, heavy_unit_seconds: float = 0.1,
                 clock: Callable[[], float] = time.perf_counter):
        for name, value in (("max_batch", max_batch), ("prefill_chunk", prefill_chunk),
                            ("busy_prefill_chunk", busy_prefill_chunk)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        for name, value in (("max_cache_bytes", max_cache_bytes), ("step_cache_bytes", step_cache_bytes)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        for name, value in (("prefix_cache_bytes", prefix_cache_bytes), ("short_prompt_tokens", short_prompt_tokens)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
        self.prefill_chunk = prefill_chunk
        self.busy_prefill_chunk = busy_prefill_chunk
        self.short_prompt_tokens = short_prompt_tokens
        # By default a heavy step reads at most as much cache as weights, so it takes at most about twice the
        # time of a step of short rows, while the groups stay few.
        self.step_cache_bytes = step_cache_bytes or sum(t.nbytes for t in [*model.parameters(), *model.buffers()])
        self.turns = TurnPolicy(heavy_share, heavy_unit_seconds)
        self._clock = clock
        self._prefixes = PrefixCache(prefix_cache_bytes)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        # A Mamba's state carries any length: no context bound (None).
        self.context_length = getattr(model.config, "max_position_embeddings", None)
        generation_config = getattr(model, "generation_config", None)
        self.eos_token_ids = set(generation_config.eos_token_ids if generation_config is not None else [])
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(tokenizer.eos_token_id)
        self.device = next(model.parameters()).device
        self.max_cache_bytes = max_cache_bytes
        self.cache_bytes_per_token, self.state_bytes = _cache_sizes(model, self.device)
        self.decode_steps = 0
        self._waiting: queue.Queue = queue.Queue()
        self._held: Request | None = None  # taken from the queue, waiting for cache room
        self._groups: list[_Group] = []  # the rows being decoded, each group in one forward pass
        self._joining: deque[_Row] = deque()  # admitted, being prefilled
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="openformers-decode", daemon=True)
        self._thread.start()

    @property
    def _rows(self) -> list["_Row"]:
        return [row for group in self._groups for row in group.rows]

    @property
    def active(self) -> int:
        """How many requests are being prefilled or decoded now."""
        return sum(len(group.rows) for group in self._groups) + len(self._joining)

    @property
    def waiting(self) -> int:
        """How many submitted requests wait for a place in the batch."""
        return self._waiting.qsize() + (self._held is not None)

    def cache_bytes(self, request: Request) -> int:
        """The cache `request` may grow to: its prompt and max_tokens at every attending layer, and its states."""
        return (len(request.prompt_ids) + request.options.max_tokens) * self.cache_bytes_per_token + self.state_bytes

    @property
    def max_request_tokens(self) -> int | None:
        """The most prompt and max_tokens positions one request may have under max_cache_bytes (None: no bound,
        as for a model whose cache is its states alone, when they fit)."""
        if self.max_cache_bytes is None:
            return None
        room = self.max_cache_bytes - self.state_bytes
        if room < 0:
            return 0
        return room // self.cache_bytes_per_token if self.cache_bytes_per_token else None

    def submit(self, prompt_ids: list[int], options: SamplingOptions,
               on_update: Callable[[Update], None]) -> Request:
        """Queue a prompt for decoding; `on_update` is called from the worker thread and must not block."""
        if self._closed:
            raise RuntimeError("This BatchScheduler is closed; create a new one.")
        if not prompt_ids:
            raise ValueError("The prompt is empty: give at least one token to continue from.")
        if self.context_length is not None and len(prompt_ids) + options.max_tokens > self.context_length:
            raise ValueError(
                f"The prompt has {len(prompt_ids)} tokens and max_tokens is {options.max_tokens}, more than the "
                f"model's context of {self.context_length} tokens: shorten the prompt or lower max_tokens."
            )
        request = Request(list(prompt_ids), options, on_update)
        most = self.max_request_tokens
        if most is not None and len(request.prompt_ids) + options.max_tokens > most:
            raise ValueError(
                f"The prompt of {len(prompt_ids)} tokens with max_tokens {options.max_tokens} needs up to "
                f"{self.cache_bytes(request)} bytes of key/value cache, more than max_cache_bytes="
                f"{self.max_cache_bytes}: shorten the prompt or lower max_tokens."
            )
        self._waiting.put(request)
        return request

    def complete(self, prompt_ids: list[int], options: SamplingOptions) -> Completion:
        """Decode one prompt (in the shared batch) and wait for its whole answer; call it from any thread but
        the worker's (an `on_update` callback must not call it)."""
        parts, done = [], threading.Event()
        result = {}

        def on_update(update: Update) -> None:
            parts.append(update.text)
            if update.finish_reason is not None:
                result["update"] = update
                done.set()

        self.submit(prompt_ids, options, on_update)
        done.wait()
        final = result["update"]
        if final.finish_reason == "error":
            raise RuntimeError(f"Decoding failed: {final.error}")
        return Completion("".join(parts), final.finish_reason, final.completion_tokens)

    def close(self) -> None:
        """Stop the worker; requests still running or waiting finish with "cancelled"."""
        if self._closed:
            return
        self._closed = True
        self._waiting.put(None)
        self._thread.join()

    # -- the worker thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        # The worker keeps torch's threads, where generate follows the kernel's shrunk team on a crowded CPU
        # (kernels.threads_following_team): following it, batches of 8-16 chats decoded slower, their prefills
        # on one thread taking up to twice as long (benchmarks/RESULTS.md, "What bounds the figures").
        with torch.inference_mode():
            while not self._closed:
                try:
                    self._admit()
                    self._turn()
                except Exception as error:  # a failed turn must not kill the server: fail the rows, keep serving
                    _log.exception("A turn failed; its %d requests fail, the server goes on.", len(self._rows))
                    for row in self._rows:
                        row.finish("error", error=f"{type(error).__name__}: {error}")
                    self._groups = []
        for row in [*self._rows, *self._joining]:
            row.finish("cancelled")
        self._groups = []
        self._joining.clear()
        if self._held is not None:
            _notify(self._held, Update("", "cancelled"))
        while not self._waiting.empty():
            request = self._waiting.get()
            if request is not None:
                _notify(request, Update("", "cancelled"))

    def _admit(self) -> None:
        """Take waiting requests in to be prefilled, blocking while there is nothing at all to do."""
        while self.active < self.max_batch:
            idle = not self._groups and not self._joining
            try:
                request = self._held or self._waiting.get(block=False)
            except queue.Empty:
                if not idle:
                    return
                request = self._wait_at_rest()
            self._held = None
            if request is None:  # close() woke us up
                return
            if request.cancelled:
                _notify(request, Update("", "cancelled"))
                continue
            if self.max_cache_bytes is not None and not idle:
                admitted = sum(self.cache_bytes(row.request) for row in [*self._rows, *self._joining])
                if admitted + self.cache_bytes(request) > self.max_cache_bytes:
                    self._held = request  # first in line: it goes in once enough of the others have finished
                    return
            try:
                row = _Row(request, self._sequence(request), TextBeforeStop(self.tokenizer, request.options.stop))
            except Exception as error:  # options the core refuses fail this request alone
                _log.exception("A request could not be set up.")
                _notify(request, Update("", "error", error=f"{type(error).__name__}: {error}"))
                continue
            row.light = len(request.prompt_ids) <= self.short_prompt_tokens
            row.served = self.turns.count
            self._joining.append(row)

    def _wait_at_rest(self) -> Request | None:
        """Wait for the next request with nothing else to do, handing the memory freed by the load back to the
        system now and every IDLE_TRIM_SECONDS (the server's other threads may free theirs later than the worker
        comes to rest)."""
        while True:
            release_free_memory()
            try:
                return self._waiting.get(timeout=IDLE_TRIM_SECONDS)
            except queue.Empty:
                if gc.get_count() != (0, 0, 0):  # objects were made since the last collection
                    # The load's reference cycles hold memory that trimming cannot hand back. Only once the rest
                    # has lasted, never between two requests of a client that sends one after another; cheap
                    # where the loaded model's objects were frozen out of collection (`openformers serve` does).
                    gc.collect()

    def _sequence(self, request: Request) -> Sequence:
        """The request as a Sequence of the decoding core, with the sampler and stopping criteria that
        `model.generate(prompt, **_generate_options(...))` builds, so both choose the same tokens."""
        prompt = torch.tensor([request.prompt_ids], device=self.device)
        config, _ = resolve_generation_config(None, None, _generate_options(request.options, self.eos_token_ids))
        config.max_length = prompt.shape[1] + config.max_new_tokens
        generator = None
        if config.do_sample:
            seed = request.options.seed
            seed = seed if seed is not None else random.SystemRandom().getrandbits(63)
            generator = torch.Generator(device=self.device).manual_seed(seed)
        sampler = Sampler(build_processors(config, prompt.shape[1], device=self.device), config.do_sample, generator)
        return Sequence(prompt, config.max_length, sampler, build_stopping_criteria(config, tokenizer=self.tokenizer))

    def _turn(self) -> None:
        """One turn of the worker: the light work, then at most one unit of heavy work (see TurnPolicy)."""
        light_group = next((group for group in self._groups if group.light), None)
        light_joining = [row for row in self._joining if row.light]
        light = bool(light_joining) or light_group is not None
        if light:
            started = self._clock()
            self._prefill(light_joining, self.prefill_chunk)
            if light_group is not None:
                self._step(light_group)
            self.turns.light_done(self._clock() - started)
        heavy_joining = [row for row in self._joining if not row.light]
        units = [group for group in self._groups if not group.light]
        if heavy_joining:
            units.append(min(heavy_joining, key=self._prefill_left))  # the nearest to done, so the n choices of
            # a prompt, which share its prefill, wait for the first instead of each prefilling it again
        unit = self.turns.heavy_unit(units, light)
        if unit is None:
            return
        started = self._clock()
        if isinstance(unit, _Group):
            self._step(unit)
            self.turns.heavy_done(self._clock() - started, light)
        else:
            tokens = self._prefill([unit], self.turns.prefill_chunk(light, self.busy_prefill_chunk, self.prefill_chunk))
            self.turns.heavy_done(self._clock() - started, light, prefilled=tokens)

    def _prefill(self, rows: list["_Row"], budget: int) -> int:
        """Prefill these joining prompts, at most `budget` tokens in all, the fewest tokens left first; returns
        how many tokens it prefilled.

        A prompt that fits runs in one forward pass, alone, as `generate` runs it; a longer one is prefilled
        over several turns, so the running rows keep streaming meanwhile. A prompt done chooses its first
        token and joins a group. The other joining rows with the same prompt (the n choices of a request) need
        no prefill of their own: they start from the same logits and a copy of its cache (`_Prefilled`), each
        when it is next given to this method. Light rows all start in the same turn; each heavy row's start is a
        unit of heavy work of its own (the worker hands this method one heavy row at a time), since copying a
        long prompt's cache and joining a group of long rows take as long as a decode step or more. The prompt
        with the fewest tokens left goes first: a short chat then starts answering at once instead of waiting
        behind every long prompt that came before it.
        """
        rows, prefilled = list(rows), 0
        while rows and budget > 0:
            row = min(rows, key=self._prefill_left)
            rows.remove(row)
            if row not in self._joining:  # started already as the sibling of a prompt done before it
                continue
            if row.request.cancelled:
                self._joining.remove(row)
                row.finish("cancelled")
                continue
            try:
                if row.prefilled is not None:
                    self._start_sibling(row)
                    continue
                if row.decoder is None:  # made now, so that it finds the prompts prefilled just before
                    row.decoder = self._prompt_decoder(row)
                cached = row.decoder.cache.seq_len
                logits = row.decoder.prefill_chunk(budget)
                budget -= row.decoder.cache.seq_len - cached
                prefilled += row.decoder.cache.seq_len - cached
                if logits is not None:
                    self._prefixes.store(row.request.prompt_ids, row.decoder.cache)
                    siblings = [other for other in self._joining if other is not row and other.decoder is None
                                and other.prefilled is None and other.request.prompt_ids == row.request.prompt_ids]
                    if siblings:
                        # A copy, since the row's own cache grows in its group from now on.
                        shared = _Prefilled(logits, row.decoder.cache.copy())
                        for sibling in siblings:
                            sibling.prefilled = shared
                    self._start(row, logits)
            except Exception as error:  # this prompt failed (the groups are untouched): fail it alone
                _log.exception("The prefill of a request failed.")
                if row in self._joining:
                    self._joining.remove(row)
                row.finish("error", error=f"{type(error).__name__}: {error}")
        return prefilled

    def _start_sibling(self, row: "_Row") -> None:
        """Start a row from the prefill of another choice of its prompt: the last one waiting takes the shared
        cache itself, the others a copy."""
        shared, row.prefilled = row.prefilled, None
        waiting = any(other.prefilled is shared for other in self._joining)
        row.decoder = self._prompt_decoder(row, reuse=False)
        row.decoder.cache = shared.cache.copy() if waiting else shared.cache
        self._start(row, shared.logits)

    def _start(self, row: "_Row", logits: torch.Tensor) -> None:
        """The prefilled row chooses its first token and joins a group (unless that token ends it)."""
        self._joining.remove(row)
        try:
            row.sequence.choose(logits)
        except Exception as error:  # its options failed on these logits: it fails alone, its siblings go on
            _log.exception("Choosing the first token of a request failed.")
            row.finish("error", error=f"{type(error).__name__}: {error}")
            return
        update = row.update()
        if not row.finished:
            group = self._group_for(row)
            group.batch.join(row.sequence, row.decoder)
            group.rows.append(row)
        row.decoder = None  # the group holds its cache now
        if update is not None:
            _notify(row.request, update)

    def _group_for(self, row: "_Row") -> "_Group":
        """The light group for a light row; for a heavy one, the first heavy group whose step would still read at
        most step_cache_bytes of cache with it, else a new group."""
        length = row.decoder.cache.seq_len
        for group in self._groups:
            if group.light != row.light:
                continue
            if row.light:
                return group
            rows = len(group.rows) + 1
            positions = rows * max(length, group.batch.decoder.cache.seq_len)
            if positions * self.cache_bytes_per_token + rows * self.state_bytes <= self.step_cache_bytes:
                return group
        group = _Group(row.light, self.turns.count)
        self._groups.append(group)
        return group

    def _prefill_left(self, row: "_Row") -> int:
        """How many prompt tokens the row still has to prefill."""
        if row.prefilled is not None:
            return 0
        return row.sequence.prompt_length - (row.decoder.cache.seq_len if row.decoder is not None else 0)

    def _prompt_decoder(self, row: "_Row", reuse: bool = True) -> Decoder:
        cache = self._prefixes.reuse(row.request.prompt_ids) if reuse else None
        cache = new_cache(self.model) if cache is None else cache
        return Decoder(self.model, row.sequence.ids[:, : row.sequence.prompt_length], None, cache=cache)

    def _step(self, group: "_Group") -> None:
        """One decode step for every row of the group; the requests that finished leave it before they are told.
        A step that fails fails the group's requests alone."""
        try:
            group.batch.step()
        except Exception as error:
            _log.exception("A decode step failed; its %d requests fail, the server goes on.", len(group.rows))
            for row in group.rows:
                row.finish("error", error=f"{type(error).__name__}: {error}")
            self._groups.remove(group)
            return
        self.decode_steps += 1
        updates = [(row, row.update()) for row in group.rows]
        finished = [row for row in group.rows if row.finished]
        if finished:
            group.batch.leave([row.sequence for row in finished])
            group.rows = [row for row in group.rows if not row.finished]
            if not group.rows:
                self._groups.remove(group)
        for row, update in updates:
            if update is not None:
                _notify(row.request, update)


# A heavy unit begun while nothing light waits lasts about this many light turns: a short request that arrives
# then waits that long at most, an eighth of its latency if it asks for 32 tokens.
UNIT_LIGHT_TURNS = 4


class TurnPolicy:
    """Which work the worker does in a turn, so that a short request keeps its latency while long ones run.

    What makes a step slow on a CPU is what it reads: the weights, and each row's key/value cache. Rows of
    2,500-token prompts read ~115 MB of a 135M model's cache per step each, so a short chat decoded in their
    batch waits for all that reading at every token (32x its idle latency with 16 of them). Light work (the
    rows and prefills of prompts of at most `short_prompt_tokens`) is therefore done every turn, in one batch
    that ordinary traffic shares as before; heavy work comes one unit a turn (a group's step, or one chunk of a
    long prompt's prefill), the least recently served unit first so none starves, and while light work waits,
    only as long as heavy work has taken at most `heavy_share` of the worker's time: the seconds of each heavy
    unit become a debt that light seconds pay back at heavy_share / (1 - heavy_share), and heavy work waits
    while a debt is left. A light request that arrives finds at most one heavy unit under way, so units stay
    short even with nothing light waiting: a chunk of a long prefill has as many tokens as take about
    `unit_seconds` (measured), and the n choices of a long prompt join their groups one per unit. Light work then goes at least (1 - heavy_share) of its idle speed (4/3 of its idle
    latency at the default 0.25, plus one heavy unit), and heavy work at least heavy_share of the machine; with
    no light work, heavy work has the machine. Time is measured rather than estimated from bytes, because how
    a prefill chunk compares with a decode step depends on the machine.
    """

    def __init__(self, heavy_share: float = 0.25, unit_seconds: float = 0.1):
        if not (isinstance(heavy_share, (int, float)) and 0 < heavy_share < 1):
            raise ValueError(f"heavy_share must be a number between 0 and 1 (exclusive), got {heavy_share!r}.")
        if not (isinstance(unit_seconds, (int, float)) and unit_seconds > 0):
            raise ValueError(f"unit_seconds must be a positive number of seconds, got {unit_seconds!r}.")
        self.heavy_share = heavy_share
        self.unit_seconds = unit_seconds
        self.debt = 0.0  # seconds of heavy work that light work has not yet paid back
        self.count = 0  # units of heavy work handed out so far; a unit's `served` is the count when it last ran
        self.seconds_per_token = None  # of heavy prefill chunks, as measured lately; None until one ran
        self.light_turn_seconds = 0.0  # as measured lately

    def light_done(self, seconds: float) -> None:
        self.debt = max(0.0, self.debt - seconds * self.heavy_share / (1 - self.heavy_share))
        self.light_turn_seconds = (self.light_turn_seconds + seconds) / 2 if self.light_turn_seconds else seconds

    def heavy_unit(self, units: list, light_waiting: bool):
        """The unit of heavy work to do now (the least recently served of `units`), or None."""
        if not units or (light_waiting and self.debt > 0):
            return None
        unit = min(units, key=lambda unit: unit.served)
        self.count += 1
        unit.served = self.count
        return unit

    def prefill_chunk(self, light_waiting: bool, smallest: int, largest: int) -> int:
        """How many tokens the next chunk of a long prompt's prefill may have: `smallest` while light work waits
        (or before any chunk was timed), else as many as take about the unit's time at the speed measured
        lately, within [smallest, largest]. The unit's time is UNIT_LIGHT_TURNS light turns as measured lately,
        or `unit_seconds` if that is longer (a server that has seen no light work yet, or a fast machine).

        A light request that comes while nothing light waited waits for the heavy unit under way: then at most
        about that long for a chunk, instead of a whole `largest` chunk (on a loaded 2-core machine 512 tokens
        of SmolLM2-135M took 1.5-6 s, the time to first token of a short chat 2.9 s against 0.1 s idle). Measured
        in light turns, that wait stays the same part of a short request's latency on any machine and load."""
        if light_waiting or self.seconds_per_token is None:
            return smallest
        budget = max(self.unit_seconds, UNIT_LIGHT_TURNS * self.light_turn_seconds)
        return max(smallest, min(largest, int(budget / self.seconds_per_token)))

    def heavy_done(self, seconds: float, light_waiting: bool, prefilled: int = 0) -> None:
        """A unit of heavy work took `seconds`; `prefilled`: the prompt tokens it prefilled, if it was a chunk."""
        # Heavy work done while nothing light waited takes no one's time: no debt.
        self.debt = self.debt + seconds if light_waiting else 0.0
        if prefilled:
            # Halfway to the newest, so that the chunks follow a machine whose load changes within a few units.
            # Small chunks cost more per token (each reads all the weights), so the first chunks, of `smallest`
            # tokens, measure the speed too low, and the chunks grow over a few units towards unit_seconds.
            newest = seconds / prefilled
            self.seconds_per_token = newest if self.seconds_per_token is None else (self.seconds_per_token + newest) / 2


@dataclass
class _Prefilled:
    """A prompt's prefill that the other choices of its request start from: the logits of its last position
    and its cache (copied for each but the last)."""

    logits: torch.Tensor
    cache: Cache


class _Group:
    """Rows decoded together in one forward pass: the light rows, or some of the heavy ones."""

    def __init__(self, light: bool, served: int):
        self.light = light
        self.served = served
        self.batch = Batch()
        self.rows: list[_Row] = []


def release_free_memory() -> None:
    """Hand the memory the allocator holds free back to the system (glibc's malloc_trim), where there is one.

    glibc keeps freed blocks for reuse, and after a large block is freed it serves blocks up to 32 MB from its
    heaps instead of fresh mappings, so the caches of a burst of long prompts stay in the process once freed.
    Elsewhere (macOS, Windows, musl) this does nothing: their allocators return memory on their own terms.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # no C library to load, or one without malloc_trim (musl)
        return None


def _cache_sizes(model, device) -> tuple[int, int]:
    """The bytes a request's cache takes per position and whatever its length: for a key/value cache, keys and
    values at every layer in the model's dtype, and nothing more; for a model whose layers keep a state (a MambaCache
    or a HybridCache), as measured on the cache of a one-token forward pass: its attending layers' keys and values
    per position, and its states."""
    config = model.config
    cache = new_cache(model)
    if type(cache) is DynamicCache:
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return 2 * config.num_hidden_layers * heads * head_dim * model.dtype.itemsize, 0
    with torch.inference_mode():
        model(torch.zeros(1, 1, dtype=torch.long, device=device), past_key_values=cache)
    states = cache.states if isinstance(cache, HybridCache) else cache
    return cache.nbytes - states.nbytes, states.nbytes


def _generate_options(options: SamplingOptions, eos_token_ids: set[int]) -> dict:
    """A request's options as `generate`'s keyword arguments; a seeded request samples the tokens generate does
    with generator=torch.Generator().manual_seed(seed)."""
    generate_options = {"max_new_tokens": options.max_tokens, "eos_token_id": sorted(eos_token_ids) or None,
                        "stop_strings": options.stop or None}
    if options.temperature > 0:
        # The OpenAI API has no top-k: 0 turns off generate's default of 50.
        generate_options.update(do_sample=True, temperature=options.temperature, top_p=options.top_p, top_k=0)
    else:
        generate_options.update(do_sample=False)
    return generate_options


def _notify(request: Request, update: Update) -> None:
    """Call the request's callback; one that fails (its reader is gone) cancels the request instead."""
    try:
        request.on_update(update)
    except Exception:
        request.cancel()


class _Row:
    """One request's bookkeeping: its Sequence in the decoding core, its prompt's Decoder while it is prefilled,
    and the text handed to its callback."""

    def __init__(self, request: Request, sequence: Sequence, text: TextBeforeStop):
        self.request = request
        self.sequence = sequence
        self.text = text
        self.decoder: Decoder | None = None
        self.prefilled: _Prefilled | None = None  # set when another choice of its prompt was prefilled
        self.finished = False
        self.light = True  # a short prompt's row (BatchScheduler.short_prompt_tokens)
        self.served = 0  # when its prefill last had a turn of heavy work (TurnPolicy)

    @property
    def generated(self) -> int:
        return self.sequence.length - self.sequence.prompt_length

    def update(self) -> Update | None:
        """What the callback is told after a step: the text of the newest token, and at the end the rest and the
        reason the request finished (which marks the row finished)."""
        error = self.sequence.error
        if self.request.cancelled or error is not None:
            self.finished = True
            if error is not None:
                _log.error("Choosing the next token of a request failed.", exc_info=error)
                return Update("", "error", self.generated, f"{type(error).__name__}: {error}")
            return Update("", "cancelled", self.generated)
        text = self.text.add_token(int(self.sequence.newest))
        if self.sequence.done:
            self.finished = True
            return Update(text + self.text.finish(), self.sequence.finish_reason(), self.generated)
        return Update(text) if text else None

    def finish(self, reason: str, error: str | None = None) -> None:
        if not self.finished:
            self.finished = True
            _notify(self.request, Update("", reason, self.generated, error))
