"""T5 generation: openformers against transformers in the same run, on the same random weights.

    .venv/bin/python benchmarks/t5_generate.py --device cuda                   # Flan-T5-small's shape
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/t5_generate.py --layers 2 --batch 2 --new-tokens 8   # a quick check

A Flan-T5-small-shaped model (gated GELU, its own LM head, 8 layers of d_model 512, 6 heads) with random weights is
saved once and loaded by each library; each encodes a batch of prompts of `--length` tokens and decodes
`--new-tokens` tokens greedily and with 4 beams (no EOS, so every run takes all steps), in float32 and bfloat16. The
figure is milliseconds per decoding step (the whole generate call over the steps, encoder included), best of the
rounds. Both libraries project the encoder's keys and values once; openformers' beam search then moves only the
self-attention cache between beams, where the reference also copies the cross-attention cache every step.
"""

import argparse
import tempfile
import time
import warnings

import torch


def ms_per_step(model, ids, new_tokens: int, beams: int, rounds: int, device: str) -> tuple[float, list[int]]:
    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    best = float("inf")
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, num_beams=beams, eos_token_id=None)  # warm-up
        for _ in range(rounds):
            synchronize()
            start = time.perf_counter()
            out = model.generate(ids, max_new_tokens=new_tokens, num_beams=beams, eos_token_id=None)
            synchronize()
            best = min(best, time.perf_counter() - start)
    return best * 1000 / new_tokens, out[0, :6].tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import openformers
    import transformers

    warnings.simplefilter("ignore")
    shape = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=args.layers, num_heads=6,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)
    torch.manual_seed(0)
    folder = tempfile.mkdtemp()
    openformers.T5ForConditionalGeneration(openformers.T5Config(**shape)).save_pretrained(folder)
    models = {"openformers": openformers.T5ForConditionalGeneration.from_pretrained(folder),
              "transformers": transformers.T5ForConditionalGeneration.from_pretrained(folder).eval()}
    ids = torch.randint(2, 32000, (args.batch, args.length), generator=torch.Generator().manual_seed(1))
    ids = ids.to(args.device)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {args.device}")
    for dtype in (torch.float32, torch.bfloat16):
        for beams in (1, 4):
            figures = {}
            for name, model in models.items():
                figures[name] = ms_per_step(model.to(args.device, dtype), ids, args.new_tokens, beams, args.rounds,
                                            args.device)
            ours, theirs = figures["openformers"][0], figures["transformers"][0]
            same = figures["openformers"][1] == figures["transformers"][1]
            print(f"{str(dtype):15s} batch {args.batch}x{args.length} beams {beams}: openformers {ours:.2f} ms/step, "
                  f"transformers {theirs:.2f} ms/step ({theirs / ours:.2f}x); first tokens equal: {same}")


if __name__ == "__main__":
    main()
