"""Batched decoding of many independent requests: one decode loop in a worker thread, requests joining it.

A server gets requests at any time, each with its own prompt, sampling options and stop conditions. Decoding
them one after another wastes the hardware: one decode step costs about the same for 1 row as for 32, because
reading the weights dominates. `BatchScheduler` keeps one running batch and, between decode steps:
- admits the requests that arrived: each prompt runs alone (its prefill is exactly `generate`'s), its first
  token is chosen, and its KV cache joins the batch cache, left-padded to the batch's length (or the batch
  padded to its length), with an attention mask that hides the padding. A prompt longer than
  `prefill_chunk` is prefilled a chunk per iteration, so it never stalls the running rows for long; a
  prompt that starts like a recent one (a chat template's system prompt, a conversation's history) reuses
  that start's cache and prefills only the rest;
- runs one decode step for every row at once, each row at its own position;
- chooses each row's next token with that request's processors and random generator, and streams its text;
- drops the rows that finished (EOS, a stop string, max_tokens, or a cancel) and the padding no row needs.

So a request's greedy text is what `model.generate` gives for its prompt alone (up to float rounding in a
padded batch or a prefill in parts). Results go to each request's `on_update` callback, called in the worker
thread: it must not block (a server hands the update to its event loop), so a slow reader never stalls the
others.
"""

