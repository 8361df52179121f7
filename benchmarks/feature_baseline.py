"""A classical baseline to beat: gradient-boosted trees on light-curve features.

As astronomers classify variable stars (UPSILoN, ALeRCE: random forests on hand-made
features), this trains scikit-learn's HistGradientBoostingClassifier on features computed
from the same pipeline the network sees (``starray.data.features``: the cleaned, z-scored
light curve on its 1024-point grid, the 512-bin peak-keeping periodogram, the candidate
periods and the light curve folded at each), on as many training stars as a checkpoint saw,
and scores it on the ``starray evaluate`` benchmark. A second tree model picks the period:
which candidate matches the true primary (trained on the stars where one does).

Features (per star; C candidates, j = 0..C-1, candidate 0 the highest peak):
- periods: log10 of each candidate; log10 ratio of each candidate to candidate 0;
- powers: periodogram power at each candidate's bin; periodogram mean, the fraction of
  bins above 0.5, its entropy, the ratio of the second to the first local peak;
- fold shape at each candidate: its phase dispersion theta (PDM, from the raw points: an
  input of the network too), variance explained by the fold (1 - residual/total), the
  fold's range, minimum, maximum, skewness, phase of the minimum, the correlation of the
  fold with itself shifted by half a phase (two equal eclipses: high), roughness (mean
  squared bin-to-bin difference);
- light curve: skewness, kurtosis, linear slope, lag-1 autocorrelation, von Neumann
  ratio, 1st/5th/95th/99th percentiles, fractions of points beyond +-2 sigma.

    python benchmarks/feature_baseline.py --train-stars 4096 --per-class 50     # quick
    python benchmarks/feature_baseline.py --checkpoint runs/default/checkpoints/best.pt

The number of training stars defaults to the checkpoint's (epochs x stars per epoch, or
the fixed dataset's size). Prints accuracy, macro F1 and period-within-1% of both, writes
JSON (``--out``); ``starray evaluate CKPT --baseline THAT.json`` adds the baseline's row to
the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from starray.data.dataset import Batch, make_batch  # noqa: E402
from starray.data.features import LOGP_HI, LOGP_LO, PGRAM_BINS  # noqa: E402
from starray.data.labels import candidate_match  # noqa: E402

CHUNK = 256


def _skew_kurt(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=axis, keepdims=True)
    sd = x.std(axis=axis, keepdims=True) + 1e-9
    z = (x - mu) / sd
    return (z**3).mean(axis=axis), (z**4).mean(axis=axis) - 3.0


def pgram_bin(period_days: np.ndarray, bins: int = PGRAM_BINS) -> np.ndarray:
    """Index of the periodogram bin holding each period (bin 0: 50 d, last: 0.1 d)."""
    edges = np.linspace(-LOGP_HI, -LOGP_LO, bins + 1)
    return np.clip(np.searchsorted(edges, -np.log10(period_days), side="right") - 1, 0, bins - 1)


def star_feature_table(batch: Batch) -> tuple[np.ndarray, list[str]]:
    """(B, F) features of a batch of model inputs, and their names (see the module doc)."""
    lc = batch["lc"][:, 0].astype(np.float64)  # (B, 1024), z-scored
    pg = batch["pgram"][:, 0].astype(np.float64)  # (B, 512)
    folded = batch["folded"].astype(np.float64)  # (B, C, 200)
    cand = batch["cand_days"].astype(np.float64)  # (B, C)
    b, c, nbins = folded.shape
    cols, names = [], []

    def add(values: np.ndarray, name: str) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(b, -1)
        cols.append(values)
        names.extend([name] if values.shape[1] == 1 else
                     [f"{name}_{j}" for j in range(values.shape[1])])

    logc = np.log10(cand)
    add(logc, "log_period")
    add(logc[:, 1:] - logc[:, :1], "log_ratio_to_top")
    add(np.take_along_axis(pg, pgram_bin(cand), axis=1), "power")
    add(pg.mean(1), "pgram_mean")
    add((pg > 0.5).mean(1), "pgram_frac_above_half")
    p = pg / (pg.sum(1, keepdims=True) + 1e-12)
    add(-(p * np.log(p + 1e-12)).sum(1), "pgram_entropy")
    is_peak = np.zeros_like(pg, dtype=bool)
    is_peak[:, 1:-1] = (pg[:, 1:-1] > pg[:, :-2]) & (pg[:, 1:-1] >= pg[:, 2:])
    peaks = np.sort(np.where(is_peak, pg, 0.0), axis=1)
    add(peaks[:, -2] / (peaks[:, -1] + 1e-12), "pgram_second_peak_ratio")

    add(batch["cand_stats"][..., 0], "fold_theta")
    total = lc.var(1)[:, None] + 1e-9
    add(1 - np.clip((lc.var(1)[:, None] - folded.var(2)) / total, 0, None), "fold_var_explained")
    add(np.ptp(folded, axis=2), "fold_range")
    add(folded.min(2), "fold_min")
    add(folded.max(2), "fold_max")
    add(_skew_kurt(folded, 2)[0], "fold_skew")
    add(folded.argmin(2) / nbins, "fold_min_phase")
    shifted = np.roll(folded, nbins // 2, axis=2)
    fz = folded - folded.mean(2, keepdims=True)
    sz = shifted - shifted.mean(2, keepdims=True)
    add((fz * sz).sum(2) / (np.sqrt((fz**2).sum(2) * (sz**2).sum(2)) + 1e-9), "fold_half_corr")
    add((np.diff(folded, axis=2) ** 2).mean(2), "fold_roughness")

    skew, kurt = _skew_kurt(lc, 1)
    add(skew, "lc_skew")
    add(kurt, "lc_kurtosis")
    grid = np.linspace(-1, 1, lc.shape[1])
    add((lc * grid).sum(1) / (grid**2).sum(), "lc_slope")
    d = lc - lc.mean(1, keepdims=True)
    add((d[:, 1:] * d[:, :-1]).mean(1) / (d.var(1) + 1e-9), "lc_lag1_autocorr")
    add((np.diff(lc, axis=1) ** 2).mean(1) / (lc.var(1) + 1e-9), "lc_von_neumann")
    add(np.percentile(lc, [1, 5, 95, 99], axis=1).T, "lc_percentile")
    add((lc > 2).mean(1), "lc_frac_above_2sigma")
    add((lc < -2).mean(1), "lc_frac_below_2sigma")
    return np.concatenate(cols, axis=1), names


def training_stars(n: int, seed: int, n_candidates: int, harmonics: bool,
                   say: Any = print) -> dict[str, Any]:
    """Feature table of ``n`` training stars (the ``train`` seed space, balanced by chance
    like the stream): ``x`` (n, features), ``names``, and the ``label``, ``cand_days`` and
    ``p1`` columns the fit needs. Features are computed chunk by chunk and the model inputs
    dropped, so memory stays ~400 bytes a star (300k stars of inputs would need ~4 GB)."""
    xs, labels, cands, p1s, names, t0 = [], [], [], [], [], time.perf_counter()
    for i, start in enumerate(range(0, n, CHUNK)):
        batch = make_batch(min(CHUNK, n - start), seed, 0, i, n_candidates=n_candidates,
                           harmonics=harmonics, space="train")[0]
        x, names = star_feature_table(batch)
        xs.append(x.astype(np.float32))
        labels.append(batch["label"])
        cands.append(batch["cand_days"])
        p1s.append(batch["p1"])
        if i % 20 == 0:
            say(f"[baseline] training stars {start + len(batch['label'])}/{n} "
                f"({time.perf_counter() - t0:.0f} s)")
    return {"x": np.concatenate(xs), "names": names, "label": np.concatenate(labels),
            "cand_days": np.concatenate(cands), "p1": np.concatenate(p1s)}


def fit_baseline(train: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Fit the class model and the candidate-choice model on a training feature table."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from starray.data.features import denormalize_period

    x, names = train["x"], train["names"]
    clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, max_leaf_nodes=31,
                                         early_stopping=True, random_state=seed)
    clf.fit(x, train["label"])
    match = candidate_match(train["cand_days"], denormalize_period(train["p1"]))
    has = match.any(1)
    chooser = HistGradientBoostingClassifier(max_iter=150, early_stopping=False,
                                             random_state=seed)
    chooser.fit(x[has], match[has].argmax(1))
    return {"classifier": clf, "chooser": chooser, "feature_names": names,
            "n_train": len(train["label"]), "n_train_with_match": int(has.sum())}


def predict_baseline(model: dict[str, Any], batch: Batch) -> dict[str, np.ndarray]:
    """Predictions in the shape ``starray.evaluate.compute_metrics`` takes."""
    x, _ = star_feature_table(batch)
    x = x.astype(np.float32)  # as the training table
    probs = model["classifier"].predict_proba(x)
    full = np.zeros((len(x), 14))
    full[:, model["classifier"].classes_] = probs
    chosen = model["chooser"].predict(x).astype(np.int64)
    n = len(x)
    days = batch["cand_days"][np.arange(n), chosen].astype(np.float64)
    weights = np.eye(batch["cand_days"].shape[1])[chosen]
    return {"probs": full, "pred": full.argmax(1), "p1_days": days, "p2_days": days,
            "period_days": days, "cand_weights": weights, "chosen_index": chosen,
            "chosen_days": days}


def summary_row(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The comparison's columns from ``compute_metrics`` output."""
    p = metrics["periods"]
    return {"model": name, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "period_within_1pct": p["regression"]["within_1pct"],
            "chosen_within_1pct": p["chosen"]["within_1pct"],
            "any_candidate_within_1pct": p["candidates"]["any_within_tol"],
            "chosen_given_any": p["candidates"]["chosen_given_any"]}


