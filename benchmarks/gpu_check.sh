#!/usr/bin/env bash
# The prepared device check (issue 14): see benchmarks/gpu_check.py for the stages.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine: compact, optimal, large
#   bash benchmarks/gpu_check.sh --cpu --quick   # here: every stage on CPU, < 1 minute
#
# The GPU machine has torch, numpy, scipy, sklearn, pyyaml but not ray, nifty-ls (finufft),
# wandb or submitit, and cannot reach a registry. Bring them as wheels in .whl/ (ignored by
# git: `echo /.whl/ >> .git/info/exclude`), fetched here for its Python 3.12 / x86-64:
#   bash benchmarks/gpu_check.sh --fetch-wheels
# and name `.whl` in the device call's `carry`. Ray's wheel (~70 MB) exceeds the 64 MiB a
# call may carry, so stage (c) reports "skipped" there unless Ray is installed already.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 WANDB_MODE=disabled

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    py=${PYTHON:-/work/main/.venv/bin/python}
    mkdir -p .whl
    for pkg in nifty-ls finufft; do
        ver=$("$py" -c "import importlib.metadata as m; print(m.version('$pkg'))")
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl "$pkg==$ver"
    done
    ls -la .whl
    exit 0
fi

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
site=""
if compgen -G ".whl/*.whl" > /dev/null; then
    echo "[gpu_check] installing carried wheels: $(ls .whl | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    site=/tmp/site:
fi
export PYTHONPATH="${site}$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -u benchmarks/gpu_check.py "$@"
