"""ModernBERT forward on a padded batch: openformers (padding left out of every per-token step) against transformers
(which computes the padding on the CPU), in the same run; with --long, on one long sequence (openformers' sliding
layers attend block by block, transformers' through a (T, T) mask).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/modernbert.py               # ModernBERT-base's shape, 22 layers
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/modernbert.py --layers 2 --rounds 1   # a quick check of the script
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/modernbert.py --layers 3 --long 8192  # one global, two sliding

Both libraries get the same random weights (a ModernBERT-base-shaped model saved once and loaded by each) and the
same batch: 8 sequences of up to 512 tokens, 48% of them real, right-padded as ModernBERT's tokenizer pads. The
figures are CPU seconds per forward (process time, so the load of a shared machine counts less), best of the
rounds; "openformers, every token real" runs the same batch with an all-ones mask, which is what computing the
padding costs.
"""

import argparse
import tempfile
import time
import warnings

import torch

LENGTHS = [512, 80, 300, 64, 200, 450, 120, 256]


def cpu_seconds(model, ids, mask, rounds: int) -> float:
    best = float("inf")
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(rounds):
            start = time.process_time()
            model(input_ids=ids, attention_mask=mask)
            best = min(best, time.process_time() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--long", type=int, default=0, help="one sequence of this many tokens instead of the batch")
    args = parser.parse_args()
    import transformers

    import openformers

    lengths = [args.long] if args.long else LENGTHS
    T = max(lengths)
    ids = torch.randint(5, 50_000, (len(lengths), T), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        config = transformers.ModernBertConfig(num_hidden_layers=args.layers, max_position_embeddings=max(8192, T))
        transformers.ModernBertModel(config).save_pretrained(folder)
        theirs = transformers.ModernBertModel.from_pretrained(folder, attn_implementation="sdpa").eval()
        ours = openformers.ModernBertModel.from_pretrained(folder)
    real = mask.bool()
    with torch.inference_mode():
        difference = (ours(ids, attention_mask=mask).last_hidden_state[real]
                      - theirs(input_ids=ids, attention_mask=mask).last_hidden_state[real]).abs().max()
    print(f"{args.layers} layers, batch {len(lengths)} x {T}, {int(mask.sum())} real tokens "
          f"({mask.float().mean():.0%}); largest difference at real tokens {difference:.2e}")
    figures = {"openformers": cpu_seconds(ours, ids, mask, args.rounds)}
    if not args.long:
        figures["openformers, every token real"] = cpu_seconds(ours, ids, torch.ones_like(mask), args.rounds)
    figures["transformers (sdpa)"] = cpu_seconds(theirs, ids, mask, args.rounds)
    for name, seconds in figures.items():
        print(f"{name:32s} {seconds:7.3f} CPU s per forward")
    print(f"openformers faster by {figures['transformers (sdpa)'] / figures['openformers']:.2f}x transformers")
    if not args.long:
        saved = 1 - figures["openformers"] / figures["openformers, every token real"]
        print(f"leaving the padding out saves {saved:.0%}")


if __name__ == "__main__":
    main()
