"""Synthetic variable stars: the 14 classes of DESIGN section 2.

Pure numpy, seeded: ``generate_stars(n, seed)`` always returns the same stars, so any
batch can be regenerated exactly from (run seed, epoch, batch index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "sinusoidal", "double_dip", "shape_changer", "beater", "beater_complex_peak",
    "resolved_close_peaks", "resolved_distant_peaks", "eclipsing_binary", "pulsator",
    "burster", "dipper", "co_rotating_thin_material", "long_term_trend", "stochastic",
)
N_CLASSES = len(CLASS_NAMES)

# trend slope half-range per day, by class (DESIGN table)
SLOPES = (5e-4, 5e-4, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4, 1.5e-3, 1.5e-3, 1e-3, 5e-3,
          2e-3)


@dataclass(frozen=True)
class SynthSpec:
    """Sampling and noise knobs (defaults from DESIGN)."""

    min_days: float = 5.0
    max_days: float = 30.0
    points_per_day: float = 75.0
    noise: float = 0.02


@dataclass
class Star:
    """One light curve with its labels; periods in days, NaN where the star has none."""

    time: np.ndarray
    flux: np.ndarray
    label: int
    primary: float
    secondary: float


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(10 ** rng.uniform(np.log10(lo), np.log10(hi)))


def sample_times(rng: np.random.Generator, spec: SynthSpec) -> np.ndarray:
    """2-4 observing sessions over U(min_days, max_days) with 0.5-2 d gaps, ~75 points/day."""
    span = rng.uniform(spec.min_days, spec.max_days)
    k = int(rng.integers(2, 5))
    gaps = rng.uniform(0.5, 2.0, k - 1)
    if gaps.sum() > 0.4 * span:  # short spans: keep most of the time observed
        gaps *= 0.4 * span / gaps.sum()
    observed = span - gaps.sum()
    weights = rng.uniform(0.5, 1.5, k)
    lengths = observed * weights / weights.sum()
    n_total = max(int(round(spec.points_per_day * observed)), 20 * k)
    counts = np.maximum((n_total * lengths / observed).astype(int), 10)
    parts, start = [], 0.0
    for length, count, gap in zip(lengths, counts, np.append(gaps, 0.0)):
        cadence = length / count
        t = start + np.arange(count) * cadence
        t = t + rng.normal(0.0, 0.1 * cadence, count)
        parts.append(t)
        start += length + gap
    return np.sort(np.concatenate(parts))


def _sine(t: np.ndarray, period: float, amp: float, rng: np.random.Generator) -> np.ndarray:
    return amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))


def _two_sines(rng, t, p1, p2):
    a1, a2 = rng.uniform(0.01, 0.05), rng.uniform(0.005, 0.04)
    return _sine(t, p1, a1, rng) + _sine(t, p2, a2, rng)


def _signal(label: int, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Flux variation (around 0) and (primary, secondary) periods for one class."""
    nan = float("nan")
    if label == 0:  # sinusoidal
        p = _loguniform(rng, 0.1, 20)
        return _sine(t, p, rng.uniform(0.005, 0.05), rng), p, nan
    if label == 1:  # double dip
        p = _loguniform(rng, 0.1, 20)
        f = _sine(t, p, rng.uniform(0.01, 0.04), rng)
        f = f + _sine(t, p / 2, rng.uniform(0.005, 0.02), rng)
        return f, p, p / 2
    if label == 2:  # shape changer: amplitude-modulated sine
        p, pm = _loguniform(rng, 0.1, 20), rng.uniform(5, 30)
        depth = rng.uniform(0.3, 0.8)
        env = 1 - depth * 0.5 * (1 + np.sin(2 * np.pi * t / pm + rng.uniform(0, 2 * np.pi)))
        return env * _sine(t, p, rng.uniform(0.01, 0.05), rng), p, pm
    if label in (3, 4):  # beater (+ complex peak)
        p1 = _loguniform(rng, 0.1, 20)
        p2 = p1 + rng.uniform(0.1, 1.0)
        f = _two_sines(rng, t, p1, p2)
        if label == 4:
            f = f + _sine(t, _loguniform(rng, 0.1, 8), rng.uniform(0.005, 0.015), rng)
        return f, p1, p2
    if label == 5:  # resolved close peaks
        p1 = _loguniform(rng, 0.1, 20)
        p2 = p1 * rng.uniform(1.1, 1.3)
        return _two_sines(rng, t, p1, p2), p1, p2
    if label == 6:  # resolved distant peaks
        ratio = rng.uniform(2, 8)
        p1 = _loguniform(rng, 0.1, 20 / ratio)
        p2 = p1 * ratio
        return _two_sines(rng, t, p1, p2), p1, p2
    if label == 7:  # eclipsing binary
        p = rng.uniform(0.5, 10)
        d1 = rng.uniform(0.05, 0.4)
        d2 = rng.uniform(0.02, 0.8 * d1)
        sigma = rng.uniform(0.02, 0.1) / 4
        phase = (t / p + rng.uniform(0, 1)) % 1.0
        dist1 = np.minimum(phase, 1 - phase)
        dist2 = np.abs(phase - 0.5)
        f = -d1 * np.exp(-0.5 * (dist1 / sigma) ** 2) - d2 * np.exp(-0.5 * (dist2 / sigma) ** 2)
        return f, p, nan
    if label == 8:  # pulsator: strongest mode is the primary
        n = int(rng.integers(3, 8))
        periods = 10 ** rng.uniform(-1, np.log10(2), n)
        amps = rng.uniform(0.001, 0.01, n)
        f = sum(_sine(t, p, a, rng) for p, a in zip(periods, amps))
        pm = rng.uniform(5, 20)
        env = 1 + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * t / pm + rng.uniform(0, 2 * np.pi))
        return f * env, float(periods[np.argmax(amps)]), pm
    if label == 9:  # burster: fast rise, exponential decay
        f = np.zeros_like(t)
        for t0 in rng.uniform(t[0], t[-1], max(1, rng.poisson(len(t) / 50))):
            amp, rise, tau = rng.uniform(0.1, 0.8), rng.uniform(0.005, 0.03), rng.uniform(0.05, 0.5)
            dt = t - t0
            rising = np.exp(np.clip(dt / rise, -50, 0))
            f += amp * np.where(dt < 0, rising, np.exp(-np.clip(dt, 0, None) / tau))
        return f, nan, nan
    if label == 10:  # dipper: Gaussian dips, flux floored above 0
        f = np.zeros_like(t)
        for t0 in rng.uniform(t[0], t[-1], max(1, rng.poisson(len(t) / 40))):
            f -= rng.uniform(0.1, 0.6) * np.exp(-0.5 * ((t - t0) / rng.uniform(0.02, 0.15)) ** 2)
        return np.maximum(f, -0.95), nan, nan
    if label == 11:  # co-rotating optically thin material
        p = _loguniform(rng, 0.2, 5)
        phase = (t / p) % 1.0
        f = np.zeros_like(t)
        for _ in range(int(rng.integers(1, 4))):
            center, width = rng.uniform(0, 1), rng.uniform(0.02, 0.08)
            jitter = rng.normal(0, 0.1 * width, len(t))
            dist = np.abs(((phase - center + jitter) + 0.5) % 1.0 - 0.5)
            f -= rng.uniform(0.05, 0.3) * np.exp(-0.5 * (dist / (width / 2)) ** 2)
        return f, p, nan
    if label == 12:  # long-term trend, 70% with texture
        if rng.uniform() < 0.7:
            p = _loguniform(rng, 0.1, 20)
            return _sine(t, p, rng.uniform(0.01, 0.03), rng), p, nan
        return np.zeros_like(t), nan, nan
    if label == 13:  # stochastic: AR(1) red noise
        phi, amp = rng.uniform(0.95, 0.99), rng.uniform(0.02, 0.08)
        e = rng.normal(0, amp * np.sqrt(1 - phi**2), len(t))
        f = np.empty_like(t)
        f[0] = rng.normal(0, amp)
        for i in range(1, len(t)):
            f[i] = phi * f[i - 1] + e[i]
        return f, nan, nan
    raise ValueError(f"label: {label} is not a class index 0..{N_CLASSES - 1}")


def make_star(label: int, rng: np.random.Generator, spec: SynthSpec = SynthSpec()) -> Star:
    """One star of class ``label``: times, flux around 1, trend, Gaussian noise."""
    t = sample_times(rng, spec)
    signal, p1, p2 = _signal(label, t, rng)
    slope = rng.uniform(-SLOPES[label], SLOPES[label])
    flux = 1.0 + signal + slope * (t - t[0]) + rng.normal(0.0, spec.noise, len(t))
    return Star(t, flux, label, p1, p2)


def generate_stars(n: int, seed: int | tuple[int, ...] | list[int], spec: SynthSpec = SynthSpec(),
                   labels: np.ndarray | None = None) -> list[Star]:
    """``n`` stars with balanced random labels (or the given ``labels``), seeded."""
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = rng.integers(0, N_CLASSES, n)
    return [make_star(int(lab), rng, spec) for lab in labels]
