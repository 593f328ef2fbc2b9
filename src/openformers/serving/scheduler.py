"""Batched decoding of many independent requests: a worker thread and a queue around generation's decoding core.

A server gets requests at any time, each with its own prompt, sampling options and stop conditions. Decoding
them one after another wastes the hardware: one decode step costs about the same for 1 row as for 32, because
reading the weights dominates. So every request becomes a `Sequence` of the decoding core (generation/steps.py),
with the sampler and stopping criteria that `generate` builds from the same options, and `BatchScheduler`'s
worker thread keeps one running `Batch` of them. Between decode steps it:
- admits the requests that arrived, up to `max_batch`; each prompt is prefilled alone (as `generate` runs it),
  at most `prefill_chunk` prompt tokens between two steps so a long prompt never stalls the running rows for
  long; a prompt that starts like a recent one (a chat template's system prompt, a conversation's history)
  reuses that start's cache (generation/prefix_cache.py) and prefills only the rest; then it chooses its first
  token and joins the batch;
- runs one step of the batch: one forward pass for every row, each request choosing its own next token;
- hands each request's new text to its callback, and takes out the requests that finished (EOS, a stop string,
  max_tokens, a cancel or an error).

The scheduler itself samples nothing and matches no stop string: a request's tokens are what `model.generate`
gives for its prompt alone with the same options and seed (up to float rounding in a padded batch or a prefill in
parts); its text ends before the first stop string (generation/streamers.TextBeforeStop). Results go to each
request's `on_update` callback, called in the worker thread: it must not block (a server hands the update to its
event loop), so a slow reader never stalls the others.
"""

import logging
import queue
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..generation.cache import DynamicCache
from ..generation.config import resolve_generation_config
from ..generation.options import OPTIONS_BY_NAME
from ..generation.prefix_cache import PrefixCache
from ..generation.processors import build_processors
from ..generation.sampling import Sampler
from ..generation.steps import Batch, Decoder, Sequence, build_stopping_criteria
from ..generation.streamers import TextBeforeStop

