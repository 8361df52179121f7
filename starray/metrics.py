"""Metrics of a classifier with period outputs: small pure functions on numpy arrays."""

from __future__ import annotations

import numpy as np

TOLERANCES = (0.01, 0.05)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name}: labels must be in 0..{n_classes - 1}")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes)


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix.

    A class never predicted has precision 0; a class with no true stars has recall 0
    (and support 0, so macro averages should weight by support or skip it).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    pred_n = cm.sum(axis=0)
    true_n = cm.sum(axis=1)
    precision = np.divide(tp, pred_n, out=np.zeros_like(tp), where=pred_n > 0)
    recall = np.divide(tp, true_n, out=np.zeros_like(tp), where=true_n > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1,
            "support": true_n.astype(np.int64)}


def relative_error(true_days: np.ndarray, pred_days: np.ndarray) -> np.ndarray:
    """|pred - true| / true (NaN where either is missing)."""
    true_days = np.asarray(true_days, dtype=np.float64)
    pred_days = np.asarray(pred_days, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(pred_days - true_days) / true_days


def period_quality(true_days: np.ndarray, pred_days: np.ndarray,
                   tolerances: tuple[float, ...] = TOLERANCES) -> dict[str, float]:
    """Fractions of stars with a true period whose prediction is within each tolerance.

    Stars whose true period is NaN (no such period) are left out; a NaN prediction for a
    star with a period counts as a miss. Returns ``n``, ``within_1pct``, ``within_5pct``
    (for the default tolerances) and ``median_rel_err`` (NaN when ``n`` is 0).
    """
    true_days = np.asarray(true_days, dtype=np.float64)
    has = np.isfinite(true_days) & (true_days > 0)
    rel = relative_error(true_days[has], np.asarray(pred_days, dtype=np.float64)[has])
    rel = np.where(np.isfinite(rel), rel, np.inf)
    n = int(has.sum())
    out: dict[str, float] = {"n": n}
    for tol in tolerances:
        out[f"within_{tol * 100:g}pct"] = float((rel <= tol).mean()) if n else float("nan")
    out["median_rel_err"] = float(np.median(rel)) if n else float("nan")
    return out


def candidate_quality(true_days: np.ndarray, cand_days: np.ndarray, chosen_index: np.ndarray,
                      tol: float = 0.01) -> dict[str, float]:
    """How often the top-weighted candidate, and any candidate, is within ``tol`` of the truth.

    ``chosen_given_any`` is the attention's hit rate where the periodogram offered the
    right period at all (NaN if it never did).
    """
    true_days = np.asarray(true_days, dtype=np.float64)
    cand_days = np.asarray(cand_days, dtype=np.float64)
    has = np.isfinite(true_days) & (true_days > 0)
    rel = relative_error(true_days[has, None], cand_days[has])
    hit = rel <= tol  # (n, N)
    chosen = hit[np.arange(int(has.sum())), np.asarray(chosen_index)[has]]
    anyhit = hit.any(axis=1)
    n = int(has.sum())
    nan = float("nan")
    return {
        "n": n,
        "chosen_within_tol": float(chosen.mean()) if n else nan,
        "any_within_tol": float(anyhit.mean()) if n else nan,
        "chosen_given_any": float(chosen[anyhit].mean()) if anyhit.any() else nan,
        "tol": tol,
    }


def non_finite_counts(preds: dict[str, np.ndarray]) -> dict[str, int]:
    """Number of NaN/Inf values in each model output."""
    keys = ("probs", "p1_days", "p2_days", "cand_weights")
    return {k: int(np.size(preds[k]) - np.count_nonzero(np.isfinite(preds[k]))) for k in keys}


# ----------------------------------------------------------------------------- benchmark
