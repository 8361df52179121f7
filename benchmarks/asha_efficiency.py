"""ASHA vs. running every trial to max_t, on the same sampled configurations.

Samples N configurations once (seeded), runs them as an ASHA sweep and as a FIFO sweep
(every trial to max_t), and reports the fraction of epochs ASHA spent and the gap between
the two best trials. Prints a table, writes benchmarks/results/asha_efficiency.json.

    python benchmarks/asha_efficiency.py --trials 16 --max-t 6      # ~19 min on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")


def main() -> None:
    """Run both sweeps and compare."""
    import ray

    from starray.config import load_config
    from starray.tune.space import load_space, sample_points
    from starray.tune.sweep import run_sweep

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="configs/tune/tiny.yaml")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--max-t", type=int, default=6)
    p.add_argument("--out-dir", default="/tmp/starray-asha-bench")
    p.add_argument("--set", dest="overrides", action="append", default=[
        "data.stars_per_epoch=512", "data.val_stars=1024", "scaling.num_workers=1",
        "scaling.cpus_per_worker=0.5", "data.generators=1", "data.generator_cpus=0.25"])
    args = p.parse_args()
    shutil.rmtree(args.out_dir, ignore_errors=True)
    results = {}
    base = load_config(None, [f"output_dir={args.out_dir}"])  # --set wins over the space's base:
    spec = load_space(args.space, base)
    points = sample_points(spec, args.trials, seed=0)
    for scheduler in ("asha", "fifo"):
        base.name = f"bench-{scheduler}"
        s = run_sweep(args.space, base, args.overrides, num_samples=args.trials, points=points,
                      scheduler=scheduler, max_t=args.max_t)
        ray.shutdown()
        results[scheduler] = {"epochs": s["total_epochs"], "best": s.get("best_value"),
                              "best_trial": s.get("best_trial"), "wall_s": s["wall_s"]}
        print(s["table"], flush=True)
    full = args.trials * args.max_t
    row = {"trials": args.trials, "max_t": args.max_t,
           "asha_epochs": results["asha"]["epochs"], "full_epochs": full,
           "asha_fraction": round(results["asha"]["epochs"] / full, 3),
           "asha_best_val_acc": results["asha"]["best"],
           "full_best_val_acc": results["fifo"]["best"],
           "gap_points": round(100 * (results["fifo"]["best"] - results["asha"]["best"]), 2),
           "asha_wall_s": results["asha"]["wall_s"], "full_wall_s": results["fifo"]["wall_s"]}
    print()
    for k, v in row.items():
        print(f"{k:20s} {v}")
    out = Path("benchmarks/results/asha_efficiency.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
