"""Sampled decode of SmolLM2: the compiled draw of each token (decode.cpp's multinomial_one) against
torch.multinomial, which takes a logarithm per vocabulary entry, in one process, rounds interleaved, and greedy
decode beside them for scale. Both draws give the same tokens from the same seed, which this script checks.

    .venv/bin/python benchmarks/sampling.py [--precision int4] [--rounds 3] [--new-tokens 64]

Each figure is the best round's tokens/s of `generate` making --new-tokens tokens after the prompt (the time of
a call of N + 1 tokens less the best of three of 1).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode import QUANTIZATION, default_gguf  # noqa: E402

from openformers import AutoModelForCausalLM, kernels  # noqa: E402
from openformers.generation import processors  # noqa: E402

WAYS = {
    "greedy": dict(do_sample=False),
    "sampled, compiled draw": dict(do_sample=True, temperature=0.7, top_p=0.9),  # with the default top_k of 50
    "sampled, torch.multinomial": dict(do_sample=True, temperature=0.7, top_p=0.9),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="int4", choices=["float32", "bfloat16", "int8", "int4"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()

    gguf = default_gguf()
    quantized = args.precision in QUANTIZATION
    options = {"quantization": QUANTIZATION[args.precision]} if quantized else {"dtype": getattr(torch, args.precision)}
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **options)
    kernels.place_weights(model)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    base = dict(eos_token_id=None, pad_token_id=0)
    applies = processors._compiled_multinomial_applies

    def generate(way: str, tokens: int) -> torch.Tensor:
        processors._compiled_multinomial_applies = applies if way != "sampled, torch.multinomial" else (lambda p: False)
        try:
            with torch.inference_mode():
                return model.generate(ids, max_new_tokens=tokens, **base, **WAYS[way])
        finally:
            processors._compiled_multinomial_applies = applies

    def timed(way: str, tokens: int) -> float:
        started = time.perf_counter()
        generate(way, tokens)
        return time.perf_counter() - started

    torch.manual_seed(0)
    compiled = generate("sampled, compiled draw", args.new_tokens)
    torch.manual_seed(0)
    assert torch.equal(compiled, generate("sampled, torch.multinomial", args.new_tokens)), "the draws differ"
    best = dict.fromkeys(WAYS, 0.0)
    for round_number in range(1, args.rounds + 1):
        for way in WAYS:
            one = min(timed(way, 1) for _ in range(3))
            speed = args.new_tokens / (timed(way, args.new_tokens + 1) - one)
            best[way] = max(best[way], speed)
            print(f"round {round_number}  {way:>27}: {speed:6.1f} tokens/s", flush=True)
    print(f"\n{args.precision}, best of {args.rounds} rounds, {args.new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads (the same sampled tokens from the same seed either way)")
    for way, speed in best.items():
        print(f"  {way:>27}: {speed:6.1f} tokens/s")
    ratio = best["sampled, compiled draw"] / best["sampled, torch.multinomial"]
    print(f"compiled draw faster by {ratio:.2f}x; sampled at {best['sampled, compiled draw'] / best['greedy']:.0%} "
          "of greedy speed")


if __name__ == "__main__":
    main()
