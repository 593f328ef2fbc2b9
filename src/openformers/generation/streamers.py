"""Streaming text out of `generate` as tokens arrive.

`generate(..., streamer=s)` calls `s.put(ids)` with the prompt first, then with each new token (one per row),
and `s.end()` at the finish. `TextStreamer` and its subclasses turn those ids into text chunks with the
reference's rules and hand each to `on_finalized_text(text, stream_end=False)`, the hook a subclass overrides:
TextStreamer prints, TextIteratorStreamer feeds a queue read by iterating, AsyncTextIteratorStreamer an asyncio
queue read with `async for`.

A chunk is released when it can no longer change: up to the last space of the decoded text while a word is still
being built (a byte-level token can carry half an emoji, which decodes to U+FFFD until the next token), at once
when the new text is only letters, marks, digits and spaces or ends in a CJK character, and whole lines at a
newline. `StreamingDetokenizer` is the server's incremental decoder, and `TextBeforeStop` ends its text before
a stop string (serving/scheduler.py).
"""

import asyncio
import queue
import unicodedata

import torch

_REPLACEMENT = "\ufffd"


class StreamingDetokenizer:
    """Turns a growing list of token ids into text segments that never need to be taken back."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.reset()

    def reset(self) -> None:
        self.tokens: list[int] = []
        self.text = ""  # everything emitted so far, from tokens that are now dropped from the window
        self._window: list[int] = []
        self._emitted = 0  # characters of decode(window) already emitted

    def add_token(self, token: int) -> str:
        """Add one token; return the text that became final (possibly empty)."""
        self.tokens.append(token)
        self._window.append(token)
        decoded = self.tokenizer.decode(self._window, skip_special_tokens=self.skip_special_tokens)
        if decoded.endswith(_REPLACEMENT):
            return ""  # maybe half a character: wait for the next token
        segment = decoded[self._emitted :]
        self._emitted = len(decoded)
        if decoded.endswith("\n"):
            # Start a fresh window at a line end, so decoding stays cheap on long outputs.
            self._window, self._emitted = [], 0
        self.text += segment
        return segment

    def finalize(self) -> str:
        """The text still held back (an incomplete character is flushed as U+FFFD, as `decode` gives it)."""
        decoded = self.tokenizer.decode(self._window, skip_special_tokens=self.skip_special_tokens)
        segment = decoded[self._emitted :]
        self._window, self._emitted = [], 0
        self.text += segment
        return segment


class TextBeforeStop:
    """The text of one row as its tokens arrive, ending before the first of the `stop` strings (the OpenAI API's
    `stop`: the answer leaves the stop string out).

    Whether the row stops is the stopping criteria's decision (steps.Sequence, which generate shares); this only
    shapes the text. `add_token` returns the text that is now final, holding back an end that may begin a stop
    string; `finish` returns the rest, cut before the first stop string. Once a stop string is in the text,
    nothing after it is released.
    """

    def __init__(self, tokenizer, stop: list[str] = ()):
        self.detokenizer = StreamingDetokenizer(tokenizer, skip_special_tokens=True)
        self.stop = list(stop)
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters of `text` released

    def add_token(self, token: int) -> str:
        self.text += self.detokenizer.add_token(token)
        end = self._stop_start()
        if end is None:
            end = len(self.text) - _stop_prefix_length(self.text, self.sent, self.stop)
        return self._release(end)

    def finish(self) -> str:
        self.text += self.detokenizer.finalize()
        end = self._stop_start()
        return self._release(len(self.text) if end is None else end)

    def _stop_start(self) -> int | None:
        """Where the first stop string starts in the text not yet released (text released cannot begin one)."""
        found = [i for i in (self.text.find(s, self.sent) for s in self.stop) if i != -1]
        return min(found) if found else None

    def _release(self, end: int) -> str:
        text, self.sent = self.text[self.sent : end], max(self.sent, end)
        return text


def _stop_prefix_length(text: str, start: int, stop: list[str]) -> int:
    """The length of the longest end of text[start:] that begins some stop string (it may yet complete one)."""
    if not stop:
        return 0
    longest = min(max(len(s) for s in stop) - 1, len(text) - start)
    for n in range(longest, 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stop):
            return n
    return 0


class BaseStreamer:
    """The interface `generate` calls: `put(ids)` with the prompt and then each new token, `end()` at the finish."""

    def put(self, value: torch.Tensor) -> None:
        raise TypeError(f"{type(self).__name__} must define put(value); BaseStreamer is only the interface.")

    def end(self) -> None:
        raise TypeError(f"{type(self).__name__} must define end(); BaseStreamer is only the interface.")


# The CJK Unified Ideographs blocks (and their extensions and compatibility forms): each such character is a
# word of its own, so text ending in one is released at once.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _is_settled(text: str) -> bool:
    """Text made only of spaces, letters, marks and digits: nothing in it can change with the next token."""
    return all(char.isspace() or unicodedata.category(char)[0] in "LMN" for char in text)


class TextStreamer(BaseStreamer):
    """Prints the text of one sequence to stdout as it is generated, in the chunks described above.

    skip_prompt: leave out the prompt (the first `put`). decode_kwargs go to `tokenizer.decode`
    (skip_special_tokens=True leaves out `<|im_end|>` and the like; by default they are printed, as in the
    reference). Subclasses override `on_finalized_text(text, stream_end=False)` to send the chunks elsewhere.
    """

    def __init__(self, tokenizer, skip_prompt: bool = False, **decode_kwargs):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache: list[int] = []  # the ids of the current line, decoded together
        self.print_len = 0  # characters of decode(token_cache) already released
        self.next_tokens_are_prompt = True
        self.text = ""  # the text of the last finished sequence (the chunks of the current one, until it ends)
        self._chunks: list[str] = []

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError("TextStreamer streams one sequence (batch size 1); generate with one prompt.")
        if value.dim() > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.next_tokens_are_prompt = False
        self.token_cache.extend(value.tolist())
        self._release(self._next_chunk(), stream_end=False)

    def end(self) -> None:
        chunk = ""
        if self.token_cache:
            chunk = self._decode(self.token_cache)[self.print_len:]
        self.token_cache, self.print_len = [], 0
        self.next_tokens_are_prompt = True
        self._release(chunk, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Receives each chunk; prints it (with a newline after the last). Override it to do something else."""
        print(text, flush=True, end="" if not stream_end else None)

    def _next_chunk(self) -> str:
        text = self._decode(self.token_cache)
        if text.endswith("\n"):
            # A finished line: release it and start the next with only the newest token, so decoding stays short.
            chunk = text[self.print_len:]
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self._decode(self.token_cache))
            return chunk
        if text and _is_cjk(text[-1]) or _is_settled(text[self.print_len:]):
            chunk = text[self.print_len:]
        else:
            chunk = text[self.print_len: text.rfind(" ") + 1]  # up to the last space: the word may still change
        self.print_len += len(chunk)
        return chunk

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, **self.decode_kwargs)

    def _release(self, chunk: str, stream_end: bool) -> None:
        self._chunks.append(chunk)
        if stream_end:
            self.text, self._chunks = "".join(self._chunks), []
        self.on_finalized_text(chunk, stream_end=stream_end)


