"""`starray generate`, `starray inspect` and `starray config`."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import yaml


def cmd_generate(args: argparse.Namespace) -> int:
    """Write a sharded training dataset (--format shards) or light-curve files."""
    if args.format == "shards":
        return _generate_shards(args)
    return _generate_files(args)


def _generate_shards(args: argparse.Namespace) -> int:
    """Shards of model inputs, made in parallel on Ray, resumable shard by shard."""
    import json
    import os

    import ray

    from starray.config import load_config
    from starray.data.make_dataset import generate_dataset

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.noise is not None:
        overrides.append(f"data.noise={args.noise}")
    cfg = load_config(args.config, overrides)  # a bad field fails before Ray starts
    started = not ray.is_initialized()
    if started:
        if args.address:
            ray.init(address=args.address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, log_to_driver=False,
                     include_dashboard=False)
    t0 = time.perf_counter()
    try:
        man = generate_dataset(args.out, cfg, args.n, args.shard_stars, args.workers)
    finally:
        if started:
            ray.shutdown()
    wall = time.perf_counter() - t0
    print(json.dumps({"path": str(Path(args.out).resolve()), "stars": man["stars"],
                      "shards": len(man["shards"]), "wall_s": round(wall, 1)}))
    print(f"train on it: starray train --set data.mode=files --set data.path={args.out}",
          file=sys.stderr)
    return 0


def _generate_files(args: argparse.Namespace) -> int:
    """Write synthetic light curves (one file per star) and labels.csv."""
    from starray.data.lightcurve_io import write_lightcurve
    from starray.data.synth import CLASS_NAMES, N_CLASSES, SynthSpec, make_star

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed or 0)
    spec = SynthSpec(noise=0.02 if args.noise is None else args.noise)
    labels = np.arange(args.n) % N_CLASSES if args.balanced else rng.integers(0, N_CLASSES, args.n)
    t0 = time.perf_counter()
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "class", "label", "primary_days", "secondary_days"])
        for i, lab in enumerate(labels):
            star = make_star(int(lab), rng, spec)
            name = f"star_{i:05d}.{ {'fits': 'fits', 'csv': 'csv'}.get(args.format, 'tbl') }"
            err = np.full_like(star.flux, spec.noise)
            write_lightcurve(out / name, star.time, star.flux, err, args.format)
            w.writerow([name, CLASS_NAMES[lab], int(lab), star.primary, star.secondary])
            if (i + 1) % 100 == 0 or i + 1 == args.n:
                print(f"\r{i + 1}/{args.n} stars", end="", file=sys.stderr, flush=True)
    print(f"\nwrote {args.n} light curves and labels.csv to {out} "
          f"({args.n / (time.perf_counter() - t0):.0f} stars/s)", file=sys.stderr)
    return 0


def _inspect_settings(model: str | None) -> tuple[dict, str]:
    """Candidate settings and training range: the model's, or the defaults."""
    from starray.data.lightcurve_checks import TrainingRange

    if model is None:
        return {"training": TrainingRange()}, "default training range"
    from starray.predict import load_any

    _, info = load_any(model)
    return info, f"training range of {model}"


