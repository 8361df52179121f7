"""The per-worker training function that Ray Train runs on every DDP rank.

build (model, optimizer, schedule, stream) -> restore the newest checkpoint -> for each
epoch: train, validate, update the best rule, checkpoint (rank 0), report.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from starray.config import from_dict, resolved_model
from starray.data.synth import CLASS_NAMES
from starray.model.hybrid import build_model
from starray.train import rng
from starray.train.best import BestTracker
from starray.train.checkpoint import CheckpointManager, load_checkpoint
from starray.train.data_pool import BatchStream, DataPool
from starray.train.epoch import gather, train_epoch, validate
from starray.train.loop import Schedule, build_optimizer, scaled_lr
from starray.train.progress import WorkerProgress, format_epoch_line
from starray.train.state import TrainState


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def _ray_candidate() -> list[tuple[str, Any]]:
    """Ray's reported checkpoint as a (name, loader) candidate for the manager."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return []

    def load() -> dict[str, Any]:
        with ckpt.as_directory() as d:
            return load_checkpoint(Path(d) / "checkpoint.pt")

    return [("Ray's checkpoint", load)]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train on this rank. ``config``: cfg (dict), pool (DataPool), run_dir, wandb_id."""
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    cfg = from_dict(config["cfg"])
    pool: DataPool = config["pool"]
    run_dir = Path(config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    is_rank0 = rank == 0
    progress = WorkerProgress(config.get("progress"), is_rank0)  # console bar (rank 0)
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    manager = CheckpointManager(run_dir)

    dims = resolved_model(cfg.model)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(dims).to(device)
    rng.seed_rank(cfg.seed, rank)  # then each rank its own dropout stream
    stream = BatchStream(pool, rank, world, cfg.data.prefetch, cfg.data.batch_size,
                         cfg.data.stars_per_epoch,
                         local=(ctx.get_local_rank(), ctx.get_local_world_size()))
    steps = stream.steps_per_epoch()
    optimizer = build_optimizer(model, cfg.train, fused=device.type == "cuda",
                                lr=scaled_lr(cfg.train, cfg.data.batch_size * world))
    schedule = Schedule(optimizer, cfg.train, steps)
    ts = TrainState(model=model, optimizer=optimizer, schedule=schedule,
                    best=BestTracker.from_config(cfg.train), config=cfg.to_dict(),
                    model_dims=dims, wandb_id=config["wandb_id"])
    if is_rank0:
        manager.clean_stale()
        manager.check_space()
    state = manager.newest(_ray_candidate(), log=progress.note if is_rank0 else lambda _m: None)
    if state is not None:
        ts.restore(state, rank, str(manager.folder))
        progress.note(f"[starray] resuming at epoch {ts.epoch + 2} from the checkpoint of "
                      f"epoch {ts.epoch + 1}")
    del state
    compile_after = cfg.train.compile and cfg.train.compile_order == "after_ddp"
    if cfg.train.compile and not compile_after:
        model = torch.compile(model)
    ddp_model = ray.train.torch.prepare_model(model)
    if compile_after:
        ddp_model = torch.compile(ddp_model)
    budget_s = 60.0 * cfg.train.budget_minutes
    t_run = time.perf_counter()

    tracker = None
    if is_rank0:
        from starray.tracking import init_tracker

        metrics_path = run_dir / "metrics.jsonl"
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in ts.history))
        tracker = init_tracker(cfg.wandb.mode, cfg.wandb.project, run_dir, config["wandb_id"],
                               cfg.name or run_dir.name, cfg.to_dict(), "train",
                               cfg.wandb.group, cfg.wandb.entity, cfg.wandb.tags)

    use_bf16 = cfg.train.bf16 and device.type == "cuda"
    epoch_times: list[float] = []
    best = ts.best
    for epoch in range(ts.epoch + 1, cfg.train.epochs):
        t0 = time.perf_counter()
        progress.epoch_start(epoch, steps, stream.batch_size * world)
        train_loss, train_parts, train_time = train_epoch(
            ddp_model, stream.epoch(epoch), optimizer, schedule, cfg.train, device, use_bf16,
            steps, world, on_step=progress.step)
        progress.phase("validating")
        vm, last_val = validate(_unwrap(ddp_model), stream.validation(), cfg.train, device,
                                use_bf16, world)
        schedule.epoch_end(vm["val_loss"])
        metrics = {"epoch": epoch, "train_loss": train_loss, **vm, "lr": schedule.lr,
                   "train_ce": train_parts[0], "train_period": train_parts[1],
                   "train_cand": train_parts[2],
                   "samples_per_s": steps * stream.batch_size * world / train_time,
                   "epochs_done": epoch + 1}
        improved = best.update(metrics)
        epoch_times.append(time.perf_counter() - t0)
        over_budget = budget_s > 0 and time.perf_counter() - t_run >= budget_s
        if world > 1 and budget_s > 0:  # every rank stops after the same epoch
            flag = torch.tensor(float(over_budget), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over_budget = bool(flag.item())
        stop = best.should_stop or over_budget
        last = epoch == cfg.train.epochs - 1 or stop
        metrics.update(epoch_time_s=epoch_times[-1], best_metric=best.metric,
                       best_value=best.value, best_epoch=best.epoch)
        ts.epoch = epoch
        ts.history.append(metrics)

        save = (epoch + 1) % cfg.train.checkpoint_every == 0 or last or improved
        rng_states = gather(rng.capture(), world) if save else []
        if is_rank0 and save:
            manager.save(ts.payload(rng_states), is_best=improved)
        if is_rank0:
            with open(run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(metrics) + "\n")
            tracker.log(metrics, step=epoch)
            _write_curves(run_dir, ts.history, tracker, epoch)
            progress.epoch_end(metrics)
            if not progress.active:  # otherwise the driver's console prints it
                eta = np.mean(epoch_times) * (cfg.train.epochs - epoch - 1)
                print(format_epoch_line(metrics, cfg.train.epochs, 0 if stop else eta),
                      flush=True)
        if is_rank0 and last:
            # before the final report: a Tune scheduler may stop the trial right after it
            _final_plots(run_dir, last_val, tracker, epoch)
            tracker.summary({f"best_{best.metric}": best.value, "best_epoch": best.epoch})
            tracker.finish()
        if is_rank0 and save:
            with manager.staged_for_ray(epoch) as folder:
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(
                    str(folder)))
        else:
            ray.train.report(metrics)
        if stop:
            if over_budget:
                progress.note(f"[starray] budget stop: {cfg.train.budget_minutes:g} min of "
                              f"training used after epoch {epoch + 1}")
            else:
                progress.note(f"[starray] early stop: {best.metric} has not improved for "
                              f"{best.bad_epochs} epochs (best {best.value:.4f}, epoch "
                              f"{best.epoch + 1})")
            break

    if is_rank0 and tracker.active:  # no epoch ran (resumed a finished run)
        tracker.finish()


def _final_plots(run_dir: Path, arrays: dict[str, np.ndarray], tracker: Any, step: int) -> None:
    """Confusion matrix and period scatter of the last validation, to files and W&B."""
    from starray.metrics import confusion_matrix
    from starray.report_plots import plot_confusion, plot_periods

    plots = run_dir / "plots"
    cm = confusion_matrix(arrays["label"], arrays["pred"], len(CLASS_NAMES))
    plot_confusion(cm, CLASS_NAMES, plots / "confusion.png",
                   title=f"validation, epoch {step + 1} (row-normalized)")
    plot_periods(arrays["p1_true"], arrays["p1_pred"], arrays["chosen_days"],
                 plots / "periods.png")
    np.savetxt(plots / "confusion.csv", cm, fmt="%d", delimiter=",")
    tracker.log_image("val/confusion_matrix", plots / "confusion.png", step=step)
    tracker.log_image("val/period_scatter", plots / "periods.png", step=step)



def _write_curves(run_dir: Path, history: list[dict[str, Any]], tracker: Any, step: int) -> None:
    """plots/curves.png (losses, accuracy, lr, throughput per epoch), to file and W&B."""
    from starray.report_plots import plot_curves

    png = plot_curves(history, run_dir / "plots" / "curves.png", title=run_dir.name)
    tracker.log_image("train/curves", png, step=step)
