"""Random-number state of one rank: seeded apart per rank, saved in and restored from
checkpoints (torch, CUDA, numpy and python ``random``).

The model is initialised from ``seed`` alike on every rank (DDP also broadcasts rank 0's
weights when it wraps the model); afterwards each rank gets its own stream from the
``worker`` seed space, so dropout masks differ between ranks.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from starray.data.seeds import entropy


def seed_rank(seed: int, rank: int) -> None:
    """Seed torch, numpy and ``random`` of this rank from (run seed, rank)."""
    s = np.random.SeedSequence(entropy(seed, "worker", 0, rank)).generate_state(2)
    value = int(s[0]) << 32 | int(s[1])
    torch.manual_seed(value)
    np.random.seed(int(s[0]))
    random.seed(value)


def capture() -> dict[str, Any]:
    """This rank's RNG states as tensors and primitives (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(pystate), "gauss": pygauss},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore(state: dict[str, Any]) -> None:
    """Restore the states of :func:`capture`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
