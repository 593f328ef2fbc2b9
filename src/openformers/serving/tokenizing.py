"""Tokenizing prompts: the ids of a request's prompts, and long prompts in processes the server can kill.

Tokenizing a megabyte takes seconds of pure Python, and a thread doing it holds the GIL, so the decode worker
waits on it at every step, and nothing can stop the thread once it has begun: clients that send a long prompt
and leave would keep the server working for no one. So a long prompt is tokenized in a child process, which sends
back only the ids and is killed the moment its client leaves.

The children are forked by a small process, `TokenizingProcesses`, which `openformers serve` starts after loading
the tokenizer and before importing torch and loading the model. Forking the loaded server (~1 GB) itself copied
its page tables while holding the GIL (35-55 ms, up to 130 ms on busy cores, the event loop and the decode worker
stopped meanwhile), and waiting for a killed child's exit, unmapping its copy, took 20-650 ms more; the fork server
(~65 MB with SmolLM2's tokenizer) forks in 1.4 ms, and its children's exits are not the server's to wait for.
The children never touch torch or an event loop, so the threads their ancestors had when they forked do not
matter to them.
"""

import array
import asyncio
import ctypes
import gc
import itertools
import multiprocessing
import os
import pickle
import signal
import socket
import sys

import jinja2

from .protocol import APIError

# Linux only: macOS's system libraries are not safe to use in a child forked from a process with threads, and
# Windows has no fork.
_fork = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


def can_fork() -> bool:
    """Whether prompts can be tokenized in forked processes here (Linux)."""
    return _fork is not None


def prompt_ids(tokenizer, kind: str, prompt) -> list[int]:
    """The ids of one prompt: for `kind` "chat" a conversation (a list of messages) through the tokenizer's chat
    template with the assistant's turn opened, for "completion" a text, or token ids checked against the vocabulary."""
    if kind == "chat":
        try:
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)
        except jinja2.TemplateError as error:
            raise APIError(400, f"The model's chat template refused the messages: {error}", param="messages")
        return list(ids)
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt)
        if not ids:
            raise APIError(400, "The prompt is empty: give a text to continue.", param="prompt")
        return ids
    vocab_size = len(tokenizer)
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
        raise APIError(400, f"prompt holds token ids outside the vocabulary of {vocab_size}: {bad[:5]}.",
                       param="prompt")
    return prompt


