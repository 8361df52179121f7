"""Data-generation rate on one core: a plain per-star reference pipeline vs starray's
batch pipeline, in the same run; per-stage shares; periodogram methods; optionally the
accuracy against astropy's exact sums and the candidate quality against an oracle.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/datagen.py [--quality] [--accuracy]

Threads are pinned to one (OMP/OPENBLAS/MKL, finufft nthreads=1). Prints tables and
writes benchmarks/results/datagen.json. Both wall-clock and CPU-time rates are given:
on a shared machine the CPU-time rate is the one-core number (state ``uptime``).
``--pool`` adds the Ray table of benchmarks/datagen_pool.py (K generators feeding one
consumer), when that module exists.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

STAGES = ("synthesis", "cleaning", "periodogram", "reduce", "candidates", "folds", "resample")


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _rate(n: int, start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = (b - a for a, b in zip(start, _clock()))
    return {"stars": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "stars_per_s_wall": round(n / wall, 1), "stars_per_s_cpu": round(n / cpu, 1)}


# ------------------------------------------------------------------ (a) the reference
def reference_star(time_, flux, n_candidates: int = 4, periodogram: str = "astropy"):
    """One star the way the reference system did it (astropy autopower), or with one
    nifty-ls call per star (``periodogram="nifty"``, starray's previous pipeline)."""
    from astropy.timeseries import LombScargle

    time_, flux = np.asarray(time_, dtype=np.float64), np.asarray(flux, dtype=np.float64)
    ok = np.isfinite(time_) & np.isfinite(flux)
    order = np.argsort(time_[ok])
    t, f = time_[ok][order], flux[ok][order]
    fz = (f - f.mean()) / f.std()
    lc = np.interp(np.linspace(t[0], t[-1], 1024), t, fz)
    span = t[-1] - t[0]
    fmin = 1 / min(2 * span, 50)
    if periodogram == "astropy":
        freq, power = LombScargle(t, fz).autopower(minimum_frequency=fmin,
                                                   maximum_frequency=10.0, samples_per_peak=10)
    else:
        import nifty_ls

        nf = int(np.ceil((10.0 - fmin) * 10 * span)) + 1
        res = nifty_ls.lombscargle(t, fz, fmin=fmin, fmax=10.0, Nf=nf, nthreads=1,
                                   backend="finufft")
        freq, power = res.freq(), res.power
    edges = np.linspace(np.log10(1 / 50), np.log10(10), 513)
    pgram = np.zeros(512)
    np.maximum.at(pgram, np.clip(np.searchsorted(edges, np.log10(freq)) - 1, 0, 511), power)
    pgram /= max(pgram.max(), 1e-12)
    inner = power[1:-1]
    peaks = 1 + np.flatnonzero((inner > power[:-2]) & (inner >= power[2:]))
    top = peaks[np.argsort(-power[peaks])[:n_candidates]]
    cands = list(1 / freq[top])
    cands += [cands[0] / 2, cands[0] * 2]
    folded = []
    for p in cands:
        phase = (t / p) % 1.0
        o = np.argsort(phase)
        folded.append(np.interp(np.linspace(0, 1, 200), phase[o], fz[o]))
    return lc, pgram, np.stack(folded), np.array(cands)


def bench_reference(n: int, seed: int, periodogram: str = "astropy") -> dict[str, float]:
    """Per-star synthesis (own time sampling) and the reference features, one by one."""
    from starray.data.synth import N_CLASSES, make_star

    rng = np.random.default_rng([seed, 1])
    reference_star(*(lambda s: (s.time, s.flux))(make_star(0, rng)), periodogram=periodogram)
    start = _clock()
    for label in rng.integers(0, N_CLASSES, n):
        star = make_star(int(label), rng)
        reference_star(star.time, star.flux, periodogram=periodogram)
    return _rate(n, start)


# --------------------------------------------------------------- (b) starray's batches
def bench_batches(n_batches: int, batch: int, seed: int, template_stars: int | None = None
                  ) -> dict:
    """make_batch over ``n_batches`` batches; per-stage CPU shares from its StageTimer.
    ``template_stars``: stars per cadence template (default: the pipeline's own)."""
    from starray.data.dataset import TEMPLATE_STARS, make_batch
    from starray.data.features import StageTimer

    per = template_stars or TEMPLATE_STARS
    make_batch(batch, seed, 0, 10_000, template_stars=per)  # warm-up (imports, finufft)
    timer = StageTimer()
    start = _clock()
    for index in range(n_batches):
        timer.restart()
        make_batch(batch, seed, 0, index, timer=timer, template_stars=per)
    out = _rate(n_batches * batch, start)
    total = sum(timer.seconds.values())
    out["stage_share"] = {s: round(timer.seconds.get(s, 0.0) / total, 3) for s in STAGES}
    out["stage_us_per_star"] = {s: round(1e6 * timer.seconds.get(s, 0.0) / out["stars"], 1)
                                for s in STAGES}
    return out


# ------------------------------------------------------------------ periodogram methods
def bench_periodograms(batch: int, seed: int, accuracy_stars: int) -> dict:
    """us/star of Lomb-Scargle variants on one batch sharing a cadence template."""
    import nifty_ls

    from starray.data.features import zscore
    from starray.data.periodogram import freq_grid, lomb_scargle_batch
    from starray.data.synth import N_CLASSES, SynthSpec, synth_batch

    rng = np.random.default_rng([seed, 2])
    sb = synth_batch(rng.integers(0, N_CLASSES, batch), rng, SynthSpec(min_days=20, max_days=20))
    t, y = sb.time, zscore(sb.flux)
    grid = freq_grid(float(t[-1] - t[0]))
    fmax = float(grid.freq[-1])

    def nifty(rows, **kw):
        return nifty_ls.lombscargle(t, rows, fmin=grid.fmin, fmax=fmax, Nf=grid.nf,
                                    backend="finufft", nthreads=1, **kw).power

    def gemm():  # Y x cos/sin tables (float32), tables built per template
        w = 2 * np.pi * np.multiply.outer(t, grid.freq)
        cos, sin = np.cos(w).astype(np.float32), np.sin(w).astype(np.float32)
        y32 = y.astype(np.float32)
        return y32 @ cos, y32 @ sin

    methods = {
        "nifty_ls per star (1 series per call)": lambda: [nifty(y[i]) for i in range(batch)],
        "nifty_ls batched, default eps": lambda: nifty(y),
        "nifty_ls batched, eps 1e-4": lambda: nifty(y, finufft_kwargs={"eps": 1e-4}),
        "nifty_ls batched, eps 1e-4, fit_mean=False":
            lambda: nifty(y, finufft_kwargs={"eps": 1e-4}, fit_mean=False),
        "GEMM sums only (float32 tables + 2 products)": gemm,
        "starray (B+1 float32 + template NUFFTs)": lambda: lomb_scargle_batch(t, y, grid),
        "starray, double precision": lambda: lomb_scargle_batch(t, y, grid, eps=1e-9,
                                                                 single=False),
    }
    rows = {"points": len(t), "frequencies": grid.nf, "stars": batch, "us_per_star_cpu": {}}
    for name, fn in methods.items():
        fn()
        best = np.inf
        for _ in range(3):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        rows["us_per_star_cpu"][name] = round(1e6 * best / batch, 1)
    if accuracy_stars:
        from astropy.timeseries import LombScargle

        power = lomb_scargle_batch(t, y, grid)
        k = min(accuracy_stars, batch)
        diffs = [np.abs(power[i] - LombScargle(t, y[i]).power(grid.freq, method="slow")).max()
                 for i in range(k)]
        rows["max_abs_diff_vs_astropy_slow"] = {"stars": k, "max": float(np.max(diffs))}
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-stars", type=int, default=256)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy", type=int, default=0, metavar="N",
                    help="also compare N stars (1,500 points) with astropy's exact sums")
    ap.add_argument("--quality", type=int, default=0, metavar="PER_CLASS",
                    help="also run the candidate-vs-oracle check (issue 10: 500)")
    ap.add_argument("--pool", action="store_true", help="add benchmarks/datagen_pool.py's table")
    ap.add_argument("--out", default="benchmarks/results/datagen.json")
    args = ap.parse_args(argv)

    load = os.getloadavg()
    res: dict = {"loadavg_1_5_15": [round(x, 2) for x in load], "threads": 1}
    res["reference"] = bench_reference(args.reference_stars, args.seed)
    res["per_star_nifty"] = bench_reference(args.reference_stars, args.seed, "nifty")
    res["batch"] = bench_batches(args.batches, args.batch, args.seed)
    # the same stars on one cadence template per batch: what the pipeline's mixing costs
    res["batch_one_template"] = bench_batches(args.batches, args.batch, args.seed, args.batch)
    for clock in ("wall", "cpu"):
        key = f"stars_per_s_{clock}"
        res[f"ratio_{clock}"] = round(res["batch"][key] / res["reference"][key], 2)
        res[f"ratio_vs_per_star_nifty_{clock}"] = round(
            res["batch"][key] / res["per_star_nifty"][key], 2)
    res["periodogram"] = bench_periodograms(args.batch, args.seed, args.accuracy)
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min), 1 thread")
    print(f"{'pipeline':34s} {'stars':>6s} {'stars/s wall':>13s} {'stars/s CPU':>12s}")
    for name, key in (("(a) per-star reference (astropy)", "reference"),
                      ("(a') per-star, nifty-ls per star", "per_star_nifty"),
                      ("(b) starray batches", "batch"),
                      ("(b') same, one template per batch", "batch_one_template")):
        r = res[key]
        print(f"{name:34s} {r['stars']:6d} {r['stars_per_s_wall']:13.1f} "
              f"{r['stars_per_s_cpu']:12.1f}")
    print(f"{'ratio (b)/(a)':34s} {'':6s} {res['ratio_wall']:13.2f} {res['ratio_cpu']:12.2f}")
    print(f"{'ratio (b)/(a)':34s} {'':6s} {res['ratio_vs_per_star_nifty_wall']:13.2f} "
          f"{res['ratio_vs_per_star_nifty_cpu']:12.2f}".replace("(a)", "(a')", 1))
    print("\nstage shares of (b) (CPU time):")
    for s in STAGES:
        print(f"  {s:12s} {100 * res['batch']['stage_share'][s]:5.1f}%  "
              f"{res['batch']['stage_us_per_star'][s]:7.1f} us/star")
    p = res["periodogram"]
    print(f"\nperiodogram, {p['stars']} stars x {p['points']} points x {p['frequencies']} "
          "frequencies, us/star (CPU):")
    for name, us in p["us_per_star_cpu"].items():
        print(f"  {name:48s} {us:8.1f}")
    if "max_abs_diff_vs_astropy_slow" in p:
        a = p["max_abs_diff_vs_astropy_slow"]
        print(f"  max |power - astropy slow| over {a['stars']} stars: {a['max']:.2e}")
    if args.quality:
        from starray.data.oracle import candidate_quality_report
        from starray.data.synth import CLASS_NAMES

        q = candidate_quality_report(args.quality, seed=args.seed)
        res["candidate_quality"] = {CLASS_NAMES[c]: r for c, r in q.items()}
        print(f"\ncandidates vs a 10x-finer nifty-ls oracle, {args.quality} stars per class:")
        print(f"  {'class':28s} {'oracle<1%':>9s} {'cand<1%':>8s} {'cand<1% where oracle':>21s}")
        for name, r in res["candidate_quality"].items():
            print(f"  {name:28s} {r['oracle_within_tol']:9.3f} {r['candidate_within_tol']:8.3f} "
                  f"{r['candidate_where_oracle']:21.3f}")
    if args.pool:
        sys.path.insert(0, str(Path(__file__).parent))
        try:
            from datagen_pool import pool_table  # the Ray table (K generators, one consumer)
        except ImportError as e:
            raise SystemExit(f"--pool: benchmarks/datagen_pool.py has no pool_table ({e})") from e
        res["pool"] = pool_table(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"\nwrote {out}")
    return res


if __name__ == "__main__":
    main()
