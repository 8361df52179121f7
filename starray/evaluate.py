"""Evaluate a checkpoint on a fixed, seeded benchmark of synthetic stars.

The benchmark is the same every time: ``per_class`` stars of each of the 14 classes,
drawn by :func:`starray.data.dataset.make_batch` in chunks of 256 from the constant
seed space (``seed``, ``benchmark``, 0, chunk index) with the DESIGN-default sampling, so
accuracies of different checkpoints are comparable. Outputs in ``out_dir``:
``report.md``, ``metrics.json``, ``confusion.png``, ``periods.png``, ``recall.png``.

Metric computations are small pure functions (:func:`confusion_matrix`,
:func:`precision_recall_f1`, :func:`period_quality`, :func:`candidate_quality`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from starray.data.dataset import Batch, concat, make_batch
from starray.data.features import denormalize_period
from starray.data.synth import CLASS_NAMES, N_CLASSES, SynthSpec
from starray.metrics import (  # noqa: F401 - re-exported: the metric functions' home
    TOLERANCES,
    candidate_quality,
    confusion_matrix,
    non_finite_counts,
    period_quality,
    precision_recall_f1,
    relative_error,
)
from starray.model.hybrid import count_parameters
from starray.model.inference import INPUT_KEYS, predict_arrays
from starray.report import write_report

BENCH_SPACE = "benchmark"  # starray.data.seeds: disjoint from training, fixed and validation
CHUNK = 64  # stars per make_batch call (two cadence templates); part of the benchmark's definition

Progress = Callable[[str], None]


class EvaluationError(RuntimeError):
    """Evaluation cannot proceed or found a broken model (e.g. NaN/Inf outputs)."""


def benchmark_labels(per_class: int) -> np.ndarray:
    """Each class index repeated ``per_class`` times (class-major order)."""
    return np.repeat(np.arange(N_CLASSES), per_class)


def benchmark_batch(per_class: int, seed: int = 12345, n_candidates: int = 4,
                    harmonics: bool = True, spec: SynthSpec = SynthSpec(),
                    progress: Progress | None = None) -> tuple[Batch, int]:
    """The fixed benchmark set -> (batch, synthetic redraws)."""
    if per_class < 1:
        raise ValueError(f"per_class: must be >= 1, got {per_class}")
    labels = benchmark_labels(per_class)
    parts, redraws = [], 0
    for index, start in enumerate(range(0, len(labels), CHUNK)):
        chunk = labels[start:start + CHUNK]
        batch, r = make_batch(len(chunk), seed, 0, index, spec, n_candidates,
                              harmonics, labels=chunk, space=BENCH_SPACE)
        parts.append(batch)
        redraws += r
        if progress:
            progress(f"generating benchmark {start + len(chunk)}/{len(labels)} stars")
    return concat(parts), redraws


# ----------------------------------------------------------------------------- speed
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_speed(model: nn.Module, batch: Batch, device: str | torch.device,
                  batch_size: int = 256, latency_runs: int = 20,
                  throughput_runs: int = 3) -> dict[str, float]:
    """Batch-1 latency (median ms over ``latency_runs``) and throughput (samples/s)."""
    device = torch.device(device)
    model = model.to(device).eval()
    one = {k: torch.as_tensor(batch[k][:1]).to(device) for k in INPUT_KEYS}
    n = min(batch_size, len(batch["lc"]))
    many = {k: torch.as_tensor(batch[k][:n]).to(device) for k in INPUT_KEYS}
    for _ in range(3):
        model(**one)
    _sync(device)
    times = []
    for _ in range(latency_runs):
        t0 = time.perf_counter()
        model(**one)
        _sync(device)
        times.append(time.perf_counter() - t0)
    model(**many)  # warm-up
    _sync(device)
    tput = []
    for _ in range(throughput_runs):
        t0 = time.perf_counter()
        model(**many)
        _sync(device)
        tput.append(time.perf_counter() - t0)
    return {
        "latency_batch1_ms": 1000 * statistics.median(times),
        "throughput_batch": n,
        "throughput_samples_per_s": n / statistics.median(tput),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ----------------------------------------------------------------------------- evaluation
def _round(x: Any) -> Any:
    if isinstance(x, float):
        return x if not np.isfinite(x) else round(x, 6)
    return x


def compute_metrics(preds: dict[str, np.ndarray], batch: Batch,
                    class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Classification and period metrics of predictions on a labelled batch."""
    labels = np.asarray(batch["label"])
    n_classes = len(class_names)
    cm = confusion_matrix(labels, preds["pred"], n_classes)
    prf = precision_recall_f1(cm)
    true_p1 = denormalize_period(batch["p1"])
    overall = {
        "regression": period_quality(true_p1, preds["p1_days"]),
        "chosen": period_quality(true_p1, preds["chosen_days"]),
        "candidates": candidate_quality(true_p1, batch["cand_days"], preds["chosen_index"]),
    }
    if "period_days" in preds:  # the reported period: none where the predicted class has none
        overall["reported"] = period_quality(true_p1, preds["period_days"])
    per_class = []
    for c, name in enumerate(class_names):
        sel = labels == c
        reg = period_quality(true_p1[sel], preds["p1_days"][sel])
        cho = period_quality(true_p1[sel], preds["chosen_days"][sel])
        cq = candidate_quality(true_p1[sel], batch["cand_days"][sel], preds["chosen_index"][sel])
        per_class.append({
            "class": name, "support": int(prf["support"][c]),
            "precision": float(prf["precision"][c]), "recall": float(prf["recall"][c]),
            "f1": float(prf["f1"][c]), "n_periodic": reg["n"],
            "p1_within_1pct": reg["within_1pct"], "p1_within_5pct": reg["within_5pct"],
            "p1_median_rel_err": reg["median_rel_err"],
            "chosen_within_1pct": cho["within_1pct"], "chosen_within_5pct": cho["within_5pct"],
            "chosen_median_rel_err": cho["median_rel_err"],
            # period success split: the periodogram offered the period / the model took it
            "any_candidate_within_1pct": cq["any_within_tol"],
            "chosen_given_any": cq["chosen_given_any"],
        })
    present = prf["support"] > 0
    return {
        "n_stars": int(len(labels)),
        "accuracy": float((preds["pred"] == labels).mean()),
        "macro_precision": float(prf["precision"][present].mean()),
        "macro_recall": float(prf["recall"][present].mean()),
        "macro_f1": float(prf["f1"][present].mean()),
        "confusion_matrix": cm.tolist(),
        "per_class": [{k: _round(v) for k, v in row.items()} for row in per_class],
        "periods": {k: {kk: _round(vv) for kk, vv in v.items()} for k, v in overall.items()},
    }


