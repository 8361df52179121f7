"""Make a sharded dataset (:mod:`starray.data.shards`) in parallel on a Ray cluster.

One Ray task per shard (1 CPU, BLAS threads pinned to 1) makes its stars and writes its
shard itself, atomically, so the folder must be on storage that every node sees. Shards
that are already complete are skipped: an interrupted run resumes shard by shard. The
result does not depend on the number of workers (each shard is a pure function of the
seed and its index).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from starray.data import shards

THREAD_ENV = {"env_vars": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                           "MKL_NUM_THREADS": "1"}}


def make_shard(root: str, k: int, n: int, seed: int, data: dict[str, Any]) -> dict[str, Any]:
    """Make and write shard ``k`` (``n`` stars of seed space "fixed"); returns its meta."""
    from starray.data.dataset import make_batch
    from starray.data.synth import SynthSpec

    spec = SynthSpec(min_days=data["min_days"], max_days=data["max_days"],
                     points_per_day=data["points_per_day"], noise=data["noise"])
    batch, _ = make_batch(n, seed, 0, k, spec, data["n_candidates"], data["harmonics"],
                          space=shards.SPACE)
    return shards.write_shard(root, k, batch)


def generate_dataset(root: str | os.PathLike, cfg: Any, stars: int, shard_stars: int = 1024,
                     workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Make (or finish) the dataset of ``stars`` stars of ``cfg`` (seed, data section).

    Uses the connected Ray cluster (the caller starts or connects it). ``workers``: shard
    tasks at once (default: the cluster's CPUs). Returns the manifest.
    """
    import ray
    from tqdm import tqdm

    if stars < 1 or shard_stars < 1:
        raise shards.DatasetError(f"--n and --shard-stars must be >= 1, got {stars}, "
                                  f"{shard_stars}")
    root = Path(root).expanduser().resolve()
    data = {k: getattr(cfg.data, k) for k in shards.DATA_KEYS}
    plan = shards.plan(cfg.seed, data, stars, shard_stars)
    shards.start(root, plan)
    sizes = plan["shard_sizes"]
    todo = [k for k in range(len(sizes)) if not shards.shard_done(root, k)]
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(make_shard).options(num_cpus=1, runtime_env=THREAD_ENV, max_retries=3)
    bar = tqdm(total=len(sizes), initial=len(sizes) - len(todo), unit="shard", file=sys.stderr,
               desc=f"generate {root.name}", disable=not progress)
    pending: list[Any] = []
    queue = list(todo)
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                k = queue.pop(0)
                pending.append(task.remote(str(root), k, sizes[k], cfg.seed, data))
            done, pending = ray.wait(pending, num_returns=1)
            meta = ray.get(done[0])
            if not shards.shard_done(root, meta["index"]):
                raise shards.DatasetError(
                    f"{root}: shard {meta['index']} was written by a Ray worker but is not "
                    "visible here; the folder must be on storage shared by all Ray nodes")
            bar.update(1)
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref)
    return shards.finish(root, plan)
