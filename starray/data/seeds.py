"""One registry of disjoint seed spaces.

Every batch of stars is a pure function of (run seed, space, epoch, batch index). The
space is its own element of the entropy tuple handed to numpy's SeedSequence, so two
spaces can never produce the same stream, whatever the epochs and indexes are:

| space | what it seeds | epoch |
|---|---|---|
| train | stream-mode training batches | the training epoch (>= 0) |
| fixed | the fixed-mode (and files-mode) dataset | 0 |
| validation | the run's one validation set | 0 |
| benchmark | the `starray evaluate` benchmark | 0 |
| worker | each training rank's torch/numpy RNG (dropout) | 0 (index: the rank) |
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPACES: dict[str, int] = {"train": 0, "fixed": 1, "validation": 2, "benchmark": 3, "worker": 4}


def check_seed(seed: Any, name: str = "seed") -> int:
    """A run seed must be a non-negative integer; raise ValueError naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name}: must be a non-negative integer, got {seed!r}")
    return int(seed)


def entropy(seed: int, space: str, epoch: int, index: int) -> list[int]:
    """The SeedSequence entropy of one batch; raises ValueError for an unknown space."""
    if space not in SPACES:
        raise ValueError(f"space: {space!r} is not one of {', '.join(SPACES)}")
    if epoch < 0 or index < 0:
        raise ValueError(f"epoch and index must be >= 0, got epoch={epoch}, index={index}")
    return [check_seed(seed), SPACES[space], int(epoch), int(index)]


def batch_rng(seed: int, space: str, epoch: int, index: int) -> np.random.Generator:
    """The generator of batch ``index`` of ``epoch`` in seed space ``space``."""
    return np.random.default_rng(entropy(seed, space, epoch, index))
