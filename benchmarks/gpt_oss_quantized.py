"""gpt-oss loaded from its MXFP4 checkpoint layout: as bfloat16 (the experts dequantized) and with quantization="int8"
and "int4" (packed an expert at a time as they are read): load time, peak memory, the model's size, prefill and
decoding speed, and what each quantization does to the logits and to the experts' weights, on random checkpoints.

    .venv/bin/python benchmarks/gpt_oss_quantized.py                 # tiny, and gpt-oss-20b's shapes with 4 layers
    .venv/bin/python benchmarks/gpt_oss_quantized.py --layers 24     # all of gpt-oss-20b (about 13 GB to write)
    .venv/bin/python benchmarks/gpt_oss_quantized.py --sizes tiny    # only the tiny one (seconds)

Each checkpoint holds random weights in the released layout: the experts' matrices as MXFP4 `*_blocks` and
`*_scales` (codes drawn evenly, each block's exponent one of three around the one that makes the weights about
1 / sqrt(inputs), root mean square, so that the residual stream does not grow layer after layer), the rest bfloat16
(std 0.02; the routers' std 2 / sqrt(hidden), whose choices a rounding rarely flips: with 0.02, near-ties flip at
any rounding and the logits show only that), a safetensors shard per layer; gpt-oss-20b's shapes (hidden 2880, 32
experts of 2880, 4 chosen, 64 heads of 64, 8 of keys and values, vocabulary 201088) with --layers of its 24, or a tiny model (hidden 64, 4 experts of 64,
2 layers). Each load runs in its own subprocess, which reports its peak RSS once loaded (VmHWM: "load RSS"; a
float load keeps the checkpoint's bfloat16 tensors mapped, read as they are used, where a quantized one reads each
into memory to pack or keep it, the embedding table too); the same subprocess then
runs a prompt of --prompt tokens (prefill s) and --new greedy tokens (tok/s), and writes the prompt's logits, which
the parent compares with the float load's (the dequantized model: the MXFP4 values exactly): the largest difference
over the largest logit through the kernel's products (err kernel: each input rounded to int8 steps per 32 as well,
as llama.cpp's CPU products round theirs) and with the packed weights unpacked for PyTorch's products (err plain:
the packed weights' error alone), and
how many positions keep their top token (through the kernel). The float load's subprocess also packs its experts
alone (int8, int4; kernels.PackedExperts from the dequantized stacks) and compares those logits: what the experts'
quantization costs apart from the other matrices'. `experts_rms` is, over layer 0's experts, the root mean square of
the packed weights' difference from the MXFP4 values over theirs (int8: 0, lossless; int4 moves them: Q4_1's grid of
16 steps between a group's least and largest weight does not hold e2m1's uneven one). The folder must be on a real
disk: a RAM-backed one would count the file as memory. Figures: benchmarks/RESULTS.md ("gpt-oss quantized").
"""

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

GPT_OSS_20B = dict(
    vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_attention_heads=64, num_key_value_heads=8,
    head_dim=64, num_local_experts=32, num_experts_per_tok=4, sliding_window=128, max_position_embeddings=131072,
    rope_parameters={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                     "original_max_position_embeddings": 4096, "rope_theta": 150000.0},
)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=8, max_position_embeddings=256)