def resolve_device(device: str | None) -> torch.device:
    """None/"auto" -> cuda when available, else cpu."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_checkpoint(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike,
                        per_class: int = 500, seed: int = 12345, batch: int = 256,
                        device: str | None = None, wandb_run_dir: str | os.PathLike | None = None,
                        progress: Progress | None = None,
                        baseline: str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on the fixed benchmark; write report.md, metrics.json, PNGs.

    Parameters
    ----------
    ckpt_path : path
        A checkpoint file (or a folder holding ``checkpoint.pt``).
    out_dir : path
        Where the report goes (created).
    per_class, seed : int
        Benchmark size and seed; the defaults define the standard benchmark.
    batch : int
        Inference batch size (and the throughput batch size).
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1``; default: cuda when available.
    wandb_run_dir : path, optional
        Log the metrics and plots to W&B (job type ``evaluate``, grouped with the training
        run), with W&B files under this folder.
    progress : callable, optional
        Called with a line of text as work proceeds.
    baseline : path, optional
        JSON written by ``benchmarks/feature_baseline.py``; its row is added to the report
        (it must have been scored on the same benchmark).

    Returns
    -------
    dict
        The metrics also written to ``metrics.json``.

    Raises
    ------
    CheckpointError
        The checkpoint cannot be loaded.
    EvaluationError
        The model produced NaN/Inf outputs (counts are in metrics.json) or the checkpoint's
        classes are not the synthetic benchmark's.
    """
    from starray.train.checkpoint import load_checkpoint, model_from_state

    say = progress or (lambda _msg: None)
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(ckpt_path)
    class_names = tuple(state["class_names"])
    if class_names != CLASS_NAMES:
        raise EvaluationError(f"{ckpt_path}: checkpoint classes {class_names} are not the "
                              f"benchmark's {CLASS_NAMES}")
    data_cfg = dict(state["config"].get("data", {}))
    n_cand = int(data_cfg.get("n_candidates", 4))
    harmonics = bool(data_cfg.get("harmonics", False))
    dev = resolve_device(device)
    model = model_from_state(state, dev)

    bench, redraws = benchmark_batch(per_class, seed, n_cand, harmonics, SynthSpec(), say)
    bad_inputs = {k: int(np.size(bench[k]) - np.count_nonzero(np.isfinite(bench[k])))
                  for k in INPUT_KEYS}
    if any(bad_inputs.values()):
        raise EvaluationError(f"benchmark inputs contain NaN/Inf: {bad_inputs}")
    say(f"evaluating {len(bench['label'])} stars on {dev} ...")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    preds = predict_arrays(model, bench, dev, chunk=batch)
    eval_s = time.perf_counter() - t0

    metrics: dict[str, Any] = {
        "checkpoint": str(Path(ckpt_path).resolve()),
        "epoch": int(state["epoch"]),
        "model_dims": dict(state["model_dims"]),
        "parameters": count_parameters(model),
        "class_names": list(class_names),
        "benchmark": {"per_class": per_class, "seed": seed, "space": BENCH_SPACE,
                      "chunk": CHUNK, "n_candidates": n_cand, "harmonics": harmonics,
                      "candidates": int(bench["cand_days"].shape[1]),
                      "spec": dataclasses.asdict(SynthSpec()), "redraws": redraws},
    }
    nonfinite = non_finite_counts(preds)
    metrics["non_finite_outputs"] = nonfinite
    metrics.update(compute_metrics(preds, bench, class_names))
    if baseline is not None:
        metrics["baseline"] = load_baseline(baseline, metrics["benchmark"])

    say("measuring speed ...")
    speed: dict[str, Any] = {"cpu": measure_speed(model, bench, "cpu", batch_size=batch)}
    if torch.cuda.is_available():
        gpu = dev if dev.type == "cuda" else torch.device("cuda")
        torch.cuda.reset_peak_memory_stats(gpu)
        speed["cuda"] = measure_speed(model, bench, gpu, batch_size=batch)
        speed["cuda"]["device_name"] = torch.cuda.get_device_name(gpu)
        speed["cuda"]["peak_memory_mib"] = torch.cuda.max_memory_allocated(gpu) / 2**20
    model.to(dev)
    speed["eval_seconds"] = eval_s
    speed["eval_samples_per_s"] = len(bench["label"]) / eval_s if eval_s > 0 else float("nan")
    speed["peak_rss_mib"] = peak_rss_mib()
    speed["torch_threads"] = torch.get_num_threads()
    metrics["speed"] = {k: _round(v) if isinstance(v, float) else
                        ({kk: _round(vv) for kk, vv in v.items()} if isinstance(v, dict) else v)
                        for k, v in speed.items()}
    metrics["wall_seconds"] = round(time.perf_counter() - t_start, 3)

    _write_json(out_dir / "metrics.json", metrics)
    if any(nonfinite.values()):
        raise EvaluationError(f"model outputs contain NaN/Inf ({nonfinite}); see "
                              f"{out_dir / 'metrics.json'}")
    say("writing report ...")
    _write_plots(metrics, preds, bench, out_dir)
    write_report(metrics, out_dir)
    if wandb_run_dir is not None:
        say("logging to W&B ...")
        metrics["wandb_run_id"] = log_to_wandb(metrics, out_dir, wandb_run_dir, state)
        _write_json(out_dir / "metrics.json", metrics)
    return metrics


