"""Training labels derived from a star's true periods and its candidates."""

from __future__ import annotations

import numpy as np


def candidate_match(cand_days: np.ndarray, p1_days: np.ndarray, tol: float = 0.01
                    ) -> np.ndarray:
    """Which candidates match the true primary period, in log space.

    Parameters
    ----------
    cand_days : array (B, C)
        Candidate periods in days.
    p1_days : array (B,)
        True primary period in days; NaN where the star has none.
    tol : float
        Relative tolerance: candidate ``j`` matches when ``|log(cand / p1)| <= log(1 + tol)``.

    Returns
    -------
    array (B, C) float32
        1.0 where candidate ``j`` matches, 0.0 elsewhere (all 0 for stars without a period).

    Examples
    --------
    >>> candidate_match(np.array([[1.0, 2.0, 2.015]]), np.array([2.0])).tolist()
    [[0.0, 1.0, 1.0]]
    """
    if tol <= 0:
        raise ValueError(f"tol: must be > 0, got {tol}")
    cand = np.asarray(cand_days, dtype=np.float64)
    p1 = np.asarray(p1_days, dtype=np.float64)
    if cand.ndim != 2 or p1.shape != cand.shape[:1]:
        raise ValueError(f"cand_days must be (B, C) and p1_days (B,); got {cand.shape} and "
                         f"{p1.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.abs(np.log(cand / p1[:, None]))
    return (np.isfinite(dist) & (dist <= np.log1p(tol) + 1e-12)).astype(np.float32)