LOAD_SCRIPT = r"""
import json, sys, time
import torch
from openformers import AutoModelForCausalLM
from openformers.kernels import Linear, PackedExperts, install_packed_experts, linear
from openformers.models.gpt_oss import mxfp4_matrix
from safetensors import safe_open

folder, quantization, prompt, new, out, dtype = sys.argv[1:7]
prompt, new, quantization = int(prompt), int(new), None if quantization == "float" else quantization
start = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), quantization=quantization)
loaded = time.perf_counter()


def peak_rss() -> int:
    # VmHWM: this program's own peak (ru_maxrss would also count the parent's peak at the fork, as Linux keeps it)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


load_rss = peak_rss()
size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
ids = torch.randint(3, model.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))


def unpacked_logits():
    # the packed weights unpacked (into one reused matrix per shape) for PyTorch's products, the inputs unrounded
    flags, rows = (linear.INTEGER_PROMPT_PRODUCTS, linear.BFLOAT16_PROMPT_PRODUCTS), Linear.kernel_rows
    linear.INTEGER_PROMPT_PRODUCTS, linear.BFLOAT16_PROMPT_PRODUCTS = False, False
    Linear.kernel_rows = lambda self: 0
    try:
        return model(ids).logits.float()
    finally:
        (linear.INTEGER_PROMPT_PRODUCTS, linear.BFLOAT16_PROMPT_PRODUCTS), Linear.kernel_rows = flags, rows


with torch.inference_mode():
    model(ids[:, :4])  # a first call's one-time costs left out
    began = time.perf_counter()
    logits = {"kernel": model(ids).logits.float()}
    prefill = time.perf_counter() - began
    began = time.perf_counter()
    model.generate(ids, max_new_tokens=1, do_sample=False)
    one = time.perf_counter() - began
    began = time.perf_counter()
    model.generate(ids, max_new_tokens=new + 1, min_new_tokens=new + 1, do_sample=False)
    decoding = time.perf_counter() - began - one  # the prefill and the first token counted once
    logits["plain"] = unpacked_logits() if quantization is not None else logits["kernel"]
    if quantization is None:  # the experts alone packed (from the dequantized stacks), the rest as loaded
        for packing in ("int8", "int4"):
            kept = []
            for layer in model.model.layers:
                experts = layer.mlp.experts
                for name in ("gate_up_proj", "down_proj"):
                    stack = getattr(experts, name)
                    kept.append((experts, name, stack))
                    packed = PackedExperts.from_matrices(len(stack), lambda e: stack[e].T, packing)
                    install_packed_experts(experts, name, packed)
            logits[f"experts {packing} kernel"], logits[f"experts {packing} plain"] = model(ids).logits.float(), unpacked_logits()
            for experts, name, stack in kept:
                delattr(experts, name)
                setattr(experts, name, stack)
torch.save(logits, out)
experts_rms = None
if quantization is not None:  # layer 0's experts against their MXFP4 values
    experts = model.model.layers[0].mlp.experts
    with open(folder + "/model.safetensors.index.json") as index:
        shard = json.load(index)["weight_map"]["model.layers.0.mlp.experts.down_proj_blocks"]
    moved = total = 0.0
    with safe_open(f"{folder}/{shard}", "pt") as f:
        for name in ("gate_up_proj", "down_proj"):
            blocks = f.get_tensor(f"model.layers.0.mlp.experts.{name}_blocks")
            scales = f.get_tensor(f"model.layers.0.mlp.experts.{name}_scales")
            packed = getattr(experts, name)
            for e in range(len(blocks)):
                exact = mxfp4_matrix(blocks[e], scales[e])
                moved += (packed.expert(e).dequantized(torch.float32) - exact).square().sum().item()
                total += exact.square().sum().item()
    experts_rms = (moved / total) ** 0.5
print(json.dumps({"load_s": loaded - start, "load_rss": load_rss, "size": size, "prefill_s": prefill,
                  "decode_tok_s": new / decoding, "experts_rms": experts_rms,
                  "peak_rss": peak_rss()}))
"""


