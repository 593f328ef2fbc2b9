"""Tokenizing a long prompt in a forked process, which the server kills the moment its client leaves.

Tokenizing a megabyte takes seconds of pure Python, and a thread doing it holds the GIL, so the decode worker
waits on it at every step, and nothing can stop the thread once it has begun: clients that send a long prompt
and leave would keep the server working for no one. A forked child has the tokenizer (and the server's chat
template) already, costs a few milliseconds to start, runs on another core without the server's GIL, and is
killed when the client goes; it sends back only the ids, and closes its copies of the server's descriptors.
The child never touches torch or the event loop, so the threads the parent had when it forked (torch's, the
decode worker's) do not matter to it.
"""

import array
import asyncio
import multiprocessing
import os
import sys

from .protocol import APIError

# Linux only: macOS's system libraries are not safe to use in a child forked from a process with threads, and
# Windows has no fork.
_fork = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


def can_fork() -> bool:
    """Whether prompts can be tokenized in a forked process here (Linux)."""
    return _fork is not None


async def tokenize_in_process(work, gone: asyncio.Future) -> list[list[int]]:
    """The id lists `work()` returns, computed in a forked child; if `gone` (the client's disconnect) completes
    first, the child is killed and APIError 499 raised. An APIError the work raises is raised here as well."""
    loop = asyncio.get_running_loop()
    receiver, sender = _fork.Pipe(duplex=False)
    # daemon: a child does not outlive the server, and does not fork workers of its own (tokenizers/parallel.py)
    process = _fork.Process(target=_run, args=(work, sender), daemon=True, name="openformers-tokenize")
    process.start()
    sender.close()  # the child's copy is now the only writer, so its death reads as end of file here
    readable = loop.create_future()
    loop.add_reader(receiver.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        await asyncio.wait({readable, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not readable.done():
            raise APIError(499, "The client closed the connection.")
        try:
            kind, value = receiver.recv()
        except EOFError:
            process.join()
            raise RuntimeError(f"The tokenizing process ended with exit code {process.exitcode} "
                               "before sending its result.") from None
    finally:
        loop.remove_reader(receiver.fileno())
        receiver.close()
        process.kill()  # at once if the client left or the request was cancelled; a no-op once it has exited
        # Reaped from a thread: a killed child's exit runs at its nice 19 and unmaps its copy of the server's
        # memory, which on busy cores took 20-650 ms (up to 2 s), all of it with the event loop stopped in join.
        await asyncio.shield(loop.run_in_executor(None, process.join))
        process.close()
    if kind == "error":
        status, message, param, code, type_ = value
        raise APIError(status, message, param=param, code=code, type=type_)
    if kind == "failed":
        raise RuntimeError(f"Tokenizing failed in the tokenizing process: {value}")
    return [ids.tolist() for ids in value]


def _run(work, sender) -> None:
    """In the child: run `work` and send its ids as arrays (pickled as bytes, where a list is an int at a time)."""
    # The child holds copies of every descriptor the server had, among them its clients' connections: a
    # connection the server closes meanwhile would stay open for the client until the child ends.
    os.closerange(3, sender.fileno())
    os.closerange(sender.fileno() + 1, os.sysconf("SC_OPEN_MAX"))
    # Long prompts are the heavy work: where cores are short, the decode worker's steps for everyone go first,
    # and a megabyte that a client sends (and may leave) waits for the CPU time they leave over.
    os.nice(19)
    try:
        result = ("ids", [array.array("q", ids) for ids in work()])
    except APIError as error:
        result = ("error", (error.status, error.message, error.param, error.code, error.type))
    except Exception as error:  # sent to the parent, which fails the request with it
        result = ("failed", f"{type(error).__name__}: {error}")
    sender.send(result)
    sender.close()
