"""Faults on the REAL local Slurm (scripts/local-slurm.sh): the time-limit signal and scancel.

* submitit path, 2 nodes: the job's time limit is lowered mid-run, so Slurm sends the
  pre-timeout USR2; the driver stops within ``signal_delay_s``, the job requeues, the next
  attempt resumes from ``last.pt`` and COMPLETES; every epoch is in metrics.jsonl once and
  at most the partial epoch was redone.
* sbatch path (the rendered template, ``srun python -m starray.slurm.entry``), 1 node: USR2
  mid-epoch as Slurm delivers ``--signal=USR2@N`` (to every task, not the batch shell) ->
  requeue -> resume; then a plain ``scancel`` leaves no process of the job (psutil: by its
  Ray temp dir, its node tag and its SLURM_JOB_ID; other Ray clusters on this machine are
  not looked at).

Run under the shared Ray lock: ``flock /tmp/starray-ray.lock .venv/bin/python -m pytest
tests/test_faults_slurm.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_slurm_submit import (
    TINY,
    _epochs,
    _log,
    _sinfo_answers,
    _started,
    _submit,
    _wait_for,
    out_dir,  # noqa: F401 - fixture
)

from starray.cli import main
from starray.slurm.jobs import FINAL_STATES, find_job, job_state, job_states, wait_state
from starray.slurm.ray_cluster import NODE_TAG

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not _sinfo_answers(),
                       reason="local Slurm not answering (`sinfo -p debug` needs 2 nodes; "
                              "start it: SLURM_CI_NODES=2 bash scripts/local-slurm.sh start)"),
]

ROOT = Path(__file__).resolve().parents[1]


def _job_processes(job_id: str) -> list[str]:
    """Processes of job ``job_id`` still alive on this host: its Ray temp dirs in the
    command line, its node tag or its SLURM_JOB_ID in the environment."""
    marks = (f"/tmp/ray-{job_id}-n",)
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            env = p.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if (any(m in cmd for m in marks) or env.get(NODE_TAG, "").startswith(marks[0])
                or env.get("SLURM_JOB_ID") == job_id):
            found.append(f"{p.pid} {cmd[:120]}")
    return found


def _check_epochs_once(seen: list[int], before: list[int], log: str) -> int:
    """Every epoch once, in order, and the next attempt began with the epoch that was
    interrupted: nothing lost but that partial epoch. Returns that epoch."""
    assert seen == list(range(len(seen))), f"an epoch is missing or repeated: {seen}"
    assert seen[:len(before)] == before and len(seen) > len(before), (before, seen)
    resumed = re.findall(r"resuming at epoch (\d+)", log)
    if resumed:  # the worker's own line (wording owned by training: 1-based epochs)
        assert int(resumed[-1]) == len(before) + 1, (resumed, before)
    return len(before)


def _stop_seconds(log: str) -> float:
    m = re.search(r"stopped for requeue in ([0-9.]+) s", log)
    assert m, log[-3000:]
    return float(m.group(1))


def test_time_limit_signal_mid_epoch_requeues_and_resumes(out_dir, capsys):  # noqa: F811
    """2 nodes, 1 DDP worker per node (submitit); a lowered time limit forces the signal."""
    epochs = 30  # 1-4 s each: the signal (up to ~40 s after the limit change) lands mid-run
    delay = 90
    t_submit = time.time()
    job_id = _submit(capsys, [
        "submit", "train", "--output-dir", str(out_dir), "--name", "r2", *TINY,
        "--set", f"train.epochs={epochs}", "--set", "scaling.num_workers=2",
        "--set", "scaling.placement=STRICT_SPREAD",
        "--cluster-set", "nodes=2", "--cluster-set", "time_min=5",
        "--cluster-set", f"signal_delay_s={delay}"])
    entry = find_job(job_id, out_dir)
    run_dir = Path(entry["run_dir"])

    # once epochs are coming in, lower the limit so that the USR2 lands mid-run (Slurm
    # checks limits every ~30 s, so 2-3 more epochs are in by then)
    _wait_for(lambda: len(_epochs(run_dir)) >= 1, 150, "the first epoch")
    limit = math.ceil((time.time() - _started(job_id)) / 60) + 1  # end within signal_delay_s
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={limit}"], check=True)
    t_update = time.time()
    _wait_for(lambda: "requeueing" in _log(entry), 90, "the pre-timeout signal")
    t_signal = time.time()
    _wait_for(lambda: "stopped for requeue" in _log(entry), delay, "the stop")
    stop_s = _stop_seconds(_log(entry))
    assert stop_s < delay, f"stopping took {stop_s} s, more than signal_delay_s={delay}"
    # the requeued attempt gets the full limit again
    _wait_for(lambda: job_state(job_id) in ("PENDING", "REQUEUED"), 60, "requeue")
    before = _epochs(run_dir)  # attempt 1 is gone; attempt 2 needs > 30 s to train
    assert 0 < len(before) < epochs, f"the signal did not land mid-run: {before}"
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=5"], check=True)
    _wait_for(lambda: "resuming train from" in _log(entry), 180, "the resumed attempt")
    t_resume = time.time()
    state = wait_state(job_id, FINAL_STATES, timeout_s=180)
    t_end = time.time()
    log = _log(entry)
    assert state == "COMPLETED", log[-3000:]
    with capsys.disabled():
        print(f"\njob {job_id}: signal {t_signal - t_update:.0f} s after the limit change, "
              f"driver + Ray stopped in {stop_s:.1f} s, resumed {t_resume - t_signal:.0f} s "
              f"after the signal, total {t_end - t_submit:.0f} s")

    # both attempts ran a 2-node cluster and trained on both nodes
    assert log.count("Ray cluster up: 2 nodes") == 2
    assert "Ray Train workers ran on 2 node(s)" in log
    seen = _epochs(run_dir)
    first = _check_epochs_once(seen, before, log)
    assert seen[-1] == epochs - 1
    with capsys.disabled():
        print(f"attempt 1 trained epochs 0-{before[-1]}, attempt 2 epochs {first}-{epochs - 1}")

    from starray.train.checkpoint import load_checkpoint, model_from_state

    state_last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state_last["epoch"] == epochs - 1
    model_from_state(state_last)
    wandb_runs = list((run_dir / "wandb").glob("*run-*"))
    assert len({p.name.rsplit("-", 1)[-1] for p in wandb_runs}) == 1, wandb_runs  # same W&B id

    assert not _job_processes(job_id)
    capsys.readouterr()
    assert main(["jobs", "--output-dir", str(out_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["job_id"] == job_id)
    assert row["state"] == "COMPLETED" and row["restarts"] == "1"  # one requeue, 2 attempts
    assert main(["logs", job_id, "--output-dir", str(out_dir)]) == 0
    assert "resuming train from" in capsys.readouterr().out
    assert main(["logs", job_id, "--output-dir", str(out_dir), "--follow"]) == 0  # ended: returns
    assert "driver finished" in capsys.readouterr().out


def test_sbatch_signal_requeue_resume_then_scancel(out_dir, tmp_path, capsys):  # noqa: F811
    """The rendered sbatch script: USR2 mid-epoch -> requeue -> resume; scancel -> no Ray."""
    script = tmp_path / "job.sbatch"
    assert main(["slurm", "render", "local", "--cluster-set", "python=" + sys.executable,
                 "--cluster-set", f"setup=[export PYTHONPATH={ROOT}]", "-o", str(script), "--",
                 "train", "--output-dir", str(out_dir), "--name", "sb", *TINY,
                 "--set", "scaling.num_workers=1", "--set", "train.epochs=200"]) == 0
    run_dir = out_dir / "sb"
    job_id = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True,
                            text=True, check=True).stdout.strip().split(";")[0]
    log_path = run_dir / "slurm" / f"sbatch-{job_id}.out"

    def log() -> str:
        return log_path.read_text(errors="replace") if log_path.exists() else ""

    try:
        _wait_for(lambda: len(_epochs(run_dir)) >= 2, 150, "two epochs")
        time.sleep(0.4)  # into the next epoch (each takes > 1 s here)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        t_signal = time.time()
        _wait_for(lambda: f"requeued job {job_id}" in log(), 60, "the requeue")
        before = _epochs(run_dir)
        stop_s = _stop_seconds(log())
        assert stop_s < 60, f"stopping took {stop_s} s, more than signal_delay_s=60"
        _wait_for(lambda: len(_epochs(run_dir)) >= len(before) + 2
                  and "resuming train from" in log(), 150, "the resumed attempt's epochs")
        t_resume = time.time()
        seen = _epochs(run_dir)
        first = _check_epochs_once(seen, before, log())
        assert job_states([job_id])[job_id]["restarts"] == "1"
        assert log().count("attempt 1: Ray head") == 1 and "attempt 0: Ray head" in log()
        assert _job_processes(job_id)  # the check can see the job's processes

        subprocess.run(["scancel", job_id], check=True)
        t_cancel = time.time()
        state = wait_state(job_id, FINAL_STATES, timeout_s=60, poll_s=0.3)
        t_final = time.time()
        assert state == "CANCELLED"
        _wait_for(lambda: not _job_processes(job_id), 10, "the job's processes to end")
        t_clean = time.time()
    finally:
        if job_state(job_id) not in FINAL_STATES:
            subprocess.run(["scancel", job_id], check=False)
    with capsys.disabled():
        print(f"\nsbatch job {job_id}: stopped + Ray down in {stop_s:.1f} s, resumed "
              f"{t_resume - t_signal:.0f} s after USR2 (attempt 1: epochs 0-{before[-1]}, "
              f"attempt 2 from {first}); scancel -> {state} in {t_final - t_cancel:.1f} s, "
              f"no process left after {t_clean - t_cancel:.1f} s")
