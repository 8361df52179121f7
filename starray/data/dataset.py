"""Batches of model inputs from synthetic stars, seeded by (run seed, epoch, index)."""

from __future__ import annotations

from typing import Any

import numpy as np

from starray.data.features import LightCurveError, normalize_period, star_features
from starray.data.seeds import batch_rng
from starray.data.synth import N_CLASSES, SynthSpec, make_star

Batch = dict[str, np.ndarray]
BATCH_KEYS = ("lc", "pgram", "folded", "cand_logp", "cand_days", "label", "p1", "p2")


def spec_from(data_cfg: Any) -> SynthSpec:
    """SynthSpec from a DataConfig (or anything with the same attributes)."""
    return SynthSpec(min_days=data_cfg.min_days, max_days=data_cfg.max_days,
                     points_per_day=data_cfg.points_per_day, noise=data_cfg.noise)


def features_to_batch(feats: list, labels: list[int], p1: list[float], p2: list[float]) -> Batch:
    """Stack per-star features and labels into float32/int64 arrays."""
    cand = np.stack([f.cand_days for f in feats])
    return {
        "lc": np.stack([f.lc for f in feats])[:, None, :],
        "pgram": np.stack([f.pgram for f in feats])[:, None, :],
        "folded": np.stack([f.folded for f in feats]),
        "cand_logp": normalize_period(cand).astype(np.float32),
        "cand_days": cand.astype(np.float32),
        "label": np.asarray(labels, dtype=np.int64),
        "p1": normalize_period(np.asarray(p1)).astype(np.float32),
        "p2": normalize_period(np.asarray(p2)).astype(np.float32),
    }


def make_batch(n: int, seed: int, epoch: int, index: int, spec: SynthSpec = SynthSpec(),
               n_candidates: int = 4, harmonics: bool = False,
               labels: np.ndarray | None = None, space: str = "train") -> tuple[Batch, int]:
    """``n`` stars seeded by (seed, space, epoch, index) -> (batch, number of redraws).

    ``space`` is a seed space of :mod:`starray.data.seeds` (train, fixed, validation,
    benchmark); spaces never overlap.

    A synthetic star that cannot be processed is drawn again (never filled with noise);
    the number of redraws is returned so callers can count them.
    """
    rng = batch_rng(seed, space, epoch, index)
    if labels is None:
        labels = rng.integers(0, N_CLASSES, n)
    feats, labs, p1s, p2s, redraws = [], [], [], [], 0
    for label in labels:
        for _attempt in range(20):
            star = make_star(int(label), rng, spec)
            try:
                feats.append(star_features(star.time, star.flux, n_candidates, harmonics))
                break
            except LightCurveError:
                redraws += 1
        else:
            raise RuntimeError(f"class {label}: 20 synthetic stars in a row failed preprocessing")
        labs.append(star.label)
        p1s.append(star.primary)
        p2s.append(star.secondary)
    return features_to_batch(feats, labs, p1s, p2s), redraws


def concat(batches: list[Batch]) -> Batch:
    """Concatenate batches along the first axis."""
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

