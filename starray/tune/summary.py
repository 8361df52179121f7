"""Summaries of a sweep: trial table, best config and checkpoint, curves of all trials."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from starray.config import ExperimentConfig, apply_overrides, from_dict
from starray.tune.space import SweepSpec, flatten_params


def summarize(sweep_dir: Path, spec: SweepSpec, base: ExperimentConfig,
              reported: dict[str, int] | None = None,
              stopped: dict[str, int] | None = None) -> dict[str, Any]:
    """Trial table, best config YAML, best checkpoint copy and the curves plot.

    ``reported``: the last ``epochs_done`` Tune received per trial id; a trial whose
    last report is short of max_t was stopped by ASHA.
    """
    reported, stopped = reported or {}, stopped or {}
    from starray.train.driver import read_history

    trials = []
    for trial_dir in sorted((sweep_dir / "trials").glob("*")):
        params_file = trial_dir / "params.json"
        if not params_file.exists():
            continue
        history = read_history(trial_dir)
        values = [h[spec.metric] for h in history]
        pick = max if spec.mode == "max" else min
        best = pick(values) if values else None
        best_epoch = history[values.index(best)]["epoch"] if values else None
        trials.append({"trial": trial_dir.name, "params": json.loads(params_file.read_text()),
                       "epochs": len(history), "best": best, "best_epoch": best_epoch,
                       "stopped_early": trial_dir.name in stopped
                       or (reported.get(trial_dir.name) or len(history)) < spec.asha["max_t"],
                       "curve": values})
    ranked = [t for t in trials if t["best"] is not None]
    ranked.sort(key=lambda t: t["best"], reverse=spec.mode == "max")
    summary: dict[str, Any] = {"sweep_dir": str(sweep_dir), "metric": spec.metric,
                               "trials": trials, "total_epochs": sum(t["epochs"] for t in trials),
                               "full_epochs": len(trials) * spec.asha["max_t"]}
    if ranked:
        top = ranked[0]
        best_cfg = from_dict(apply_overrides(base.to_dict(), flatten_params(top["params"])))
        best_cfg.name = None
        best_cfg.output_dir = "runs"
        best_cfg.train.epochs = spec.asha["max_t"]
        tmp = sweep_dir / "best_config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
        os.replace(tmp, sweep_dir / "best_config.yaml")
        ckpt = sweep_dir / "trials" / top["trial"] / "checkpoints" / "best.pt"
        if ckpt.exists():  # the trial's best.pt follows train.best_metric = the space's metric
            tmp = sweep_dir / "best_checkpoint.pt.tmp"
            shutil.copy2(ckpt, tmp)
            os.replace(tmp, sweep_dir / "best_checkpoint.pt")
            summary["best_checkpoint_epoch"] = _checkpoint_epoch(ckpt)
            if summary["best_checkpoint_epoch"] != top["best_epoch"]:
                print(f"[starray] warning: {ckpt} is from epoch "
                      f"{summary['best_checkpoint_epoch']}, the best {spec.metric} from epoch "
                      f"{top['best_epoch']}", flush=True)
        summary.update(best_trial=top["trial"], best_value=top["best"],
                       best_config=str(sweep_dir / "best_config.yaml"),
                       best_checkpoint=str(sweep_dir / "best_checkpoint.pt"))
        _plot_curves(trials, spec, sweep_dir / "curves.png")
    summary["table"] = format_table(trials, spec, summary)
    (sweep_dir / "trials.md").write_text(summary["table"] + "\n")
    return summary


def _checkpoint_epoch(path: Path) -> int | None:
    from starray.train.checkpoint import CheckpointError, load_checkpoint

    try:
        return int(load_checkpoint(path)["epoch"])
    except (CheckpointError, KeyError):
        return None


def format_table(trials: list[dict[str, Any]], spec: SweepSpec, summary: dict[str, Any]) -> str:
    """Markdown table of trials, best first."""
    keys = list(spec.space)
    head = ["trial", *keys, "epochs", f"best {spec.metric}", "stopped early"]
    rows = []
    order = sorted(trials, key=lambda t: (t["best"] is None, -(t["best"] or 0)
                                          if spec.mode == "max" else (t["best"] or 0)))
    for t in order:
        vals = [_short(t["params"].get(k)) for k in keys]
        best = f"{t['best']:.4f}" if t["best"] is not None else "-"
        rows.append([t["trial"], *vals, str(t["epochs"]), best,
                     "yes" if t["stopped_early"] else "no"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if summary.get("best_trial"):
        lines += ["", f"best trial {summary['best_trial']}: {spec.metric} "
                      f"{summary['best_value']:.4f}; config {summary['best_config']}",
                  f"epochs run {summary['total_epochs']} of {summary['full_epochs']} "
                  f"({summary['total_epochs'] / max(1, summary['full_epochs']):.0%}) without "
                  "early stopping"]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _plot_curves(trials: list[dict[str, Any]], spec: SweepSpec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in trials:
        if t["curve"]:
            ax.plot(range(1, len(t["curve"]) + 1), t["curve"], marker="o", ms=3,
                    label=t["trial"][-5:])
    ax.set_xlabel("epoch")
    ax.set_ylabel(spec.metric)
    ax.set_title("validation metric per trial (ASHA)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