class TokenizingProcesses:
    """A process holding `tokenizer` that forks a child to tokenize each long prompt (Linux only, see can_fork).

    Start it while the process is small (before torch is imported and the model loads), so that its forks are
    cheap. If it dies, the next prompt starts another, forked from the present process. `close()` stops it and kills
    the children it has.
    """

    def __init__(self, tokenizer):
        if not can_fork():
            raise RuntimeError(f"TokenizingProcesses needs fork, which {sys.platform} does not offer safely "
                               "(Linux only): tokenize in a thread there.")
        self.tokenizer = tokenizer
        self._jobs = itertools.count()
        self._start()

    def _start(self) -> None:
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # daemon: it does not outlive the server even when close() is never called
        self._process = _fork.Process(target=_fork_on_request, args=(self.tokenizer, theirs), daemon=True,
                                      name="openformers-tokenizing")
        self._process.start()
        theirs.close()
        # A fork server that stops reading must not stop the event loop that sends to it: a full buffer is an error.
        self._control.setblocking(False)

    @property
    def pid(self) -> int:
        """The fork server's process id."""
        return self._process.pid

    async def tokenize(self, kind: str, prompts: list, gone: asyncio.Future) -> list[list[int]]:
        """The ids of `prompts` (see prompt_ids), computed in a child; if `gone` (the client's disconnect) completes
        first, the child is killed and APIError 499 raised. An APIError of the tokenizing is raised here as well."""
        mine, theirs = socket.socketpair()
        job = next(self._jobs)
        try:
            self._send(b"run %d" % job, theirs.fileno())
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        exchange = asyncio.ensure_future(_exchange(mine, pickle.dumps((kind, prompts))))
        try:
            await asyncio.wait({exchange, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not exchange.done():
                raise APIError(499, "The client closed the connection.")
            answer = exchange.result()
        finally:
            if not exchange.done() or exchange.cancelled() or exchange.exception() is not None:
                exchange.cancel()
                self._send(b"kill %d" % job)  # at once: the client left, the request was cancelled or reading failed
        if not answer:
            raise RuntimeError("The tokenizing process ended before sending its result (killed, or its fork server "
                               "died; the next long prompt starts a new one).")
        outcome, value = pickle.loads(answer)  # written by our own child
        if outcome == "error":
            status, message, param, code, type_ = value
            raise APIError(status, message, param=param, code=code, type=type_)
        if outcome == "failed":
            raise RuntimeError(f"Tokenizing failed in the tokenizing process: {value}")
        return [ids.tolist() for ids in value]

    def _send(self, message: bytes, descriptor: int | None = None) -> None:
        """Send the fork server `message` (with `descriptor`); one that died or stopped reading is replaced once."""
        for _ in range(2):
            try:
                socket.send_fds(self._control, [message], [] if descriptor is None else [descriptor])
                return
            except OSError:  # it died (a broken pipe), stopped reading (a full buffer) or was closed
                if message.startswith(b"kill"):
                    return  # its children died with it
                self.close()
                self._start()
        raise RuntimeError("The tokenizing fork server did not take a request, even restarted.")

    def close(self) -> None:
        """Stop the fork server, which kills its children first; a no-op when it is stopped already."""
        self._control.close()  # it reads the end of file, kills its children and exits
        self._process.join(5)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()


async def _exchange(connection: socket.socket, job: bytes) -> bytes:
    """Send `job` to the child through `connection`, then read its whole answer (b"" if it ended without one)."""
    reader, writer = await asyncio.open_connection(sock=connection)
    try:
        writer.write(job)
        writer.write_eof()
        await writer.drain()
        return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()


def _fork_on_request(tokenizer, control: socket.socket) -> None:
    """The fork server's loop: "run JOB" with a connection forks a child tokenizing the job it reads there; "kill
    JOB" kills that child if it still runs; the end of the control connection kills the children and returns."""
    _close_descriptors_except(control.fileno())  # the server's, when this was forked from a running server
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the server's terminal stops the server, which stops this
    gc.freeze()  # the tokenizer's objects: a child that collects does not then copy their pages
    control.settimeout(0.5)  # so that exited children are reaped while no request comes
    children = {}  # job -> pid of a child not yet reaped (so its pid is not another process's)
    while True:
        try:
            message, descriptors, _, _ = socket.recv_fds(control, 64, 1)
        except TimeoutError:
            message, descriptors = None, []
        _reap(children, wait=False)
        if message == b"":
            break
        if message is None:
            continue
        verb, job = message.split()
        if verb == b"run":
            pid = os.fork()
            if pid == 0:
                _tokenize_job(tokenizer, descriptors[0], parent=os.getppid())  # never returns
            os.close(descriptors[0])
            children[job] = pid
        elif verb == b"kill" and job in children:
            os.kill(children[job], signal.SIGKILL)
    for pid in children.values():
        os.kill(pid, signal.SIGKILL)
    _reap(children, wait=True)


def _reap(children: dict, wait: bool) -> None:
    """Collect the exit of every child that has ended (with `wait`, of all of them), forgetting their pids."""
    while children:
        pid, _ = os.waitpid(-1, 0 if wait else os.WNOHANG)
        if pid == 0:
            return
        for job in [job for job, child in children.items() if child == pid]:
            del children[job]


def _tokenize_job(tokenizer, descriptor: int, parent: int) -> None:
    """In a child of the fork server `parent`: read (kind, prompts) until the end of file, send back their ids as
    arrays (pickled as bytes, where a list is an int at a time), and exit."""
    try:
        # Killed with its fork server, so that the server reads the end of its connection at once instead of waiting
        # for a child nothing can kill any more (PR_SET_PDEATHSIG; checked after, in case the fork server died first).
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            return
        connection = socket.socket(fileno=descriptor)
        # The child must hold no connection of the server's clients, nor the fork server's control connection.
        _close_descriptors_except(descriptor)
        # Long prompts are the heavy work: where cores are short, the decode worker's steps for everyone go first,
        # and a megabyte that a client sends (and may leave) waits for the CPU time they leave over.
        os.nice(19)
        job = bytearray()
        while chunk := connection.recv(1 << 20):
            job.extend(chunk)
        kind, prompts = pickle.loads(job)  # from the server, through its fork server
        try:
            result = ("ids", [array.array("q", prompt_ids(tokenizer, kind, prompt)) for prompt in prompts])
        except APIError as error:
            result = ("error", (error.status, error.message, error.param, error.code, error.type))
        except Exception as error:  # sent to the server, which fails the request with it
            result = ("failed", f"{type(error).__name__}: {error}")
        connection.sendall(pickle.dumps(result))
    finally:
        os._exit(0)  # never back into the fork server's loop, whatever happened


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _close_descriptors_except(descriptor: int) -> None:
    os.closerange(3, descriptor)
    os.closerange(descriptor + 1, os.sysconf("SC_OPEN_MAX"))
