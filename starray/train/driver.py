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

from starray.config import (
    BEST_METRICS,
    ConfigError,
    ExperimentConfig,
    load_config,
    save_config,
    validate,
)


def ensure_ray(address: str | None, cfg: ExperimentConfig, verbose: bool = True) -> None:
    """Connect to ``address`` or start a local Ray sized for the run.

    ``verbose=False`` keeps the workers' and the Train controller's logs out of this
    console (they stay in Ray's log files) and Ray's own INFO/WARNING lines too.
    """
    import logging

    import ray

    if ray.is_initialized():
        return
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **{"log_to_driver": True, **quiet})
        return
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=True,
             **{"log_to_driver": True, **quiet})


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


class TrainingError(RuntimeError):
    """Training stopped for a reason the user can act on (message says which)."""


# Worker-group (re)starts Ray Train may retry after a start timeout before giving up
# (Ray's default, -1, retries forever: a run that cannot be scheduled hangs).
START_RETRIES = 2


def prepare_run_dir(cfg: ExperimentConfig, resume: bool) -> dict[str, Any]:
    """Create (or reopen) the run folder; returns run.json (W&B id, name)."""
    from starray.train.checkpoint import CheckpointManager

    run_dir = cfg.run_dir
    meta_path = run_dir / "run.json"
    ckpts = CheckpointManager(run_dir)
    has_ckpt = ckpts.last.exists() or ckpts.prev.exists()
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
                  callbacks: list[Any] | None = None, progress: Any = None) -> Any:
    """A TorchTrainer writing into the run folder (storage_path/name = run_dir).

    ``progress``: a :class:`starray.train.progress.ProgressBoard` that rank 0 feeds.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from starray.train.worker import train_loop_per_worker

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    run_dir = cfg.run_dir
    # read by Ray Train's controller (propagated from the driver's environment)
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(s.start_timeout_s)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "pool": pool, "run_dir": str(run_dir),
                           "wandb_id": wandb_id, "progress": progress},
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                     resources_per_worker=resources,
                                     placement_strategy=s.placement),
        run_config=RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent),
            failure_config=FailureConfig(max_failures=s.max_failures,
                                         controller_failure_limit=START_RETRIES),
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


def run_training(cfg: ExperimentConfig, address: str | None = None, resume: bool = False,
                 verbose: bool = False) -> dict[str, Any]:
    """Train ``cfg`` with Ray Train; returns a summary (best metrics and file paths).

    The console shows a progress bar and one line per epoch; ``verbose`` adds Ray's logs.
    """
    from starray.train.best import best_row
    from starray.train.data_pool import DataPool
    from starray.train.progress import Console

    check_local_resources(cfg, address)
    meta = prepare_run_dir(cfg, resume)
    run_dir = cfg.run_dir
    t0 = time.time()
    ensure_ray(address, cfg, verbose=verbose)
    pool = DataPool.for_run(cfg)  # resource check on the cluster's nodes, then the pool
    spec = pool.spec
    try:
        with Console(cfg.train.epochs) as console:
            console.write(f"[starray] run folder {run_dir}")
            console.write(f"[starray] generating the validation set ({cfg.data.val_stars} "
                          f"stars) on {len(pool.actors)} generator(s) on "
                          f"{len(set(pool.node_ids))} node(s)...")
            pool.prefill_validation()
            console.write(f"[starray] training {cfg.model.preset} on "
                          f"{cfg.scaling.num_workers} worker(s) "
                          f"({'GPU' if cfg.scaling.use_gpu else 'CPU'}), {cfg.train.epochs} "
                          f"epochs of {spec.batches_per_epoch() * spec.batch_size} stars "
                          f"({cfg.data.mode})")
            trainer = build_trainer(cfg, pool, meta["wandb_id"],
                                    callbacks=[console.callback(cfg.scaling.max_failures)],
                                    progress=console.board)
            try:
                trainer.fit()
            except Exception as e:
                raise training_error(e, cfg) from e
    finally:
        pool.shutdown()
    history = read_history(run_dir)
    t = cfg.train
    best = best_row(history, t.best_metric, t.best_mode)
    summary = {
        "run_dir": str(run_dir),
        "epochs_run": len(history),
        "best_metric": t.best_metric,
        "best_mode": t.best_mode,
        "best_value": best.get(t.best_metric),
        "best_val_acc": best.get("val_acc"),
        "best_epoch": best.get("epoch"),
        "final_val_acc": history[-1]["val_acc"] if history else None,
        "final": {k: history[-1].get(k) for k in BEST_METRICS} if history else {},
        "best_checkpoint": str(run_dir / "checkpoints" / "best.pt"),
        "last_checkpoint": str(run_dir / "checkpoints" / "last.pt"),
        "metrics": str(run_dir / "metrics.jsonl"),
        "plots": str(run_dir / "plots"),
        "wandb_id": meta["wandb_id"],
        "wall_s": round(time.time() - t0, 1),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def training_error(e: BaseException, cfg: ExperimentConfig) -> BaseException:
    """A Ray Train failure as an error a user can act on, or ``e`` itself.

    A worker group that never started (resources): TrainingError with what the run needs
    and what the cluster has. A checkpoint that could not be written or read: its own
    message (which file, how much space)."""
    from ray.train import ControllerError, WorkerGroupError

    from starray.train.checkpoint import CheckpointError

    if isinstance(e, ControllerError):
        cause = e.controller_failure
        if type(cause).__name__ == "WorkerGroupStartupTimeoutError":
            import ray

            s = cfg.scaling
            need = f"{s.num_workers} workers x {s.cpus_per_worker:g} CPU"
            if s.use_gpu:
                need += f" + {s.gpus_per_worker:g} GPU"
            have = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
            total = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
            return TrainingError(
                f"scaling: the training workers ({need}) could not be scheduled within "
                f"scaling.start_timeout_s={s.start_timeout_s:g} s, {START_RETRIES + 1} "
                f"times; the cluster has {total} of which {have} are free (the data "
                f"generators take {cfg.data.generators} x {cfg.data.generator_cpus:g} CPU)."
                " Lower scaling.num_workers / scaling.cpus_per_worker / data.generators.")
    if isinstance(e, WorkerGroupError):
        for err in e.worker_failures.values():
            base = getattr(err, "_base_exc", err)
            if isinstance(base, CheckpointError):
                return type(base)(str(base))
    return e


def load_run_config(run_dir: str | os.PathLike, overrides: list[str] | None = None,
                    log: Any = print) -> ExperimentConfig:
    """The saved config of a run folder plus ``overrides``, pinned to that folder.

    The resume contract (:func:`starray.train.resume.resume_changes`) refuses unsafe
    changes with a ConfigError naming the key and prints each change it applies."""
    from starray.train.resume import resume_changes

    run_dir = Path(run_dir).expanduser().resolve()
    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"--resume: {run_dir} is not a run folder (no config.yaml)")
    saved = load_config(path)
    cfg = load_config(path, overrides)
    resume_changes(saved, cfg, log=log)
    cfg.name, cfg.output_dir = run_dir.name, str(run_dir.parent)
    return cfg
