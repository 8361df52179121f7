"""From a light curve to model inputs (DESIGN section 3).

clean -> light-curve branch (z-scored, 1024-point uniform grid) -> Lomb-Scargle
periodogram (nifty-ls) reduced to 512 log-period bins keeping peaks -> top-N peak
candidates -> light curve folded at each candidate and binned by phase (200 bins).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LC_LENGTH = 1024
PGRAM_BINS = 512
FOLD_BINS = 200
P_MIN, P_MAX = 0.1, 50.0  # days: the model's period axis
LOGP_LO, LOGP_HI = np.log10(P_MIN), np.log10(P_MAX)


class LightCurveError(ValueError):
    """A light curve cannot be turned into model inputs (too few points, flat, ...)."""


def normalize_period(days: np.ndarray | float) -> np.ndarray:
    """Days -> normalized log10 period in [0, 1] over 0.1-50 d (NaN stays NaN)."""
    return (np.log10(np.asarray(days, dtype=np.float64)) - LOGP_LO) / (LOGP_HI - LOGP_LO)


def denormalize_period(norm: np.ndarray | float) -> np.ndarray:
    """Normalized log10 period -> days."""
    return 10 ** (np.asarray(norm, dtype=np.float64) * (LOGP_HI - LOGP_LO) + LOGP_LO)


@dataclass
class StarFeatures:
    """Model inputs for one star."""

    lc: np.ndarray  # (1024,)
    pgram: np.ndarray  # (512,)
    folded: np.ndarray  # (N, 200)
    cand_days: np.ndarray  # (N,)


def clean(time: np.ndarray, flux: np.ndarray, iqr_k: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Drop non-finite points, sort by time, remove flux outliers beyond ``iqr_k`` x IQR."""
    time = np.asarray(time, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    ok = np.isfinite(time) & np.isfinite(flux)
    time, flux = time[ok], flux[ok]
    order = np.argsort(time, kind="stable")
    time, flux = time[order], flux[order]
    if len(flux) >= 4 and iqr_k > 0:
        q1, q3 = np.percentile(flux, [25, 75])
        iqr = q3 - q1
        if iqr > 0:
            keep = (flux >= q1 - iqr_k * iqr) & (flux <= q3 + iqr_k * iqr)
            time, flux = time[keep], flux[keep]
    return time, flux


def zscore(flux: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (a flat curve stays zero)."""
    sd = flux.std()
    return (flux - flux.mean()) / (sd if sd > 0 else 1.0)


def resample(time: np.ndarray, flux_z: np.ndarray, length: int = LC_LENGTH) -> np.ndarray:
    """Linear interpolation onto a uniform grid spanning the observations."""
    grid = np.linspace(time[0], time[-1], length)
    return np.interp(grid, time, flux_z)


def lomb_scargle(time: np.ndarray, flux_z: np.ndarray, samples_per_peak: int = 10
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Lomb-Scargle power on a uniform frequency grid, periods 0.1 d .. min(2 span, 50) d."""
    import nifty_ls

    span = float(time[-1] - time[0])
    fmax = 1.0 / P_MIN
    fmin = 1.0 / min(2.0 * span, P_MAX)
    df = 1.0 / (samples_per_peak * span)
    nf = int(np.ceil((fmax - fmin) / df)) + 1
    res = nifty_ls.lombscargle(time, flux_z, fmin=fmin, fmax=fmax, Nf=nf,
                               backend="finufft", nthreads=1)
    power = np.nan_to_num(np.asarray(res.power, dtype=np.float64), nan=0.0)
    return res.freq(), np.clip(power, 0.0, None)


_LOG_EDGES = np.linspace(-LOGP_HI, -LOGP_LO, PGRAM_BINS + 1)  # log10 frequency edges


def reduce_peaks(freq: np.ndarray, power: np.ndarray, bins: int = PGRAM_BINS) -> np.ndarray:
    """Max power per log-period bin (keeps narrow peaks), normalized to max 1.

    Bins finer than the frequency grid are filled by interpolation; bins outside the
    searched range are 0. Bin 0 is the longest period (50 d), the last is 0.1 d.
    """
    edges = _LOG_EDGES if bins == PGRAM_BINS else np.linspace(-LOGP_HI, -LOGP_LO, bins + 1)
    idx = np.clip(np.searchsorted(edges, np.log10(freq), side="right") - 1, 0, bins - 1)
    out = np.full(bins, -1.0)
    np.maximum.at(out, idx, power)
    filled = out >= 0
    centers = 0.5 * (edges[1:] + edges[:-1])
    lo, hi = np.log10(freq[0]), np.log10(freq[-1])
    inside = (centers >= lo) & (centers <= hi)
    if filled.any():
        out = np.where(filled, out, np.interp(centers, centers[filled], out[filled]))
    out[~inside & ~filled] = 0.0
    peak = out.max()
    return out / peak if peak > 0 else out


def peak_candidates(freq: np.ndarray, power: np.ndarray, n: int, harmonics: bool = False
                    ) -> np.ndarray:
    """Periods (days) of the ``n`` highest periodogram peaks, refined by a parabola."""
    p = power
    is_peak = np.zeros(len(p), dtype=bool)
    is_peak[1:-1] = (p[1:-1] > p[:-2]) & (p[1:-1] >= p[2:])
    peaks = np.flatnonzero(is_peak)
    if len(peaks) == 0:
        peaks = np.array([int(np.argmax(p))])
    n_peaks = n - 2 if harmonics and n > 2 else n
    top = peaks[np.argsort(p[peaks])[::-1][:n_peaks]]
    periods = []
    for i in top:
        f = freq[i]
        if 0 < i < len(p) - 1:
            denom = p[i - 1] - 2 * p[i] + p[i + 1]
            if denom < 0:
                shift = 0.5 * (p[i - 1] - p[i + 1]) / denom
                f = freq[i] + np.clip(shift, -0.5, 0.5) * (freq[1] - freq[0])
        periods.append(1.0 / f)
    if harmonics and n > 2:
        periods += [periods[0] / 2, periods[0] * 2]
    while len(periods) < n:  # too few peaks: repeat the best one (never random)
        periods.append(periods[0])
    return np.clip(np.array(periods[:n]), P_MIN / 2, P_MAX * 2)


def fold(time: np.ndarray, flux_z: np.ndarray, period: float, bins: int = FOLD_BINS) -> np.ndarray:
    """Mean flux per phase bin at ``period``; empty bins interpolated around the circle."""
    phase = (time / period) % 1.0
    idx = np.minimum((phase * bins).astype(np.int64), bins - 1)
    sums = np.bincount(idx, weights=flux_z, minlength=bins)
    counts = np.bincount(idx, minlength=bins)
    have = counts > 0
    out = np.zeros(bins)
    out[have] = sums[have] / counts[have]
    if not have.all() and have.any():
        x = np.flatnonzero(have)
        xp = np.concatenate([x - bins, x, x + bins])
        fp = np.tile(out[have], 3)
        out[~have] = np.interp(np.flatnonzero(~have), xp, fp)
    return out


def star_features(time: np.ndarray, flux: np.ndarray, n_candidates: int = 4,
                  harmonics: bool = False, min_points: int = 20) -> StarFeatures:
    """All model inputs for one light curve; raises LightCurveError when impossible."""
    t, f = clean(time, flux)
    if len(t) < min_points:
        raise LightCurveError(f"only {len(t)} usable points after cleaning (need {min_points})")
    if t[-1] - t[0] <= 0:
        raise LightCurveError("all points have the same time")
    if not np.ptp(f) > 0:
        raise LightCurveError("flux is constant")
    fz = zscore(f)
    freq, power = lomb_scargle(t, fz)
    cands = peak_candidates(freq, power, n_candidates, harmonics)
    folded = np.stack([fold(t, fz, p) for p in cands])
    return StarFeatures(
        lc=resample(t, fz).astype(np.float32),
        pgram=reduce_peaks(freq, power).astype(np.float32),
        folded=folded.astype(np.float32),
        cand_days=cands.astype(np.float32),
    )
