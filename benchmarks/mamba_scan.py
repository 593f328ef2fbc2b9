"""Mamba 1's selective scan in a model: a 512-token prompt's forward (prefill: no gradients, the last position's
logits, as generation's) and a training step (forward and backward over the same tokens) of a Mamba-130m-shaped
model (hidden 768, 1536 channels of 16 states, vocabulary 50280, random weights, a few layers) on CPU in float32,
with the compiled scan (kernels/scan.cpp), with the sequential one (models/mamba.py sequential_scan, the path
without the library) and the reference's MambaForCausalLM (its CPU path: the same recurrence position after
position), all with the same weights in one run. It first times one layer's scan alone, with and without its
backward pass. The training step runs over 128 tokens by default: the reference's (and before the unbind in
sequential_scan, ours) takes a whole (B, D, N, T) gradient for each position's slice in its backward pass, which
makes it quadratic in the length, minutes a layer at 512 tokens.

    PYTHONPATH=src python benchmarks/mamba_scan.py [--tokens 512] [--train-tokens 128] [--layers 4] [--threads 2]
        [--repeats 3]
"""

import argparse
import os

import torch
from mamba2_scan import best_of  # benchmarks/ is the script's folder, first on sys.path


def time_the_scan_alone(tokens: int, train_tokens: int, repeats: int):
    """One layer's scan at Mamba-130m's sizes (1536 channels of 16 states), float32: over `tokens` without gradients,
    and over `train_tokens` a forward with a backward to every input."""
    from openformers.models import mamba

    g = torch.Generator().manual_seed(0)
    D, N = 1536, 16
    x = torch.randn(1, tokens, D, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(1, tokens, D, generator=g) - 2)
    A = -torch.arange(1, N + 1, dtype=torch.float32).expand(D, N).contiguous()
    b, c, state = torch.randn(1, tokens, N, generator=g), torch.randn(1, tokens, N, generator=g), torch.zeros(1, D, N)

    def backward(scan):
        leaves = [t.clone().requires_grad_() for t in (x[:, :train_tokens], dt[:, :train_tokens], A,
                                                       b[:, :train_tokens], c[:, :train_tokens])]
        y, _ = scan(*leaves, state)
        y.sum().backward()

    times = {}
    for name, scan in (("compiled", mamba.selective_scan), ("sequential", mamba.sequential_scan)):
        with torch.inference_mode():
            forward = best_of(lambda: scan(x, dt, A, b, c, state), repeats)
        times[name] = forward, best_of(lambda: backward(scan), repeats)
    (forward, both), (sequential_forward, sequential_both) = times["compiled"], times["sequential"]
    print(f"  one layer's scan alone: compiled {forward * 1e3:.1f} ms, sequential {sequential_forward * 1e3:.1f} ms "
          f"({sequential_forward / forward:.1f}x); {train_tokens} with a backward {both * 1e3:.1f} ms against "
          f"{sequential_both * 1e3:.1f} ms ({sequential_both / both:.1f}x)", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--train-tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    from openformers import MambaConfig, MambaForCausalLM, kernels
    from openformers.models import mamba

    assert kernels.build(), "the compiled library did not build"
    sizes = dict(vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=args.layers, expand=2,
                 conv_kernel=4, time_step_rank=48)
    torch.manual_seed(0)
    ours = MambaForCausalLM(MambaConfig(**sizes))
    reference = transformers.MambaForCausalLM(transformers.MambaConfig(**sizes))
    reference.load_state_dict(ours.state_dict())
    ids = torch.randint(3, sizes["vocab_size"], (1, args.tokens), generator=torch.Generator().manual_seed(0))
    train_ids = ids[:, : args.train_tokens]
    compiled_applies = mamba._compiled_scan_applies

    def prefill(model):
        model.eval()
        with torch.inference_mode():  # as generation's prefill: the last position's logits
            return model(ids, logits_to_keep=1).logits

    def training_step(model):
        model.train()
        model.zero_grad(set_to_none=True)
        loss = model(train_ids, labels=train_ids).loss
        loss.backward()
        return loss.detach()

    print(f"Mamba-130m shape, {args.layers} layers, prefill {args.tokens} tokens, training {args.train_tokens}, "
          f"float32, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} before", flush=True)
    time_the_scan_alone(args.tokens, args.train_tokens, args.repeats)
    results = {}
    for name, model, compiled in [("compiled", ours, True), ("sequential", ours, False),
                                  ("reference", reference, None)]:
        mamba._compiled_scan_applies = compiled_applies if compiled else (lambda x, c: False)
        results[name] = [best_of(lambda: prefill(model), args.repeats),
                         best_of(lambda: training_step(model), args.repeats)]
        results[name].append((prefill(model), training_step(model)))
        print(f"  {name:10s} prefill {results[name][0] * 1e3:8.1f} ms   training step {results[name][1] * 1e3:8.1f} ms",
              flush=True)
    mamba._compiled_scan_applies = compiled_applies

    (logits, loss), (their_logits, their_loss) = results["compiled"][2], results["reference"][2]
    for name in ("sequential", "reference"):
        print(f"  compiled against {name}: prefill {results[name][0] / results['compiled'][0]:.1f}x, "
              f"training step {results[name][1] / results['compiled'][1]:.1f}x faster")
    print(f"  load average {os.getloadavg()[0]:.2f} after")
    print(f"  largest logit difference from the reference {(logits - their_logits).abs().max().item():.1e}, "
          f"loss {loss.item():.6f} against {their_loss.item():.6f}")


if __name__ == "__main__":
    main()
