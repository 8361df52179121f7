"""The picture ``starray inspect`` writes for one light curve (matplotlib, Agg backend).

One PNG: the light curve; the Lomb-Scargle periodogram (log period) with the model's
period axis marked and each candidate period drawn; the curve folded at each candidate
(two cycles, phase-binned mean). Out-of-distribution warnings and conversions (e.g.
magnitudes to flux) are written under the title.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
FOLD_COLS = 3
FOLD_BINS = 100  # most phase bins of the folded mean
MAX_SCATTER = 50_000  # points drawn per panel; more are thinned evenly
COLORS = plt.get_cmap("tab10").colors


def _thin(n: int) -> np.ndarray:
    return np.arange(n) if n <= MAX_SCATTER else np.linspace(0, n - 1, MAX_SCATTER).astype(int)


def _marker_size(n: int) -> float:
    """Bigger dots for sparse curves, smaller for dense ones (points^2)."""
    return 8.0 if n < 1000 else 4.0 if n < 5000 else 2.0


def _fold_panel(ax: plt.Axes, time: np.ndarray, flux: np.ndarray, period: float, k: int,
                color: tuple, ylim: tuple[float, float]) -> None:
    phase = ((time - time[0]) / period) % 1.0
    keep = _thin(len(time))
    size = _marker_size(len(time))
    for shift in (0.0, 1.0):
        ax.scatter(phase[keep] + shift, flux[keep], s=size, alpha=0.35, color="0.35", lw=0,
                   rasterized=True)
    bins = int(np.clip(len(time) // 15, 20, FOLD_BINS))  # ~15 points per bin at least
    idx = np.minimum((phase * bins).astype(int), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sums = np.bincount(idx, weights=flux, minlength=bins)
    have = counts > 0
    centers = (np.arange(bins) + 0.5) / bins
    mean = sums[have] / counts[have]  # one unbroken line over both cycles
    ax.plot(np.concatenate([centers[have], centers[have] + 1]), np.tile(mean, 2), color=color,
            lw=2)
    ax.set_xlim(0, 2)
    ax.set_ylim(*ylim)
    ax.set_title(f"C{k + 1}: folded at {period:.5g} d", fontsize=10, color=color)
    ax.set_xlabel("phase (two cycles)", fontsize=9)
    ax.tick_params(labelsize=8)


def plot_inspection(time: np.ndarray, flux: np.ndarray, freq: np.ndarray, power: np.ndarray,
                    candidates: Sequence[float], path: str | os.PathLike, title: str,
                    notes: Sequence[str] = (), warnings: Sequence[str] = (),
                    period_axis: tuple[float, float] = (0.1, 50.0),
                    flux_label: str = "flux") -> Path:
    """Write the inspection PNG for one (clean, sorted) light curve; returns its path.

    Parameters
    ----------
    time, flux : arrays
        The cleaned light curve (days, flux).
    freq, power : arrays
        A periodogram (1/day, power); drawn against period on a log axis.
    candidates : sequence of float
        Candidate periods (days), marked on the periodogram and folded one per panel.
    path : path
        The PNG to write (folders are created).
    title : str
        First line of the figure title.
    notes, warnings : sequence of str
        Lines written under the title (warnings in red).
    period_axis : (float, float)
        The model's period range, drawn as a band on the periodogram.
    flux_label : str
        The y label of the light curve (e.g. "relative flux (from magnitudes)").
    """
    time = np.asarray(time, dtype=float)
    flux = np.asarray(flux, dtype=float)
    n_fold = len(candidates)
    fold_rows = max(1, int(np.ceil(n_fold / FOLD_COLS)))
    fig = plt.figure(figsize=(13, 6.2 + 2.9 * fold_rows))
    text_lines = [title]
    text_lines += [t for n in notes for t in textwrap.wrap(n, 150)]
    warn_lines = [t for w in warnings for t in textwrap.wrap(f"warning: {w}", 150)]
    line_in = 0.2  # inches per header line; the title line is 0.3
    header_in = 0.3 + line_in * (len(text_lines) + len(warn_lines) - 1) + 0.45
    top = 1.0 - header_in / fig.get_figheight()
    grid = fig.add_gridspec(2 + fold_rows, FOLD_COLS, height_ratios=[1.1, 1.1] + [1] * fold_rows,
                            top=top, bottom=0.05, left=0.06, right=0.98, hspace=0.55,
                            wspace=0.18)
    y = 1.0 - 0.08 / fig.get_figheight()
    for i, line in enumerate(text_lines):
        fig.text(0.5, y, line, ha="center", va="top", fontsize=12 if i == 0 else 9,
                 weight="bold" if i == 0 else "normal", color="black" if i == 0 else "0.3")
        y -= (0.3 if i == 0 else line_in) / fig.get_figheight()
    for line in warn_lines:
        fig.text(0.5, y, line, ha="center", va="top", fontsize=9, color="tab:red")
        y -= line_in / fig.get_figheight()

    lo, hi = np.percentile(flux, [0.5, 99.5])
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    ylim = (lo - pad, hi + pad)

    ax = fig.add_subplot(grid[0, :])
    keep = _thin(len(time))
    ax.scatter(time[keep], flux[keep], s=_marker_size(len(time)), color="tab:blue", lw=0,
               alpha=0.6, rasterized=True)
    ax.set_ylim(*ylim)
    ax.set_xlabel("time (d)")
    ax.set_ylabel(flux_label)
    ax.set_title(f"light curve after cleaning: {len(time):,} points over "
                 f"{time[-1] - time[0]:.4g} d", fontsize=10)

    ax = fig.add_subplot(grid[1, :])
    if len(freq):
        period = 1.0 / freq
        order = np.argsort(period)
        ax.plot(period[order], power[order], color="0.2", lw=0.7)
        ax.set_xscale("log")
        pmin, pmax = float(period.min()), float(period.max())
        ax.set_xlim(pmin, pmax)
        for a, b in ((pmin, period_axis[0]), (period_axis[1], pmax)):
            if b > a:
                ax.axvspan(a, b, color="0.85", zorder=0)
        top_power = float(power.max()) if power.size else 1.0
        ax.set_ylim(0, top_power * 1.05 if top_power > 0 else 1.0)
    for k, p in enumerate(candidates):
        c = COLORS[k % len(COLORS)]
        ax.axvline(p, color=c, ls="--", lw=1.2)
        ax.annotate(f"C{k + 1}", (p, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12 - 11 * k), textcoords="offset points", color=c,
                    fontsize=9, weight="bold")
    ax.set_xlabel(f"period (d); grey: outside the model's period axis "
                  f"({period_axis[0]:g}-{period_axis[1]:g} d)")
    ax.set_ylabel("Lomb-Scargle power")
    ax.set_title("periodogram with the candidate periods", fontsize=10)

    for k, p in enumerate(candidates):
        ax = fig.add_subplot(grid[2 + k // FOLD_COLS, k % FOLD_COLS])
        _fold_panel(ax, time, flux, float(p), k, COLORS[k % len(COLORS)], ylim)
        if k % FOLD_COLS == 0:
            ax.set_ylabel(flux_label, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
