"""Training on a real local Ray: DDP on 2 workers, data pool, checkpoints, resume, failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch

from starray.cli import main
from starray.config import load_config
from starray.train.checkpoint import load_checkpoint, model_from_state
from starray.train.driver import read_history, run_training

pytestmark = pytest.mark.ray

SMALL = ["data.stars_per_epoch=256", "data.val_stars=128", "data.batch_size=32",
         "data.generators_per_node=1", "data.generator_cpus=0.5", "train.warmup_epochs=0.5",
         "model.dropout=0.1"]  # dropout draws from each rank's torch RNG: resume must restore it


def test_pool_gives_each_rank_distinct_stars_and_survives_a_killed_actor(ray_local):
    import ray

    from starray.train.data_pool import BatchStream, DataPool, DataSpec

    cfg = load_config(None, SMALL)
    pool = DataPool.create(DataSpec.from_config(cfg), per_node=2, cpus=0.25)
    r0 = list(BatchStream(pool, 0, 2, prefetch=2).epoch(0))
    r1 = list(BatchStream(pool, 1, 2, prefetch=2).epoch(0))
    assert len(r0) == len(r1) == 4
    h0 = {row.tobytes() for b in r0 for row in b["lc"]}
    h1 = {row.tobytes() for b in r1 for row in b["lc"]}
    assert len(h0) == 128 and len(h1) == 128 and not h0 & h1
    again = list(BatchStream(pool, 0, 2, prefetch=2).epoch(1))
    assert not {row.tobytes() for b in again for row in b["lc"]} & h0  # stream: fresh stars
    ray.kill(pool.actors[0], no_restart=False)  # restarted by Ray; the stream continues
    after = list(BatchStream(pool, 0, 2, prefetch=2).epoch(0))
    np.testing.assert_array_equal(after[0]["lc"], r0[0]["lc"])  # same seed, same stars
    val = list(BatchStream(pool, 0, 1, prefetch=2).validation())
    assert sum(len(b["label"]) for b in val) == 128
    pool.shutdown()


def test_fixed_mode_reshuffles_one_dataset(ray_local):
    from starray.train.data_pool import BatchStream, DataPool, DataSpec

    cfg = load_config(None, SMALL + ["data.mode=fixed", "data.n_per_class=8"])
    pool = DataPool.create(DataSpec.from_config(cfg), per_node=2, cpus=0.25)
    e0 = list(BatchStream(pool, 0, 1, prefetch=2).epoch(0))
    e1 = list(BatchStream(pool, 0, 1, prefetch=2).epoch(1))
    rows = lambda bs: {r.tobytes() for b in bs for r in b["lc"]}  # noqa: E731
    assert rows(e0) == rows(e1)  # the same stars ...
    assert not np.array_equal(e0[0]["lc"], e1[0]["lc"])  # ... in a new order
    pool.shutdown()


def test_two_workers_train_checkpoint_resume_and_wandb(tmp_path, capsys):
    import ray

    from starray.tracking import offline_runs

    cfg = load_config(None, SMALL + ["train.epochs=3", f"output_dir={tmp_path}", "name=r1"])
    summary = run_training(cfg)
    ray.shutdown()
    run = tmp_path / "r1"
    hist = read_history(run)
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # learning happens
    assert summary["best_val_acc"] is not None
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and len(state["class_names"]) == 14
    model = model_from_state(load_checkpoint(run / "checkpoints" / "best.pt"))
    assert sum(p.numel() for p in model.parameters()) > 0
    steps = 256 // 32 // 2
    assert state["optimizer"]["state"][0]["step"] == pytest.approx(3 * steps)
    assert (run / "plots" / "confusion.png").stat().st_size > 10_000
    # one best rule (train.best_metric, default val_acc) for best.pt and the summary
    best = max(hist, key=lambda h: h["val_acc"])
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == best["epoch"]
    assert summary["best_epoch"] == best["epoch"] and summary["best_metric"] == "val_acc"
    # each rank has its own RNG stream (dropout), saved per rank
    assert len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])

    # an unsafe change is refused, naming the key, before Ray starts
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "model.d_model=32"]) == 2
    assert "model.d_model: cannot change on --resume" in capsys.readouterr().err

    # resume: continues at epoch 3 with the optimizer state, same W&B id; a new lr and
    # more epochs are applied (said so), the schedule continues without a jump
    assert main(["train", "--resume", str(run), "--set", "train.epochs=5",
                 "--set", "train.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    assert "resume: train.epochs 3 -> 5" in out and "resume: train.lr 0.002 -> 0.001" in out
    ray.shutdown()
    hist = read_history(run)
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3, 4]
    assert hist[3]["lr"] == pytest.approx(0.5 * hist[2]["lr"])  # new base, multiplier kept
    assert hist[4]["lr"] == pytest.approx(0.05 * 1e-3)  # the re-planned cosine's floor
    state2 = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state2["optimizer"]["state"][0]["step"] == pytest.approx(5 * steps)
    assert state2["wandb_id"] == state["wandb_id"]
    runs = offline_runs(run)
    assert {r["run_id"] for r in runs} == {state["wandb_id"]}
    logged = [row for r in runs for row in r["history"] if "val_acc" in row]
    assert sorted(row["epoch"] for row in logged) == [0, 1, 2, 3, 4]
    assert logged[-1]["val_acc"] == pytest.approx(hist[-1]["val_acc"])
    assert runs[0]["config"]["model"]["preset"] == "tiny"


def _train_workers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "RayTrainWorker" in cmd:
            out.append(p)
    return out


def test_killed_worker_is_replaced_and_run_finishes_from_checkpoint(tmp_path):
    args = [sys.executable, "-m", "starray.cli", "train", "--output-dir", str(tmp_path),
            "--name", "kill", "--set", "train.epochs=4"]
    for item in SMALL:
        args += ["--set", item]
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ckpt = tmp_path / "kill" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert ckpt.exists(), (tmp_path / "log.txt").read_text()[-3000:]
    epoch_at_kill = load_checkpoint(ckpt)["epoch"]
    workers = _train_workers()
    assert workers, "no Ray Train worker process found"
    os.kill(workers[-1].pid, signal.SIGKILL)
    assert proc.wait(timeout=400) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    text = (tmp_path / "log.txt").read_text()
    assert "resuming at epoch" in text
    hist = read_history(tmp_path / "kill")
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    assert load_checkpoint(ckpt)["epoch"] == 3 and epoch_at_kill < 3
    assert json.loads((tmp_path / "kill" / "summary.json").read_text())["epochs_run"] == 4