def tensor_shapes(config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """The released layout's tensors, name -> (shape, kind): "bf16", or the MXFP4 "blocks" / "scales"."""
    V, C, I, E = config["vocab_size"], config["hidden_size"], config["intermediate_size"], config["num_local_experts"]
    H, K, D = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    shapes = {"model.embed_tokens.weight": ((V, C), "bf16"), "model.norm.weight": ((C,), "bf16"),
              "lm_head.weight": ((V, C), "bf16")}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, (out, inp) in {"q_proj": (H * D, C), "k_proj": (K * D, C), "v_proj": (K * D, C),
                                 "o_proj": (C, H * D)}.items():
            shapes[p + f"self_attn.{name}.weight"] = ((out, inp), "bf16")
            shapes[p + f"self_attn.{name}.bias"] = ((out,), "bf16")
        shapes[p + "self_attn.sinks"] = ((H,), "bf16")
        shapes[p + "input_layernorm.weight"] = ((C,), "bf16")
        shapes[p + "post_attention_layernorm.weight"] = ((C,), "bf16")
        shapes[p + "mlp.router.weight"] = ((E, C), "bf16")
        shapes[p + "mlp.router.bias"] = ((E,), "bf16")
        for name, rows, columns in (("gate_up_proj", 2 * I, C), ("down_proj", C, I)):
            shapes[p + f"mlp.experts.{name}_blocks"] = ((E, rows, columns // 32, 16), "blocks")
            shapes[p + f"mlp.experts.{name}_scales"] = ((E, rows, columns // 32), "scales")
            shapes[p + f"mlp.experts.{name}_bias"] = ((E, rows), "bf16")
    return shapes


# How random_tensor draws the weights, kept beside a checkpoint: one drawn otherwise is written again.
DRAWN = {"experts": "1 / sqrt(inputs) rms, exponents of three", "routers": "std 2 / sqrt(hidden)", "rest": "std 0.02"}


def random_tensor(name: str, shape: tuple[int, ...], kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "blocks":
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    if kind == "scales":  # weights of about 1 / sqrt(inputs), root mean square: FP4 codes drawn evenly have 2.93
        step = round(math.log2(1 / (2.93 * math.sqrt(shape[-1] * 32))))
        return torch.randint(127 + step - 1, 127 + step + 2, shape, generator=generator, dtype=torch.uint8)
    values = torch.randn(shape, generator=generator)
    if name.endswith("norm.weight"):
        values = values * 0.02 + 1
    elif name.endswith("router.weight"):  # decisive choices (router logits of std 2), as a trained router's: with
        values = values * 2 / shape[1] ** 0.5  # 0.02 near-ties flip with any rounding and hide the weights' own error
    else:
        values = values * 0.02
    return values.to(torch.bfloat16)


def make_checkpoint(folder: Path, config: dict) -> int:
    """Write the checkpoint (a shard per layer, and one for the rest) unless it is there; its size in bytes."""
    from safetensors.torch import save_file

    values = {**config, "model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "dtype": "bfloat16",
              "quantization_config": {"quant_method": "mxfp4"}, "pad_token_id": 0, "eos_token_id": 2}
    index_path, drawn = folder / "model.safetensors.index.json", folder / "drawn.json"
    if (index_path.is_file() and json.loads((folder / "config.json").read_text()) == values and drawn.is_file()
            and json.loads(drawn.read_text()) == DRAWN):
        return json.loads(index_path.read_text())["metadata"]["total_size"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    shards = {}
    for name, (shape, kind) in tensor_shapes(config).items():
        layer = name.split(".")[2] if name.startswith("model.layers.") else "rest"
        shards.setdefault(layer, {})[name] = (shape, kind)
    weight_map, total = {}, 0
    for number, (layer, tensors) in enumerate(shards.items(), start=1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        made = {name: random_tensor(name, shape, kind, generator) for name, (shape, kind) in tensors.items()}
        save_file(made, folder / file, metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in made.values())
        weight_map.update(dict.fromkeys(made, file))
        del made
    index_path.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(values))
    drawn.write_text(json.dumps(DRAWN))
    return total


def measure(folder: Path, quantization: str, prompt: int, new: int, dtype: str) -> tuple[dict, torch.Tensor]:
    logits_file = folder / f"logits-{quantization}.pt"
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(folder), quantization, str(prompt), str(new),
                             str(logits_file), dtype], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"loading {folder} as {quantization} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), torch.load(logits_file)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path.home() / ".cache" / "openformers-bench" / "gpt-oss")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of gpt-oss-20b's shape (it has 24)")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "20b"], choices=["tiny", "20b"])
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens (its logits are compared)")
    parser.add_argument("--new", type=int, default=8, help="greedy tokens generated after the prompt")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="the dtype of every load: the float load is the dequantized model in it")
    parser.add_argument("--delete", action="store_true", help="remove the checkpoints afterwards")
    args = parser.parse_args()

    for size in args.sizes:
        config = {**(GPT_OSS_20B if size == "20b" else TINY), "num_hidden_layers": args.layers if size == "20b" else 2}
        config["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention"
                                 for i in range(config["num_hidden_layers"])]
        folder = args.folder / f"{size}-{config['num_hidden_layers']}-layers"
        folder.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = make_checkpoint(folder, config)
        print(f"\n{size}: {config['num_hidden_layers']} layers, MXFP4 checkpoint {checkpoint / 1e9:.3f} GB "
              f"({folder}), loads in {args.dtype} (float: the experts dequantized)")
        print(f"{'load':>9} {'load s':>7} {'load RSS GB':>11} {'x float':>7} {'model GB':>8} {'x float':>7} "
              f"{'prefill s':>9} {'tok/s':>6} {'err kernel':>10} {'err plain':>9} {'top-1 kept':>10} "
              f"{'experts rms':>11}")
        results, baseline = {}, None

        def errors(logits: dict, kernel: str, plain: str) -> tuple[float, float, float]:
            error = {path: ((logits[path] - base).abs().max() / base.abs().max()).item() for path in (kernel, plain)}
            return error[kernel], error[plain], (logits[kernel].argmax(-1) == base.argmax(-1)).float().mean().item()

        for quantization in ("float", "int8", "int4"):
            result, logits = measure(folder, quantization, args.prompt, args.new, args.dtype)
            if baseline is None:
                baseline, base = result, logits["kernel"]
            kernel, plain, kept = errors(logits, "kernel", "plain")
            rms = "" if result["experts_rms"] is None else f"{result['experts_rms']:.2e}"
            print(f"{quantization:>9} {result['load_s']:7.2f} {result['load_rss'] / 1e9:11.3f} "
                  f"{result['load_rss'] / baseline['load_rss']:7.2f} {result['size'] / 1e9:8.3f} "
                  f"{result['size'] / baseline['size']:7.2f} {result['prefill_s']:9.3f} "
                  f"{result['decode_tok_s']:6.2f} {kernel:10.2e} {plain:9.2e} {kept:10.3f} {rms:>11}", flush=True)
            results[quantization] = {**result, "logits_error": {"kernel": kernel, "plain": plain}, "top1_kept": kept}
            for packing in ("int8", "int4") if quantization == "float" else ():
                kernel, plain, kept = errors(logits, f"experts {packing} kernel", f"experts {packing} plain")
                print(f"{'experts ' + packing:>17}{'(only the experts packed, the rest as the float load)':>55} "
                      f"{kernel:10.2e} {plain:9.2e} {kept:10.3f}")
                results[f"experts {packing}"] = {"logits_error": {"kernel": kernel, "plain": plain}, "top1_kept": kept}
        print(json.dumps({size: results}))
        if args.delete:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
