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

from starray.data.features import LOGP_HI, LOGP_LO, denormalize_period
from starray.data.labels import candidate_match
from starray.model.hybrid import CORRECTION_BOUND

LN_TOL = math.log1p(0.01)  # candidate-match tolerance (1%) as |ln(cand / p1)|
_LN_SPAN = (LOGP_HI - LOGP_LO) * math.log(10)  # normalized log10 period unit -> ln


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                     beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """SmoothL1 over entries whose target is finite (and ``mask`` is set) -> (sum, count).

    No host syncs: masked entries are replaced (``torch.where``) and multiplied by 0, never
    boolean-indexed, so the result stays on the device and its gradient is finite.
    """
    keep = torch.isfinite(target)
    if mask is not None:
        keep = keep & mask.bool()
    safe = torch.where(keep, target.float(), pred.detach().float())
    loss = F.smooth_l1_loss(pred.float(), safe, reduction="none", beta=beta)
    return (loss * keep).sum(), keep.sum()


def candidate_match_t(cand_logp: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
    """(B, N) float 1.0 where a candidate is within 1% of the true primary (normalized inputs).

    The tensor twin of :func:`starray.data.labels.candidate_match`, for batches that do not
    carry ``cand_match``; NaN targets match nothing.
    """
    dist = (cand_logp.float() - p1.float()[:, None]).abs() * _LN_SPAN
    return (torch.nan_to_num(dist, nan=float("inf")) <= LN_TOL + 1e-6).float()


def candidate_loss(cand_logits: torch.Tensor, match: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """-log(softmax mass on the matching candidates), summed over stars with a match.

    ``loss_i = logsumexp_j(s_ij) - logsumexp_{j: m_ij = 1}(s_ij)``; stars where no
    candidate matches (or without a period) contribute 0. Returns (sum, count).
    """
    logits = cand_logits.float()
    m = match > 0.5
    has = m.any(dim=1)
    masked = torch.where(m, logits, logits.new_tensor(-1e4))
    per_star = torch.logsumexp(logits, dim=1) - torch.logsumexp(masked, dim=1)
    return torch.where(has, per_star, torch.zeros_like(per_star)).sum(), has.sum()


def compute_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], train_cfg: Any
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Class CE + masked period SmoothL1 + candidate-choice CE (weights from ``train_cfg``).

    ``total = class_weight * CE(logits, label)
            + period_weight * (SmoothL1(p1) + SmoothL1(p2)) / n_periods
            + candidate_weight * mean_i[-log sum_j softmax(cand_logits)_ij * match_ij]``
    where ``match`` is ``batch["cand_match"]`` (or computed from ``cand_logp`` and ``p1``).
    For the candidate head, the p1 term trains the bounded correction only where the chosen
    candidate matches, in units of the bound. Everything stays on the device.
    """
    ce = F.cross_entropy(out["logits"].float(), batch["label"],
                         label_smoothing=train_cfg.label_smoothing)
    match = batch.get("cand_match")
    if match is None:
        match = candidate_match_t(batch["cand_logp"], batch["p1"])
    if "p1_correction" in out:  # the candidate head
        chosen_ok = match.gather(1, out["chosen"][:, None]).squeeze(1)
        l1, n1 = masked_smooth_l1(out["p1"] / CORRECTION_BOUND, batch["p1"] / CORRECTION_BOUND,
                                  mask=chosen_ok, beta=1.0)
    else:
        l1, n1 = masked_smooth_l1(out["p1"], batch["p1"])
    l2, n2 = masked_smooth_l1(out["p2"], batch["p2"])
    period = (l1 + l2) / torch.clamp(n1 + n2, min=1)
    cl, nc = candidate_loss(out["cand_logits"], match)
    cand = cl / torch.clamp(nc, min=1)
    total = (train_cfg.class_weight * ce + train_cfg.period_weight * period
             + getattr(train_cfg, "candidate_weight", 0.0) * cand)
    return total, {"ce": ce.detach(), "period": period.detach(), "cand": cand.detach()}


def scaled_lr(train_cfg: Any, global_batch: int) -> float:
    """``train.lr``, scaled linearly by ``global_batch / train.lr_scale_batch`` when that is set.

    The linear scaling rule (Goyal et al. 2017): a batch k times larger takes k times the LR
    (with warmup); ``lr_scale_batch`` is the global batch size ``train.lr`` was tuned at.
    """
    ref = int(getattr(train_cfg, "lr_scale_batch", 0) or 0)
    return float(train_cfg.lr) * (global_batch / ref if ref > 0 else 1.0)


def build_optimizer(model: nn.Module, train_cfg: Any, fused: bool = False,
                    lr: float | None = None) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm parameters (``lr``: default ``train.lr``)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=train_cfg.lr if lr is None else lr, **kwargs)


def cosine_warmup(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warmup then cosine decay to 5%."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


class Schedule:
    """cosine (per step, with warmup) | plateau (per epoch, on val loss) | none."""

    def __init__(self, optimizer: torch.optim.Optimizer, train_cfg: Any, steps_per_epoch: int):
        self.kind = train_cfg.schedule
        self.optimizer = optimizer
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.total = train_cfg.epochs * steps_per_epoch
        self.warmup = int(train_cfg.warmup_epochs * steps_per_epoch)
        self.step_count = 0
        self.plateau = None
        if self.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                                      patience=2)
        self._apply()

    def _apply(self) -> None:
        if self.kind == "cosine":
            mult = cosine_warmup(self.step_count, self.total, self.warmup)
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
                "plateau": self.plateau.state_dict() if self.plateau else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict``."""
        self.step_count = int(state["step_count"])
        self.base_lrs = list(state["base_lrs"])
        if self.plateau is not None and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
        self._apply()


class ValAccumulator:
    """Collects validation outputs of one rank on the device; ``arrays()`` moves them to numpy
    once (for gathering across ranks), so no batch waits for a device-to-host copy."""

    def __init__(self) -> None:
        self.parts: dict[str, list[torch.Tensor]] = {k: [] for k in
                                                      ("pred", "label", "p1_true", "p1_pred",
                                                       "chosen")}
        self.days: list[np.ndarray] = []
        self.loss_sum: torch.Tensor | float = 0.0
        self.count = 0

    def add(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
            cand_days: np.ndarray, loss: torch.Tensor | float) -> None:
        """Add one batch of outputs (``loss``: the batch's mean loss, a tensor or a float)."""
        n = len(cand_days)
        self.loss_sum = self.loss_sum + (loss.detach().float() if torch.is_tensor(loss)
                                         else float(loss)) * n
        self.count += n
        self.parts["pred"].append(out["logits"].argmax(1))
        self.parts["label"].append(batch["label"])
        self.parts["p1_true"].append(batch["p1"].float())
        self.parts["p1_pred"].append(out["p1"].float())
        self.parts["chosen"].append(out["cand_weights"].float().argmax(1))
        self.days.append(np.asarray(cand_days))

    def arrays(self) -> dict[str, np.ndarray]:
        """Concatenated outputs (periods in days) plus the loss sum and count."""
        a = {k: torch.cat(v).cpu().numpy() if v else np.zeros(0) for k, v in self.parts.items()}
        out = {"pred": a["pred"], "label": a["label"],
               "p1_true": denormalize_period(a["p1_true"]),
               "p1_pred": denormalize_period(a["p1_pred"])}
        days = np.concatenate(self.days) if self.days else np.zeros((0, 1))
        chosen = a["chosen"].astype(np.int64)
        out["chosen_days"] = days[np.arange(len(chosen)), chosen] if len(chosen) else np.zeros(0)
        out["any_match"] = (candidate_match(days, out["p1_true"]).any(axis=1) if len(chosen)
                            else np.zeros(0, dtype=bool))
        out["loss_sum"] = np.array([float(self.loss_sum)])
        out["count"] = np.array([self.count])
        return out


def val_metrics(parts: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Merge the ranks' validation arrays into metrics."""
    a = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = max(1, int(a["count"].sum()))
    has_p = np.isfinite(a["p1_true"])
    rel = np.abs(a["p1_pred"][has_p] / a["p1_true"][has_p] - 1)
    rel_c = np.abs(a["chosen_days"][has_p] / a["p1_true"][has_p] - 1)
    anyhit = a["any_match"][has_p].astype(bool) if "any_match" in a else np.zeros(0, bool)
    return {
        "val_loss": float(a["loss_sum"].sum() / n),
        "val_acc": float(np.mean(a["pred"] == a["label"])) if len(a["label"]) else 0.0,
        "val_p1_within_1pct": float(np.mean(rel < 0.01)) if has_p.any() else 0.0,
        "val_cand_within_1pct": float(np.mean(rel_c < 0.01)) if has_p.any() else 0.0,
        # the attention's hit rate where some candidate holds the true period
        "val_chosen_given_any": float(np.mean(rel_c[anyhit] < 0.01)) if anyhit.any() else 0.0,
        "val_p1_median_rel_err": float(np.median(rel)) if has_p.any() else 0.0,
        "_arrays": a,
    }
