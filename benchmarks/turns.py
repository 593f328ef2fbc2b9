"""Two builds of openformers against each other, batch-1 decode of SmolLM2, on a host whose bandwidth switches.

This VM's memory reads ~35 GB/s at two threads in some seconds and ~65 in others (RESULTS.md, "What bounds the
figures": in the fast mode its two vCPUs sit far apart), and one process a build, started one after the other,
rarely meets the fast mode in both. Here the two builds (two source trees, each put first on its worker's
PYTHONPATH: a throwaway `git worktree` with a change, against the repository's own `src`) load the model once each
in two processes that then take turns, one greedy decode each (streamed: one step a call, no runs of steps), the
bandwidth read just before and after every decode (decode.py's BandwidthProbe). A round of A and the round of B
after it, seconds apart, form a pair; the pairs whose four readings agree on the host's mode (all over --fast, or
all under --slow GB/s) are compared: per mode, each build's median fraction of the probe (tokens/s x bytes a token)
and the median of B's speed over A's. Each build keeps its own compiled library (kernels/library.py hashes the
source into the build's name), so the first run of a changed tree compiles it (~35 s) before the rounds begin.
Run from the repository root:

    .venv/bin/python benchmarks/turns.py --a src --b /tmp/changed/src [--rounds 150] [--dtype bfloat16]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent


def worker(args) -> None:
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    from decode import BandwidthProbe, TokenClock, default_gguf, weight_bytes_per_token

    from openformers import AutoModelForCausalLM, kernels

    gguf = default_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, args.dtype))
    kernels.place_weights(model)
    probe = BandwidthProbe()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    options = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    gigabytes = weight_bytes_per_token(model) / 1e9
    turn = Path(args.turn)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=8, **options)  # warm-up (and the library's first load)
        Path(f"{args.turn}.{args.me}.ready").touch()
        for _ in range(args.rounds):
            while turn.read_text() != args.me:
                time.sleep(0.002)
            clock = TokenClock()
            before = probe.read(2)
            model.generate(ids, max_new_tokens=args.new_tokens, streamer=clock, **options)
            after = probe.read(2)
            gaps = sorted(b - a for a, b in zip(clock.times, clock.times[1:]))
            speed = 1 / gaps[len(gaps) // 2]  # tokens/s of the median token
            print(json.dumps({"speed": speed, "before": before, "after": after, "gigabytes": gigabytes}), flush=True)
            Path(f"{args.turn}.tmp").write_text(args.other)
            os.replace(f"{args.turn}.tmp", turn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", help="source folder of build A (holding the openformers package)")
    parser.add_argument("--b", help="source folder of build B")
    parser.add_argument("--rounds", type=int, default=100, help="decodes of each build")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--fast", type=float, default=48.0, help="GB/s over which all four readings mean fast")
    parser.add_argument("--slow", type=float, default=40.0, help="GB/s under which all four mean slow")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--me", help=argparse.SUPPRESS)
    parser.add_argument("--other", help=argparse.SUPPRESS)
    parser.add_argument("--turn", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    if not args.a or not args.b:
        parser.error("--a and --b are both required: the source folders of the two builds")
    for source in (args.a, args.b):
        if not (Path(source) / "openformers" / "__init__.py").is_file():
            sys.exit(f"--a/--b: {source} holds no openformers package (expected {source}/openformers/__init__.py)")
    with tempfile.TemporaryDirectory() as folder:
        turn = Path(folder) / "turn"
        turn.write_text("-")
        workers = []
        for me, other, source in (("A", "B", args.a), ("B", "A", args.b)):
            command = [sys.executable, __file__, "--worker", "--me", me, "--other", other, "--turn", str(turn),
                       "--rounds", str(args.rounds), "--dtype", args.dtype, "--new-tokens", str(args.new_tokens)]
            env = dict(os.environ, PYTHONPATH=str(Path(source).resolve()), HF_HUB_OFFLINE="1")
            workers.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env))
        while not all(Path(f"{turn}.{me}.ready").exists() for me in "AB"):
            if any(w.poll() not in (None, 0) for w in workers):
                sys.exit("a worker failed before its first round (its error is above)")
            time.sleep(0.1)
        turn.write_text("A")
        rounds = [[json.loads(line) for line in w.stdout if line.startswith("{")] for w in workers]
        if any(w.wait() != 0 for w in workers):
            sys.exit("a worker failed (its error is above)")
    report(*rounds, args)


def report(rounds_a: list, rounds_b: list, args) -> None:
    def fraction(round_: dict) -> float:
        return round_["speed"] * round_["gigabytes"] / ((round_["before"] + round_["after"]) / 2)

    def median(values: list) -> float:
        return sorted(values)[len(values) // 2]

    print(f"A: {args.a}\nB: {args.b}\n{args.dtype}, {args.new_tokens} tokens a decode, {len(rounds_a)} pairs")
    for mode, test in (("fast", lambda r: min(r) > args.fast), ("slow", lambda r: max(r) < args.slow)):
        pairs = [(a, b) for a, b in zip(rounds_a, rounds_b)
                 if test([a["before"], a["after"], b["before"], b["after"]])]
        if not pairs:
            print(f"{mode}: no pair")
            continue
        ratios = sorted(b["speed"] / a["speed"] for a, b in pairs)
        print(f"{mode}: {len(pairs)} pairs, of the probe A {median([fraction(a) for a, _ in pairs]):.3f}, "
              f"B {median([fraction(b) for _, b in pairs]):.3f}; B / A {median(ratios):.3f} "
              f"({ratios[0]:.3f}-{ratios[-1]:.3f})")


if __name__ == "__main__":
    main()