_log = logging.getLogger(__name__)


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
    prompt tokens prefilled between two decode steps. `prefix_cache_tokens` bounds the positions of recent
    prompts kept for reuse (0 turns the reuse off). `max_cache_bytes` bounds the key/value cache the admitted
    requests may grow to (each counted at its prompt plus max_tokens): a request that would pass it waits until
    others finish, so memory follows the bound rather than the load; None: no bound. `decode_steps` counts the
    batched decode steps run so far (prefills not included), which shows how much decoding was shared.
    `eos_token_ids` end every request: the model's generation config's and the tokenizer's.
    """

    def __init__(self, model, tokenizer, max_batch: int = 32, prefill_chunk: int = 512,
                 prefix_cache_tokens: int = 4096, max_cache_bytes: int | None = None):
        for name, value in (("max_batch", max_batch), ("prefill_chunk", prefill_chunk)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if max_cache_bytes is not None and (not isinstance(max_cache_bytes, int) or max_cache_bytes < 1):
            raise ValueError(f"max_cache_bytes must be a positive integer or None, got {max_cache_bytes!r}.")
        if not isinstance(prefix_cache_tokens, int) or prefix_cache_tokens < 0:
            raise ValueError(
                f"prefix_cache_tokens must be an integer >= 0 (0 turns it off), got {prefix_cache_tokens!r}."
            )
        self.prefill_chunk = prefill_chunk
        self._prefixes = PrefixCache(prefix_cache_tokens)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.context_length = model.config.max_position_embeddings
        generation_config = getattr(model, "generation_config", None)
        self.eos_token_ids = set(generation_config.eos_token_ids if generation_config is not None else [])
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(tokenizer.eos_token_id)
        self.device = next(model.parameters()).device
        self.max_cache_bytes = max_cache_bytes
        self.cache_bytes_per_token = _cache_bytes_per_token(model)
        self.decode_steps = 0
        self._waiting: queue.Queue = queue.Queue()
        self._held: Request | None = None  # taken from the queue, waiting for cache room
        self._batch = Batch()
        self._rows: list[_Row] = []  # the requests of the running batch, in its order
        self._joining: deque[_Row] = deque()  # admitted, being prefilled
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="openformers-decode", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """How many requests are being prefilled or decoded now."""
        return len(self._rows) + len(self._joining)

    @property
    def waiting(self) -> int:
        """How many submitted requests wait for a place in the batch."""
        return self._waiting.qsize() + (self._held is not None)

    def cache_bytes(self, request: Request) -> int:
        """The key/value cache `request` may grow to: its prompt and max_tokens, at every layer."""
        return (len(request.prompt_ids) + request.options.max_tokens) * self.cache_bytes_per_token

    @property
    def max_request_tokens(self) -> int | None:
        """The most prompt and max_tokens positions one request may have under max_cache_bytes (None: no bound)."""
        return None if self.max_cache_bytes is None else self.max_cache_bytes // self.cache_bytes_per_token

    def submit(self, prompt_ids: list[int], options: SamplingOptions,
               on_update: Callable[[Update], None]) -> Request:
        """Queue a prompt for decoding; `on_update` is called from the worker thread and must not block."""
        if self._closed:
            raise RuntimeError("This BatchScheduler is closed; create a new one.")
        if not prompt_ids:
            raise ValueError("The prompt is empty: give at least one token to continue from.")
        if len(prompt_ids) + options.max_tokens > self.context_length:
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
        with torch.inference_mode():
            while not self._closed:
                try:
                    self._admit()
                    self._prefill()
                    if self._rows:
                        self._step()
                except Exception as error:  # a failed step must not kill the server: fail the rows, keep serving
                    _log.exception("A decode step failed; its %d requests fail, the server goes on.", len(self._rows))
                    for row in self._rows:
                        row.finish("error", error=f"{type(error).__name__}: {error}")
                    self._rows, self._batch = [], Batch()
        for row in [*self._rows, *self._joining]:
            row.finish("cancelled")
        self._rows, self._batch = [], Batch()
        self._joining.clear()
        if self._held is not None:
            _notify(self._held, Update("", "cancelled"))
        while not self._waiting.empty():
            request = self._waiting.get()
            if request is not None:
                _notify(request, Update("", "cancelled"))

    def _admit(self) -> None:
        """Take waiting requests in to be prefilled, blocking while there is nothing at all to do."""
        while len(self._rows) + len(self._joining) < self.max_batch:
            try:
                request = self._held or self._waiting.get(block=not self._rows and not self._joining)
            except queue.Empty:
                return
            self._held = None
            if request is None:  # close() woke us up
                return
            if request.cancelled:
                _notify(request, Update("", "cancelled"))
                continue
            if self.max_cache_bytes is not None and self._rows + list(self._joining):
                admitted = sum(self.cache_bytes(row.request) for row in [*self._rows, *self._joining])
                if admitted + self.cache_bytes(request) > self.max_cache_bytes:
                    self._held = request  # first in line: it goes in once enough of the others have finished
                    return
            try:
                self._joining.append(_Row(request, self._sequence(request), TextBeforeStop(self.tokenizer,
                                                                                           request.options.stop)))
            except Exception as error:  # options the core refuses fail this request alone
                _log.exception("A request could not be set up.")
                _notify(request, Update("", "error", error=f"{type(error).__name__}: {error}"))

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

    def _prefill(self) -> None:
        """Prefill the joining prompts, at most `prefill_chunk` tokens in all before the next decode step.

        A prompt that fits runs in one forward pass, alone, as `generate` runs it; a longer one is prefilled
        over several iterations, so the running rows keep streaming meanwhile. A prompt done chooses its first
        token and joins the batch. The prompt with the fewest tokens left goes first: a short chat then starts
        answering at once instead of waiting behind every long prompt that came before it.
        """
        budget = self.prefill_chunk
        while self._joining and budget > 0:
            row = min(self._joining, key=_prefill_left)
            if row.request.cancelled:
                self._joining.remove(row)
                row.finish("cancelled")
                continue
            try:
                if row.decoder is None:  # made now, so that it finds the prompts prefilled just before
                    row.decoder = self._prompt_decoder(row)
                cached = row.decoder.cache.seq_len
                logits = row.decoder.prefill_chunk(budget)
                budget -= row.decoder.cache.seq_len - cached
                if logits is not None:
                    self._joining.remove(row)
                    self._prefixes.store(row.request.prompt_ids, row.decoder.cache)
                    row.sequence.choose(logits)
                    update = row.update()
                    if not row.finished:
                        self._batch.join(row.sequence, row.decoder)
                        self._rows.append(row)
                    row.decoder = None  # the batch holds its cache now
                    if update is not None:
                        _notify(row.request, update)
            except Exception as error:  # this prompt failed (the batch is untouched): fail it alone
                _log.exception("The prefill of a request failed.")
                if row in self._joining:
                    self._joining.remove(row)
                row.finish("error", error=f"{type(error).__name__}: {error}")

    def _prompt_decoder(self, row: "_Row") -> Decoder:
        cache = DynamicCache()
        self._prefixes.reuse(row.request.prompt_ids, cache)
        return Decoder(self.model, row.sequence.ids[:, : row.sequence.prompt_length], None, cache=cache)

    def _step(self) -> None:
        """One decode step for every row; the requests that finished leave the batch before they are told."""
        self._batch.step()
        self.decode_steps += 1
        updates = [(row, row.update()) for row in self._rows]
        finished = [row for row in self._rows if row.finished]
        if finished:
            self._batch.leave([row.sequence for row in finished])
            self._rows = [row for row in self._rows if not row.finished]
        for row, update in updates:
            if update is not None:
                _notify(row.request, update)


def _prefill_left(row: "_Row") -> int:
    """How many prompt tokens the row still has to prefill."""
    return row.sequence.prompt_length - (row.decoder.cache.seq_len if row.decoder is not None else 0)


def _cache_bytes_per_token(model) -> int:
    """The bytes one position takes in the key/value cache: keys and values at every layer, in the model's dtype."""
    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * model.dtype.itemsize


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
        self.finished = False

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
