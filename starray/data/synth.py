"""Synthetic variable stars: the 14 classes of DESIGN section 2, batch-first.

Pure numpy, seeded. :func:`synth_batch` draws the flux of many stars at once on one
shared cadence template (the time sampling is drawn once per batch), looping over the
14 classes, never over stars. :func:`make_star` is the same code for one star.
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
PERIODIC = (0, 1, 2, 3, 4, 5, 6, 7, 8, 11)  # classes that always have a primary period

# trend slope half-range per day, by class (DESIGN table)
SLOPES = np.array([5e-4, 5e-4, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4, 1.5e-3, 1.5e-3,
                   1e-3, 5e-3, 2e-3])
_TWO_PI = 2.0 * np.pi


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


@dataclass
class SynthBatch:
    """Stars sharing one cadence template: ``time`` (M,), ``flux`` (B, M), periods (B,)."""

    time: np.ndarray
    flux: np.ndarray
    label: np.ndarray
    primary: np.ndarray
    secondary: np.ndarray


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


# ------------------------------------------------------------------ vectorized pieces
def _logu(rng: np.random.Generator, lo: float | np.ndarray, hi: float | np.ndarray,
          k: int) -> np.ndarray:
    """k log-uniform draws in [lo, hi] (bounds may be arrays of length k)."""
    return 10 ** rng.uniform(np.log10(lo), np.log10(hi), k)


def _sines(rng: np.random.Generator, t: np.ndarray, period: np.ndarray,
           amp: np.ndarray) -> np.ndarray:
    """amp * sin(2 pi t / P + random phase), one row per star: (k, M), float32 (the
    phase error of float32 arguments, ~1e-4 rad over 30 d, is far below the noise)."""
    phase = rng.uniform(0.0, _TWO_PI, len(period)).astype(np.float32)
    arg = np.multiply.outer((_TWO_PI / period).astype(np.float32), t.astype(np.float32))
    arg += phase[:, None]
    np.sin(arg, out=arg)
    arg *= amp.astype(np.float32)[:, None]
    return arg


def _events(rng: np.random.Generator, t: np.ndarray, k: int, per_points: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Poisson event times of k stars, flattened: (star index, time) per event."""
    counts = np.maximum(1, rng.poisson(len(t) / per_points, k))
    star = np.repeat(np.arange(k), counts)
    return star, rng.uniform(t[0], t[-1], len(star))


def _local_sum(t: np.ndarray, k: int, star: np.ndarray, t0: np.ndarray, before: np.ndarray,
               after: np.ndarray, profile) -> np.ndarray:
    """Sum of event profiles per star, (k, M): each event is evaluated only on the
    points within [t0 - before, t0 + after] (all events x points at once, ragged)."""
    m = len(t)
    lo = np.searchsorted(t, t0 - before)
    lens = np.searchsorted(t, t0 + after) - lo
    ev = np.repeat(np.arange(len(t0)), lens)
    first = np.cumsum(lens) - lens
    pos = np.arange(int(lens.sum())) - first[ev] + lo[ev]
    contrib = profile(t[pos] - t0[ev], ev)
    return np.bincount(star[ev] * m + pos, weights=contrib, minlength=k * m).reshape(k, m)


def _bursts(rng, t, k):
    star, t0 = _events(rng, t, k, 50)
    e = len(t0)
    amp, rise, tau = rng.uniform(0.1, 0.8, e), rng.uniform(0.005, 0.03, e), \
        rng.uniform(0.05, 0.5, e)

    def profile(dt, ev):  # exp rise before t0, exp decay after; < 1e-6 amp is dropped
        return amp[ev] * np.exp(np.where(dt < 0, dt / rise[ev], -dt / tau[ev]))

    return _local_sum(t, k, star, t0, 13.9 * rise, 13.9 * tau, profile)


def _dips(rng, t, k):
    star, t0 = _events(rng, t, k, 40)
    e = len(t0)
    depth, width = rng.uniform(0.1, 0.6, e), rng.uniform(0.02, 0.15, e)

    def profile(dt, ev):  # Gaussian dips, evaluated within 6 widths (< 1e-8 depth beyond)
        z = dt / width[ev]
        return -depth[ev] * np.exp(-0.5 * z * z)

    return np.maximum(_local_sum(t, k, star, t0, 6.1 * width, 6.1 * width, profile), -0.95)


