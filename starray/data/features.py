"""From light curves to model inputs (DESIGN section 3), batch-first.

clean -> light-curve branch (z-scored, 1024-point uniform grid) -> Lomb-Scargle
periodogram reduced to 512 log-period bins keeping peaks -> top-N peak candidates (+ P/2,
2P and 4P of the best with ``harmonics``, 2P and 4P refined by their harmonic sum) ->
light curve folded at each candidate and binned by phase (200 bins). :func:`batch_features`
does it for many stars sharing one time axis (no loop over stars); :func:`star_features` is
the same code for one real light curve.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass

import numpy as np

from starray.data.cleaning import clean  # noqa: F401 - re-exported: predict/inspect use it
from starray.data.periodogram import (
    HARMONICS,
    P_MAX,
    P_MIN,
    freq_grid,
    harmonic_sum_refine,
    lomb_scargle_batch,
    peak_periods,
    reduce_batch,
    reduce_plan,
    refine_peak,
)

LC_LENGTH = 1024
PGRAM_BINS = 512
FOLD_BINS = 200
REFINE_STEP = 0.01  # refine the best peak where the grid step exceeds 1% of its frequency
LOGP_LO, LOGP_HI = np.log10(P_MIN), np.log10(P_MAX)


class LightCurveError(ValueError):
    """A light curve cannot be turned into model inputs (too few points, flat, ...)."""


def normalize_period(days: np.ndarray | float) -> np.ndarray:
    """Days -> normalized log10 period in [0, 1] over 0.1-50 d (NaN stays NaN)."""
    return (np.log10(np.asarray(days, dtype=np.float64)) - LOGP_LO) / (LOGP_HI - LOGP_LO)


def denormalize_period(norm: np.ndarray | float) -> np.ndarray:
    """Normalized log10 period -> days."""
    return 10 ** (np.asarray(norm, dtype=np.float64) * (LOGP_HI - LOGP_LO) + LOGP_LO)


def n_total_candidates(n_candidates: int, harmonics: bool) -> int:
    """Candidates per star: the N peaks, plus P/2, 2P and 4P of the best with harmonics."""
    return n_candidates + (len(HARMONICS) if harmonics else 0)


@dataclass
class StarFeatures:
    """Model inputs for one star."""

    lc: np.ndarray  # (1024,)
    pgram: np.ndarray  # (512,)
    folded: np.ndarray  # (C, 200)
    cand_days: np.ndarray  # (C,)


def zscore(flux: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance along the last axis (a flat curve stays zero)."""
    flux = np.asarray(flux, dtype=np.float64)
    sd = flux.std(axis=-1, keepdims=True)
    return (flux - flux.mean(axis=-1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def resample(time: np.ndarray, flux_z: np.ndarray, length: int = LC_LENGTH) -> np.ndarray:
    """Linear interpolation of each row of ``flux_z`` (..., M) onto a uniform grid of
    ``length`` points spanning the shared times ``time`` (M,)."""
    grid = np.linspace(time[0], time[-1], length)
    hi = np.clip(np.searchsorted(time, grid, side="right"), 1, len(time) - 1)
    lo = hi - 1
    gap = time[hi] - time[lo]
    w = np.clip((grid - time[lo]) / np.where(gap > 0, gap, 1.0), 0.0, 1.0)
    return flux_z[..., lo] * (1 - w) + flux_z[..., hi] * w


def fold_batch(time: np.ndarray, flux_z: np.ndarray, periods: np.ndarray,
               bins: int = FOLD_BINS) -> np.ndarray:
    """Mean flux per phase bin of each star (B, M) at each of its periods (B, C):
    (B, C, bins); empty bins interpolated around the circle.

    One weighted bincount per candidate slot (a loop over the C slots, each over all
    stars, keeps the working set in cache) gives both sums and counts: the weights are
    flux + K with K a power of two far above any partial sum, so a bin's total is
    S + K n, n = round(total / K) (exact) and S = total - K n.
    """
    b, c = periods.shape
    m = len(time)
    span = float(time[-1] - time[0])
    # float32 phases when they are exact enough (< 1024 cycles: < 0.03 bin of rounding)
    real = np.float32 if span / max(float(periods.min()), 1e-12) < 1024 else np.float64
    magic = real(1.5 * 2.0 ** (23 if real is np.float32 else 52))  # x + magic - magic: round
    since = (time - time[0]).astype(real)
    big = 2.0 ** np.ceil(np.log2(4.0 * m * (np.abs(flux_z).max() + 1.0)))
    weights = (flux_z + big).ravel()
    row_start = (np.arange(b, dtype=np.int64) * bins)[:, None]
    total = np.empty((b, c, bins))
    for j in range(c):
        phase = np.multiply.outer((1.0 / periods[:, j]).astype(real), since)  # cycles
        phase += real(0.5)
        whole = phase + magic
        whole -= magic
        phase -= whole  # phase - 1/2 in [-1/2, 1/2)
        phase *= real(bins * (1 - 2.0 ** -20))
        phase += real(0.5 * bins)
        idx = phase.astype(np.int32 if real is np.float32 else np.int64) + row_start
        total[:, j] = np.bincount(idx.ravel(), weights=weights,
                                  minlength=b * bins).reshape(b, bins)
    total = total.reshape(b * c, bins)
    counts = np.rint(total / big)
    total -= counts * big
    out = total / np.maximum(counts, 1.0)
    have = counts > 0
    if not have.all():
        _fill_circular(out, have)
    return out.reshape(b, c, bins)


def _fill_circular(out: np.ndarray, have: np.ndarray) -> None:
    """In place: linear interpolation of empty bins from the nearest filled bins on each
    side, around the circle (rows with no filled bin stay 0). Works on the flattened
    positions of the empty bins only (one searchsorted), no loop over rows."""
    rows, bins = out.shape
    flat_have = have.ravel()
    full = np.flatnonzero(flat_have)
    empty = np.flatnonzero(~flat_have)
    if len(full) == 0:
        out[:] = 0.0
        return
    row = empty // bins
    base = row * bins
    k = np.searchsorted(full, empty)
    # first and last filled bin of each row (valid where the row has any)
    row_first = full[np.minimum(np.searchsorted(full, np.arange(rows) * bins), len(full) - 1)]
    row_last = full[np.maximum(np.searchsorted(full, np.arange(1, rows + 1) * bins) - 1, 0)]
    has_any = (row_first // bins == np.arange(rows)) & (row_first <= row_last)
    left = full[np.maximum(k - 1, 0)]
    left = np.where((k > 0) & (left >= base), left, row_last[row] - bins)  # wrap
    right = full[np.minimum(k, len(full) - 1)]
    right = np.where((k < len(full)) & (right < base + bins), right, row_first[row] + bins)
    flat = out.ravel()
    lv = flat[np.where(left >= base, left, left + bins)]
    rv = flat[np.where(right < base + bins, right, right - bins)]
    w = (empty - left) / np.maximum(right - left, 1)
    flat[empty] = np.where(has_any[row], lv + (rv - lv) * w, 0.0)


class StageTimer:
    """Accumulated seconds per named stage (the benchmark's per-stage shares)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = _time.process_time()

    def lap(self, stage: str) -> None:
        now = _time.process_time()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now

    def restart(self) -> None:
        self._t = _time.process_time()


def batch_features(time: np.ndarray, flux: np.ndarray, n_candidates: int = 4,
                   harmonics: bool = True, timer: StageTimer | None = None,
                   single: bool | None = None) -> dict[str, np.ndarray]:
    """Model inputs of stars (B, M) sharing the cleaned, sorted times ``time`` (M,).
    ``single``: float32 periodogram sums (see :func:`lomb_scargle_batch`).

    Returns ``lc`` (B, 1024), ``pgram`` (B, 512), ``folded`` (B, C, 200) and
    ``cand_days`` (B, C), float32, C = :func:`n_total_candidates`.
    """
    lap = timer.lap if timer else (lambda _stage: None)
    fz = zscore(flux)
    grid = freq_grid(float(time[-1] - time[0]))
    power = lomb_scargle_batch(time, fz, grid, single=single)
    lap("periodogram")
    freq = grid.freq
    pgram = reduce_batch(power, reduce_plan(freq, PGRAM_BINS))
    lap("reduce")
    cands = peak_periods(freq, power, n_candidates, harmonics=False)
    coarse = np.flatnonzero(grid.df * cands[:, 0] > REFINE_STEP)  # grid step > 1% of f
    if len(coarse):
        cands[coarse, 0] = 1.0 / refine_peak(time, fz[coarse], 1.0 / cands[coarse, 0], grid.df)
    if harmonics:  # multiples above 1 refined by their harmonic sum (eclipses: many)
        extra = [cands[:, :1] * k if k <= 1 else
                 1.0 / harmonic_sum_refine(power, grid, 1.0 / (cands[:, 0] * k))[:, None]
                 for k in HARMONICS]
        cands = np.concatenate([cands] + extra, axis=1)
    cands = np.clip(cands, P_MIN / 2, P_MAX * 2)
    lap("candidates")
    folded = fold_batch(time, fz, cands)
    lap("folds")
    lc = resample(time, fz)
    lap("resample")
    return {"lc": lc.astype(np.float32), "pgram": pgram.astype(np.float32),
            "folded": folded.astype(np.float32), "cand_days": cands.astype(np.float32)}


def check_light_curve(time: np.ndarray, flux: np.ndarray, min_points: int = 20) -> None:
    """Raise LightCurveError when a cleaned light curve cannot become model inputs."""
    if len(time) < min_points:
        raise LightCurveError(f"only {len(time)} usable points after cleaning "
                              f"(need {min_points})")
    if time[-1] - time[0] <= 0:
        raise LightCurveError("all points have the same time")
    if not np.ptp(flux) > 0:
        raise LightCurveError("flux is constant")
    if 2.0 * (time[-1] - time[0]) <= 2.0 * P_MIN:
        raise LightCurveError(f"spans {time[-1] - time[0]:.3g} d; the period search needs "
                              f"more than {P_MIN:g} d")


def star_features(time: np.ndarray, flux: np.ndarray, n_candidates: int = 4,
                  harmonics: bool = True, min_points: int = 20,
                  clip_sigma: float | None = None) -> StarFeatures:
    """All model inputs for one light curve; raises LightCurveError when impossible."""
    t, f = clean(time, flux, clip_sigma)
    check_light_curve(t, f, min_points)
    out = batch_features(t, f[None, :], n_candidates, harmonics, single=False)  # exact
    return StarFeatures(lc=out["lc"][0], pgram=out["pgram"][0], folded=out["folded"][0],
                        cand_days=out["cand_days"][0])


# ------------------------------------------------- one-star helpers (tests, inspection)
def lomb_scargle(time: np.ndarray, flux_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (1/day) and Lomb-Scargle power of one light curve (DESIGN grid)."""
    grid = freq_grid(float(time[-1] - time[0]))
    return grid.freq, lomb_scargle_batch(time, flux_z, grid, single=False)[0]


def reduce_peaks(freq: np.ndarray, power: np.ndarray, bins: int = PGRAM_BINS) -> np.ndarray:
    """Max power per log-period bin of one periodogram, normalized to max 1."""
    return reduce_batch(np.asarray(power)[None, :], reduce_plan(freq, bins))[0]


def peak_candidates(freq: np.ndarray, power: np.ndarray, n: int, harmonics: bool = True
                    ) -> np.ndarray:
    """Candidate periods (days) of one periodogram: n peaks (+ P/2, 2P, 4P with harmonics)."""
    return peak_periods(freq, np.asarray(power)[None, :], n, harmonics)[0]


def fold(time: np.ndarray, flux_z: np.ndarray, period: float, bins: int = FOLD_BINS
         ) -> np.ndarray:
    """Mean flux per phase bin of one light curve at ``period``."""
    return fold_batch(time, np.asarray(flux_z)[None, :], np.array([[period]]), bins)[0, 0]
