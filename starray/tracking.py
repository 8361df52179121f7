"""Weights & Biases tracking that never blocks training, and a reader for offline runs.

``mode="auto"`` logs online when ``WANDB_API_KEY`` is set and offline otherwise. Any
W&B failure (no network, bad key) degrades to a warning: training goes on.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import struct
from pathlib import Path
from typing import Any

log = logging.getLogger("starray.tracking")


def resolve_mode(mode: str) -> str:
    """auto -> online with an API key in the environment, else offline."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "online"):
        return os.environ["WANDB_MODE"]
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class Tracker:
    """A W&B run on rank 0, or a no-op (disabled, or W&B failed to start)."""

    def __init__(self, run: Any | None, run_id: str | None, wandb_dir: Path | None) -> None:
        self.run = run
        self.run_id = run_id
        self.wandb_dir = wandb_dir

    @property
    def active(self) -> bool:
        """True when a W&B run is logging."""
        return self.run is not None

    def _safe(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            log.warning("W&B %s failed (%s); continuing without it", what, e)

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log a row of metrics."""
        if self.run is not None:
            self._safe("log", self.run.log, metrics, step=step)

    def log_image(self, key: str, png: str | os.PathLike, step: int | None = None) -> None:
        """Log a PNG file as an image."""
        if self.run is None:
            return
        import wandb

        self._safe("image", lambda: self.run.log({key: wandb.Image(str(png))}, step=step))

    def summary(self, values: dict[str, Any]) -> None:
        """Set summary values of the run."""
        if self.run is not None:
            self._safe("summary", self.run.summary.update, values)

    def finish(self) -> None:
        """Finish the run and flush its files (offline files are complete afterwards)."""
        if self.run is None:
            return
        import wandb

        self._safe("finish", self.run.finish)
        self._safe("teardown", wandb.teardown)
        self.run = None


def init_tracker(mode: str, project: str, run_dir: str | os.PathLike, run_id: str | None,
                 name: str, config: dict[str, Any], job_type: str = "train",
                 group: str | None = None, entity: str | None = None,
                 tags: list[str] | None = None) -> Tracker:
    """Start (or resume, with the same ``run_id``) a W&B run whose files live in run_dir."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        return Tracker(None, run_id, None)
    wandb_dir = Path(run_dir)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    try:
        import wandb

        run_id = run_id or secrets.token_hex(6)
        run = wandb.init(
            project=project, entity=entity, group=group, job_type=job_type, name=name,
            id=run_id, resume="allow", config=config, dir=str(wandb_dir), mode=mode,
            tags=tags or None, settings=wandb.Settings(init_timeout=60, silent=True),
        )
    except Exception as e:  # noqa: BLE001 - tracking must never stop training
        log.warning("W&B init failed (%s); training continues without tracking", e)
        return Tracker(None, run_id, None)
    return Tracker(run, run_id, wandb_dir)


# --- reading offline runs back (binary run-*.wandb: leveldb-style log of protobufs) -----

_BLOCK = 32768
_HEADER = 7  # ":W&B" + uint16 magic + uint8 version
_REC_HEADER = 7  # crc32 (4) + length (2) + type (1)


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run log")
    out, pending, pos = [], b"", _HEADER
    while pos + _REC_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _REC_HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _REC_HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + _REC_HEADER:pos + _REC_HEADER + length]
        pos += _REC_HEADER + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
            pending = b""
    return out


def _value(item: Any) -> Any:
    try:
        return json.loads(item.value_json)
    except (ValueError, AttributeError):
        return item.value_json


def read_offline_run(wandb_file: str | os.PathLike) -> dict[str, Any]:
    """Parse one ``run-*.wandb`` file: run id, config, history rows, summary, finished."""
    from wandb.proto import wandb_internal_pb2 as pb

    result: dict[str, Any] = {"run_id": None, "config": {}, "history": [], "summary": {},
                              "finished": False}
    for raw in _records(Path(wandb_file)):
        rec = pb.Record()
        try:
            rec.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a torn tail record of a live run
            continue
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            result["run_id"] = rec.run.run_id
            for item in rec.run.config.update:
                result["config"][item.key] = _value(item)
        elif kind == "config":
            for item in rec.config.update:
                result["config"][item.key] = _value(item)
        elif kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or ".".join(item.nested_key)
                row[key] = _value(item)
            result["history"].append(row)
        elif kind == "exit":  # written by run.finish(): the run's files are complete
            result["finished"] = True
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or ".".join(item.nested_key)
                result["summary"][key] = _value(item)
    return result


def read_offline_history(wandb_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All history rows of every offline run under ``wandb_dir`` (oldest file first)."""
    files = sorted(Path(wandb_dir).rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
    rows: list[dict[str, Any]] = []
    for f in files:
        rows.extend(read_offline_run(f)["history"])
    return rows


def offline_runs(wandb_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every offline run under ``wandb_dir``, parsed (oldest first)."""
    files = sorted(Path(wandb_dir).rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
    return [read_offline_run(f) for f in files]
