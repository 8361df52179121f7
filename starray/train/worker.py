"""The per-worker training function that Ray Train runs on every DDP rank."""

from __future__ import annotations

import json
import os
import tempfile
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
from starray.model.inference import to_tensors
from starray.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from starray.train.data_pool import BatchStream, DataPool
from starray.train.loop import (
    Schedule,
    ValAccumulator,
    build_optimizer,
    compute_loss,
    scaled_lr,
    val_metrics,
)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def restore_state(run_dir: Path) -> dict[str, Any] | None:
    """Newest complete checkpoint: the run's last.pt on disk, or Ray's reported one."""
    candidates = []
    disk = run_dir / "checkpoints" / "last.pt"
    if disk.exists():
        try:
            candidates.append(load_checkpoint(disk))
        except CheckpointError as e:
            print(f"[starray] ignoring unreadable {disk}: {e}", flush=True)
    ray_ckpt = ray.train.get_checkpoint()
    if ray_ckpt is not None:
        with ray_ckpt.as_directory() as d:
            try:
                candidates.append(load_checkpoint(Path(d) / "checkpoint.pt"))
            except CheckpointError as e:
                print(f"[starray] ignoring Ray checkpoint: {e}", flush=True)
    return max(candidates, key=lambda s: s["epoch"]) if candidates else None


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train on this rank. ``config``: cfg (dict), pool (DataPool), run_dir, wandb_id."""
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    cfg = from_dict(config["cfg"])
    pool: DataPool = config["pool"]
    run_dir = Path(config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    is_rank0 = rank == 0
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    torch.manual_seed(cfg.seed)

    dims = resolved_model(cfg.model)
    model = build_model(dims).to(device)
    stream = BatchStream(pool, rank, world, cfg.data.prefetch, cfg.data.batch_size,
                         cfg.data.stars_per_epoch,
                         local=(ctx.get_local_rank(), ctx.get_local_world_size()))
    steps = stream.steps_per_epoch()
    optimizer = build_optimizer(model, cfg.train, fused=device.type == "cuda",
                                lr=scaled_lr(cfg.train, cfg.data.batch_size * world))
    schedule = Schedule(optimizer, cfg.train, steps)

    start_epoch, history = 0, []
    best_loss, best_acc, bad_epochs = float("inf"), 0.0, 0
    # best.pt follows train.best_metric / best_mode (the rule sweeps rank trials by)
    best_sign = 1.0 if cfg.train.best_mode == "max" else -1.0
    best_score = float("-inf")
    state = restore_state(run_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        history = list(state.get("history", []))
        best_loss = float(state.get("best_val_loss", best_loss))
        best_acc = float(state.get("best_val_acc", 0.0))
        bad_epochs = int(state.get("bad_epochs", 0))
        best_score = float(state.get("best_score", best_score))
        if is_rank0:
            print(f"[starray] resuming at epoch {start_epoch} from the checkpoint of epoch "
                  f"{start_epoch - 1}", flush=True)
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
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))
        tracker = init_tracker(cfg.wandb.mode, cfg.wandb.project, run_dir, config["wandb_id"],
                               cfg.name or run_dir.name, cfg.to_dict(), "train",
                               cfg.wandb.group, cfg.wandb.entity, cfg.wandb.tags)

    use_bf16 = cfg.train.bf16 and device.type == "cuda"
    epoch_times: list[float] = []
    for epoch in range(start_epoch, cfg.train.epochs):
        ddp_model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        part_sums = torch.zeros(3, device=device)  # ce, period, cand: on the device until epoch end
        for batch in stream.epoch(epoch):
            x = to_tensors(batch, device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = ddp_model(x["lc"], x["pgram"], x["folded"], x["cand_logp"])
                loss, parts = compute_loss(out, x, cfg.train)
            part_sums += torch.stack([parts["ce"], parts["period"], parts["cand"]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(ddp_model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
        train_time = time.perf_counter() - t0
        train_loss = torch.cat([loss_sum[None], part_sums]) / steps
        if world > 1:
            dist.all_reduce(train_loss)
            train_loss /= world
        train_loss, train_parts = train_loss[0], train_loss[1:].tolist()

        eval_model = _unwrap(ddp_model)  # no DDP collectives: ranks hold unequal val shards
        eval_model.eval()
        acc = ValAccumulator()
        with torch.no_grad():
            for batch in stream.validation():
                x = to_tensors(batch, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    out = eval_model(x["lc"], x["pgram"], x["folded"], x["cand_logp"])
                    loss, _ = compute_loss(out, x, cfg.train)
                acc.add(out, x, batch["cand_days"], loss)
        vm = val_metrics(_gather(acc.arrays(), world))
        last_val = vm.pop("_arrays")
        schedule.epoch_end(vm["val_loss"])
        epoch_times.append(time.perf_counter() - t0)

        improved = vm["val_loss"] < best_loss
        if improved:
            best_loss, bad_epochs = vm["val_loss"], 0
        else:
            bad_epochs += 1
        best_acc = max(best_acc, vm["val_acc"])
        is_best = best_sign * vm[cfg.train.best_metric] > best_score
        if is_best:
            best_score = best_sign * vm[cfg.train.best_metric]
        stop = cfg.train.patience > 0 and bad_epochs >= cfg.train.patience
        over_budget = budget_s > 0 and time.perf_counter() - t_run >= budget_s
        if world > 1 and budget_s > 0:  # every rank stops after the same epoch
            flag = torch.tensor(float(over_budget), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over_budget = bool(flag.item())
        stop = stop or over_budget
        last = epoch == cfg.train.epochs - 1 or stop
        metrics = {"epoch": epoch, "train_loss": float(train_loss), **vm, "lr": schedule.lr,
                   "train_ce": train_parts[0], "train_period": train_parts[1],
                   "train_cand": train_parts[2],
                   "samples_per_s": steps * stream.batch_size * world / train_time,
                   "epochs_done": epoch + 1,
                   "epoch_time_s": epoch_times[-1], "best_val_acc": best_acc,
                   "best_val_loss": best_loss}
        history.append(metrics)

        save = (epoch + 1) % cfg.train.checkpoint_every == 0 or last or is_best
        ckpt_dir = None
        if is_rank0:
            if save:
                state = {
                    "model": _unwrap(ddp_model).state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": schedule.state_dict(), "epoch": epoch, "config": cfg.to_dict(),
                    "model_dims": dims, "class_names": list(CLASS_NAMES), "history": history,
                    "best_val_loss": best_loss, "best_val_acc": best_acc,
                    "bad_epochs": bad_epochs, "wandb_id": config["wandb_id"],
                    "best_score": best_score,
                }
                last_path = save_checkpoint(run_dir / "checkpoints" / "last.pt", state)
                if is_best:
                    save_checkpoint(run_dir / "checkpoints" / "best.pt", state)
                ckpt_dir = tempfile.mkdtemp(prefix="starray-ckpt-")
                os.link(last_path, Path(ckpt_dir) / "checkpoint.pt")
            with open(run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(metrics) + "\n")
            tracker.log(metrics, step=epoch)
            eta = np.mean(epoch_times) * (cfg.train.epochs - epoch - 1)
            print(f"epoch {epoch + 1}/{cfg.train.epochs}  train_loss {metrics['train_loss']:.4f}"
                  f"  val_loss {vm['val_loss']:.4f}  val_acc {vm['val_acc']:.3f}  "
                  f"cand<1% {vm['val_cand_within_1pct']:.3f} "
                  f"(chosen|any {vm['val_chosen_given_any']:.3f})  "
                  f"{metrics['samples_per_s']:,.0f} samples/s  lr {schedule.lr:.2e}  "
                  f"ETA {_fmt_time(eta if not stop else 0)}", flush=True)
        if is_rank0 and last:
            # before the final report: a Tune scheduler may stop the trial right after it
            _final_plots(run_dir, last_val, tracker, epoch)
            tracker.summary({"best_val_acc": best_acc, "best_val_loss": best_loss})
            tracker.finish()
        checkpoint = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)
        if ckpt_dir:
            for f in Path(ckpt_dir).iterdir():
                f.unlink()
            os.rmdir(ckpt_dir)
        if stop:
            if is_rank0 and over_budget:
                print(f"[starray] budget stop: {cfg.train.budget_minutes:g} min of training "
                      f"used after epoch {epoch + 1}", flush=True)
            elif is_rank0:
                print(f"[starray] early stop: val_loss has not improved for {bad_epochs} "
                      "epochs", flush=True)
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