import collections
import logging
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..generation.cache import DynamicCache
from ..generation.config import GenerationConfig
from ..generation.processors import apply_processors, build_processors
from ..generation.streamers import StreamingDetokenizer

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
        if not 0.0 <= self.temperature:
            raise ValueError(f"temperature must be >= 0 (0 decodes greedily), got {self.temperature!r}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}.")
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
    prompts kept for reuse (0 turns the reuse off). `decode_steps` counts the batched decode steps run so
    far (prefills not included), which shows how much decoding was shared.
    """

    def __init__(self, model, tokenizer, max_batch: int = 32, prefill_chunk: int = 512,
                 prefix_cache_tokens: int = 4096):
        for name, value in (("max_batch", max_batch), ("prefill_chunk", prefill_chunk)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if not isinstance(prefix_cache_tokens, int) or prefix_cache_tokens < 0:
            raise ValueError(
                f"prefix_cache_tokens must be an integer >= 0 (0 turns it off), got {prefix_cache_tokens!r}."
            )
        self.prefill_chunk = prefill_chunk
        self._prefixes = _PrefixCache(prefix_cache_tokens)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.context_length = model.config.max_position_embeddings
        generation_config = getattr(model, "generation_config", None)
        self.eos_token_ids = set(generation_config.eos_token_ids if generation_config is not None else [])
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(tokenizer.eos_token_id)
        self.device = next(model.parameters()).device
        self.decode_steps = 0
        self._waiting: queue.Queue = queue.Queue()
        self._rows: list[_Row] = []  # the rows of the running batch
        self._joining: collections.deque[_Row] = collections.deque()  # admitted, being prefilled
        self._cache: _BatchCache | None = None
        self._mask: torch.Tensor | None = None  # (B, L): 1 for real positions, 0 for left padding
        self._positions: torch.Tensor | None = None  # (B,): each row's position of the token it feeds next
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
        return self._waiting.qsize()

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
                    self._reset_batch()
        for row in [*self._rows, *self._joining]:
            row.finish("cancelled")
        self._reset_batch()
        self._joining.clear()
        while not self._waiting.empty():
            request = self._waiting.get()
            if request is not None:
                _notify(request, Update("", "cancelled"))

    def _admit(self) -> None:
        """Take waiting requests in to be prefilled, blocking while there is nothing at all to do."""
        while len(self._rows) + len(self._joining) < self.max_batch:
            try:
                request = self._waiting.get(block=not self._rows and not self._joining)
            except queue.Empty:
                return
            if request is None:  # close() woke us up
                return
            if request.cancelled:
                _notify(request, Update("", "cancelled"))
                continue
            self._joining.append(_Row(request, self.tokenizer, self.eos_token_ids, self.device))

    def _prefill(self) -> None:
        """Prefill the joining prompts, at most `prefill_chunk` tokens in all before the next decode step.

        A prompt that fits runs in one forward pass, alone, as `generate` runs it; a longer one is prefilled
        over several iterations, so the running rows keep streaming meanwhile. A prompt done is given its
        first token and joins the batch.
        """
        budget = self.prefill_chunk
        while self._joining and budget > 0:
            row = self._joining[0]
            if row.request.cancelled:
                self._joining.popleft()
                row.finish("cancelled")
                continue
            try:
                if row.prefilled == 0:  # looked up now, so that it finds the prompts prefilled just before
                    row.prefilled = self._prefixes.reuse(row.request.prompt_ids, row.cache)
                start = row.prefilled
                end = min(len(row.request.prompt_ids), start + budget)
                chunk = torch.tensor([row.request.prompt_ids[start:end]], device=self.device)
                logits = self.model(chunk, past_key_values=row.cache, logits_to_keep=1).logits[:, -1]
                row.prefilled, budget = end, budget - (end - start)
                if end == len(row.request.prompt_ids):
                    self._prefixes.store(row.request.prompt_ids, row.cache)
                    self._joining.popleft()
                    row.accept(row.choose(logits))
                    if not row.finished:
                        self._join(row)
            except Exception as error:  # this prompt failed (the batch is untouched): fail it alone
                _log.exception("The prefill of a request failed.")
                if row in self._joining:
                    self._joining.remove(row)
                row.finish("error", error=f"{type(error).__name__}: {error}")

    def _join(self, row: "_Row") -> None:
        """Merge a prefilled row's cache into the batch, left-padding whichever is shorter."""
        cache, row.cache = row.cache, None
        length = cache.seq_len
        mask = torch.ones(1, length, dtype=torch.long, device=self.device)
        position = torch.tensor([length], device=self.device)
        if not self._rows:
            self._cache, self._mask, self._positions = cache, mask, position
        else:
            longest = max(self._cache.seq_len, length)
            self._pad_batch(longest - self._cache.seq_len)
            cache.left_pad(longest - length)
            mask = torch.cat([mask.new_zeros(1, longest - length), mask], dim=1)
            self._cache.append_rows(cache)
            self._mask = torch.cat([self._mask, mask])
            self._positions = torch.cat([self._positions, position])
        self._rows.append(row)

    def _pad_batch(self, n: int) -> None:
        if n:
            self._cache.left_pad(n)
            self._mask = torch.cat([self._mask.new_zeros(self._mask.shape[0], n), self._mask], dim=1)

    def _step(self) -> None:
        """One decode step for every row, then drop the rows that finished."""
        tokens = torch.tensor([row.last_token for row in self._rows], device=self.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self._rows), 1)], dim=1)
        mask = None if bool(self._mask.all()) else self._mask
        logits = self.model(
            tokens[:, None], attention_mask=mask, position_ids=self._positions[:, None],
            past_key_values=self._cache, logits_to_keep=1,
        ).logits[:, -1]
        self._positions = self._positions + 1
        self.decode_steps += 1
        greedy = logits.argmax(dim=-1).tolist()  # one argmax for all the greedy rows
        for i, row in enumerate(self._rows):
            if row.request.cancelled:
                row.finish("cancelled")
                continue
            try:
                row.accept(greedy[i] if row.is_plain_greedy else row.choose(logits[i : i + 1]))
            except Exception as error:  # one row's sampling failed: fail that request alone
                _log.exception("Choosing the next token of a request failed.")
                row.finish("error", error=f"{type(error).__name__}: {error}")
        self._drop_finished()

    def _drop_finished(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if not row.finished]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset_batch()
            return
        index = torch.tensor(keep, device=self.device)
        self._cache.reorder(index)
        self._mask, self._positions = self._mask[index], self._positions[index]
        self._rows = [self._rows[i] for i in keep]
        # Padding columns that no remaining row uses are dropped, so the batch stays as short as its longest row.
        unused = int(self._mask.any(dim=0).int().argmax())
        if unused:
            self._cache.drop_front(unused)
            self._mask = self._mask[:, unused:]

    def _reset_batch(self) -> None:
        self._rows, self._cache, self._mask, self._positions = [], None, None, None


def _notify(request: Request, update: Update) -> None:
    """Call the request's callback; one that fails (its reader is gone) cancels the request instead."""
    try:
        request.on_update(update)
    except Exception:
        request.cancel()


