"""Report figures (matplotlib, Agg backend: no display needed).

Each function writes one PNG and returns its path; nothing here computes metrics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 120


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # tight: no label is cut off
    plt.close(fig)
    return path


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                   title: str = "Confusion matrix (row-normalized)") -> Path:
    """Row-normalized confusion matrix (true class per row) with counts annotated."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.62 * n + 3.5, 0.55 * n + 2.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="fraction of true class")
    return _save(fig, path)


def plot_recall(recall: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                support: np.ndarray | None = None, accuracy: float | None = None) -> Path:
    """Horizontal per-class recall bars (long class names stay readable)."""
    recall = np.asarray(recall, dtype=float)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * n + 1.5))
    y = np.arange(n)
    ax.barh(y, recall, color="tab:blue")
    ax.set_yticks(y, class_names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("recall")
    for i, r in enumerate(recall):
        label = f"{r:.2f}" + (f" (n={int(support[i])})" if support is not None else "")
        ax.text(min(r, 1.0) + 0.01, i, label, va="center", fontsize=8)
    ax.axvline(1.0 / max(n, 1), color="gray", ls=":", lw=1, label=f"chance (1/{n})")
    if accuracy is not None:
        ax.axvline(accuracy, color="tab:red", ls="--", lw=1,
                   label=f"overall accuracy {accuracy:.3f}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=8,
              frameon=False)  # below the axis: never over a bar label
    ax.set_title("Per-class recall")
    return _save(fig, path)


def plot_periods(true_days: np.ndarray, reg_days: np.ndarray, chosen_days: np.ndarray,
                 path: str | os.PathLike) -> Path:
    """Predicted vs true primary period on log-log axes: regression head and chosen candidate."""
    true_days = np.asarray(true_days, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    for ax, pred, title in ((axes[0], reg_days, "regression head (p1)"),
                            (axes[1], chosen_days, "chosen candidate (top weight)")):
        pred = np.asarray(pred, dtype=float)
        ok = np.isfinite(true_days) & np.isfinite(pred) & (true_days > 0) & (pred > 0)
        ax.scatter(true_days[ok], pred[ok], s=6, alpha=0.5, color="tab:blue", lw=0)
        lo = 0.05
        hi = max(100.0, float(np.nanmax(pred[ok])) * 1.2 if ok.any() else 100.0)
        grid = np.array([lo, hi])
        ax.plot(grid, grid, color="black", lw=1, label="1:1")
        ax.fill_between(grid, grid * 0.95, grid * 1.05, color="tab:green", alpha=0.2,
                        label="±5%")
        for k, style in ((2.0, "--"), (0.5, ":")):
            ax.plot(grid, grid * k, color="gray", lw=0.8, ls=style, label=f"{k:g}× (alias)")
        within = np.abs(pred[ok] / true_days[ok] - 1) <= 0.05
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("true primary period (days)")
        ax.set_title(f"{title}: {within.mean() if ok.any() else float('nan'):.1%} within 5% "
                     f"(n={int(ok.sum())})", fontsize=10)
        ax.grid(True, which="both", alpha=0.2)
    axes[0].set_ylabel("predicted period (days)")
    axes[0].legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_folded(time: np.ndarray, flux: np.ndarray, period: float, path: str | os.PathLike,
                title: str = "", bins: int = 50) -> Path:
    """Light curve folded at ``period`` (two cycles) with the phase-binned mean."""
    time = np.asarray(time, dtype=float)
    flux = np.asarray(flux, dtype=float)
    ok = np.isfinite(time) & np.isfinite(flux)
    time, flux = time[ok], flux[ok]
    phase = ((time - time.min()) / period) % 1.0
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for shift in (0.0, 1.0):
        ax.scatter(phase + shift, flux, s=3, alpha=0.35, color="tab:blue", lw=0)
    idx = np.minimum((phase * bins).astype(int), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sums = np.bincount(idx, weights=flux, minlength=bins)
    have = counts > 0
    centers = (np.arange(bins) + 0.5) / bins
    mean = np.where(have, sums / np.maximum(counts, 1), np.nan)
    for shift in (0.0, 1.0):
        ax.plot(centers[have] + shift, mean[have], color="tab:red", lw=1.5,
                label="binned mean" if shift == 0 else None)
    ax.set_xlim(0, 2)
    ax.set_xlabel(f"phase (period {period:.5g} d)")
    ax.set_ylabel("flux")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Training curves per epoch: losses, validation accuracy, learning rate, throughput.

    ``history`` holds metrics.jsonl rows (``epoch`` counted from 0; shown from 1).
    """
    rows = sorted(history, key=lambda r: r["epoch"])
    epoch = np.array([r["epoch"] + 1 for r in rows], dtype=float)

    def col(key: str) -> np.ndarray:
        return np.array([r.get(key, np.nan) for r in rows], dtype=float)

    mark = {"marker": "o", "ms": 3.5} if len(rows) <= 40 else {}
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
    (ax_loss, ax_acc), (ax_lr, ax_rate) = axes
    ax_loss.plot(epoch, col("train_loss"), color="tab:blue", label="train", **mark)
    ax_loss.plot(epoch, col("val_loss"), color="tab:orange", label="validation", **mark)
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss (class + period + candidate terms)", fontsize=10)
    ax_loss.legend(fontsize=8, frameon=False)

    acc = col("val_acc")
    ax_acc.plot(epoch, acc, color="tab:green", label="val accuracy", **mark)
    cand = col("val_cand_within_1pct")
    if np.isfinite(cand).any():
        ax_acc.plot(epoch, cand, color="tab:purple", ls="--", lw=1.2,
                    label="best candidate within 1%", **mark)
    if np.isfinite(acc).any():
        best = int(np.nanargmax(acc))
        ax_acc.annotate(f"best {acc[best]:.3f} (epoch {epoch[best]:.0f})",
                        (epoch[best], acc[best]), xytext=(0, 8), textcoords="offset points",
                        ha="center", fontsize=8)
        ax_acc.set_ylim(0, min(1.0, max(0.1, float(np.nanmax(acc)) * 1.2)))
    ax_acc.axhline(1 / 14, color="gray", ls=":", lw=1, label="chance (1/14)")
    ax_acc.set_ylabel("fraction")
    ax_acc.set_title("validation", fontsize=10)
    ax_acc.legend(fontsize=8, frameon=False, loc="lower right")

    lr = col("lr")
    ax_lr.plot(epoch, lr, color="tab:red", **mark)
    if np.all(lr[np.isfinite(lr)] > 0):
        ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate (end of epoch)")
    ax_lr.set_title("learning rate", fontsize=10)

    ax_rate.plot(epoch, col("samples_per_s"), color="tab:gray", **mark)
    ax_rate.set_ylim(bottom=0)
    ax_rate.set_ylabel("samples/s (all workers)")
    ax_rate.set_title("training throughput", fontsize=10)
    for ax in axes.flat:
        ax.grid(True, alpha=0.25)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    if len(epoch):
        ax_loss.set_xlim(0.5, max(epoch.max(), 1) + 0.5)
    if title:
        fig.suptitle(f"{title}: {len(rows)} epoch(s)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