def _corotating(rng, t, k):
    p = _logu(rng, 0.2, 5, k)
    n = rng.integers(1, 4, k)
    center, width = rng.uniform(0, 1, (k, 3)), rng.uniform(0.02, 0.08, (k, 3))
    depth = np.where(np.arange(3)[None, :] < n[:, None], rng.uniform(0.05, 0.3, (k, 3)), 0.0)
    jitter = rng.normal(0.0, 1.0, (k, 3, len(t))) * (0.1 * width)[..., None]
    phase = (t[None, :] / p[:, None]) % 1.0
    dist = np.abs((phase[:, None, :] - center[..., None] + jitter + 0.5) % 1.0 - 0.5)
    f = -np.einsum("kd,kdm->km", depth, np.exp(-0.5 * (dist / (width[..., None] / 2)) ** 2))
    return f, p


def ar1(phi: np.ndarray, amp: np.ndarray, m: int, rng: np.random.Generator,
        block: int = 128) -> np.ndarray:
    """AR(1) red noise x_n = phi x_{n-1} + e_n for k stars at once: (k, m).

    Vectorized over stars with a blocked closed form: inside a block of ``block`` points
    x_{s+j} = phi^j (phi x_{s-1} + sum_{i<=j} phi^-i e_{s+i}) (phi^-block stays small).
    """
    k = len(phi)
    e = rng.normal(0.0, 1.0, (k, m)) * (amp * np.sqrt(1 - phi**2))[:, None]
    x = np.empty((k, m))
    j = np.arange(block)
    pw = phi[:, None] ** j[None, :]  # phi^j, (k, block)
    prev = rng.normal(0.0, 1.0, k) * amp / phi  # so that x_0 = phi * prev + e_0 ~ N(0, amp)
    for s in range(0, m, block):
        n = min(block, m - s)
        acc = np.cumsum(e[:, s:s + n] / pw[:, :n], axis=1)
        x[:, s:s + n] = pw[:, :n] * (phi[:, None] * prev[:, None] + acc)
        prev = x[:, s + n - 1]
    return x


