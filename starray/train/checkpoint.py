"""Checkpoints: tensors and primitives only, written atomically, loaded with weights_only.

A checkpoint is one ``torch.save`` file holding a dict:
``model`` (state dict of the unwrapped model), ``optimizer``, ``scheduler``, ``epoch``
(last completed epoch, 0-based), ``config`` (the run's config as a dict), ``model_dims``,
``class_names``, ``history`` (per-epoch metric dicts), ``best_val_loss``,
``best_val_acc``, ``wandb_id``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from starray.model.hybrid import build_model


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, tampered with or not a starray checkpoint."""


REQUIRED_KEYS = ("model", "epoch", "config", "model_dims", "class_names")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code (``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError,
            OSError) as e:
        raise CheckpointError(
            f"{path}: cannot load checkpoint (truncated, tampered with, or holds objects "
            f"other than tensors and primitives): {str(e).splitlines()[0]}") from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a starray checkpoint (needs keys {REQUIRED_KEYS})")
    return state


def model_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a checkpoint in eval mode."""
    model = build_model(dict(state["model_dims"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit its model_dims: {e}") from e
    return model.to(device).eval()

