"""Streaming text out of `generate` as tokens arrive.

`generate(..., streamer=s)` calls `s.put(ids)` with the prompt first, then with each new token (one per row),
and `s.end()` at the finish. The streamers here turn those ids into text with a `StreamingDetokenizer`, which
holds back text that is not final yet: an incomplete UTF-8 sequence (a byte-level token can carry half an
emoji) would decode to U+FFFD now and to the right character one token later.
"""

import abc
import queue
import sys

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


class BaseStreamer(abc.ABC):
    """The interface `generate` calls: `put(ids)` and `end()`."""

    @abc.abstractmethod
    def put(self, value: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def end(self) -> None: ...


class TextStreamer(BaseStreamer):
    """Prints the text of a single sequence to stdout (or `file`) as it is generated."""

    def __init__(self, tokenizer, skip_prompt: bool = False, skip_special_tokens: bool = True, file=None):
        self.detokenizer = StreamingDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
        self.skip_prompt = skip_prompt
        self.file = file
        self.text = ""  # the whole text of the last finished sequence
        self._prompt_pending = True

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError("TextStreamer streams one sequence; generate with a batch of one prompt.")
            value = value[0]
        if self._prompt_pending:
            self._prompt_pending = False
            if self.skip_prompt:
                return
        for token in value.tolist():
            self.on_text(self.detokenizer.add_token(token), stream_end=False)

    def end(self) -> None:
        self.on_text(self.detokenizer.finalize(), stream_end=True)
        self.text = self.detokenizer.text
        self.detokenizer.reset()
        self._prompt_pending = True

    def on_text(self, text: str, stream_end: bool = False) -> None:
        file = self.file or sys.stdout
        print(text, end="" if not stream_end else "\n", file=file, flush=True)


class TextIteratorStreamer(TextStreamer):
    """Hands the text to another thread: run `generate` in a thread and iterate over this object."""

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt=skip_prompt, **decode_kwargs)
        self.text_queue: queue.Queue = queue.Queue()
        self.timeout = timeout

    def on_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(None, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        text = self.text_queue.get(timeout=self.timeout)
        if text is None:
            raise StopIteration
        return text
