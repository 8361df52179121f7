# starray: `make run` trains the embedded default; `make test` runs the test suite.
PY := .venv/bin/python
export WANDB_MODE ?= offline

.PHONY: setup run test test-fast lint bench slurm clean

setup:
	bash scripts/setup-venv.sh

run: setup
	.venv/bin/starray train --name default-$$(date +%Y%m%d-%H%M%S)

test: setup
	$(PY) -m pytest -q -ra --durations=15 --timeout=900 $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -ra -m "not ray and not slurm" $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check starray tests benchmarks

bench: setup
	$(PY) benchmarks/train_throughput.py

slurm:
	SLURM_CI_NODES=2 bash scripts/local-slurm.sh start

clean:
	rm -rf runs wandb .pytest_cache
