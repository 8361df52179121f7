#!/usr/bin/env bash
# Create .venv with everything starray needs (idempotent; ~2 min on a fresh machine).
# torch is pinned to the CPU build that lies on this machine's disk; pyproject allows >=2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.starray-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev]"
  touch "$stamp"
  echo "[setup] installed starray and its dependencies into .venv" >&2
fi
