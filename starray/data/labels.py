"""Training targets derived from the candidates."""

from __future__ import annotations

import numpy as np


def candidate_match(cand_days: np.ndarray, p1_days: np.ndarray, tol: float = 0.01) -> np.ndarray:
    """1.0 where candidate j of star i is within ``tol`` of the true primary period in log
    space (|log(cand / p1)| <= log(1 + tol)), else 0; all 0 for a star without a primary
    (NaN). ``cand_days`` (B, C), ``p1_days`` (B,) -> (B, C) float32."""
    cand = np.asarray(cand_days, dtype=np.float64)
    p1 = np.asarray(p1_days, dtype=np.float64)
    if cand.ndim != 2 or p1.shape != cand.shape[:1]:
        raise ValueError(f"cand_days (B, C) and p1_days (B,): got shapes {cand.shape}, "
                         f"{p1.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.abs(np.log(cand / p1[:, None]))
    return (dist <= np.log1p(tol)).astype(np.float32)  # NaN compares False
