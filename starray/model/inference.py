"""Running a trained model on batches of inputs (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from starray.data.dataset import Batch
from starray.data.features import denormalize_period
from starray.data.synth import CLASS_NAMES

INPUT_KEYS = ("lc", "pgram", "folded", "cand_logp", "cand_stats")
# classes reported without a period (DESIGN section 2); the same set as starray.predict's:
# long_term_trend counts as aperiodic (its class is the trend; 70% carry a texture sine)
APERIODIC_CLASSES = frozenset({"burster", "dipper", "stochastic", "long_term_trend"})


def has_period_class(class_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """(n_classes,) bool: True where the class has a primary period."""
    return np.array([c not in APERIODIC_CLASSES for c in class_names])


def to_tensors(batch: Batch, device: torch.device | str, non_blocking: bool = False
               ) -> dict[str, torch.Tensor]:
    """Model inputs and targets of a numpy batch as tensors on ``device``.

    On CUDA with ``non_blocking``, each array is copied into pinned host memory first, so
    the host-to-device copy really overlaps with compute (from pageable memory it cannot).
    """
    device = torch.device(device)
    pin = non_blocking and device.type == "cuda"
    out = {}
    for k, v in batch.items():
        if k == "cand_days":
            continue
        t = torch.as_tensor(v)
        out[k] = (t.pin_memory() if pin else t).to(device, non_blocking=non_blocking)
    return out


@torch.no_grad()
def predict_arrays(model: nn.Module, batch: Batch, device: str | torch.device = "cpu",
                   chunk: int = 256) -> dict[str, np.ndarray]:
    """Class probabilities, predicted class, periods (days) and the chosen candidate.

    Returns ``probs`` (B, C), ``pred`` (B,), ``p1_days`` (the model's primary period: the
    chosen candidate refined, or the regression head of a ``regress`` model), ``p2_days``,
    ``period_days`` (``p1_days``, NaN where the predicted class has no period),
    ``cand_weights`` (B, N), ``chosen_index`` and ``chosen_days`` (the top-scored candidate).
    """
    model.eval()
    outs: dict[str, list[np.ndarray]] = {"probs": [], "p1": [], "p2": [], "cand_weights": []}
    n = len(batch["lc"])
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        x = {k: torch.as_tensor(batch[k][sl]).to(device) for k in INPUT_KEYS}
        out = model(**x)
        outs["probs"].append(torch.softmax(out["logits"].float(), 1).cpu().numpy())
        outs["p1"].append(out["p1"].float().cpu().numpy())
        outs["p2"].append(out["p2"].float().cpu().numpy())
        outs["cand_weights"].append(out["cand_weights"].float().cpu().numpy())
    res = {k: np.concatenate(v) for k, v in outs.items()}
    chosen = np.argmax(res["cand_weights"], axis=1)
    pred = np.argmax(res["probs"], axis=1)
    p1_days = denormalize_period(res["p1"])
    periodic = has_period_class(CLASS_NAMES) if res["probs"].shape[1] == len(CLASS_NAMES) \
        else np.ones(res["probs"].shape[1], dtype=bool)
    return {
        "probs": res["probs"],
        "pred": pred,
        "p1_days": p1_days,
        "period_days": np.where(periodic[pred], p1_days, np.nan),
        "p2_days": denormalize_period(res["p2"]),
        "cand_weights": res["cand_weights"],
        "chosen_index": chosen,
        "chosen_days": batch["cand_days"][np.arange(n), chosen].astype(np.float64),
    }
