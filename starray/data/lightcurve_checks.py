"""Checks on a real light curve before it goes to the model.

Two kinds:

- **Resource limits** (:func:`check_limits`): a file whose time span, number of points or
  periodogram size would exhaust memory is refused with a clear error, before any
  periodogram is computed (a CSV with its time in seconds has a span of ~1e7 "days"; its
  periodogram wanted 1e9 frequencies, 29.7 GiB).
- **Out-of-distribution warnings** (:func:`distribution_warnings`): the curve is
  classified, but the user is told where it lies outside what the model was trained on:
  the time span, the points per day, a dominant period beyond the model's period axis.

Examples
--------
>>> import numpy as np
>>> t = np.linspace(0, 20, 1500); f = np.sin(2 * np.pi * t / 3.0)
>>> distribution_warnings(t, f, TrainingRange()).warnings
[]
>>> distribution_warnings(t * 10, f, TrainingRange()).warnings[0].split(":")[0]
'span 200 d is outside the training range 5-30 d'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from starray.data.features import P_MAX, P_MIN, clean

SAMPLES_PER_PEAK = 10  # as the model's periodogram (features.lomb_scargle)
BYTES_PER_FREQUENCY = 32  # measured: 1e9 frequencies took 29.7 GiB
SECONDS_HINT_DAYS = 1e4  # a span above ~27 years is more likely seconds than days
SPAN_TOLERANCE = 1.1  # synthetic spans can pass min_days/max_days by a little jitter
CADENCE_FACTOR = 4.0  # warn below points_per_day / 4 or above 4 x (synthetic: ~45-75/day)
DOMINANCE = 1.2  # an off-axis peak must beat the best on-axis peak by 20 %
SHORTEST_SEARCHED = P_MIN / 4  # the check's periodogram looks down to 0.025 d


class ResourceLimitError(ValueError):
    """A light curve is too large to process within the configured limits."""


@dataclass(frozen=True)
class Limits:
    """Per-file limits checked before the periodogram (CLI: ``--max-*`` options)."""

    max_span_days: float = 1e5  # longer than any survey (DASCH: ~1e4.6 d); seconds beyond
    max_points: int = 5_000_000
    max_frequencies: int = 20_000_000  # ~0.6 GiB of periodogram work arrays


@dataclass(frozen=True)
class TrainingRange:
    """What the model saw in training (synthetic stars, DESIGN section 2)."""

    min_days: float = 5.0
    max_days: float = 30.0
    points_per_day: float = 75.0

    @classmethod
    def from_config(cls, data_cfg: Mapping[str, Any] | None) -> TrainingRange:
        """From a checkpoint's ``config["data"]`` (defaults for missing keys)."""
        d = dict(data_cfg or {})
        base = cls()
        return cls(float(d.get("min_days", base.min_days)),
                   float(d.get("max_days", base.max_days)),
                   float(d.get("points_per_day", base.points_per_day)))


def frequency_grid_size(span_days: float) -> int:
    """Frequencies of the model's periodogram for a span: 0.1 d .. min(2 span, 50) d,
    ``SAMPLES_PER_PEAK`` samples per peak width 1/span."""
    if not span_days > 0:
        return 0
    fmin = 1.0 / min(2.0 * span_days, P_MAX)
    return int(np.ceil((1.0 / P_MIN - fmin) * SAMPLES_PER_PEAK * span_days)) + 1


def _span(time: np.ndarray) -> float:
    t = np.asarray(time, dtype=np.float64)
    t = t[np.isfinite(t)]
    return float(t.max() - t.min()) if t.size else 0.0


def check_limits(time: np.ndarray, limits: Limits = Limits(), name: str = "") -> None:
    """Raise ResourceLimitError (naming the file, the numbers and the option) when the
    curve exceeds a limit; returns None when it fits."""
    where = f"{name}: " if name else ""
    span = _span(time)
    n = int(np.count_nonzero(np.isfinite(time)))
    seconds = (f"; if the time column is in seconds, convert it to days (/86400 gives "
               f"{span / 86400:.4g} d)")
    if span > limits.max_span_days:
        nf = frequency_grid_size(span)
        raise ResourceLimitError(
            f"{where}time span {span:.4g} d exceeds the limit {limits.max_span_days:.4g} d "
            f"(--max-span-days); its periodogram would need {nf:.3g} frequencies "
            f"(~{nf * BYTES_PER_FREQUENCY / 2**30:.1f} GiB){seconds}")
    if n > limits.max_points:
        raise ResourceLimitError(f"{where}{n:,} points exceed the limit {limits.max_points:,} "
                                 f"(--max-points); bin or split the light curve")
    nf = frequency_grid_size(span)
    if nf > limits.max_frequencies:
        raise ResourceLimitError(
            f"{where}the periodogram of a {span:.4g} d span needs {nf:,} frequencies, over "
            f"the limit {limits.max_frequencies:,} (--max-frequencies; "
            f"~{nf * BYTES_PER_FREQUENCY / 2**30:.1f} GiB){seconds if span > 1e4 else ''}")


@dataclass
class DistributionCheck:
    """Warnings plus the periodogram the period check used (for plots)."""

    warnings: list[str]
    span_days: float
    points_per_day: float
    freq: np.ndarray
    power: np.ndarray
    dominant_days: float


def wide_periodogram(time: np.ndarray, flux: np.ndarray, max_frequencies: int = 2_000_000
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Lomb-Scargle over a wider period range than the model's: down to 0.025 d (or the
    sampling's pseudo-Nyquist period) and up to the span. Coarser than the model's grid
    when the grid would exceed ``max_frequencies``. Input must be clean (finite, sorted)."""
    import nifty_ls

    span = float(time[-1] - time[0])
    dt = np.diff(time)
    dt = dt[dt > 0]
    nyquist = 0.5 / float(np.median(dt)) if dt.size else 1.0 / SHORTEST_SEARCHED
    fmax = max(min(1.0 / SHORTEST_SEARCHED, nyquist), 1.0 / P_MIN)
    fmin = 1.0 / max(min(2.0 * span, P_MAX), span)
    nf = int(np.ceil((fmax - fmin) * SAMPLES_PER_PEAK * span)) + 1
    nf = max(min(nf, max_frequencies), 16)
    sd = flux.std()
    fz = (flux - flux.mean()) / (sd if sd > 0 else 1.0)
    res = nifty_ls.lombscargle(time, fz, fmin=fmin, fmax=fmax, Nf=nf, backend="finufft",
                               nthreads=1)
    power = np.clip(np.nan_to_num(np.asarray(res.power, dtype=np.float64)), 0.0, None)
    return np.asarray(res.freq(), dtype=np.float64), power


def distribution_warnings(time: np.ndarray, flux: np.ndarray, training: TrainingRange,
                          max_frequencies: int = 2_000_000) -> DistributionCheck:
    """Where a light curve lies outside the training distribution, one sentence each.

    - span outside ``min_days/1.1 .. 1.1 max_days`` (the synthetic stars' span);
    - points per day outside ``points_per_day / 4 .. 4 points_per_day``;
    - the highest Lomb-Scargle peak, searched over 0.025 d .. span, lies outside the
      model's period axis 0.1-50 d and is 1.2 x higher than the best peak inside it;
    - a span over 1e4 d: is the time column in seconds?
    """
    t, f = clean(time, flux)
    out: list[str] = []
    span = float(t[-1] - t[0]) if t.size > 1 else 0.0
    ppd = t.size / span if span > 0 else float("inf")
    lo, hi = training.min_days, training.max_days
    if span > SECONDS_HINT_DAYS:
        out.append(f"span {span:.4g} d is longer than 27 years: is the time column in "
                   f"seconds? (time is read as days)")
    if span < lo / SPAN_TOLERANCE or span > hi * SPAN_TOLERANCE:
        out.append(f"span {span:.4g} d is outside the training range {lo:g}-{hi:g} d: "
                   f"the model never saw curves this {'long' if span > hi else 'short'}")
    p_lo, p_hi = training.points_per_day / CADENCE_FACTOR, training.points_per_day * CADENCE_FACTOR
    if not p_lo <= ppd <= p_hi:
        out.append(f"{ppd:.3g} points per day is far from the training cadence "
                   f"(~{training.points_per_day:g}/day; warned outside {p_lo:g}-{p_hi:g})")
    freq, power = np.zeros(0), np.zeros(0)
    dominant = float("nan")
    if t.size >= 3 and span > 0 and np.ptp(f) > 0:
        freq, power = wide_periodogram(t, f, max_frequencies)
        period = 1.0 / freq
        k = int(np.argmax(power))
        dominant = float(period[k])
        on_axis = (period >= P_MIN) & (period <= P_MAX * 1.001)
        best_on = float(power[on_axis].max()) if on_axis.any() else 0.0
        if not on_axis[k] and power[k] > DOMINANCE * best_on:
            side = "longer" if dominant > P_MAX else "shorter"
            out.append(f"dominant period {dominant:.4g} d is {side} than the model's period "
                       f"axis {P_MIN:g}-{P_MAX:g} d (power {power[k]:.2f} against "
                       f"{best_on:.2f} inside it): the model cannot represent it")
    return DistributionCheck(out, span, ppd, freq, power, dominant)
