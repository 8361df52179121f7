"""The project's job registry (``<output_dir>/slurm-jobs.jsonl``) and job states.

One JSON line per submitted job: job id, kind, run dir, log folder, submit time, profile.
States come from ``squeue`` (pending/running) and ``sacct`` (everything else).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

REGISTRY_NAME = "slurm-jobs.jsonl"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def registry_path(output_dir: str | os.PathLike = "runs") -> Path:
    return Path(output_dir).expanduser().resolve() / REGISTRY_NAME


def record_job(output_dir: str | os.PathLike, entry: dict[str, Any]) -> Path:
    """Append one job to the registry (one short write: safe with concurrent submitters)."""
    path = registry_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    return path


def read_registry(output_dir: str | os.PathLike = "runs") -> list[dict[str, Any]]:
    path = registry_path(output_dir)
    if not path.exists():
        return []
    jobs = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                jobs.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from an interrupted write
    return jobs


def find_job(job_id: str, output_dir: str | os.PathLike = "runs") -> dict[str, Any] | None:
    for entry in reversed(read_registry(output_dir)):
        if str(entry.get("job_id")) == str(job_id):
            return entry
    return None


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except subprocess.TimeoutExpired:
        return ""


def job_states(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """job id -> {state, elapsed, restarts, nodes}; squeue first, then sacct."""
    if not job_ids:
        return {}
    ids = ",".join(str(j) for j in job_ids)
    out: dict[str, dict[str, str]] = {}
    for line in _run(["sacct", "-X", "-n", "-P", "-j", ids,
                      "-o", "JobID,State,Elapsed,NodeList"]).splitlines():
        parts = line.split("|")
        if len(parts) >= 4:
            out[parts[0]] = {"state": parts[1].split()[0], "elapsed": parts[2],
                             "nodes": parts[3], "restarts": ""}
    for line in _run(["squeue", "-h", "-j", ids, "-o", "%i|%T|%M|%N"]).splitlines():
        parts = line.split("|")
        if len(parts) >= 4:
            out[parts[0]] = {"state": parts[1], "elapsed": parts[2], "nodes": parts[3],
                             "restarts": ""}
    for line in _run(["scontrol", "-o", "show", "job", ids]).splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        jid = fields.get("JobId")
        if jid in out:
            out[jid]["restarts"] = fields.get("Restarts", "")
    return out


def job_state(job_id: str) -> str:
    return job_states([job_id]).get(str(job_id), {}).get("state", "UNKNOWN")


def wait_state(job_id: str, states: set[str], timeout_s: float, poll_s: float = 1.0) -> str:
    """Poll until the job's state is in ``states``; returns the last state seen."""
    deadline = time.time() + timeout_s
    state = job_state(job_id)
    while state not in states and time.time() < deadline:
        time.sleep(poll_s)
        state = job_state(job_id)
    return state


def log_files(entry: dict[str, Any], err: bool = False) -> list[Path]:
    """The job's submitit log files (task 0 first)."""
    folder = Path(entry["log_folder"])
    suffix = "err" if err else "out"
    return sorted(folder.glob(f"{entry['job_id']}_*_log.{suffix}"),
                  key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit()
                  else 0)