def stars_seen(cfg: dict[str, Any]) -> int:
    """Training stars a run's config saw: epochs x stars per epoch, or the fixed dataset."""
    data, train = cfg.get("data", {}), cfg.get("train", {})
    if data.get("mode") == "fixed":
        return int(data.get("n_per_class", 300)) * 14
    return int(train.get("epochs", 10)) * int(data.get("stars_per_epoch", 4096))


def main(argv: list[str] | None = None) -> int:
    """Train, score, print the table, write JSON."""
    from starray.evaluate import benchmark_batch, compute_metrics
    from starray.model.inference import predict_arrays
    from starray.train.checkpoint import load_checkpoint, model_from_state

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="a starray checkpoint to compare with")
    p.add_argument("--train-stars", type=int, default=None,
                   help="training stars (default: as many as the checkpoint saw, else 40960)")
    p.add_argument("--per-class", type=int, default=500, help="benchmark stars per class")
    p.add_argument("--seed", type=int, default=12345, help="benchmark seed")
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--n-candidates", type=int, default=None)
    p.add_argument("--harmonics", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--out", default="benchmarks/results/feature_baseline.json")
    args = p.parse_args(argv)
    state = load_checkpoint(args.checkpoint) if args.checkpoint else None
    data_cfg = dict(state["config"].get("data", {})) if state else {}
    n_cand = args.n_candidates or int(data_cfg.get("n_candidates", 4))
    harmonics = args.harmonics if args.harmonics is not None else bool(
        data_cfg.get("harmonics", False))
    n_train = args.train_stars or (stars_seen(state["config"]) if state else 40960)

    t0 = time.perf_counter()
    train = training_stars(n_train, args.train_seed, n_cand, harmonics)
    t_gen = time.perf_counter() - t0
    print(f"[baseline] fitting on {n_train} stars ({t_gen:.0f} s to generate and featurize)"
          " ...", flush=True)
    model = fit_baseline(train, args.train_seed)
    t_fit = time.perf_counter() - t0 - t_gen
    bench, _ = benchmark_batch(args.per_class, args.seed, n_cand, harmonics)
    from starray.data.synth import CLASS_NAMES

    base_m = compute_metrics(predict_baseline(model, bench), bench, CLASS_NAMES)
    rows = [summary_row("gradient-boosted trees (features)", base_m)]
    if state is not None:
        net = model_from_state(state)
        net_m = compute_metrics(predict_arrays(net, bench), bench, CLASS_NAMES)
        rows.append(summary_row(f"starray {state['model_dims'].get('period_head', 'regress')} "
                                f"({args.checkpoint})", net_m))
    print(f"\n{'model':40s} {'accuracy':>8s} {'macro F1':>8s} {'period<1%':>9s} "
          f"{'chosen|any':>10s}")
    for r in rows:
        print(f"{r['model'][:40]:40s} {100 * r['accuracy']:7.1f}% {100 * r['macro_f1']:7.1f}% "
              f"{100 * r['period_within_1pct']:8.1f}% {100 * r['chosen_given_any']:9.1f}%")
    result = {
        "baseline": {**rows[0], "per_class": base_m["per_class"], "n_train": n_train,
                     "n_train_with_match": model["n_train_with_match"],
                     "n_features": len(model["feature_names"]),
                     "feature_names": model["feature_names"], "generate_s": round(t_gen, 1),
                     "fit_s": round(t_fit, 1)},
        "checkpoint": rows[1] if len(rows) > 1 else None,
        "benchmark": {"per_class": args.per_class, "seed": args.seed,
                      "n_candidates": n_cand, "harmonics": harmonics},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
