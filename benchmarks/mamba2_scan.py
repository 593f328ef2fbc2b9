"""Mamba-2's scan over a prompt: the chunked form the model runs (models/mamba2.py chunked_scan) against the
sequential recurrence (scan_step position after position), at Mamba-2 130M's mixer sizes (hidden 768: 24 heads of 64,
one group, state 128), for one layer's scan of a 512-token prompt on CPU in float32.

    PYTHONPATH=src python benchmarks/mamba2_scan.py [--tokens 512] [--threads N]
"""

import argparse
import time

import torch

from openformers.models.mamba2 import chunked_scan, scan_step


def sequential_scan(x, dt, A, b, c, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = scan_step(x[:, t], dt[:, t], A, b[:, t], c[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


def best_of(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    B, T, H, P, N = 1, args.tokens, 24, 64, 128
    x = torch.randn(B, T, H, P, generator=g)
    dt = torch.rand(B, T, H, generator=g) * 0.1
    A = -torch.rand(H, generator=g) * 4
    b, c = torch.randn(B, T, H, N, generator=g), torch.randn(B, T, H, N, generator=g)
    state = torch.zeros(B, H, P, N)
    with torch.inference_mode():
        y_seq, s_seq = sequential_scan(x, dt, A, b, c, state)
        y_chunk, s_chunk = chunked_scan(x, dt, A, b, c, state, 256)
        error = max((y_seq - y_chunk).abs().max().item(), (s_seq - s_chunk).abs().max().item())
        sequential = best_of(lambda: sequential_scan(x, dt, A, b, c, state))
        chunked = best_of(lambda: chunked_scan(x, dt, A, b, c, state, 256))
    print(f"{T} tokens, {torch.get_num_threads()} threads: chunked {chunked * 1e3:.1f} ms, "
          f"sequential {sequential * 1e3:.1f} ms ({sequential / chunked:.1f}x); largest difference {error:.1e}")


if __name__ == "__main__":
    main()
