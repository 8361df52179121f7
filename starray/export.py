"""Model export for deployment: weights as safetensors plus a JSON description.

``export_model(ckpt, "out/starray-compact")`` writes ``out/starray-compact.safetensors``
(tensors only: loading it never runs code) and ``out/starray-compact.json`` (model
dimensions, class names, the input normalization the model expects and the sha256 of
the weights file). ``load_model(path)`` checks the hash and every tensor shape before
building the model, so a truncated or modified file fails with a clear
:class:`ModelFileError` instead of a half-loaded model.

Examples
--------
>>> from starray.export import load_model              # doctest: +SKIP
>>> model, meta = load_model("out/starray-compact")     # doctest: +SKIP
>>> meta["class_names"][0]                              # doctest: +SKIP
'sinusoidal'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from starray.data import features
from starray.model.hybrid import build_model

log = logging.getLogger("starray.export")

FORMAT = "starray-model"
FORMAT_VERSION = 1


class ModelFileError(RuntimeError):
    """An exported model file is missing, truncated, modified or does not fit its JSON."""


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, json) paths from a stem, a ``.safetensors`` or a ``.json`` path."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def normalization_facts(n_candidates: int, harmonics: bool) -> dict[str, Any]:
    """How raw light curves become model inputs (DESIGN section 3)."""
    return {
        "period_axis": "log10(days) mapped linearly to [0, 1]",
        "period_min_days": features.P_MIN,
        "period_max_days": features.P_MAX,
        "lc_length": features.LC_LENGTH,
        "lc_normalization": "z-score, linear interpolation onto a uniform time grid",
        "pgram_bins": features.PGRAM_BINS,
        "pgram_normalization": "Lomb-Scargle power, max per log-period bin, max 1",
        "fold_bins": features.FOLD_BINS,
        "fold_stats": {"theta": "within-bin flux variance of each fold over the curve's "
                                "variance (PDM)",
                       "half_corr": "correlation of each fold with itself shifted by half a "
                                    "phase"},
        "n_candidates": n_candidates,
        "harmonics": harmonics,
        "candidates": "N peaks, then P/2 and 2P of the best and the harmonic-sum search's "
                      "period and twice it" if harmonics else "N peaks",
        "total_candidates": features.n_total_candidates(n_candidates, harmonics),
    }


def export_model(ckpt_path: str | os.PathLike, out_path: str | os.PathLike,
                 upload: bool | None = None) -> tuple[Path, Path]:
    """Write ``<out>.safetensors`` and ``<out>.json`` from a checkpoint.

    ``upload``: also log both files as a W&B model artifact; ``None`` (default) uploads
    only when W&B would run online (``WANDB_API_KEY`` set, mode not offline/disabled) and
    skips silently otherwise. Upload failures are warnings: the export itself stands.
    Returns (weights path, json path).
    """
    from safetensors.torch import save_file

    from starray.train.checkpoint import load_checkpoint, model_from_state

    state = load_checkpoint(ckpt_path)
    model = model_from_state(state)  # proves the weights fit model_dims before exporting
    weights, meta_path = _paths(out_path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = weights.with_name(f".{weights.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, weights)
    cfg = dict(state.get("config") or {})
    data_cfg = dict(cfg.get("data") or {})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_file": weights.name,
        "sha256": sha256_file(weights),
        "model_dims": dict(state["model_dims"]),
        "class_names": list(state["class_names"]),
        "normalization": normalization_facts(int(data_cfg.get("n_candidates", 4)),
                                             bool(data_cfg.get("harmonics", False))),
        "parameters": sum(t.numel() for t in tensors.values()),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "source": {"checkpoint": str(Path(ckpt_path).resolve()), "epoch": int(state["epoch"]),
                   "best_val_loss": state.get("best_val_loss"),
                   "best_val_acc": state.get("best_val_acc"), "wandb_id": state.get("wandb_id")},
        "config": cfg,
    }
    tmp = meta_path.with_name(f".{meta_path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, meta_path)
    if upload or (upload is None and _wandb_online(cfg)):
        _upload_artifact(weights, meta_path, meta)
    return weights, meta_path


def _wandb_online(cfg: dict[str, Any]) -> bool:
    if not os.environ.get("WANDB_API_KEY"):
        return False
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return False
    mode = (cfg.get("wandb") or {}).get("mode", "auto")
    return mode in ("online", "auto")


def _upload_artifact(weights: Path, meta_path: Path, meta: dict[str, Any]) -> None:
    """Log the export as a W&B model artifact; failures are warnings."""
    try:
        import wandb

        wcfg = meta["config"].get("wandb") or {}
        run = wandb.init(project=wcfg.get("project", "starray"), entity=wcfg.get("entity"),
                         group=wcfg.get("group"), job_type="export", mode="online",
                         dir=str(weights.parent))
        art = wandb.Artifact(weights.stem, type="model",
                             metadata={k: meta[k] for k in ("model_dims", "class_names",
                                                            "normalization", "sha256")})
        art.add_file(str(weights))
        art.add_file(str(meta_path))
        run.log_artifact(art)
        run.finish()
    except Exception as e:  # noqa: BLE001 - the upload is an optional extra
        log.warning("W&B artifact upload failed (%s); the exported files are fine", e)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON description of an exported model (validated)."""
    weights, meta_path = _paths(path)
    if not meta_path.exists():
        raise ModelFileError(f"{meta_path}: no such model description (export writes "
                             f"<name>.json next to <name>.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{meta_path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{meta_path}: not a starray model description")
    missing = [k for k in ("sha256", "model_dims", "class_names", "normalization", "tensors")
               if k not in meta]
    if missing:
        raise ModelFileError(f"{meta_path}: missing keys {', '.join(missing)}")
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Load an exported model in eval mode -> (model, meta).

    ``path`` is the export's stem, its ``.safetensors`` or its ``.json``. The weights
    file's sha256 and every tensor's shape are checked first; any mismatch raises
    :class:`ModelFileError` naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta_path = _paths(path)
    meta = read_meta(meta_path)
    if not weights.exists():
        raise ModelFileError(f"{weights}: no such weights file (described by {meta_path})")
    digest = sha256_file(weights)
    if digest != meta["sha256"]:
        raise ModelFileError(
            f"{weights}: sha256 {digest[:12]}... does not match {meta_path.name} "
            f"({str(meta['sha256'])[:12]}...): the file is truncated or was modified")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{weights}: cannot read safetensors ({e})") from e
    try:
        model = build_model(dict(meta["model_dims"]))
    except TypeError as e:
        raise ModelFileError(f"{meta_path}: bad model_dims {meta['model_dims']}: {e}") from e
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = [f"missing {k}" for k in expected if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in expected]
    problems += [f"{k}: shape {got[k]}, model needs {expected[k]}"
                 for k in expected if k in got and got[k] != expected[k]]
    if problems:
        shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)"
                                           if len(problems) > 5 else "")
        raise ModelFileError(f"{weights}: tensors do not fit model_dims: {shown}")
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta
