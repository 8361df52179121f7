"""`starray submit|jobs|logs|cancel` against the REAL local Slurm (scripts/local-slurm.sh).

One 1-node job here: private cluster (token file 0600, connecting without the token is
refused, dashboard on 127.0.0.1 only), then `starray cancel` ends it and its Ray processes.
The time-limit signal, requeue/resume and plain `scancel` are in tests/test_faults_slurm.py
(which uses the helpers below).

Run under the shared Ray lock: ``flock /tmp/starray-ray.lock .venv/bin/python -m pytest
tests/test_slurm_submit.py``. Set STARRAY_SLURM_TESTS=0 to skip.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starray.cli import main
from starray.slurm.jobs import FINAL_STATES, find_job, job_state
from starray.slurm.ray_cluster import find_ray_processes


def _sinfo_answers() -> bool:
    if os.environ.get("STARRAY_SLURM_TESTS") == "0" or shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%D"], capture_output=True,
                             text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout) >= 2


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not _sinfo_answers(),
                       reason="local Slurm not answering (`sinfo -p debug` needs 2 nodes; "
                              "start it: SLURM_CI_NODES=2 bash scripts/local-slurm.sh start)"),
]

# tiny run: 128 stars per epoch, 1 generator; a few seconds per epoch on these CPUs
TINY = ["--set", "data.stars_per_epoch=128", "--set", "data.val_stars=64",
        "--set", "data.generators=1", "--set", "data.generator_cpus=0.25",
        "--set", "scaling.cpus_per_worker=0.5", "--set", "wandb.mode=offline",
        "--set", "train.checkpoint_every=1", "--set", "train.patience=0"]


def _wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _submit(capsys, argv: list[str]) -> str:
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0, out
    line = next(x for x in out.splitlines() if x.startswith("submitted"))
    return line.split()[3]


def _log(entry: dict) -> str:
    path = Path(entry["log_folder"]) / f"{entry['job_id']}_0_log.out"
    return path.read_text(errors="replace") if path.exists() else ""


def _epochs(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x)["epoch"] for x in path.read_text().splitlines() if x.strip()]


def _ray_leftovers(entry: dict, nodes: int) -> list[int]:
    return [pid for n in range(nodes)
            for pid in find_ray_processes(f"/tmp/ray-{entry['job_id']}-n{n}")]


def _listen_hosts(port: int) -> set[str]:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
    return {line.split()[3].rsplit(":", 1)[0] for line in out.stdout.splitlines() if line}


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    yield d
    # never leave a job of ours behind
    for line in (d / "slurm-jobs.jsonl").read_text().splitlines() if (
            d / "slurm-jobs.jsonl").exists() else []:
        job_id = json.loads(line)["job_id"]
        if job_state(job_id) not in FINAL_STATES:
            subprocess.run(["scancel", job_id], check=False)


def test_bad_profile_fails_before_submission(out_dir, capsys):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,
                            text=True).stdout
    for sets, reason in [
        (["foo=1"], "foo: unknown key"),
        (["nodes=0"], "nodes: must be >= 1, got 0"),
        (["gpus_per_node=1"], "gpus_per_node: 1 GPUs requested but no node of partition "
                              "'debug' has GRES gpu"),
        (["partition=nosuch"], "partition: 'nosuch' is not known to sinfo"),
    ]:
        argv = ["submit", "train", "--output-dir", str(out_dir), *TINY]
        for s in sets:
            argv += ["--cluster-set", s]
        assert main(argv) == 2
        assert reason in capsys.readouterr().err
    # the run does not fit the job: 2 workers x 0.5 + 0.25 CPUs on one 1-CPU node
    assert main(["submit", "train", "--output-dir", str(out_dir), *TINY,
                 "--set", "scaling.num_workers=2"]) == 2
    assert "= 1.25 CPUs, but the job has nodes 1 x cpus_per_task 1 = 1" in \
        capsys.readouterr().err
    assert not (out_dir / "slurm-jobs.jsonl").exists()
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert set(after.split()) <= set(before.split())


def test_private_cluster_and_cancel(out_dir, tmp_path, capsys):
    """1 node: the cluster refuses clients without the token; cancel ends the job and Ray."""
    job_id = _submit(capsys, ["submit", "train", "--output-dir", str(out_dir), "--name", "c1",
                              *TINY, "--set", "scaling.num_workers=1",
                              "--set", "train.epochs=50", "--cluster-set", "time_min=5"])
    entry = find_job(job_id, out_dir)
    assert entry and entry["kind"] == "train" and entry["run_dir"] == str(out_dir / "c1")
    _wait_for(lambda: "Ray cluster up: 1 nodes" in _log(entry), 120, "the Ray cluster")
    state_dir = Path(entry["log_folder"]) / "ray"
    head = json.loads((state_dir / "head-0.json").read_text())
    token = state_dir / "ray_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert _ray_leftovers(entry, 1), "no Ray processes found for the job's temp dir"

    # dashboard bound to 127.0.0.1 only
    assert _listen_hosts(int(head["dashboard"].rsplit(":", 1)[1])) == {"127.0.0.1"}
    # a client without the token is refused (no ~/.ray/auth_token: fresh HOME)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)
    code = (f"import ray; ray.init(address={head['address']!r}, log_to_driver=False); "
            "print('CONNECTED', len(ray.nodes()))")
    try:
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=12)
        output, rc = res.stdout + res.stderr, res.returncode
    except subprocess.TimeoutExpired as e:  # still retrying: refused every time so far
        output = (e.stdout or b"").decode() + (e.stderr or b"").decode()
        rc = None
    assert "CONNECTED" not in output and rc != 0
    assert "Authentication token is missing or incorrect" in output

    assert main(["jobs", "--output-dir", str(out_dir)]) == 0
    listing = capsys.readouterr().out
    assert job_id in listing and "RUNNING" in listing

    t0 = time.time()
    assert main(["cancel", job_id, "--output-dir", str(out_dir)]) == 0
    assert "CANCELLED" in capsys.readouterr().out
    _wait_for(lambda: not _ray_leftovers(entry, 1), 15, "the job's Ray processes to end")
    with capsys.disabled():
        print(f"\ncancel took {time.time() - t0:.1f} s")


def _started(job_id: str) -> float:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                         text=True).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return time.mktime(time.strptime(fields["StartTime"], "%Y-%m-%dT%H:%M:%S"))
