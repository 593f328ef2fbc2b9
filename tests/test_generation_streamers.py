"""Streamers: the chunks of text they release, compared with the reference's streamers on the same token ids."""

import asyncio
import queue
import threading

import pytest
import torch

from openformers import AutoTokenizer, AsyncTextIteratorStreamer, TextIteratorStreamer, TextStreamer
from openformers.generation import BaseStreamer
from openformers.generation.streamers import TextBeforeStop, _stop_prefix_length

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Hello, I am a language model, and I like to talk about many things.",
    "def f(x):\n    return x * 2\n\n\nprint(f(3))\n",
    "用中文介绍一下你自己。我是一个语言模型",
    "Emoji: 🎉🎉 and 你好 — naïve café, 3.14159; [brackets] (parens) \"quotes\"",
    "<|im_start|>assistant\nSure!<|im_end|>\n<|im_start|>user",
    "   leading spaces and trailing   ",
]


@pytest.fixture(scope="module")
def tokenizers(smollm2_gguf, reference_from_gguf):
    ours = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    theirs = reference_from_gguf("AutoTokenizer", smollm2_gguf)
    return ours, theirs


def _collecting(base):
    class Collecting(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.chunks = []

        def on_finalized_text(self, text, stream_end=False):
            self.chunks.append((text, stream_end))

    return Collecting


def _feed(streamer, prompt: list[int], tokens: list[int]) -> None:
    streamer.put(torch.tensor([prompt]))
    for token in tokens:
        streamer.put(torch.tensor([token]))
    streamer.end()


@pytest.mark.parametrize("options", [dict(), dict(skip_prompt=True), dict(skip_special_tokens=True),
                                     dict(skip_prompt=True, skip_special_tokens=True)], ids=str)
def test_chunks_match_the_reference(tokenizers, options):
    ours, theirs = tokenizers
    for text in TEXTS:
        ids = theirs.encode(text)
        prompt, tokens = ids[:3], ids[3:]
        mine = _collecting(TextStreamer)(ours, **options)
        reference = _collecting(transformers.TextStreamer)(theirs, **options)
        for _ in range(2):  # a streamer is reused for the next generate call
            _feed(mine, prompt, tokens)
            _feed(reference, prompt, tokens)
        assert mine.chunks == reference.chunks, text


def test_text_streamer_prints_like_the_reference(tokenizers, capsys):
    ours, theirs = tokenizers
    ids = theirs.encode(TEXTS[3])
    _feed(TextStreamer(ours, skip_prompt=True), ids[:2], ids[2:])
    printed = capsys.readouterr().out
    _feed(transformers.TextStreamer(theirs, skip_prompt=True), ids[:2], ids[2:])
    assert printed == capsys.readouterr().out
    assert printed.endswith("\n")


def test_iterator_streamer_yields_the_reference_chunks(tokenizers):
    ours, theirs = tokenizers
    ids = theirs.encode(TEXTS[1])
    streamers = TextIteratorStreamer(ours, timeout=5), transformers.TextIteratorStreamer(theirs, timeout=5)
    chunks = []
    for streamer in streamers:
        thread = threading.Thread(target=_feed, args=(streamer, ids[:2], ids[2:]))
        thread.start()
        chunks.append(list(streamer))
        thread.join()
    assert chunks[0] == chunks[1]
    assert "".join(chunks[0]) == theirs.decode(ids)


def test_iterator_streamer_times_out():
    streamer = TextIteratorStreamer(None, timeout=0.01)
    with pytest.raises(queue.Empty):
        next(streamer)


def test_async_iterator_streamer_yields_the_reference_chunks(tokenizers):
    ours, theirs = tokenizers
    ids = theirs.encode(TEXTS[2])

    async def collect(make):
        streamer = make()
        thread = threading.Thread(target=_feed, args=(streamer, ids[:2], ids[2:]))
        thread.start()
        chunks = [chunk async for chunk in streamer]
        thread.join()
        return chunks

    ours_chunks = asyncio.run(collect(lambda: AsyncTextIteratorStreamer(ours, timeout=5)))
    assert ours_chunks == asyncio.run(collect(lambda: transformers.AsyncTextIteratorStreamer(theirs, timeout=5)))

    async def silent():
        with pytest.raises(TimeoutError):
            await AsyncTextIteratorStreamer(ours, timeout=0.01).__anext__()

    asyncio.run(silent())
    with pytest.raises(RuntimeError, match="event loop"):
        AsyncTextIteratorStreamer(ours)


def test_a_base_streamer_subclass_receives_the_ids():
    class Ids(BaseStreamer):
        def __init__(self):
            self.seen = []

        def put(self, value):
            self.seen.append(value.tolist())

        def end(self):
            self.seen.append("end")

    streamer = Ids()
    _feed(streamer, [1, 2], [3])
    assert streamer.seen == [[[1, 2]], [3], "end"]
    with pytest.raises(TypeError, match="put"):
        BaseStreamer().put(torch.tensor([1]))


def test_text_before_stop_holds_back_what_may_begin_a_stop_string_and_ends_before_one(tokenizers):
    ours, _ = tokenizers
    ids = ours.encode("Hello world, and goodbye.", add_special_tokens=False)
    pieces = (TextBeforeStop(ours, ["world!"]), TextBeforeStop(ours, ["and", "world,"]), TextBeforeStop(ours))
    released = [[text.add_token(token) for token in ids] for text in pieces]
    assert released[0][:3] == ["Hello", " ", "world,"]  # "world" waited for the token after it
    assert "".join(released[0]) + pieces[0].finish() == "Hello world, and goodbye."
    assert "".join(released[1]) + pieces[1].finish() == "Hello "
    assert "".join(released[2]) + pieces[2].finish() == "Hello world, and goodbye."


@pytest.mark.parametrize(
    "text, start, stop, held",
    [
        ("Hello wor", 0, ["world"], 3), ("Hello", 0, ["world"], 0), ("xab", 1, ["abc"], 2), ("xab", 2, ["abc"], 0),
        ("xyz", 0, ["z", "yz!"], 2),
    ],
)
def test_text_that_may_begin_a_stop_string_is_held_back(text, start, stop, held):
    assert _stop_prefix_length(text, start, stop) == held
