"""Training plots: confusion matrix and predicted vs. true period (PNG, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, int), np.asarray(preds, int)), 1)
    return cm


def confusion_png(labels: np.ndarray, preds: np.ndarray, names: tuple[str, ...] | list[str],
                  path: Path) -> np.ndarray:
    """Row-normalized confusion matrix with counts; returns the count matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = confusion_matrix(labels, preds, len(names))
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if cm[i, j]:
                ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.1%})")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return cm


def period_png(true_days: np.ndarray, head_days: np.ndarray, chosen_days: np.ndarray,
               path: Path) -> None:
    """Log-log scatter of the regression head and the chosen candidate vs. the true period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = np.isfinite(true_days)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(true_days[ok], head_days[ok], s=6, alpha=0.5, label="regression head")
    ax.scatter(true_days[ok], chosen_days[ok], s=6, alpha=0.5, label="chosen candidate")
    ax.plot([0.05, 100], [0.05, 100], "k--", lw=0.8, label="exact")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.05, 100)
    ax.set_ylim(0.05, 100)
    ax.set_xlabel("true primary period (days)")
    ax.set_ylabel("predicted period (days)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
