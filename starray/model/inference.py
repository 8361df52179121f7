"""Running a trained model on batches of inputs (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from starray.data.dataset import Batch
from starray.data.features import denormalize_period

INPUT_KEYS = ("lc", "pgram", "folded", "cand_logp")


def to_tensors(batch: Batch, device: torch.device | str, non_blocking: bool = False
               ) -> dict[str, torch.Tensor]:
    """Model inputs and targets of a numpy batch as tensors on ``device``."""
    return {k: torch.as_tensor(v).to(device, non_blocking=non_blocking) for k, v in batch.items()
            if k != "cand_days"}


@torch.no_grad()
def predict_arrays(model: nn.Module, batch: Batch, device: str | torch.device = "cpu",
                   chunk: int = 256) -> dict[str, np.ndarray]:
    """Class probabilities, predicted class, periods (days) and the chosen candidate.

    Returns ``probs`` (B, C), ``pred`` (B,), ``p1_days``, ``p2_days`` (regression heads),
    ``cand_weights`` (B, N) and ``chosen_days`` (the candidate with the largest weight).
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
    return {
        "probs": res["probs"],
        "pred": np.argmax(res["probs"], axis=1),
        "p1_days": denormalize_period(res["p1"]),
        "p2_days": denormalize_period(res["p2"]),
        "cand_weights": res["cand_weights"],
        "chosen_index": chosen,
        "chosen_days": batch["cand_days"][np.arange(n), chosen].astype(np.float64),
    }