def cmd_inspect(args: argparse.Namespace) -> int:
    """Read light curves; print and draw what the model would see; warn where a curve
    lies outside the training distribution."""
    from starray.commands.lightcurve_options import columns_and_limits
    from starray.data.features import P_MAX, P_MIN, LightCurveError, clean, star_features
    from starray.data.lightcurve_checks import (
        ResourceLimitError,
        check_limits,
        distribution_warnings,
    )
    from starray.data.lightcurve_io import LightCurveReadError, read_lightcurve
    from starray.inspect_plot import plot_inspection

    try:
        columns, limits = columns_and_limits(args)
    except ValueError as e:
        print(f"starray inspect: {e}", file=sys.stderr)
        return 2
    if args.candidates < 1:
        print("starray inspect: --candidates must be >= 1", file=sys.stderr)
        return 2
    from starray.export import ModelFileError
    from starray.train.checkpoint import CheckpointError

    try:
        info, against = _inspect_settings(args.model)
    except (CheckpointError, ModelFileError) as e:
        print(f"starray inspect: --model: {e}", file=sys.stderr)
        return 2
    kwargs = {"harmonics": info["harmonics"]} if "harmonics" in info else {}
    n_cand = int(info.get("n_candidates", args.candidates))
    out = Path(args.out)
    failed, used = 0, set()
    for path in args.files:
        try:
            lc = read_lightcurve(path, columns)
            check_limits(lc.time, limits, str(path))
            check = distribution_warnings(lc.time, lc.flux, info["training"])
            feats = star_features(lc.time, lc.flux, n_cand, **kwargs)
        except (LightCurveReadError, ResourceLimitError) as e:
            print(f"starray inspect: {e}", file=sys.stderr)
            failed += 1
            continue
        except LightCurveError as e:
            print(f"starray inspect: {path}: cannot process: {e}", file=sys.stderr)
            failed += 1
            continue
        cols = lc.columns
        used_cols = ", ".join(f"{role}={cols[key]}" for role, key in
                              (("time", "time"), (cols.get("kind", "flux"), "brightness"),
                               ("err", "err")) if cols.get(key))
        n_ok = int(np.count_nonzero(np.isfinite(lc.time) & np.isfinite(lc.flux)))
        print(f"{path}: {n_ok:,} points over {check.span_days:.4g} d "
              f"({check.points_per_day:.3g}/day), {lc.fmt} format, columns {used_cols}")
        for note in lc.notes:
            print(f"  {note}")
        cands = ", ".join(f"{p:.5g}" for p in feats.cand_days)
        print(f"  candidate periods (d): {cands}")
        for w in check.warnings:
            print(f"  warning ({against}): {w}")
        if args.no_plot:
            continue
        t, f = clean(lc.time, lc.flux)
        name, k = lc.name, 1
        while name in used:
            k += 1
            name = f"{lc.name}-{k}"
        used.add(name)
        png = plot_inspection(
            t, f, check.freq, check.power, [float(p) for p in feats.cand_days],
            out / f"{name}.png", f"{Path(path).name}: {lc.fmt}, {n_ok:,} points over "
            f"{check.span_days:.4g} d ({check.points_per_day:.3g}/day)", notes=lc.notes,
            warnings=check.warnings,
            period_axis=(P_MIN, P_MAX),
            flux_label="relative flux (from mag)" if cols.get("kind") == "mag" else "flux")
        print(f"  wrote {png}")
    return 1 if failed else 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved config (defaults + file + overrides) and the model size."""
    from starray.config import load_config, resolved_model
    from starray.model.hybrid import build_model, count_parameters

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    dims = resolved_model(cfg.model)
    print(f"# model {cfg.model.preset}: {count_parameters(build_model(dims)):,} parameters")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add generate, inspect and config."""
    g = sub.add_parser(
        "generate", help="write a sharded training dataset or synthetic light-curve files",
        description="--format shards: a training dataset of model inputs (seed space "
                    "'fixed'; train on it with data.mode=files, data.path=OUT), made in "
                    "parallel on a Ray cluster (local, or --address), with a progress bar; "
                    "a re-run resumes it shard by shard. Other formats: N synthetic stars "
                    "(14 classes) as light-curve files plus labels.csv with class and true "
                    "periods.")
    g.add_argument("--n", type=int, default=140, help="number of stars (default 140)")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--format", choices=("shards", "tbl", "plain", "csv", "fits"), default="tbl",
                   help="shards: training dataset (.npy per key per shard + manifest.json); "
                        "light-curve files: IPAC table (tbl), whitespace columns (plain), csv, "
                        "fits")
    g.add_argument("--seed", type=int, default=None, help="run seed (default: the config's, 0)")
    g.add_argument("--noise", type=float, default=None,
                   help="Gaussian flux noise sigma (default: the config's, 0.02)")
    g.add_argument("--balanced", action="store_true", help="files: cycle through the classes")
    g.add_argument("--shard-stars", type=int, default=1024,
                   help="shards: stars per shard (default 1024)")
    g.add_argument("--workers", type=int, default=None,
                   help="shards: shard tasks at once (default: the cluster's CPUs)")
    g.add_argument("--address", default=None, help="shards: Ray cluster to use (default: local)")
    g.add_argument("--config", default=None, help="shards: config whose data section (and "
                                                  "seed) makes the stars")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="shards: config override, e.g. data.n_candidates=4")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("inspect", help="read light curves, draw them, show period candidates",
                       description="For each file: points, span, columns used and any "
                                   "conversion, the period candidates the model would get, "
                                   "warnings where the curve lies outside the training "
                                   "distribution, and one PNG (light curve, periodogram with "
                                   "the candidates marked, folded view at each candidate). "
                                   "Exit 1 if any file failed.")
    i.add_argument("files", nargs="+", metavar="FILE",
                   help="light-curve files (IPAC, ECSV, CSV, whitespace columns, FITS; "
                        "sniffed from the content)")
    i.add_argument("--out", metavar="DIR", default="inspect",
                   help="folder for the PNGs, one per file (default: inspect/)")
    i.add_argument("--no-plot", action="store_true", help="print only, write no PNG")
    i.add_argument("--candidates", type=int, default=4, metavar="N",
                   help="periodogram peaks used as candidate periods (default 4; the "
                        "pipeline's 4 added candidates follow: P/2 and 2P of the best peak, "
                        "the harmonic-sum search's period and twice it); ignored with --model")
    i.add_argument("--model", metavar="MODEL", default=None,
                   help="checkpoint or export whose candidate settings and training range "
                        "(data.min_days, max_days, points_per_day) to use")
    from starray.commands.lightcurve_options import add_lightcurve_options

    add_lightcurve_options(i)
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser("config", help="print the resolved config and model size",
                       description="Print defaults + --config + --set as YAML; a bad field "
                                   "fails here with its name and allowed values.")
    c.add_argument("--config", metavar="YAML",
                   help="a training config file laid over the defaults (e.g. "
                        "configs/train/default.yaml)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set train.epochs=3 (repeatable; applied "
                        "after --config)")
    c.set_defaults(func=cmd_config)
