"""From light curves to model inputs (DESIGN section 3), batch-first.

clean -> light-curve branch (z-scored, 1024-point uniform grid) -> Lomb-Scargle
periodogram reduced to 512 log-period bins keeping peaks -> candidate periods (top-N
peaks, + P/2 and 2P of the best and the harmonic-sum search's period and twice it with
``harmonics``: :mod:`starray.data.candidates`) -> light curve folded at each candidate
and binned by phase (200 bins). :func:`batch_features` does it for many stars sharing one
time axis (no loop over stars); :func:`star_features` is the same code for one real light
curve.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass

import numpy as np

from starray.data.candidates import candidate_periods, n_candidates_total
from starray.data.cleaning import clean  # noqa: F401 - re-exported: predict/inspect use it
from starray.data.periodogram import (
    P_MAX,
    P_MIN,
    freq_grid,
    lomb_scargle_batch,
    reduce_batch,
    reduce_plan,
)

LC_LENGTH = 1024
FOLD_STATS = ("theta", "half_corr")  # per-candidate fold statistics (fold_stats)
PGRAM_BINS = 512
FOLD_BINS = 200
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
    """Candidates per star: the N peaks, plus P/2 and 2P of the best and the harmonic-sum
    search's period and twice it with ``harmonics``."""
    return n_candidates_total(n_candidates, harmonics)


@dataclass
class StarFeatures:
    """Model inputs for one star."""

    lc: np.ndarray  # (1024,)
    pgram: np.ndarray  # (512,)
    folded: np.ndarray  # (C, 200)
    cand_days: np.ndarray  # (C,)
    cand_stats: np.ndarray  # (C, 2): each fold's FOLD_STATS (see fold_stats)


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
    (B, C, bins); empty bins interpolated around the circle."""
    return fold_stats(time, flux_z, periods, bins)[0]


def fold_stats(time: np.ndarray, flux_z: np.ndarray, periods: np.ndarray,
               bins: int = FOLD_BINS) -> tuple[np.ndarray, np.ndarray]:
    """The folds of :func:`fold_batch` (B, C, bins) and two statistics of each fold,
    (B, C, 2) in the order of :data:`FOLD_STATS`:

    - ``theta``, the phase dispersion: the flux variance left within the phase bins over
      the light curve's variance (Stellingwerf's PDM statistic; ~1 for a period that
      folds nothing, small where the fold explains the curve). At P/2 an eclipsing
      binary's unlike eclipses share one phase: the bin means blend them, the scatter
      within the bins does not (theta is lower at P for 95% of the synthetic binaries
      with both candidates). Free beyond the fold: sum(y^2) - sum_bins S^2 / n.
    - ``half_corr``, the fold's correlation with itself shifted by half a phase: two
      alike eclipses per cycle give ~1 at P and < 0 at P/2 (one dip), where theta cannot
      tell them apart (the curve is then P/2-periodic); a sinusoid gives -1 at P.

    For either the network could learn the statistic from the 200 bin means, but a
    small model on a short budget does not (its wrong eclipsing-binary choices were
    P/2 with the half correlation of P higher in 32 of 33).

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
    explained = (total * out).sum(axis=1).reshape(b, c)  # sum_bins S^2 / n
    sum_sq = (flux_z.astype(np.float64) ** 2).sum(axis=1)  # (B,)
    ss = sum_sq - flux_z.sum(axis=1) ** 2 / m  # about the mean
    dof_within = np.maximum(m - have.sum(axis=1).reshape(b, c), 1)
    within = np.maximum(sum_sq[:, None] - explained, 0.0) / dof_within
    theta = within / np.where(ss > 0, ss / max(m - 1, 1), 1.0)[:, None]
    if not have.all():
        _fill_circular(out, have)
    centered = out - out.mean(axis=1, keepdims=True)
    shifted = np.roll(centered, bins // 2, axis=1)
    norm = np.sqrt((centered * centered).sum(axis=1) * (shifted * shifted).sum(axis=1))
    half = ((centered * shifted).sum(axis=1) / np.where(norm > 0, norm, 1.0)).reshape(b, c)
    return out.reshape(b, c, bins), np.stack([theta, half], axis=2)


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

    Returns ``lc`` (B, 1024), ``pgram`` (B, 512), ``folded`` (B, C, 200), ``cand_days``
    (B, C) and ``cand_stats`` (B, C, 2) (each fold's :data:`FOLD_STATS`), float32,
    C = :func:`n_total_candidates`.
    """
    lap = timer.lap if timer else (lambda _stage: None)
    fz = zscore(flux)
    grid = freq_grid(float(time[-1] - time[0]))
    power = lomb_scargle_batch(time, fz, grid, single=single)
    lap("periodogram")
    freq = grid.freq
    pgram = reduce_batch(power, reduce_plan(freq, PGRAM_BINS))
    lap("reduce")
    cands = candidate_periods(time, fz, power, grid, n_candidates, harmonics)
    lap("candidates")
    folded, stats = fold_stats(time, fz, cands)
    lap("folds")
    lc = resample(time, fz)
    lap("resample")
    return {"lc": lc.astype(np.float32), "pgram": pgram.astype(np.float32),
            "folded": folded.astype(np.float32), "cand_days": cands.astype(np.float32),
            "cand_stats": stats.astype(np.float32)}


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
                        cand_days=out["cand_days"][0], cand_stats=out["cand_stats"][0])


# ------------------------------------------------- one-star helpers (tests, inspection)
def lomb_scargle(time: np.ndarray, flux_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (1/day) and Lomb-Scargle power of one light curve (DESIGN grid)."""
    grid = freq_grid(float(time[-1] - time[0]))
    return grid.freq, lomb_scargle_batch(time, flux_z, grid, single=False)[0]


def reduce_peaks(freq: np.ndarray, power: np.ndarray, bins: int = PGRAM_BINS) -> np.ndarray:
    """Max power per log-period bin of one periodogram, normalized to max 1."""
    return reduce_batch(np.asarray(power)[None, :], reduce_plan(freq, bins))[0]


def fold(time: np.ndarray, flux_z: np.ndarray, period: float, bins: int = FOLD_BINS
         ) -> np.ndarray:
    """Mean flux per phase bin of one light curve at ``period``."""
    return fold_batch(time, np.asarray(flux_z)[None, :], np.array([[period]]), bins)[0, 0]
