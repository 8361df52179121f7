"""Batches of model inputs from synthetic stars, seeded by (run seed, space, epoch, index).

Stars are made in groups of up to TEMPLATE_STARS that share one cadence template (drawn
from the batch's generator, so different across groups and batches): synthesis, cleaning,
periodograms, candidates and folds run on (B, M) arrays with no loop over stars.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from starray.data.cleaning import merge_duplicates, spike_mask
from starray.data.features import (
    LightCurveError,
    StageTimer,
    batch_features,
    normalize_period,
    star_features,
)
from starray.data.labels import candidate_match
from starray.data.seeds import batch_rng
from starray.data.synth import N_CLASSES, SLOPES, SynthSpec, class_signals, synth_batch

Batch = dict[str, np.ndarray]
BATCH_KEYS = ("lc", "pgram", "folded", "cand_logp", "cand_stats", "cand_days", "label", "p1",
              "p2", "cand_match")
MAX_REDRAWS = 20
TEMPLATE_STARS = 32  # stars per cadence template: a batch of 64 holds two samplings


def spec_from(data_cfg: Any) -> SynthSpec:
    """SynthSpec from a DataConfig (or anything with the same attributes)."""
    return SynthSpec(min_days=data_cfg.min_days, max_days=data_cfg.max_days,
                     points_per_day=data_cfg.points_per_day, noise=data_cfg.noise)


def to_batch(lc: np.ndarray, pgram: np.ndarray, folded: np.ndarray, cand_days: np.ndarray,
             cand_stats: np.ndarray, labels: np.ndarray, p1_days: np.ndarray,
             p2_days: np.ndarray) -> Batch:
    """Arrays of model inputs and labels (periods in days) -> a Batch (float32/int64)."""
    cand = np.asarray(cand_days, dtype=np.float32)
    p1 = np.asarray(p1_days, dtype=np.float64)
    return {
        "lc": np.asarray(lc, dtype=np.float32)[:, None, :],
        "pgram": np.asarray(pgram, dtype=np.float32)[:, None, :],
        "folded": np.asarray(folded, dtype=np.float32),
        "cand_logp": normalize_period(cand).astype(np.float32),
        "cand_stats": np.asarray(cand_stats, dtype=np.float32),
        "cand_days": cand,
        "label": np.asarray(labels, dtype=np.int64),
        "p1": normalize_period(p1).astype(np.float32),
        "p2": normalize_period(np.asarray(p2_days, dtype=np.float64)).astype(np.float32),
        "cand_match": candidate_match(cand, p1),
    }


def features_to_batch(feats: list, labels: list[int], p1: list[float], p2: list[float]) -> Batch:
    """Stack per-star features (:class:`StarFeatures`) and labels into a Batch."""
    return to_batch(np.stack([f.lc for f in feats]), np.stack([f.pgram for f in feats]),
                    np.stack([f.folded for f in feats]), np.stack([f.cand_days for f in feats]),
                    np.stack([f.cand_stats for f in feats]),
                    np.asarray(labels), np.asarray(p1, dtype=np.float64),
                    np.asarray(p2, dtype=np.float64))


def _unusable(flux: np.ndarray) -> np.ndarray:
    """Rows that cannot become model inputs: non-finite or constant flux."""
    return ~np.isfinite(flux).all(axis=1) | ~(np.ptp(flux, axis=1) > 0)


def synth_clean(n: int, rng: np.random.Generator, spec: SynthSpec, labels: np.ndarray,
                timer: StageTimer | None = None):
    """Synthesize and clean one batch: -> (SynthBatch on its cleaned template, redraws).

    A star that cannot be processed is drawn again on the same template (never filled
    with noise), at most MAX_REDRAWS times per batch.
    """
    sb = synth_batch(labels, rng, spec)
    if timer:
        timer.lap("synthesis")
    sb.time, sb.flux = merge_duplicates(sb.time, sb.flux)
    redraws = 0
    bad = np.flatnonzero(_unusable(sb.flux))
    while len(bad):
        redraws += len(bad)
        if redraws > MAX_REDRAWS:
            raise RuntimeError(f"{redraws} synthetic stars of one batch failed preprocessing")
        for label in np.unique(sb.label[bad]):  # rare: a loop over classes
            rows = bad[sb.label[bad] == label]
            f, p1, p2 = class_signals(int(label), sb.time, len(rows), rng)
            slope = rng.uniform(-1.0, 1.0, len(rows)) * SLOPES[label]
            sb.flux[rows] = (1.0 + f + np.multiply.outer(slope, sb.time - sb.time[0])
                             + rng.normal(0.0, spec.noise, f.shape))
            sb.primary[rows], sb.secondary[rows] = p1, p2
        bad = bad[_unusable(sb.flux[bad])]
    if timer:
        timer.lap("cleaning")
    return sb, redraws


def make_batch(n: int, seed: int, epoch: int, index: int, spec: SynthSpec = SynthSpec(),
               n_candidates: int = 4, harmonics: bool = True,
               labels: np.ndarray | None = None, space: str = "train",
               clip_sigma: float | None = None, timer: StageTimer | None = None,
               template_stars: int = TEMPLATE_STARS) -> tuple[Batch, int]:
    """``n`` stars seeded by (seed, space, epoch, index) -> (batch, number of redraws).

    ``space`` is a seed space of :mod:`starray.data.seeds` (train, fixed, validation,
    benchmark); spaces never overlap. ``harmonics`` adds P/2 and 2P of the best peak
    and the harmonic-sum search's period and twice it after the ``n_candidates`` peaks
    (C = n_candidates + 4). ``clip_sigma`` removes
    isolated spikes (off by default; a star that loses points leaves the shared template
    and is processed alone). ``timer`` collects per-stage seconds.

    The stars are split into groups of at most ``template_stars``, each on its own
    cadence template, so one training batch never holds a single time sampling (batch
    norm statistics of a one-template batch are the template's, not the data's).
    """
    rng = batch_rng(seed, space, epoch, index)
    if labels is None:
        labels = rng.integers(0, N_CLASSES, n)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != n:
        raise ValueError(f"labels: expected {n} labels, got {len(labels)}")
    groups = np.array_split(labels, max(1, -(-n // max(1, template_stars))))
    parts, redraws = [], 0
    for group in groups:
        batch, r = _template_batch(group, rng, spec, n_candidates, harmonics, clip_sigma, timer)
        parts.append(batch)
        redraws += r
    return (parts[0] if len(parts) == 1 else concat(parts)), redraws


def _template_batch(labels: np.ndarray, rng: np.random.Generator, spec: SynthSpec,
                    n_candidates: int, harmonics: bool, clip_sigma: float | None,
                    timer: StageTimer | None) -> tuple[Batch, int]:
    """Stars of ``labels`` on one cadence template drawn from ``rng`` -> (batch, redraws)."""
    n = len(labels)
    sb, redraws = synth_clean(n, rng, spec, labels, timer)
    spiky = np.zeros((n, len(sb.time)), dtype=bool) if clip_sigma is None \
        else spike_mask(sb.flux, clip_sigma)
    if timer:
        timer.lap("cleaning")
    out = batch_features(sb.time, sb.flux, n_candidates, harmonics, timer)
    for i in np.flatnonzero(spiky.any(axis=1)):  # only stars that lost points
        keep = ~spiky[i]
        try:
            f = star_features(sb.time[keep], sb.flux[i, keep], n_candidates, harmonics)
        except LightCurveError:
            continue  # too few points left: keep the unclipped star
        out["lc"][i], out["pgram"][i], out["folded"][i] = f.lc, f.pgram, f.folded
        out["cand_days"][i], out["cand_stats"][i] = f.cand_days, f.cand_stats
    batch = to_batch(out["lc"], out["pgram"], out["folded"], out["cand_days"],
                     out["cand_stats"], sb.label, sb.primary, sb.secondary)
    return batch, redraws


def concat(batches: list[Batch]) -> Batch:
    """Concatenate batches along the first axis."""
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
