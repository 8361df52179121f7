"""Shared test settings: offline W&B, BLAS pinned, a real local Ray when a test asks."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def slurm_available() -> bool:
    """True when `sinfo` answers (the local Slurm of scripts/local-slurm.sh is up)."""
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def ray_local():
    """A fresh local Ray with 2 CPUs for one test, shut down afterwards."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=True)
    yield ray
    ray.shutdown()
