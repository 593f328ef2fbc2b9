"""Training throughput (samples/s) of openformers' Trainer against transformers' Trainer, in the same run.

    .venv/bin/python benchmarks/train.py                 # a ~10M-parameter Llama, 256 rows of 64 tokens
    .venv/bin/python benchmarks/train.py --rows 32 --rounds 1   # a quick check of the script itself

Both Trainers get the same weights (a random Llama saved once and loaded by each library), the same
rows, and the same arguments (AdamW, linear schedule, clipping, no checkpoints, logging every 10 steps).
The figure is rows / seconds spent in `trainer.train()`; rounds alternate which library goes first,
and the best round of each counts. Target (issue "Fine-tuning"): at least 1x.
"""

import argparse
import tempfile
import time

import torch

CONFIG = dict(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=256, pad_token_id=0, tie_word_embeddings=False)


def train_once(library: str, folder: str, rows: list[dict], batch_size: int) -> float:
    if library == "openformers":
        from openformers import LlamaForCausalLM, Trainer, TrainingArguments
    else:
        from transformers import LlamaForCausalLM, Trainer, TrainingArguments
    model = LlamaForCausalLM.from_pretrained(folder)
    args = TrainingArguments(output_dir=f"{folder}/{library}", per_device_train_batch_size=batch_size,
                             num_train_epochs=1, learning_rate=1e-3, logging_steps=10, save_strategy="no",
                             report_to="none", disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    start = time.perf_counter()
    trainer.train()
    return len(rows) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()

    import transformers

    folder = tempfile.mkdtemp(prefix="train-bench-")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).save_pretrained(folder)
    ids = torch.randint(1, CONFIG["vocab_size"], (options.rows, options.tokens), generator=torch.Generator().manual_seed(1))
    rows = [{"input_ids": row, "labels": row} for row in ids.tolist()]
    # Warm both libraries up (imports, the optimizer's first-use imports) outside the measured rounds.
    for library in ("openformers", "transformers"):
        train_once(library, folder, rows[: options.batch_size], options.batch_size)

    best = {"openformers": 0.0, "transformers": 0.0}
    for round_index in range(options.rounds):
        order = ["openformers", "transformers"] if round_index % 2 == 0 else ["transformers", "openformers"]
        for library in order:
            rate = train_once(library, folder, rows, options.batch_size)
            best[library] = max(best[library], rate)
            print(f"round {round_index + 1} {library:>12}: {rate:.1f} samples/s")
    print(f"\nbest of {options.rounds} rounds, {options.rows} rows x {options.tokens} tokens, batch "
          f"{options.batch_size}, {torch.get_num_threads()} threads")
    for library, rate in best.items():
        print(f"{library:>12}: {rate:8.1f} samples/s")
    print(f"       ratio: {best['openformers'] / best['transformers']:8.2f}x (openformers / transformers)")


if __name__ == "__main__":
    main()
