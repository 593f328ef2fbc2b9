"""Batch-1 matrix-vector products on cold weights: what PyTorch offers against openformers' kernel (kernels/).

Decoding one token multiplies one vector by every weight matrix once, so what matters is how fast a kernel
streams weights it has not touched recently. Each case cycles through enough copies of a SmolLM2-sized
matrix (1536 x 576, the MLP's gate) to far exceed the caches, and reports GB/s of weights read; the memory
bandwidth (summing a 1 GB tensor) is measured in the same run. `--rows 8` multiplies 8 vectors at once (a
batch decoding one token per sequence), a case kernels.Linear sends to the kernel (up to KERNEL_ROWS rows). Run
from the repository root:

    .venv/bin/python benchmarks/matvec.py [--threads 2] [--rows 1] [--cpu-time] [--cases "openformers int"]

`--cpu-time` times one thread by its CPU time instead of the wall clock: on a machine shared with other work the
wall clock counts the time the thread waits for a core, its CPU time mostly not (memory contention still counts).
"""

import argparse
import time

import torch
import torch.nn.functional as F

from openformers import kernels
from openformers.kernels import Linear

ROWS, COLS = 1536, 576
WORKING_SET = 1_000_000_000  # bytes of float32 weights cycled through


def timed(function, copies: int, repeats: int = 3, clock=time.perf_counter) -> float:
    """Seconds per call, best of `repeats` passes over all copies."""
    for i in range(min(copies, 8)):
        function(i)
    best = float("inf")
    for _ in range(repeats):
        started = clock()
        for i in range(copies):
            function(i)
        best = min(best, (clock() - started) / copies)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, default=1, help="vectors multiplied at once")
    parser.add_argument("--cpu-time", action="store_true", help="time by CPU time (one thread only)")
    parser.add_argument("--cases", nargs="+", metavar="TEXT",
                        help="only the cases whose name contains one of these (e.g. 'openformers int')")
    args = parser.parse_args()
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time measures one thread: add --threads 1")
    clock = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    assert kernels.build(), "the openformers kernels did not build; see the warning above"

    copies = WORKING_SET // (ROWS * COLS * 4)
    torch.manual_seed(0)
    linears = [torch.nn.Linear(COLS, ROWS, bias=False) for _ in range(copies)]
    x = torch.randn(args.rows, COLS)
    vectors = x[0] if args.rows == 1 else x  # one row: the decoding step's own (1-D) case
    fp32 = [linear.weight.detach() for linear in linears]
    bf16 = [w.bfloat16() for w in fp32]
    transposed = [w.t().contiguous() for w in fp32]
    int8 = [Linear.from_linear(linear, "int8") for linear in linears]
    int4 = [Linear.from_linear(linear, "int4") for linear in linears]
    int8_torch = [_int8_per_row(w) for w in fp32]  # PyTorch's int8 product takes one scale per row
    # PyTorch's own int4 layout: (rows, cols / 2) uint8 packed by its converter, with (groups, rows, 2) scales and zeros.
    int4_torch = [torch._convert_weight_to_int4pack_for_cpu(_int4_steps(q), 32) for q in int4]
    int4_torch_scales = [_scales_and_zeros(q) for q in int4]
    compiled = torch.compile(lambda w, v: F.linear(v, w))

    cases = {
        "torch F.linear float32": (lambda i: F.linear(x, fp32[i]), fp32),
        "torch mv, transposed float32": (lambda i: x @ transposed[i], fp32),
        "torch F.linear bfloat16": (lambda i: F.linear(x.bfloat16(), bf16[i]), bf16),
        "torch.compile F.linear float32": (lambda i: compiled(fp32[i], x), fp32),
        "torch _weight_int8pack_mm": (lambda i: torch._weight_int8pack_mm(x, *int8_torch[i]), None),
        "torch _weight_int4pack_mm_for_cpu": (
            lambda i: torch._weight_int4pack_mm_for_cpu(x.bfloat16(), int4_torch[i], 32, int4_torch_scales[i]),
            None,
        ),
        "openformers float32": (lambda i: torch.ops.openformers.matvec(vectors, fp32[i], None), fp32),
        "openformers bfloat16": (lambda i: torch.ops.openformers.matvec(vectors, bf16[i], None), bf16),
        "openformers int8": (lambda i: torch.ops.openformers.matvec(vectors, int8[i].weight, int8[i].scale), None),
        "openformers int4": (lambda i: torch.ops.openformers.matvec(vectors, int4[i].weight, int4[i].scale), None),
    }
    data = torch.ones(250_000_000)
    bandwidth = data.numel() * 4 / timed(lambda i: data.sum(), 1, 5, clock) / 1e9
    print(f"{args.threads} threads, {args.rows} row(s) x weights {ROWS} x {COLS}, {copies} copies cycled; "
          f"memory bandwidth {bandwidth:.1f} GB/s")
    for name, (function, weights) in cases.items():
        if args.cases and not any(text in name for text in args.cases):
            continue
        seconds = timed(function, copies, clock=clock)
        nbytes = _bytes(name, int8[0], int4[0]) if weights is None else weights[0].numel() * weights[0].element_size()
        print(f"{name:>36}: {seconds * 1e6:8.1f} us  {nbytes / seconds / 1e9:6.1f} GB/s of weights")


def _int8_per_row(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
    return (weight / scale[:, None]).round().to(torch.int8), scale


def _int4_steps(q: Linear) -> torch.Tensor:
    packed = q.weight.reshape(q.out_features, -1, 16)
    steps = torch.cat([packed & 15, packed >> 4], dim=-1).reshape(q.out_features, q.in_features)
    return steps.to(torch.int32)


def _scales_and_zeros(q: Linear) -> torch.Tensor:
    # PyTorch dequantizes (step - 8) * scale + zero; ours is step * scale + minimum, so zero = minimum + 8 * scale.
    scale, minimum = q.scale.float().unbind(-1)
    return torch.stack([scale, minimum + 8 * scale], -1).transpose(0, 1).contiguous().bfloat16()


def _bytes(name: str, int8: Linear, int4: Linear) -> int:
    if "int8pack" in name:  # one float32 scale per row
        return int8.weight.numel() + int8.weight.shape[0] * 4
    if "int8" in name:
        return int8.weight.numel() + int8.scale.numel() * 4
    return int4.weight.numel() + int4.scale.numel() * int4.scale.element_size()


if __name__ == "__main__":
    main()