class TextIteratorStreamer(TextStreamer):
    """Hands the chunks to another thread: run `generate` in a thread and iterate over this object.

    `timeout` (seconds) bounds each wait for the queue; `queue.Empty` is raised when it runs out.
    """

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: queue.Queue = queue.Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value == self.stop_signal:
            raise StopIteration
        return value


class AsyncTextIteratorStreamer(TextStreamer):
    """As TextIteratorStreamer, for asyncio: create it inside the running event loop, run `generate` in a thread
    (`asyncio.to_thread` or an executor) and read it with `async for`. `timeout` raises TimeoutError."""

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: asyncio.Queue = asyncio.Queue()
        self.stop_signal = None
        self.timeout = timeout
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError as error:
            raise RuntimeError(
                "AsyncTextIteratorStreamer must be created inside a running asyncio event loop (in an async "
                "function); from plain threads use TextIteratorStreamer."
            ) from error

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        # Called from generate's thread: hand the chunk to the loop's thread.
        self.loop.call_soon_threadsafe(self.text_queue.put_nowait, text)
        if stream_end:
            self.loop.call_soon_threadsafe(self.text_queue.put_nowait, self.stop_signal)

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        try:
            value = await asyncio.wait_for(self.text_queue.get(), self.timeout)
        except asyncio.TimeoutError as error:
            raise TimeoutError(f"No text from generate within timeout={self.timeout} seconds.") from error
        if value == self.stop_signal:
            raise StopAsyncIteration
        return value