def class_signals(label: int, t: np.ndarray, k: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux variation (k, M) around 0 and (primary, secondary) periods (k,) of k stars."""
    nan = np.full(k, np.nan)
    u = rng.uniform
    if label == 0:  # sinusoidal
        p = _logu(rng, 0.1, 20, k)
        return _sines(rng, t, p, u(0.005, 0.05, k)), p, nan
    if label == 1:  # double dip
        p = _logu(rng, 0.1, 20, k)
        f = _sines(rng, t, p, u(0.01, 0.04, k)) + _sines(rng, t, p / 2, u(0.005, 0.02, k))
        return f, p, p / 2
    if label == 2:  # shape changer: amplitude-modulated sine
        p, pm, depth = _logu(rng, 0.1, 20, k), u(5, 30, k), u(0.3, 0.8, k)
        env = 1 - depth[:, None] * 0.5 * (1 + _sines(rng, t, pm, np.ones(k)))
        return env * _sines(rng, t, p, u(0.01, 0.05, k)), p, pm
    if label in (3, 4, 5, 6):  # two sines: beaters, resolved close / distant peaks
        if label == 6:
            ratio = u(2, 8, k)
            p1 = _logu(rng, 0.1, 20 / ratio, k)
            p2 = p1 * ratio
        else:
            p1 = _logu(rng, 0.1, 20, k)
            p2 = p1 + u(0.1, 1.0, k) if label in (3, 4) else p1 * u(1.1, 1.3, k)
        f = _sines(rng, t, p1, u(0.01, 0.05, k)) + _sines(rng, t, p2, u(0.005, 0.04, k))
        if label == 4:  # + a third sine
            f += _sines(rng, t, _logu(rng, 0.1, 8, k), u(0.005, 0.015, k))
        return f, p1, p2
    if label == 7:  # eclipsing binary
        p, d1 = u(0.5, 10, k), u(0.05, 0.4, k)
        d2, sigma = u(0.02, 0.8 * d1), u(0.02, 0.1, k) / 4
        phase = (t[None, :] / p[:, None] + u(0, 1, k)[:, None]) % 1.0
        inv = (1.0 / sigma[:, None]).astype(np.float32)
        z1 = np.minimum(phase, 1 - phase).astype(np.float32) * inv
        z2 = np.abs(phase - 0.5).astype(np.float32) * inv
        f = -d1[:, None].astype(np.float32) * np.exp(np.float32(-0.5) * z1 * z1)
        f -= d2[:, None].astype(np.float32) * np.exp(np.float32(-0.5) * z2 * z2)
        return f, p, nan
    if label == 8:  # pulsator: 3-7 modes, the strongest mode is the primary
        n = rng.integers(3, 8, k)
        periods = 10 ** u(-1, np.log10(2), (k, 7))
        amps = np.where(np.arange(7)[None, :] < n[:, None], u(0.001, 0.01, (k, 7)), 0.0)
        f = sum(_sines(rng, t, periods[:, j], amps[:, j]) for j in range(7))
        pm = u(5, 20, k)
        env = 1 + _sines(rng, t, pm, u(0.1, 0.3, k))
        return f * env, periods[np.arange(k), np.argmax(amps, axis=1)], pm
    if label == 9:  # burster: fast rise, exponential decay
        return _bursts(rng, t, k), nan, nan
    if label == 10:  # dipper: Gaussian dips, flux floored above 0
        return _dips(rng, t, k), nan, nan
    if label == 11:  # co-rotating optically thin material
        f, p = _corotating(rng, t, k)
        return f, p, nan
    if label == 12:  # long-term trend, 70% with a texture sine
        textured = u(0, 1, k) < 0.7
        p = _logu(rng, 0.1, 20, k)
        f = _sines(rng, t, p, np.where(textured, u(0.01, 0.03, k), 0.0))
        return f, np.where(textured, p, np.nan), nan
    if label == 13:  # stochastic: AR(1) red noise
        return ar1(u(0.95, 0.99, k), u(0.02, 0.08, k), len(t), rng), nan, nan
    raise ValueError(f"label: {label} is not a class index 0..{N_CLASSES - 1}")


def synth_batch(labels: np.ndarray, rng: np.random.Generator, spec: SynthSpec = SynthSpec(),
                time: np.ndarray | None = None) -> SynthBatch:
    """Stars of classes ``labels`` on one cadence template (drawn here unless ``time``).

    Flux is 1 + class signal + linear trend (class-specific slope) + Gaussian noise.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"labels: class indexes must be in 0..{N_CLASSES - 1}")
    t = sample_times(rng, spec) if time is None else np.asarray(time, dtype=np.float64)
    b, m = len(labels), len(t)
    flux = np.empty((b, m), dtype=np.float32)
    p1, p2 = np.full(b, np.nan), np.full(b, np.nan)
    for label in np.unique(labels):  # a loop over classes, never over stars
        rows = np.flatnonzero(labels == label)
        flux[rows], p1[rows], p2[rows] = class_signals(int(label), t, len(rows), rng)
    slope = rng.uniform(-1.0, 1.0, b) * SLOPES[labels]
    flux += (1.0 + np.multiply.outer(slope, t - t[0])).astype(np.float32)
    noise = rng.standard_normal((b, m), dtype=np.float32)
    noise *= np.float32(spec.noise)
    flux += noise
    return SynthBatch(t, flux, labels, p1, p2)


def make_star(label: int, rng: np.random.Generator, spec: SynthSpec = SynthSpec()) -> Star:
    """One star of class ``label`` with its own time sampling (a batch of one)."""
    sb = synth_batch(np.array([label]), rng, spec)
    return Star(sb.time, sb.flux[0], int(label), float(sb.primary[0]), float(sb.secondary[0]))


def generate_stars(n: int, seed: int | tuple[int, ...] | list[int], spec: SynthSpec = SynthSpec(),
                   labels: np.ndarray | None = None) -> list[Star]:
    """``n`` stars with balanced random labels (or the given ``labels``), each with its own
    time sampling, seeded (not the hot path: batches use :func:`synth_batch`)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = rng.integers(0, N_CLASSES, n)
    return [make_star(int(lab), rng, spec) for lab in labels]
