"""report.md: the evaluation metrics as tables a person can read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    if pct:
        return f"{100 * x:.1f}%"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def write_report(metrics: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Human-readable ``report.md`` from the metrics dict."""
    m = metrics
    p = m["periods"]
    b = m["benchmark"]
    lines = [
        "# starray evaluation report", "",
        f"- checkpoint: `{m['checkpoint']}` (epoch {m['epoch']})",
        f"- model: {m['parameters']:,} parameters, dims "
        + ", ".join(f"{k}={v}" for k, v in m["model_dims"].items()),
        f"- benchmark: {m['n_stars']} synthetic stars ({b['per_class']} per class, seed "
        f"{b['seed']}, {b['n_candidates']} candidates, harmonics {b['harmonics']}), "
        f"{b['redraws']} synthetic redraws",
        "", "## Summary", "",
        "| metric | value |", "|---|---|",
        f"| accuracy | {_fmt(m['accuracy'], True)} |",
        f"| macro precision | {_fmt(m['macro_precision'], True)} |",
        f"| macro recall | {_fmt(m['macro_recall'], True)} |",
        f"| macro F1 | {_fmt(m['macro_f1'], True)} |",
    ]
    if m.get("baseline"):
        bl = m["baseline"]
        c0 = m["periods"]["candidates"]
        lines += [
            "", "## Against the feature baseline", "",
            f"Gradient-boosted trees on {bl.get('n_features', '?')} light-curve features, "
            f"trained on {bl.get('n_train', '?')} stars (`benchmarks/feature_baseline.py`).",
            "", "| model | accuracy | macro F1 | period within 1% | chosen when some is right |",
            "|---|---|---|---|---|",
            f"| this checkpoint | {_fmt(m['accuracy'], True)} | {_fmt(m['macro_f1'], True)} | "
            f"{_fmt(p['regression']['within_1pct'], True)} | "
            f"{_fmt(c0['chosen_given_any'], True)} |",
            f"| feature baseline | {_fmt(bl['accuracy'], True)} | {_fmt(bl['macro_f1'], True)} "
            f"| {_fmt(bl['period_within_1pct'], True)} | {_fmt(bl['chosen_given_any'], True)} |",
        ]
    lines += [        "", "## Primary period", "",
        f"Stars with a true primary period: {p['regression']['n']}. The model's period "
        "(p1) is the chosen candidate refined (candidate head) or a regressed value (regress "
        "head); the reported period is p1, none where the predicted class has no period.", "",
        "| predictor | within 1% | within 5% | median relative error |", "|---|---|---|---|",
    ]
    for key, label in (("regression", "model period (p1)"),
                       ("reported", "reported period (p1; none if the class is aperiodic)"),
                       ("chosen", "chosen candidate (top weight)")):
        if key not in p:
            continue
        q = p[key]
        lines.append(f"| {label} | {_fmt(q['within_1pct'], True)} | "
                     f"{_fmt(q['within_5pct'], True)} | {_fmt(q['median_rel_err'])} |")
    c = p["candidates"]
    lines += [
        "",
        f"Top-weighted candidate within {c['tol']:.0%} of the true period: "
        f"{_fmt(c['chosen_within_tol'], True)}; any candidate within {c['tol']:.0%}: "
        f"{_fmt(c['any_within_tol'], True)}; top-weighted when any is: "
        f"{_fmt(c['chosen_given_any'], True)}.",
        "", "## Per class", "",
        "Period columns show – where the class has no period. \"some right\": some "
        "candidate within 1%; \"chosen if some\": the top-weighted candidate is right "
        "where some candidate is.", "",
        "| class | n | precision | recall | F1 | periodic | p1 ≤1% | p1 ≤5% | chosen ≤1% "
        "| chosen ≤5% | some right | chosen if some | chosen median rel. err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in m["per_class"]:
        lines.append(
            f"| {r['class']} | {r['support']} | {_fmt(r['precision'], True)} | "
            f"{_fmt(r['recall'], True)} | {_fmt(r['f1'], True)} | {r['n_periodic']} | "
            f"{_fmt(r['p1_within_1pct'], True)} | {_fmt(r['p1_within_5pct'], True)} | "
            f"{_fmt(r['chosen_within_1pct'], True)} | {_fmt(r['chosen_within_5pct'], True)} | "
            f"{_fmt(r.get('any_candidate_within_1pct'), True)} | "
            f"{_fmt(r.get('chosen_given_any'), True)} | "
            f"{_fmt(r['chosen_median_rel_err'])} |")
    s = m["speed"]
    lines += ["", "## Speed and memory", "", "| device | batch-1 latency | throughput |",
              "|---|---|---|"]
    for dev in ("cpu", "cuda"):
        if dev in s:
            d = s[dev]
            name = f"{dev} ({d['device_name']})" if "device_name" in d else dev
            lines.append(f"| {name} | {d['latency_batch1_ms']:.2f} ms | "
                         f"{d['throughput_samples_per_s']:.0f} samples/s at batch "
                         f"{d['throughput_batch']} |")
    lines += ["", f"- peak RSS: {s['peak_rss_mib']:.0f} MiB"]
    if "cuda" in s:
        lines.append(f"- peak GPU memory allocated: {s['cuda']['peak_memory_mib']:.0f} MiB")
    lines.append(f"- CPU threads: {s['torch_threads']}; evaluation pass {s['eval_seconds']:.2f}"
                 f" s ({s['eval_samples_per_s']:.0f} samples/s)")
    nf = m["non_finite_outputs"]
    lines += ["", "## Output checks", "",
              "NaN/Inf values in outputs: " + ", ".join(f"{k} {v}" for k, v in nf.items()),
              "", "## Figures", "", "![confusion](confusion.png)", "",
              "![recall](recall.png)", "", "![periods](periods.png)", ""]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines))
    return path