def load_baseline(path: str | os.PathLike, bench: dict[str, Any]) -> dict[str, Any]:
    """The baseline's summary row from ``feature_baseline.py`` JSON, checked against ``bench``.

    Raises EvaluationError when the file is missing or unreadable, or was scored on another
    benchmark (per class, seed, candidates, harmonics).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        row = dict(data["baseline"])
        theirs = dict(data["benchmark"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvaluationError(f"--baseline {p}: not a feature_baseline.py result: {e}") from e
    for key in ("per_class", "seed", "n_candidates", "harmonics"):
        if theirs.get(key) != bench.get(key):
            raise EvaluationError(f"--baseline {p}: scored with {key}={theirs.get(key)!r}, "
                                  f"this benchmark has {key}={bench.get(key)!r}")
    row.pop("per_class", None)
    row.pop("feature_names", None)
    row["path"] = str(p.resolve())
    return row


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def _write_plots(metrics: dict[str, Any], preds: dict[str, np.ndarray], bench: Batch,
                 out_dir: Path) -> None:
    from starray import report_plots

    names = metrics["class_names"]
    cm = np.asarray(metrics["confusion_matrix"])
    report_plots.plot_confusion(cm, names, out_dir / "confusion.png",
                                title=f"Confusion matrix (accuracy {metrics['accuracy']:.3f})")
    recall = np.array([r["recall"] for r in metrics["per_class"]])
    support = np.array([r["support"] for r in metrics["per_class"]])
    report_plots.plot_recall(recall, names, out_dir / "recall.png", support,
                             metrics["accuracy"])
    report_plots.plot_periods(denormalize_period(bench["p1"]), preds["p1_days"],
                              preds["chosen_days"], out_dir / "periods.png")


def _flat_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        out[f"eval/{key}"] = metrics[key]
    for pred, q in metrics["periods"].items():
        for k, v in q.items():
            out[f"eval/period_{pred}_{k}"] = v
    for row in metrics["per_class"]:
        out[f"eval/recall/{row['class']}"] = row["recall"]
        out[f"eval/f1/{row['class']}"] = row["f1"]
    cpu = metrics["speed"]["cpu"]
    out["eval/cpu_latency_batch1_ms"] = cpu["latency_batch1_ms"]
    out["eval/cpu_throughput_samples_per_s"] = cpu["throughput_samples_per_s"]
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def log_to_wandb(metrics: dict[str, Any], out_dir: Path, wandb_run_dir: str | os.PathLike,
                 state: dict[str, Any]) -> str | None:
    """Log evaluation to a new W&B run (job type ``evaluate``) grouped with the training run.

    The group is the training config's ``wandb.group``, else its run name, else the
    training run's W&B id; the training run's id is kept in the config as
    ``train_wandb_id``. Returns the evaluation run's id (None when W&B is disabled).
    """
    from starray.tracking import init_tracker

    cfg = dict(state.get("config", {}))
    wcfg = dict(cfg.get("wandb", {}) or {})
    train_id = state.get("wandb_id")
    name = cfg.get("name") or "run"
    group = wcfg.get("group") or cfg.get("name") or train_id
    tracker = init_tracker(
        mode=wcfg.get("mode", "auto"), project=wcfg.get("project", "starray"),
        run_dir=Path(wandb_run_dir), run_id=secrets.token_hex(4), name=f"{name}-evaluate",
        config={"checkpoint": metrics["checkpoint"], "epoch": metrics["epoch"],
                "benchmark": metrics["benchmark"], "train_wandb_id": train_id,
                "train_config": cfg},
        job_type="evaluate", group=group)
    try:
        tracker.log(_flat_scalars(metrics))
        for png in ("confusion", "recall", "periods"):
            tracker.log_image(f"eval/{png}", out_dir / f"{png}.png")
        tracker.summary(_flat_scalars(metrics))
    finally:
        tracker.finish()
    return tracker.run_id if tracker.wandb_dir is not None else None


__all__ = [
    "BENCH_SPACE", "EvaluationError", "benchmark_batch", "candidate_quality",
    "compute_metrics", "confusion_matrix", "evaluate_checkpoint", "measure_speed",
    "non_finite_counts", "period_quality", "precision_recall_f1", "write_report",
]
