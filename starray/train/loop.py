"""Pure-PyTorch training pieces: loss, optimizer, schedule, validation metrics.

Nothing here knows about Ray, so it is unit-testable on its own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from starray.data.features import denormalize_period


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SmoothL1 over entries whose target is finite -> (sum, count)."""
    mask = torch.isfinite(target)
    if not bool(mask.any()):
        return pred.sum() * 0.0, mask.sum()
    loss = F.smooth_l1_loss(pred[mask].float(), target[mask].float(), reduction="sum", beta=0.1)
    return loss, mask.sum()


def compute_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], train_cfg: Any
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted cross-entropy + masked SmoothL1 on normalized log10 periods."""
    ce = F.cross_entropy(out["logits"].float(), batch["label"],
                         label_smoothing=train_cfg.label_smoothing)
    l1, n1 = masked_smooth_l1(out["p1"], batch["p1"])
    l2, n2 = masked_smooth_l1(out["p2"], batch["p2"])
    period = (l1 + l2) / torch.clamp(n1 + n2, min=1)
    total = train_cfg.class_weight * ce + train_cfg.period_weight * period
    return total, {"ce": ce.detach(), "period": period.detach()}


def build_optimizer(model: nn.Module, train_cfg: Any, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=train_cfg.lr, **kwargs)


def cosine_warmup(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warmup then cosine decay to 5%."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


class Schedule:
    """cosine (per step, with warmup) | plateau (per epoch, on val loss) | none.

    The base lr is always this run's ``train.lr``. On a resume (``load_state_dict``):

    - a new ``train.lr`` replaces the base lr from the resume point on; the schedule's
      multiplier there is kept (cosine: where the curve was; plateau: the reductions so
      far; none: the new lr as it is);
    - a new ``train.epochs`` (or a new number of steps per epoch, e.g. other
      ``scaling.num_workers``) re-plans the rest of the cosine: from its value at the resume
      point down to 5% of the base lr at the new last step, so the lr never jumps. A resume
      inside the warmup keeps the warmup and plans the cosine over the new total.
    """

    FLOOR = 0.05

    def __init__(self, optimizer: torch.optim.Optimizer, train_cfg: Any, steps_per_epoch: int):
        self.kind = train_cfg.schedule
        self.optimizer = optimizer
        self.base_lrs = [float(train_cfg.lr) for _ in optimizer.param_groups]
        self.steps_per_epoch = steps_per_epoch
        self.total = train_cfg.epochs * steps_per_epoch
        self.warmup = int(train_cfg.warmup_epochs * steps_per_epoch)
        self.anchor_step, self.anchor_mult = self.warmup, 1.0  # where the cosine starts
        self.step_count = 0
        self.plateau = None
        if self.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                                      patience=2)
        self._apply()

    def multiplier(self, step: int) -> float:
        """Cosine multiplier at ``step``: linear warmup, then from ``anchor_mult`` at
        ``anchor_step`` down to FLOOR at ``total`` (equals :func:`cosine_warmup` unless
        re-planned by a resume)."""
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        a = self.anchor_step
        progress = min(1.0, max(0, step - a) / max(1, self.total - a))
        cos = 0.5 * (1 + math.cos(math.pi * progress))
        return self.FLOOR + (self.anchor_mult - self.FLOOR) * cos

    def _apply(self) -> None:
        if self.kind == "cosine":
            mult = self.multiplier(self.step_count)
            for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = base * mult

    def step(self) -> None:
        """After each optimizer step."""
        self.step_count += 1
        self._apply()

    def epoch_end(self, val_loss: float) -> None:
        """After each validation."""
        if self.plateau is not None:
            self.plateau.step(val_loss)

    @property
    def lr(self) -> float:
        """Current learning rate of the first group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """Primitives only (safe for weights_only loading)."""
        return {"step_count": self.step_count, "base_lrs": list(self.base_lrs),
                "plateau": self.plateau.state_dict() if self.plateau else None,
                "total": self.total, "warmup": self.warmup,
                "steps_per_epoch": self.steps_per_epoch,
                "anchor_step": self.anchor_step, "anchor_mult": self.anchor_mult}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict`` under this run's config (see the class docstring).

        Call after ``optimizer.load_state_dict`` (the plateau lr is rescaled from it)."""
        saved_steps = int(state["step_count"])
        saved_base = list(state["base_lrs"])
        spe = int(state.get("steps_per_epoch") or self.steps_per_epoch)
        step = saved_steps if spe == self.steps_per_epoch else \
            round(saved_steps / spe) * self.steps_per_epoch
        if "total" in state:  # the multiplier at the resume point, under the saved plan
            then = Schedule.__new__(Schedule)
            then.warmup, then.total = int(state["warmup"]), int(state["total"])
            then.anchor_step, then.anchor_mult = (int(state["anchor_step"]),
                                                  float(state["anchor_mult"]))
            replan = (then.total, spe) != (self.total, self.steps_per_epoch)
            if replan and step >= self.warmup:
                self.anchor_step, self.anchor_mult = step, then.multiplier(saved_steps)
            elif not replan:
                self.anchor_step, self.anchor_mult = then.anchor_step, then.anchor_mult
        self.step_count = step
        if self.plateau is not None and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
        if self.kind == "plateau":
            for g, old, new in zip(self.optimizer.param_groups, saved_base, self.base_lrs):
                g["lr"] = g["lr"] * new / old
        elif self.kind == "none":
            for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = base
        self._apply()


class ValAccumulator:
    """Collects validation outputs of one rank; ``arrays()`` for gathering across ranks."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                                    ("pred", "label", "p1_true", "p1_pred",
                                                     "chosen_days")}
        self.loss_sum = 0.0
        self.count = 0

    def add(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
            cand_days: np.ndarray, loss: float) -> None:
        """Add one batch of outputs."""
        n = len(batch["label"])
        self.loss_sum += loss * n
        self.count += n
        weights = out["cand_weights"].float().cpu().numpy()
        self.parts["pred"].append(out["logits"].argmax(1).cpu().numpy())
        self.parts["label"].append(batch["label"].cpu().numpy())
        self.parts["p1_true"].append(denormalize_period(batch["p1"].float().cpu().numpy()))
        self.parts["p1_pred"].append(denormalize_period(out["p1"].float().cpu().numpy()))
        self.parts["chosen_days"].append(cand_days[np.arange(n), weights.argmax(1)])

    def arrays(self) -> dict[str, np.ndarray]:
        """Concatenated outputs plus the loss sum and count."""
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.parts.items()}
        out["loss_sum"] = np.array([self.loss_sum])
        out["count"] = np.array([self.count])
        return out


def val_metrics(parts: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Merge the ranks' validation arrays into metrics."""
    a = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = max(1, int(a["count"].sum()))
    has_p = np.isfinite(a["p1_true"])
    rel = np.abs(a["p1_pred"][has_p] / a["p1_true"][has_p] - 1)
    rel_c = np.abs(a["chosen_days"][has_p] / a["p1_true"][has_p] - 1)
    return {
        "val_loss": float(a["loss_sum"].sum() / n),
        "val_acc": float(np.mean(a["pred"] == a["label"])) if len(a["label"]) else 0.0,
        "val_p1_within_1pct": float(np.mean(rel < 0.01)) if has_p.any() else 0.0,
        "val_cand_within_1pct": float(np.mean(rel_c < 0.01)) if has_p.any() else 0.0,
        "val_p1_median_rel_err": float(np.median(rel)) if has_p.any() else 0.0,
        "_arrays": a,
    }