class _Row:
    """One request's decoding state: its tokens, processors, random generator, detokenizer and stop check."""

    def __init__(self, request: Request, tokenizer, eos_token_ids: set[int], device: torch.device):
        self.request = request
        options = request.options
        prompt_length = len(request.prompt_ids)
        self.ids = torch.tensor([request.prompt_ids + [0] * options.max_tokens], device=device)  # (1, T) context
        self.length = prompt_length
        self.generated = 0
        self.do_sample = options.temperature > 0
        config = GenerationConfig(do_sample=True, temperature=options.temperature, top_p=options.top_p) \
            if self.do_sample else GenerationConfig(do_sample=False)
        self.processors = build_processors(config, prompt_length, device=device)
        self.is_plain_greedy = not self.do_sample and not self.processors
        self.generator = None
        if self.do_sample:
            seed = options.seed if options.seed is not None else random.SystemRandom().getrandbits(63)
            self.generator = torch.Generator(device=device).manual_seed(seed)
        self.eos_token_ids = eos_token_ids
        self.cache = _BatchCache()  # the prompt's own cache while it is prefilled, then merged into the batch's
        self.prefilled = 0  # prompt tokens in `cache`
        self.detokenizer = StreamingDetokenizer(tokenizer, skip_special_tokens=True)
        self.text = ""  # the text decoded so far
        self.sent = 0  # characters of `text` handed to the callback
        self.last_token = None
        self.finished = False

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from (1, V) logits: processors, then argmax or a draw with this row's generator."""
        scores = logits.float()
        if self.processors:
            scores = apply_processors(self.processors, self.ids[:, : self.length], scores)
        if not self.do_sample:
            return int(scores.argmax(dim=-1))
        return int(torch.multinomial(scores.softmax(dim=-1), 1, generator=self.generator))

    def accept(self, token: int) -> None:
        """Record the new token, stream the text that is now final, and finish at EOS, a stop string or the limit."""
        self.ids[0, self.length] = token
        self.length += 1
        self.generated += 1
        self.last_token = token
        if token in self.eos_token_ids:
            self.text += self.detokenizer.finalize()
            self._send(final="stop")
            return
        self.text += self.detokenizer.add_token(token)
        if self.generated == self.request.options.max_tokens:
            self.text += self.detokenizer.finalize()
            self._send(final="length")
        else:
            self._send(final=None)

    def finish(self, reason: str, error: str | None = None) -> None:
        if not self.finished:
            self.finished = True
            _notify(self.request, Update("", reason, self.generated, error))

    def _send(self, final: str | None) -> None:
        """Hand on the new text, holding back what may be the start of a stop string; finish if one appeared."""
        stop = self.request.options.stop
        end = len(self.text)
        if stop:
            found = [i for i in (self.text.find(s, self.sent) for s in stop) if i != -1]
            if found:
                end, final = min(found), "stop"
            elif final is None:
                end -= _stop_prefix_length(self.text, self.sent, stop)
        text, self.sent = self.text[self.sent : end], max(self.sent, end)
        if final is not None:
            self.finished = True
            _notify(self.request, Update(text, final, self.generated))
        elif text:
            _notify(self.request, Update(text))


def _stop_prefix_length(text: str, start: int, stop: list[str]) -> int:
    """The length of the longest end of text[start:] that begins some stop string (it may yet complete one)."""
    longest = min(max(len(s) for s in stop) - 1, len(text) - start)
    for n in range(longest, 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stop):
            return n
    return 0


class _PrefixCache:
    """The KV caches of recent prompts, so that a prompt starting like one of them prefills only the rest.

    Chat requests share their template's system prompt, and a conversation resends its history each turn.
    Holds at most `max_tokens` positions in all, dropping the least recently used prompts first.
    """

    MIN_REUSE = 16  # shorter common starts are not worth splitting the prefill for

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: collections.OrderedDict[tuple[int, ...], list] = collections.OrderedDict()
        self.tokens = 0

    def reuse(self, prompt: list[int], cache: "_BatchCache") -> int:
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

    def store(self, prompt: list[int], cache: "_BatchCache") -> None:
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


class _BatchCache(DynamicCache):
    """A DynamicCache whose rows can be left-padded, joined and trimmed, for requests entering and leaving."""

    def left_pad(self, n: int) -> None:
        """Put n empty positions before every row (the attention mask hides them)."""
        if not n:
            return
        for i in range(len(self.keys)):
            length = self.lengths[i]
            self.keys[i] = _left_pad(self.keys[i][:, :, :length], n)
            self.values[i] = _left_pad(self.values[i][:, :, :length], n)
            self.lengths[i] = length + n

    def append_rows(self, other: "_BatchCache") -> None:
        """Add the rows of `other`, which must hold as many positions as this cache."""
        assert other.lengths == self.lengths, (other.lengths, self.lengths)
        for i in range(len(self.keys)):
            length = self.lengths[i]
            self.keys[i] = torch.cat([self.keys[i][:, :, :length], other.keys[i][:, :, :length]])
            self.values[i] = torch.cat([self.values[i][:, :, :length], other.values[i][:, :, :length]])

    def drop_front(self, n: int) -> None:
        """Forget the first n positions of every row."""
        for i in range(len(self.keys)):
            self.keys[i] = self.keys[i][:, :, n:]
            self.values[i] = self.values[i][:, :, n:]
            self.lengths[i] -= n


def _left_pad(buffer: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([buffer.new_zeros(*buffer.shape[:2], n, buffer.shape[3]), buffer], dim=2)
