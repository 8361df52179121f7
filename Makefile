# starray: `make run` trains the embedded default; `make test` runs the test suite.
# W&B: online when WANDB_API_KEY is set, offline files under the run folder otherwise
# (wandb.mode=auto); WANDB_MODE=offline|online|disabled in the environment overrides it.
PY := .venv/bin/python
RUN ?= default

.PHONY: setup run test test-fast lint bench slurm clean

setup:
	bash scripts/setup-venv.sh

# One stable run name: re-running `make run` resumes runs/$(RUN) from its last checkpoint
# (a finished run only prints its summary); `make run RUN=other` or `make clean` starts anew.
run: setup
	@if [ -f runs/$(RUN)/checkpoints/last.pt ]; then \
	  echo "[make run] runs/$(RUN) exists: resuming it (make run RUN=NAME starts another)"; \
	  .venv/bin/starray train --resume runs/$(RUN); \
	else .venv/bin/starray train --name $(RUN); fi

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
