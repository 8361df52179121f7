"""Candidate quality against an oracle (issue 10, "restated").

For stars of one periodic class, compare the pipeline's candidates with a dense
search: nifty-ls at its default (double) precision on a grid 10x finer than the
pipeline's, over the same period range; its highest peak is the oracle's period (for
eclipsing binaries the best of P, P/2 and 2P, whose strongest peak sits at P/2).
Wherever the oracle is within ``tol`` of the true primary, some candidate should be too.
"""

from __future__ import annotations

import numpy as np

from starray.data.features import batch_features, zscore
from starray.data.labels import candidate_match
from starray.data.periodogram import freq_grid
from starray.data.synth import PERIODIC, SynthSpec, synth_batch

EB = 7
ORACLE_SPACE = 90  # entropy tag of these checks' stars (not a training seed space)


def oracle_periods(time: np.ndarray, flux: np.ndarray, refine: int = 10) -> np.ndarray:
    """Highest peak (days) of each row's dense nifty-ls periodogram: (B,)."""
    import nifty_ls

    grid = freq_grid(float(time[-1] - time[0]), samples_per_peak=10 * refine)
    res = nifty_ls.lombscargle(time, zscore(flux), fmin=grid.fmin, fmax=grid.freq[-1],
                               Nf=grid.nf, backend="finufft", nthreads=1)
    power = np.nan_to_num(np.atleast_2d(res.power), nan=-1.0)
    return 1.0 / res.freq()[np.argmax(power, axis=1)]


def class_quality(label: int, n: int, seed: int = 0, spec: SynthSpec = SynthSpec(),
                  n_candidates: int = 4, harmonics: bool = True, batch: int = 250,
                  tol: float = 0.01) -> dict[str, float]:
    """``n`` stars of class ``label`` -> oracle hits, candidate hits where the oracle hits."""
    oracle_ok = cand_ok = both = 0
    for index, start in enumerate(range(0, n, batch)):
        k = min(batch, n - start)
        rng = np.random.default_rng([seed, ORACLE_SPACE, label, index])
        sb = synth_batch(np.full(k, label), rng, spec)
        cands = batch_features(sb.time, sb.flux, n_candidates, harmonics)["cand_days"]
        oracle = oracle_periods(sb.time, sb.flux)
        options = oracle[:, None] * (np.array([1.0, 0.5, 2.0]) if label == EB else np.ones(1))
        o_hit = candidate_match(options, sb.primary, tol).any(axis=1)
        c_hit = candidate_match(cands, sb.primary, tol).any(axis=1)
        oracle_ok += int(o_hit.sum())
        cand_ok += int(c_hit.sum())
        both += int((o_hit & c_hit).sum())
    return {"stars": n, "oracle_within_tol": oracle_ok / n, "candidate_within_tol": cand_ok / n,
            "candidate_where_oracle": both / max(oracle_ok, 1), "oracle_hits": oracle_ok}


def candidate_quality_report(per_class: int, seed: int = 0, classes: tuple[int, ...] = PERIODIC,
                             **kwargs) -> dict[int, dict[str, float]]:
    """:func:`class_quality` for each periodic class."""
    return {c: class_quality(c, per_class, seed, **kwargs) for c in classes}
