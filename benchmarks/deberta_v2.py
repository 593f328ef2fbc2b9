"""DeBERTa-v3 forward: openformers (the layers project only the rows of the relative-position table that the input's
distances reach) against transformers (which projects all 2 x 256 rows in every layer), in the same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/deberta_v2.py                # DeBERTa-v3-base's shape, 12 layers
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/deberta_v2.py --layers 2 --rounds 1   # a quick check of the script

Both libraries get the same random weights (a DeBERTa-v3-base-shaped model saved once and loaded by each) and the same
batches of 2 unpadded sequences. The figures are CPU seconds per forward (process time, so the load of a shared
machine counts less), best of the rounds.
"""

import argparse
import tempfile
import time
import warnings

import torch

V3_BASE = dict(
    vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=512, relative_attention=True, pos_att_type="p2c|c2p", share_att_key=True,
    position_buckets=256, norm_rel_ebd="layer_norm", position_biased_input=False, layer_norm_eps=1e-7,
)


def cpu_seconds(model, ids, rounds: int) -> float:
    best = float("inf")
    with torch.inference_mode():
        model(input_ids=ids)  # warm-up
        for _ in range(rounds):
            start = time.process_time()
            model(input_ids=ids)
            best = min(best, time.process_time() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512])
    args = parser.parse_args()
    import transformers

    import openformers

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        config = transformers.DebertaV2Config(**{**V3_BASE, "num_hidden_layers": args.layers})
        transformers.DebertaV2Model(config).save_pretrained(folder)
        theirs = transformers.DebertaV2Model.from_pretrained(folder).eval()
        ours = openformers.DebertaV2Model.from_pretrained(folder)
    print(f"{args.layers} layers of DeBERTa-v3-base, batch 2, CPU seconds per forward (best of {args.rounds})")
    for T in args.lengths:
        ids = torch.randint(5, 128_000, (2, T), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            difference = (ours(ids).last_hidden_state - theirs(input_ids=ids).last_hidden_state).abs().max()
        mine, reference = cpu_seconds(ours, ids, args.rounds), cpu_seconds(theirs, ids, args.rounds)
        print(f"{T:4d} tokens: openformers {mine:.3f} s, transformers {reference:.3f} s "
              f"({reference / mine:.2f}x); largest difference {difference:.1e}")


if __name__ == "__main__":
    main()
