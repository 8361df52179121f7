"""Training-step throughput per preset: data from the actor pool, from a files-mode
dataset (memory-mapped shards) and from tensors already in memory.

All measurements run in the same process, on the same model and the same stars, so the
ratios are meaningful on a noisy shared machine (files and in-memory steps alternate, one
by one, for ``--rounds`` epochs). Prints a table and writes JSON to
benchmarks/results/train_throughput.json.

    python benchmarks/train_throughput.py                      # tiny on CPU
    python benchmarks/train_throughput.py --presets compact optimal large --device cuda \
        --batch-size 256 --generators 12
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def step_fn(model, optimizer, cfg, device, use_bf16):
    """One optimizer step on a numpy batch; returns the loss tensor (no host sync)."""
    from starray.model.inference import to_tensors
    from starray.train.loop import compute_loss

    def step(batch):
        x = to_tensors(batch, device, non_blocking=True) if isinstance(batch["lc"], np.ndarray) \
            else batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(x["lc"], x["pgram"], x["folded"], x["cand_logp"], x["cand_stats"])
            loss, _ = compute_loss(out, x, cfg.train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def measure(preset: str, args: argparse.Namespace) -> dict:
    """Samples/s of the same steps fed by the pool and from memory."""
    import ray

    from starray.config import load_config, resolved_model
    from starray.data.shards import RankReader
    from starray.model.hybrid import build_model
    from starray.model.inference import to_tensors
    from starray.train.data_pool import BatchStream, DataPool, DataSpec
    from starray.train.loop import build_optimizer

    cfg = load_config(None, [f"model.preset={preset}", f"data.batch_size={args.batch_size}",
                             f"data.stars_per_epoch={args.batch_size * args.steps}"])
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(resolved_model(cfg.model)).to(device)
    if args.compile:
        model = torch.compile(model)
    optimizer = build_optimizer(model, cfg.train, fused=device.type == "cuda")
    step = step_fn(model, optimizer, cfg, device, device.type == "cuda")
    pool = DataPool.create(DataSpec.from_config(cfg), args.generators, args.generator_cpus)
    stream = BatchStream(pool, 0, 1, prefetch=args.prefetch, batch_size=args.batch_size,
                         stars_per_epoch=args.batch_size * args.steps)
    # warm-up (and compile) on epoch 0; its batches are kept for the files and memory runs
    batches = list(stream.epoch(0))
    for b in batches[: args.warmup]:
        step(b)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    # streamed: epoch 1 (fresh stars, generated while training)
    t0 = time.perf_counter()
    n = 0
    for b in stream.epoch(1):
        step(b)
        n += len(b["label"])
    sync()
    streamed = n / (time.perf_counter() - t0)
    # files: the epoch-0 stars written as a sharded dataset, read memory-mapped by rank 0
    # in memory: the epoch-0 batches as tensors already on the device
    mem = [to_tensors(b, device) for b in batches]
    with tempfile.TemporaryDirectory(prefix="starray-bench-") as tmp:
        reader = RankReader(write_dataset(tmp, batches, cfg), 0, 1, args.batch_size)
        # steps alternate (one from files, one from memory) so that the machine's load
        # hits both alike; a files step includes reading its batch from the shards
        t_files = t_mem = 0.0
        n = 0
        for _ in range(args.rounds):
            it = reader.epoch(1)
            for b_mem in mem:
                sync()
                t0 = time.perf_counter()
                b = next(it)
                step(b)
                sync()
                t_files += time.perf_counter() - t0
                n += len(b["label"])
                t0 = time.perf_counter()
                step(b_mem)
                sync()
                t_mem += time.perf_counter() - t0
        files, in_memory = n / t_files, n / t_mem
    pool.shutdown()
    ray.shutdown()
    return {"preset": preset, "device": args.device, "batch_size": args.batch_size,
            "steps": args.steps, "generators": args.generators,
            "in_memory_samples_per_s": round(in_memory, 1),
            "streamed_samples_per_s": round(streamed, 1),
            "files_samples_per_s": round(files, 1),
            "streamed_over_memory": round(streamed / in_memory, 3),
            "files_over_memory": round(files / in_memory, 3),
            "loadavg": os.getloadavg()}


def write_dataset(root: str, batches: list, cfg) -> object:
    """The batches as a files-mode dataset (16 batches a shard); returns its DatasetInfo."""
    from starray.data import shards
    from starray.data.dataset import concat

    per = 16
    parts = [concat(batches[i:i + per]) for i in range(0, len(batches), per)]
    data = {k: getattr(cfg.data, k) for k in shards.DATA_KEYS}
    plan = shards.plan(cfg.seed, data, sum(len(p["label"]) for p in parts),
                       len(parts[0]["label"]))
    plan["shard_sizes"] = [len(p["label"]) for p in parts]
    shards.start(root, plan)
    for k, part in enumerate(parts):
        shards.write_shard(root, k, part)
    shards.finish(root, plan)
    return shards.open_dataset(root)


def main() -> None:
    """Run the benchmark and print the table."""
    import ray

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--generators", type=int, default=2)
    p.add_argument("--generator-cpus", type=float, default=0.5)
    p.add_argument("--prefetch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2,
                   help="epochs of alternating files/in-memory steps")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = p.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    rows = []
    for preset in args.presets:
        ray.init(num_cpus=max(os.cpu_count() or 2, args.generators), include_dashboard=True,
                 log_to_driver=False)
        print(f"[bench] {preset}: {args.steps} steps of {args.batch_size} on {args.device}",
              flush=True)
        rows.append(measure(preset, args))
    print(f"\n{'preset':10s} {'device':6s} {'in-memory/s':>12s} {'streamed/s':>11s} {'ratio':>6s}"
          f" {'files/s':>9s} {'ratio':>6s}   load {os.getloadavg()[0]:.2f}")
    for r in rows:
        print(f"{r['preset']:10s} {r['device']:6s} {r['in_memory_samples_per_s']:12.1f} "
              f"{r['streamed_samples_per_s']:11.1f} {r['streamed_over_memory']:6.2f} "
              f"{r['files_samples_per_s']:9.1f} {r['files_over_memory']:6.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
