"""Driver of a training run: Ray, the data pool and the TorchTrainer.

parse (config) -> build (Ray, pool, trainer) -> train -> close. The same code runs on a
laptop (a local Ray is started), on a Ray cluster (``address``) and inside Slurm.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from starray.config import ConfigError, ExperimentConfig, load_config, save_config, validate


def ensure_ray(address: str | None, cfg: ExperimentConfig) -> None:
    """Connect to ``address`` or start a local Ray with this machine's CPUs (never more:
    check_local_resources has checked that the run fits them)."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(num_cpus=os.cpu_count() or 1, log_to_driver=True, include_dashboard=True)


def check_local_resources(cfg: ExperimentConfig, address: str | None) -> None:
    """Before Ray starts (local runs only): workers + generators fit this machine, and
    a files-mode dataset is complete and matches the config."""
    from starray.train.resources import check_fits, local_node

    if cfg.data.mode == "files":
        from starray.data.shards import open_dataset

        open_dataset(cfg.data.path, cfg.data)
    if address is None:
        validate(cfg, available_cpus=float(os.cpu_count() or 1))
        check_fits(cfg, [local_node()])
        if cfg.scaling.use_gpu:
            import torch

            if torch.cuda.device_count() < cfg.scaling.num_workers * cfg.scaling.gpus_per_worker:
                raise ConfigError(
                    f"scaling.use_gpu: {cfg.scaling.num_workers} workers need "
                    f"{cfg.scaling.num_workers * cfg.scaling.gpus_per_worker:g} GPUs, this "
                    f"machine has {torch.cuda.device_count()}")


def prepare_run_dir(cfg: ExperimentConfig, resume: bool) -> dict[str, Any]:
    """Create (or reopen) the run folder; returns run.json (W&B id, name)."""
    run_dir = cfg.run_dir
    meta_path = run_dir / "run.json"
    has_ckpt = (run_dir / "checkpoints" / "last.pt").exists()
    if has_ckpt and not resume:
        raise ConfigError(
            f"name: run folder {run_dir} already holds checkpoints; continue it with "
            f"`starray train --resume {run_dir}` or pick another --name")
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if not meta.get("wandb_id"):
        meta = {"name": run_dir.name, "wandb_id": uuid.uuid4().hex[:12],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, meta_path)
    save_config(cfg, run_dir / "config.yaml")
    return meta


def build_trainer(cfg: ExperimentConfig, pool: Any, wandb_id: str,
                  callbacks: list[Any] | None = None) -> Any:
    """A TorchTrainer writing into the run folder (storage_path/name = run_dir)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from starray.train.worker import train_loop_per_worker

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    run_dir = cfg.run_dir
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "pool": pool, "run_dir": str(run_dir),
                           "wandb_id": wandb_id},
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                     resources_per_worker=resources,
                                     placement_strategy=s.placement),
        run_config=RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent),
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or None,
        ),
    )


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch metrics of a run (metrics.jsonl)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_training(cfg: ExperimentConfig, address: str | None = None, resume: bool = False
                 ) -> dict[str, Any]:
    """Train ``cfg`` with Ray Train; returns a summary (best metrics and file paths)."""

    from starray.train.data_pool import DataPool

    check_local_resources(cfg, address)
    meta = prepare_run_dir(cfg, resume)
    run_dir = cfg.run_dir
    t0 = time.time()
    ensure_ray(address, cfg)
    pool = DataPool.for_run(cfg)  # resource check on the cluster's nodes, then the pool
    spec = pool.spec
    try:
        print(f"[starray] run folder {run_dir}", flush=True)
        print(f"[starray] generating the validation set ({cfg.data.val_stars} stars) on "
              f"{len(pool.actors)} generator(s) on {len(set(pool.node_ids))} node(s)...",
              flush=True)
        pool.prefill_validation()
        print(f"[starray] training {cfg.model.preset} on {cfg.scaling.num_workers} worker(s) "
              f"({'GPU' if cfg.scaling.use_gpu else 'CPU'}), {cfg.train.epochs} epochs of "
              f"{spec.batches_per_epoch() * spec.batch_size} stars ({cfg.data.mode})",
              flush=True)
        trainer = build_trainer(cfg, pool, meta["wandb_id"])
        trainer.fit()
    finally:
        pool.shutdown()
    history = read_history(run_dir)
    best = max(history, key=lambda h: h["val_acc"]) if history else {}
    summary = {
        "run_dir": str(run_dir),
        "epochs_run": len(history),
        "best_val_acc": best.get("val_acc"),
        "best_epoch": best.get("epoch"),
        "final_val_acc": history[-1]["val_acc"] if history else None,
        "best_checkpoint": str(run_dir / "checkpoints" / "best.pt"),
        "last_checkpoint": str(run_dir / "checkpoints" / "last.pt"),
        "metrics": str(run_dir / "metrics.jsonl"),
        "plots": str(run_dir / "plots"),
        "wandb_id": meta["wandb_id"],
        "wall_s": round(time.time() - t0, 1),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_run_config(run_dir: str | os.PathLike, overrides: list[str] | None = None
                    ) -> ExperimentConfig:
    """The saved config of a run folder, pinned to that folder (for --resume)."""
    run_dir = Path(run_dir).expanduser().resolve()
    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"--resume: {run_dir} is not a run folder (no config.yaml)")
    cfg = load_config(path, overrides)
    cfg.name, cfg.output_dir = run_dir.name, str(run_dir.parent)
    return cfg
