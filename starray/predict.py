"""Classify real light-curve files with a trained model.

Each file is read (format sniffed, see :mod:`starray.data.lightcurve_io`), turned into
model inputs with the candidate settings the model was trained with, and classified.
A file that cannot be read or processed, or that exceeds a per-file resource limit
(checked before its periodogram), is reported with the reason and skipped; it never stops
the others and never gets a made-up prediction. Each classified file carries the
out-of-distribution warnings of :mod:`starray.data.lightcurve_checks`.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from starray.data.dataset import features_to_batch
from starray.data.features import LightCurveError, clean, star_features
from starray.data.lightcurve_checks import (
    Limits,
    ResourceLimitError,
    TrainingRange,
    check_limits,
    distribution_warnings,
)
from starray.data.lightcurve_columns import ColumnChoice
from starray.data.lightcurve_io import LightCurveReadError, read_lightcurve
from starray.model.inference import APERIODIC_CLASSES, predict_arrays

CSV_FIELDS = ("file", "class", "probability", "class_2", "probability_2", "class_3",
              "probability_3", "p1_days", "p2_days", "chosen_days", "chosen_weight",
              "candidates_days", "candidate_weights", "n_points", "format", "warnings")

# Classes without a period (starray.model.inference.APERIODIC_CLASSES, DESIGN section 2):
# the period columns show "-" (JSON null). long_term_trend counts as aperiodic: its class
# is the trend; 70 % of them carry a texture sine, but that period is incidental.
# Periodic classes whose stars have no secondary period: p2 shows "-".
NO_SECONDARY_CLASSES = frozenset({"sinusoidal", "eclipsing_binary",
                                  "co_rotating_thin_material"})


class PredictionError(RuntimeError):
    """The model itself misbehaved (e.g. NaN outputs); not a per-file problem."""


def load_any(path: str | os.PathLike, device: str | torch.device = "cpu"
             ) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint (``.pt`` or run folder) or an export (stem, ``.safetensors``, ``.json``).

    Returns (model in eval mode, info) where info has ``class_names``, ``n_candidates``,
    ``harmonics``, ``source`` and ``training`` (the TrainingRange of the checkpoint's
    config; the defaults for an export, whose description does not record it).
    """
    from starray.export import _paths, load_model
    from starray.train.checkpoint import load_checkpoint, model_from_state

    p = Path(path)
    weights, meta_path = _paths(p)
    if p.suffix in (".safetensors", ".json") or (not p.exists() and meta_path.exists()):
        model, meta = load_model(p, device)
        norm = meta["normalization"]
        return model, {"class_names": list(meta["class_names"]),
                       "n_candidates": int(norm["n_candidates"]),
                       "harmonics": bool(norm.get("harmonics", False)), "source": str(weights),
                       "training": TrainingRange.from_config(meta.get("training_data"))}
    state = load_checkpoint(p)
    data_cfg = dict((state.get("config") or {}).get("data") or {})
    return model_from_state(state, device), {
        "class_names": list(state["class_names"]),
        "n_candidates": int(data_cfg.get("n_candidates", 4)),
        "harmonics": bool(data_cfg.get("harmonics", False)), "source": str(p),
        "training": TrainingRange.from_config(data_cfg)}


def _unique_png(plot_dir: Path, stem: str, used: set[str]) -> Path:
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return plot_dir / f"{name}.png"


def file_progress(files: Sequence[Any], desc: str, enabled: bool) -> Any:
    """A tqdm bar over files on stderr; off when not asked or stderr is not a terminal."""
    if not enabled:
        return files
    from tqdm import tqdm

    return tqdm(files, desc=desc, unit="file", file=sys.stderr, disable=None, leave=False,
                dynamic_ncols=True)


def _prepare(path: str | os.PathLike, info: dict[str, Any], columns: ColumnChoice | None,
             limits: Limits) -> tuple[Any, Any, list[str]]:
    """Read, check limits, warn, compute features; raises the per-file errors."""
    lc = read_lightcurve(path, columns)
    check_limits(lc.time, limits, str(path))
    check = distribution_warnings(lc.time, lc.flux, info["training"])
    feats = star_features(lc.time, lc.flux, info["n_candidates"], info["harmonics"])
    return lc, feats, check.warnings


