"""One training epoch and one validation pass on a rank (the loop's two halves)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from starray.model.inference import to_tensors
from starray.train.loop import Schedule, ValAccumulator, compute_loss, val_metrics


def gather(obj: Any, world: int) -> list[Any]:
    """``obj`` of every rank (all_gather_object), or ``[obj]`` on one rank."""
    if world == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def train_epoch(ddp_model: torch.nn.Module, batches: Any, optimizer: torch.optim.Optimizer,
                schedule: Schedule, train_cfg: Any, device: torch.device, use_bf16: bool,
                steps: int, world: int, on_step: Any = None) -> tuple[float, list[float], float]:
    """Train over ``batches``; returns (mean train loss over ranks, its parts [ce, period,
    cand], seconds). ``on_step(done, loss)`` is called after each step (the progress bar;
    it reads the loss only when it draws, so no host sync per step)."""
    ddp_model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    part_sums = torch.zeros(3, device=device)  # ce, period, cand: on the device until epoch end
    for done, batch in enumerate(batches, 1):
        x = to_tensors(batch, device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = ddp_model(x["lc"], x["pgram"], x["folded"], x["cand_logp"], x["cand_stats"])
            loss, parts = compute_loss(out, x, train_cfg)
        part_sums += torch.stack([parts["ce"], parts["period"], parts["cand"]])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ddp_model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        schedule.step()
        loss_sum += loss.detach()
        if on_step is not None:
            on_step(done, loss.detach())
    seconds = time.perf_counter() - t0
    train_loss = torch.cat([loss_sum[None], part_sums]) / steps
    if world > 1:
        dist.all_reduce(train_loss)
        train_loss /= world
    return float(train_loss[0]), train_loss[1:].tolist(), seconds


def validate(eval_model: torch.nn.Module, batches: Any, train_cfg: Any, device: torch.device,
             use_bf16: bool, world: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Validation metrics over all ranks' shards, and the merged arrays (for plots).

    ``eval_model`` is the unwrapped model: no DDP collectives, ranks hold unequal shards."""
    eval_model.eval()
    acc = ValAccumulator()
    with torch.no_grad():
        for batch in batches:
            x = to_tensors(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = eval_model(x["lc"], x["pgram"], x["folded"], x["cand_logp"], x["cand_stats"])
                loss, _ = compute_loss(out, x, train_cfg)
            acc.add(out, x, batch["cand_days"], loss)
    vm = val_metrics(gather(acc.arrays(), world))
    arrays = vm.pop("_arrays")
    return vm, arrays
