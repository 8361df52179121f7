"""Shared test settings: offline W&B, BLAS pinned, a real local Ray when a test asks,
and a small checkpoint trained in-process (no Ray) shared by evaluation tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from starray.config import PRESETS, from_dict
from starray.data.dataset import make_batch
from starray.data.synth import CLASS_NAMES
from starray.model.hybrid import build_model
from starray.model.inference import INPUT_KEYS
from starray.train.checkpoint import save_checkpoint

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


SLURM_HINT = ("no local Slurm answers `sinfo`. `make slurm` (as root; installs Debian's "
              "Slurm and MariaDB packages and starts a 2-node test cluster on this machine) "
              "enables them.")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Say at the start of the run (also under -q) when the Slurm tests will skip."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not slurm_available():
        reporter.write_line(f"[starray] Slurm tests will skip: {SLURM_HINT}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Repeat the Slurm hint in the summary when Slurm tests were skipped."""
    skipped = terminalreporter.stats.get("skipped", [])
    n = sum("slurm" in getattr(r, "keywords", {}) for r in skipped)
    if n:
        terminalreporter.write_sep("-", "slurm")
        terminalreporter.write_line(f"{n} Slurm test(s) skipped: {SLURM_HINT}")


@pytest.fixture
def ray_local():
    """A fresh local Ray with 2 CPUs for one test, shut down afterwards."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=True)
    yield ray
    ray.shutdown()


TRAIN_STEPS = 30


def make_tiny_checkpoint(path: Path) -> tuple[Path, list[float]]:
    """Train the tiny preset for TRAIN_STEPS Adam steps on 3 fixed batches; save it."""
    torch.manual_seed(0)
    dims = dict(PRESETS["tiny"])
    model = build_model(dims)
    batches = [make_batch(16, seed=0, epoch=0, index=i)[0] for i in range(3)]
    tensors = [{k: torch.as_tensor(v) for k, v in b.items() if k != "cand_days"}
               for b in batches]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for step in range(TRAIN_STEPS):
        b = tensors[step % len(tensors)]
        out = model(**{k: b[k] for k in INPUT_KEYS})
        loss = F.cross_entropy(out["logits"], b["label"])
        for key in ("p1", "p2"):
            mask = torch.isfinite(b[key])
            if mask.any():
                loss = loss + F.smooth_l1_loss(out[key][mask], b[key][mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    state = {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": {},
        "epoch": 0, "config": from_dict({}).to_dict(), "model_dims": dims,
        "class_names": list(CLASS_NAMES), "history": [{"epoch": 0, "train_loss": losses[-1]}],
        "best_val_loss": losses[-1], "best_val_acc": 0.0, "wandb_id": "tinytrain01",
    }
    save_checkpoint(path, state)
    return path, losses


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A small trained checkpoint, trained once per session (shared across test modules)."""
    path = tmp_path_factory.getbasetemp() / "tiny-model" / "checkpoint.pt"
    if not path.exists():
        _, losses = make_tiny_checkpoint(path)
        first, last = np.mean(losses[:4]), np.mean(losses[-4:])
        assert last < 0.8 * first, f"training did not reduce the loss: {first} -> {last}"
    return path


# ----------------------------------------------------------------------------- pure metrics
