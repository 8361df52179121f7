"""K generators (K = 1, 2) feeding one consumer through Ray: batches/s delivered vs made.

"made" is what the K generators could make together (batches per second of each one's
busy time, summed); "delivered" is what one consumer (a BatchStream in this process,
``prefetch`` requests in flight) received per second of wall time. Their ratio is the
share of the pool's work that reaches the consumer. Prints a table, writes JSON.

    python benchmarks/datagen_pool.py --batches 32 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def measure(k: int, args: argparse.Namespace) -> dict:
    """Delivered and made batches/s with ``k`` generators on this node."""
    from starray.config import load_config
    from starray.train.data_pool import BatchStream, DataPool, DataSpec

    cfg = load_config(None, [f"data.batch_size={args.batch_size}",
                             f"data.stars_per_epoch={args.batch_size * args.batches}"])
    pool = DataPool.create(DataSpec.from_config(cfg), per_node=k, cpus=args.generator_cpus)
    stream = BatchStream(pool, 0, 1, prefetch=args.prefetch)
    for _ in BatchStream(pool, 0, 1, prefetch=k).epoch(0):  # warm-up: imports, first plans
        break
    before = pool.stats()
    t0 = time.perf_counter()
    n = sum(1 for _ in stream.epoch(1))
    wall = time.perf_counter() - t0
    after = pool.stats()
    busy = [a["busy_s"] - b["busy_s"] for a, b in zip(after, before)]
    made = [(a["served"] - b["served"]) for a, b in zip(after, before)]
    pool.shutdown()
    made_rate = sum(m / t for m, t in zip(made, busy) if t > 0)
    return {"generators": k, "batches": n, "batch_size": args.batch_size,
            "delivered_batches_per_s": round(n / wall, 2),
            "made_batches_per_s": round(made_rate, 2),
            "delivered_over_made": round(n / wall / made_rate, 3) if made_rate else None,
            "stars_per_s_delivered": round(n * args.batch_size / wall, 1)}


def main() -> None:
    """Run K = 1, 2 and print the table."""
    import ray

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--generator-cpus", type=float, default=0.5)
    p.add_argument("--prefetch", type=int, default=4)
    p.add_argument("--out", default="benchmarks/results/datagen_pool.json")
    args = p.parse_args()
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    rows = [measure(k, args) for k in args.ks]
    ray.shutdown()
    load = os.getloadavg()
    print(f"\n{'K':>2s} {'delivered/s':>12s} {'made/s':>8s} {'ratio':>6s} {'stars/s':>8s}"
          f"   (batches of {args.batch_size}; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    for r in rows:
        print(f"{r['generators']:2d} {r['delivered_batches_per_s']:12.2f} "
              f"{r['made_batches_per_s']:8.2f} {r['delivered_over_made']:6.2f} "
              f"{r['stars_per_s_delivered']:8.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "loadavg": load}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
