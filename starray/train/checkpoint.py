"""Checkpoints: tensors and primitives only, written atomically, loaded with weights_only.

A checkpoint is one ``torch.save`` file holding a dict:
``model`` (state dict of the unwrapped model), ``optimizer``, ``scheduler``, ``epoch``
(last completed epoch, 0-based), ``config`` (the run's config as a dict), ``model_dims``,
``class_names``, ``history`` (per-epoch metric dicts), ``best`` (the best-metric rule's
state: metric, mode, value, epoch, bad_epochs), ``rng`` (one RNG state per rank),
``world_size``, ``wandb_id``, and for older readers ``best_val_loss``/``best_val_acc``.

:class:`CheckpointManager` is the one owner of a run's checkpoint files.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from starray.model.hybrid import build_model


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, tampered with or not a starray checkpoint."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, quota); the previous one is intact."""


REQUIRED_KEYS = ("model", "epoch", "config", "model_dims", "class_names")
# Test-only fault injection: seconds to pause after the temp file is written, before the
# rename (lets a test SIGKILL the process in the middle of a checkpoint write).
PAUSE_ENV = "STARRAY_FAULT_CKPT_PAUSE_S"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes available to this user on the filesystem holding ``folder``."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any],
                    keep_previous: str | os.PathLike | None = None) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    The bytes are serialized in memory first, so a full disk is found before anything is
    replaced: :class:`CheckpointWriteError` names the file, the bytes needed and the bytes
    free, and ``path`` (and ``keep_previous``) are left as they were. With
    ``keep_previous``, the old ``path`` is renamed to it just before the new file takes
    its place (a crash in between leaves the old file under ``keep_previous``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
        if pause > 0:
            time.sleep(pause)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if e.errno in _NO_SPACE:
            raise CheckpointWriteError(
                f"{path}: no space left to write the checkpoint ({_mib(len(data))} needed, "
                f"{_mib(free_bytes(path.parent))} free on the filesystem of {path.parent}); "
                "the previous checkpoint is intact. Free some space, then resume the run."
            ) from e
        raise CheckpointWriteError(f"{path}: cannot write the checkpoint: {e}") from e
    _fsync_dir(path.parent)
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


def check_model_dims(state: dict[str, Any], dims: dict[str, Any], source: str) -> None:
    """Raise CheckpointError naming each model dimension that differs from the checkpoint."""
    saved = dict(state["model_dims"])
    diff = [f"model.{k}: checkpoint {saved.get(k)!r}, config {dims.get(k)!r}"
            for k in sorted(set(saved) | set(dims)) if k != "dropout"
            and saved.get(k) != dims.get(k)]
    if diff:
        raise CheckpointError(f"{source}: the model does not fit this checkpoint ("
                              + "; ".join(diff) + ")")


def model_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a checkpoint in eval mode."""
    model = build_model(dict(state["model_dims"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit its model_dims: {e}") from e
    return model.to(device).eval()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link ``src`` to ``dst`` (same folder tree, same filesystem); copy where the
    filesystem has no hard links."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        shutil.copyfile(src, dst)


class CheckpointManager:
    """Saves, finds and loads a run's checkpoints (``RUN_DIR/checkpoints``).

    Files: ``last.pt`` (newest), ``prev.pt`` (the one before it, kept so a truncated or
    corrupt ``last.pt`` falls back to it), ``best.pt`` (a hard link to the checkpoint of the
    best epoch under ``train.best_metric``). Every file is replaced only by a rename of a
    complete, fsynced file. Only rank 0 writes.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.folder = Path(run_dir) / "checkpoints"
        self.last = self.folder / "last.pt"
        self.prev = self.folder / "prev.pt"
        self.best = self.folder / "best.pt"

    def clean_stale(self) -> list[Path]:
        """Remove temp files and Ray staging folders left by a killed process."""
        removed: list[Path] = []
        if not self.folder.exists():
            return removed
        for p in self.folder.iterdir():
            if p.name.startswith(".") and (".tmp-" in p.name or p.name.startswith(".ray-")):
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    def check_space(self, factor: float = 3.0) -> None:
        """Before training: room for ``factor`` x the last checkpoint (new file, Ray's
        copy, best.pt), or CheckpointWriteError with the numbers."""
        if not self.last.exists():
            return
        need = int(self.last.stat().st_size * factor)
        free = free_bytes(self.folder)
        if free < need:
            raise CheckpointWriteError(
                f"{self.folder}: {_mib(free)} free, but the next checkpoint needs about "
                f"{_mib(need)} ({factor:g} x {self.last.name}); free some space, then resume")

    def save(self, state: dict[str, Any], is_best: bool) -> Path:
        """Write ``last.pt`` (the old one becomes ``prev.pt``); link ``best.pt`` if best."""
        save_checkpoint(self.last, state, keep_previous=self.prev)
        if is_best:
            tmp = self.folder / f".best.pt.tmp-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            _link_or_copy(self.last, tmp)
            os.replace(tmp, self.best)
        return self.last

    def newest(self, extra: list[tuple[str, Any]] | None = None,
               log: Any = print) -> dict[str, Any] | None:
        """The newest complete checkpoint: ``last.pt``, else ``prev.pt``; ``extra`` are
        (name, loader) pairs of other candidates (Ray's reported checkpoint) compared by
        epoch. An unreadable file is reported with ``log`` and skipped."""
        found: list[dict[str, Any]] = []
        failed: list[str] = []
        for path in (self.last, self.prev):
            if not path.exists():
                continue
            try:
                found.append(load_checkpoint(path))
                break  # prev.pt is older by construction
            except CheckpointError as e:
                failed.append(str(path))
                log(f"[starray] {e}; falling back to the previous checkpoint")
        for name, loader in extra or []:
            try:
                found.append(loader())
            except CheckpointError as e:
                log(f"[starray] ignoring {name}: {e}")
        if not found:
            return None
        best = max(found, key=lambda s: int(s["epoch"]))
        if failed:
            log(f"[starray] resuming from the checkpoint of epoch {int(best['epoch']) + 1} "
                f"(unreadable: {', '.join(failed)})")
        return best

    @contextlib.contextmanager
    def staged_for_ray(self, epoch: int) -> Iterator[Path]:
        """A folder holding ``checkpoint.pt`` (a link to ``last.pt``) for
        ``ray.train.Checkpoint.from_directory``; inside the run folder, so on the same
        filesystem (no cross-device link), removed on exit (after Ray has copied it)."""
        stage = self.folder / f".ray-stage-{epoch}-{os.getpid()}"
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        try:
            _link_or_copy(self.last, stage / "checkpoint.pt")
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)
