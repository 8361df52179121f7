"""Cleaning that keeps the signal (DESIGN 3.1).

By default only non-finite points are dropped, points are sorted by time and duplicate
times are merged (mean flux). Nothing else: the deepest point of an eclipse or a dip is
signal. ``clip_sigma`` (off by default) also removes *isolated* spikes: a point that
deviates by more than ``clip_sigma`` robust sigmas from the median of its four nearest
neighbours while its two adjacent points do not deviate the same way (a run of
deviating points follows the star and is kept). The same code serves synthetic batches
(rows of a 2-D flux array sharing one time axis) and real files (one row).
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826


def merge_duplicates(time: np.ndarray, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``time`` (M,) and ``flux`` (..., M) -> unique times, mean flux per time."""
    if len(time) < 2 or np.all(np.diff(time) > 0):
        return time, flux
    uniq, start, counts = np.unique(time, return_index=True, return_counts=True)
    sums = np.add.reduceat(flux, start, axis=-1)
    return uniq, sums / counts


def _neighbours(m: int) -> np.ndarray:
    """(m, 4) indexes of the four nearest other points (shifted inward at the ends)."""
    i = np.arange(m)
    lo = np.clip(i - 2, 0, m - 5)
    window = lo[:, None] + np.arange(5)[None, :]
    return window[window != i[:, None]].reshape(m, 4)


def spike_mask(flux: np.ndarray, clip_sigma: float) -> np.ndarray:
    """True where a point of ``flux`` (..., M; rows time-sorted) is an isolated spike.

    Residual r = flux - median of the 4 nearest neighbours; sigma = 1.4826 x MAD of r per
    row. A spike has |r| > clip_sigma sigma while both adjacent points have residuals of
    the same sign below clip_sigma / 2 sigma (so a run of deviating points is never one).
    """
    if not clip_sigma > 0:
        raise ValueError(f"clip_sigma: must be > 0 or None, got {clip_sigma!r}")
    flux = np.asarray(flux, dtype=np.float64)
    m = flux.shape[-1]
    if m < 5:
        return np.zeros(flux.shape, dtype=bool)
    nb = np.sort(flux[..., _neighbours(m)], axis=-1)  # (..., M, 4)
    r = flux - 0.5 * (nb[..., 1] + nb[..., 2])
    dev = np.abs(r - np.median(r, axis=-1, keepdims=True))
    sigma = MAD_TO_SIGMA * np.median(dev, axis=-1, keepdims=True)
    sigma = np.where(sigma > 0, sigma, np.inf)
    z = r / sigma
    big = np.abs(z) > clip_sigma
    half = 0.5 * clip_sigma
    follows = np.zeros(flux.shape, dtype=bool)  # an adjacent point deviates the same way
    same_prev = (z[..., 1:] * np.sign(z[..., :-1]) > 0) & (np.abs(z[..., :-1]) > half)
    same_next = (z[..., :-1] * np.sign(z[..., 1:]) > 0) & (np.abs(z[..., 1:]) > half)
    follows[..., 1:] |= same_prev
    follows[..., :-1] |= same_next
    return big & ~follows


def clean(time: np.ndarray, flux: np.ndarray, clip_sigma: float | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Drop non-finite points, sort by time, merge duplicate times (mean flux); with
    ``clip_sigma`` also remove isolated spikes (:func:`spike_mask`)."""
    time = np.asarray(time, dtype=np.float64).ravel()
    flux = np.asarray(flux, dtype=np.float64).ravel()
    if time.shape != flux.shape:
        raise ValueError(f"time and flux: lengths differ ({len(time)} vs {len(flux)})")
    ok = np.isfinite(time) & np.isfinite(flux)
    if not ok.all():
        time, flux = time[ok], flux[ok]
    if len(time) > 1 and not np.all(np.diff(time) >= 0):
        order = np.argsort(time, kind="stable")
        time, flux = time[order], flux[order]
    time, flux = merge_duplicates(time, flux)
    if clip_sigma is not None:
        keep = ~spike_mask(flux, clip_sigma)
        if not keep.all():
            time, flux = time[keep], flux[keep]
    return time, flux