def predict_files(ckpt_or_model_path: str | os.PathLike, files: Sequence[str | os.PathLike],
                  out_csv: str | os.PathLike | None = None,
                  out_json: str | os.PathLike | None = None,
                  plot_dir: str | os.PathLike | None = None,
                  device: str | torch.device = "cpu", columns: ColumnChoice | None = None,
                  limits: Limits = Limits(), progress: bool = False
                  ) -> tuple[list[dict], list[dict]]:
    """Predict class and periods for each file -> (rows, failures).

    Each row: ``file``, ``class``, ``probability``, ``top3`` ([class, probability] x 3),
    ``p1_days``, ``p2_days`` (regression heads), ``chosen_days`` and ``chosen_weight``
    (the candidate with the largest attention weight), ``candidates_days``,
    ``candidate_weights``, ``n_points``, ``format``, ``warnings`` (out-of-distribution,
    see :mod:`starray.data.lightcurve_checks`), ``notes`` (conversions) and ``plot``
    (PNG path or None). The periods are None where the predicted class has none:
    ``chosen_days``/``p1_days``/``p2_days`` for APERIODIC_CLASSES, ``p2_days`` for classes
    without a secondary period. Each failure: ``file`` and ``reason``; a file over a
    resource limit (``limits``) fails before its periodogram is computed.
    ``out_csv``/``out_json`` write the rows (JSON also the failures); ``plot_dir`` gets one
    PNG per star, folded at the chosen candidate; ``progress`` shows a bar on stderr.
    """
    model, info = load_any(ckpt_or_model_path, device)
    names = info["class_names"]
    feats, curves, ok_files, warns, failures = [], [], [], [], []
    for f in file_progress(files, "reading", progress):
        try:
            lc, feat, warn = _prepare(f, info, columns, limits)
        except (LightCurveReadError, ResourceLimitError) as e:
            failures.append({"file": str(f), "reason": str(e)})
            continue
        except LightCurveError as e:
            failures.append({"file": str(f), "reason": f"{f}: cannot process: {e}"})
            continue
        feats.append(feat)
        curves.append(lc)
        ok_files.append(str(f))
        warns.append(warn)
    rows: list[dict[str, Any]] = []
    if feats:
        n = len(feats)
        batch = features_to_batch(feats, [-1] * n, [np.nan] * n, [np.nan] * n)
        preds = predict_arrays(model, batch, device)
        bad = [k for k in ("probs", "p1_days", "p2_days", "cand_weights")
               if not np.isfinite(preds[k]).all()]
        if bad:
            raise PredictionError(f"{info['source']}: model produced NaN/Inf in {bad}")
        used: set[str] = set()
        for i, (fname, lc) in enumerate(zip(ok_files, curves, strict=True)):
            order = np.argsort(preds["probs"][i])[::-1][:3]
            ci = int(preds["chosen_index"][i])
            cls = names[order[0]]
            periodic = cls not in APERIODIC_CLASSES
            row = {
                "file": fname,
                "class": cls,
                "probability": float(preds["probs"][i, order[0]]),
                "top3": [[names[j], float(preds["probs"][i, j])] for j in order],
                "p1_days": float(preds["p1_days"][i]) if periodic else None,
                "p2_days": (float(preds["p2_days"][i])
                            if periodic and cls not in NO_SECONDARY_CLASSES else None),
                "chosen_days": float(preds["chosen_days"][i]) if periodic else None,
                "chosen_weight": float(preds["cand_weights"][i, ci]),
                "candidates_days": [float(x) for x in batch["cand_days"][i]],
                "candidate_weights": [float(x) for x in preds["cand_weights"][i]],
                "n_points": int(np.count_nonzero(np.isfinite(lc.time) & np.isfinite(lc.flux))),
                "format": lc.fmt,
                "warnings": warns[i],
                "notes": list(lc.notes),
                "plot": None,
            }
            if plot_dir is not None:
                row["plot"] = str(_plot_star(lc, row, float(preds["chosen_days"][i]),
                                             Path(plot_dir), used))
            rows.append(row)
    if out_csv is not None:
        write_csv(rows, out_csv)
    if out_json is not None:
        path = Path(out_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": info["source"], "predictions": rows,
                                    "failures": failures}, indent=2))
    return rows, failures


def _plot_star(lc: Any, row: dict[str, Any], chosen: float, plot_dir: Path, used: set[str]
               ) -> Path:
    from starray.report_plots import plot_folded

    t, f = clean(lc.time, lc.flux)
    period = (f"P = {chosen:.5g} d" if row["chosen_days"] is not None
              else f"no period (aperiodic class); folded at {chosen:.5g} d")
    title = (f"{Path(row['file']).name}: {row['class']} ({row['probability']:.0%}), "
             f"{period} (weight {row['chosen_weight']:.2f})")
    return plot_folded(t, f, chosen, _unique_png(plot_dir, lc.name, used), title)


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """One line per star; list fields joined with ``;``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            out = {k: r[k] for k in CSV_FIELDS if k in r}
            for k in (2, 3):
                if len(r["top3"]) >= k:
                    out[f"class_{k}"], out[f"probability_{k}"] = r["top3"][k - 1]
            out["candidates_days"] = ";".join(f"{x:.6g}" for x in r["candidates_days"])
            out["candidate_weights"] = ";".join(f"{x:.4f}" for x in r["candidate_weights"])
            out["warnings"] = "; ".join(r.get("warnings", []))
            w.writerow(out)  # a period the class does not have is an empty cell
    return path


def _days(value: float | None, width: int, fmt: str) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def format_table(rows: list[dict[str, Any]], failures: list[dict[str, Any]]) -> str:
    """A plain-text table of predictions, then the failures; "-" where the class has no
    such period."""
    lines = []
    if rows:
        width = max(len(Path(r["file"]).name) for r in rows)
        width = max(width, 4)
        lines.append(f"{'file':<{width}}  {'class':<26} {'prob':>5}  {'period(d)':>10} "
                     f"{'weight':>6}  {'p1(d)':>8} {'p2(d)':>8}  runner-up")
        for r in rows:
            second = f"{r['top3'][1][0]} {r['top3'][1][1]:.2f}" if len(r["top3"]) > 1 else ""
            lines.append(
                f"{Path(r['file']).name:<{width}}  {r['class']:<26} {r['probability']:>5.2f}  "
                f"{_days(r['chosen_days'], 10, '.5g')} {r['chosen_weight']:>6.2f}  "
                f"{_days(r['p1_days'], 8, '.4g')} {_days(r['p2_days'], 8, '.4g')}  {second}")
    for f in failures:
        lines.append(f"FAILED {f['reason']}")
    return "\n".join(lines)
