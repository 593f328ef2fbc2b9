"""Fine-tuning a Llama-2-7B-shaped classifier on one machine: peak memory and seconds per step of openformers'
LoRA (bf16 weights) and QLoRA (int4 weights) against transformers + peft's LoRA (bf16), in the same run.

    .venv/bin/python benchmarks/finetune_7b.py                # the 7B shape: ~13.5 GB checkpoint, ~18 GB free needed
    .venv/bin/python benchmarks/finetune_7b.py --layers 2     # the same widths with 2 layers: a quick check

The model is Vicuna-7B's layout as the classic fine-tuning script uses it (LlamaForSequenceClassification,
num_labels=2, pad_token_id set) with random bf16 weights, written once under ~/.cache/openformers/bench/ as
sharded safetensors, shard by shard, so that no more than a shard is ever in memory. Each engine runs in its own
process (one at a time: the machine's memory holds one 7B model), loads the checkpoint, attaches LoRA r=8 on
q_proj/v_proj with the head in modules_to_save, turns gradient checkpointing on, and takes a warm-up step and
then --steps AdamW steps on one sequence of 128 tokens. Reported: the checkpoint's size, each process's peak
resident memory (VmHWM, read from /proc by the process itself at the end: loading and training), the resident
memory after loading, and the mean seconds per step after the warm-up, in wall-clock time and in the process's
CPU time (all its threads: on a machine that other work shares, wall-clock time also counts the waits for a core).
Targets (issue "Fine-tuning a 7B model"): QLoRA peak <= 8 GB, bf16 LoRA peak <= 1.3x the checkpoint, step time
<= transformers + peft's.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

SHAPE = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
             vocab_size=32000)
SHARD_BYTES = 4 * 10**9  # shards of up to 4 GB: a whole one never has to fit beside the quantized model
ENGINES = ("openformers-bf16", "openformers-int4", "transformers+peft-bf16")
GB = 10**9


def checkpoint_folder(layers: int) -> Path:
    return Path.home() / ".cache" / "openformers" / "bench" / f"llama2-7b-shape-seqcls-{layers}-layers"


def tensor_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    """The checkpoint's tensors, in the order Hugging Face's Llama checkpoints store them."""
    C, F, V = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(layers):
        prefix = f"model.layers.{i}."
        shapes |= {prefix + f"self_attn.{name}.weight": (C, C) for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
        shapes |= {prefix + "mlp.gate_proj.weight": (F, C), prefix + "mlp.up_proj.weight": (F, C),
                   prefix + "mlp.down_proj.weight": (C, F)}
        shapes |= {prefix + "input_layernorm.weight": (C,), prefix + "post_attention_layernorm.weight": (C,)}
    return shapes | {"model.norm.weight": (C,), "score.weight": (2, C)}


def make_checkpoint(folder: Path, layers: int) -> None:
    """Write config.json and the bf16 shards with their index; random normal(0, 0.02) weights, unit norms."""
    from safetensors.torch import save_file

    if (folder / "model.safetensors.index.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(SHAPE, architectures=["LlamaForSequenceClassification"], model_type="llama",
                  num_hidden_layers=layers, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                  hidden_act="silu", initializer_range=0.02, tie_word_embeddings=False, bos_token_id=1,
                  eos_token_id=2, pad_token_id=0, id2label={"0": "LABEL_0", "1": "LABEL_1"},
                  label2id={"LABEL_0": 0, "LABEL_1": 1}, torch_dtype="bfloat16", use_cache=True)
    generator = torch.Generator().manual_seed(0)
    shards, current, current_bytes = [], {}, 0
    names = []

    def write(tensors: dict) -> None:
        name = f"shard-{len(shards) + 1:05d}.safetensors"
        save_file(tensors, folder / name, metadata={"format": "pt"})
        shards.append(name)
        names.append(list(tensors))

    total = 0
    for name, shape in tensor_shapes(layers).items():
        if len(shape) == 1:
            tensor = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensor = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        size = tensor.numel() * 2
        if current and current_bytes + size > SHARD_BYTES:
            write(current)
            current, current_bytes = {}, 0
        current[name] = tensor
        current_bytes += size
        total += size
    write(current)
    count = len(shards)
    weight_map = {}
    for index, (old, tensors) in enumerate(zip(shards, names), start=1):
        new = f"model-{index:05d}-of-{count:05d}.safetensors"
        (folder / old).rename(folder / new)
        weight_map |= {tensor: new for tensor in tensors}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")  # last: marks the folder complete


def checkpoint_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def memory_status() -> dict[str, int]:
    """This process's resident memory now and at its peak, in bytes."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def load(engine: str, folder: Path):
    """The classifier with a LoRA adapter (r=8 on q_proj/v_proj, the head trained whole) and gradient
    checkpointing, as each library's users write it."""
    target = dict(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                  modules_to_save=["score"])
    checkpointing = {"use_reentrant": False}
    if engine.startswith("openformers"):
        from openformers import AutoModelForSequenceClassification, LoraConfig

        quantization = "int4" if engine.endswith("int4") else None
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.bfloat16,
                                                                   quantization=quantization)
        model.add_adapter(LoraConfig(**target))
    else:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.bfloat16)
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **target))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    return model.train()


def run_engine(engine: str, folder: Path, steps: int, tokens: int) -> dict:
    torch.manual_seed(0)
    start = time.perf_counter()
    model = load(engine, folder)
    load_seconds = time.perf_counter() - start
    after_load = memory_status()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    times, cpu_times, losses = [], [], []
    for _ in range(1 + steps):  # the first step warms up (allocations, the optimizer's state)
        input_ids = torch.randint(3, SHAPE["vocab_size"], (1, tokens), generator=generator)
        labels = torch.randint(0, 2, (1,), generator=generator)
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        losses.append(round(loss.item(), 4))
    return dict(engine=engine, load_seconds=load_seconds, rss_after_load=after_load["VmRSS"],
                peak_rss=memory_status()["VmHWM"], seconds_per_step=sum(times[1:]) / steps, step_times=times,
                cpu_seconds_per_step=sum(cpu_times[1:]) / steps,
                losses=losses, trainable_parameters=sum(p.numel() for p in trainable))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (32: Llama-2-7B)")
    parser.add_argument("--steps", type=int, default=3, help="measured optimizer steps, after one warm-up step")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"a comma-separated subset of {ENGINES}")
    parser.add_argument("--min-available-gb", type=float, default=None,
                        help="memory an engine needs available to start (default: 1.35x the checkpoint for bf16, "
                             "0.7x for int4)")
    parser.add_argument("--wait-minutes", type=float, default=10,
                        help="how long to wait for that memory before skipping the engine")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # the child process's one engine
    options = parser.parse_args()
    folder = checkpoint_folder(options.layers)
    if options.engine:
        print(json.dumps(run_engine(options.engine, folder, options.steps, options.tokens)))
        return

    make_checkpoint(folder, options.layers)
    size = checkpoint_bytes(folder)
    print(f"checkpoint: {folder} ({size / GB:.2f} GB bf16, {options.layers} layers); "
          f"{options.tokens} tokens, batch 1, LoRA r=8 on q_proj/v_proj, gradient checkpointing, "
          f"{options.steps} steps after a warm-up; torch threads {torch.get_num_threads()}")
    results = {}
    for engine in options.engines.split(","):
        if engine not in ENGINES:
            parser.error(f"--engines: unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        # The machine may be shared: wait a while for the memory an engine needs rather than push others out.
        needed = options.min_available_gb * GB if options.min_available_gb is not None \
            else (0.7 if engine.endswith("int4") else 1.35) * size
        deadline = time.monotonic() + 60 * options.wait_minutes
        while available_bytes() < needed and time.monotonic() < deadline:
            time.sleep(15)
        if available_bytes() < needed:
            print(f"{engine}: skipped, {available_bytes() / GB:.1f} GB available < {needed / GB:.1f} GB needed")
            continue
        load_average = os.getloadavg()[0]
        command = [sys.executable, __file__, "--engine", engine, "--layers", str(options.layers),
                   "--steps", str(options.steps), "--tokens", str(options.tokens)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{engine}: failed (exit {done.returncode})\n{done.stderr[-3000:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["load_average"] = (load_average, os.getloadavg()[0])
        results[engine] = result
        print(f"{engine:24s} peak RSS {result['peak_rss'] / GB:6.2f} GB ({result['peak_rss'] / size:.2f}x the "
              f"checkpoint), after load {result['rss_after_load'] / GB:6.2f} GB, load {result['load_seconds']:6.1f} s, "
              f"{result['seconds_per_step']:7.2f} s/step, CPU {result['cpu_seconds_per_step']:7.2f} s/step (steps {', '.join(f'{t:.2f}' for t in result['step_times'])}"
              f"; losses {result['losses']}), {result['trainable_parameters']:,} trainable, load average "
              f"{result['load_average'][0]:.2f} -> {result['load_average'][1]:.2f}", flush=True)
    reference = results.get("transformers+peft-bf16")
    for engine in ("openformers-bf16", "openformers-int4"):
        if engine in results and reference is not None:
            ours = results[engine]
            print(f"{engine}: step time {ours['seconds_per_step'] / reference['seconds_per_step']:.2f}x (CPU time "
                  f"{ours['cpu_seconds_per_step'] / reference['cpu_seconds_per_step']:.2f}x), peak RSS "
                  f"{ours['peak_rss'] / reference['peak_rss']:.2f}x transformers+peft's")
    if "openformers-int4" in results:
        print(f"target QLoRA peak <= 8 GB: {results['openformers-int4']['peak_rss'] / GB:.2f} GB")
    if "openformers-bf16" in results:
        print(f"target bf16 LoRA peak <= 1.3x the checkpoint: {results['openformers-bf16']['peak_rss'] / size:.2f}x")


if __name__ == "__main__":
    main()
