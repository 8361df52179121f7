"""The one "best" rule of a run: ``train.best_metric`` in ``train.best_mode``.

It picks best.pt, drives early stopping (``train.patience`` epochs without a better
value) and names the best epoch in summaries and in the final console line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class BestTracker:
    """Best value so far of one metric, and epochs since it last improved."""

    metric: str = "val_acc"
    mode: str = "max"
    patience: int = 0
    value: float | None = None
    epoch: int | None = None
    bad_epochs: int = 0

    @classmethod
    def from_config(cls, train_cfg: Any) -> BestTracker:
        """A fresh tracker for ``train.best_metric``/``best_mode``/``patience``."""
        return cls(metric=train_cfg.best_metric, mode=train_cfg.best_mode,
                   patience=train_cfg.patience)

    def better(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (strictly)."""
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def update(self, metrics: dict[str, Any]) -> bool:
        """Record one epoch's metrics; True when this epoch is the new best."""
        if self.metric not in metrics:
            raise KeyError(f"train.best_metric: {self.metric!r} is not among the epoch's "
                           f"metrics ({', '.join(sorted(metrics))})")
        value = float(metrics[self.metric])
        if self.better(value):
            self.value, self.epoch, self.bad_epochs = value, int(metrics["epoch"]), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """Early stopping: ``patience`` epochs in a row without improvement."""
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Primitives only; ``patience`` comes from the config, not the checkpoint."""
        d = asdict(self)
        d.pop("patience")
        return d

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore value, epoch and bad_epochs (metric and mode must match)."""
        self.value = state.get("value")
        self.epoch = state.get("epoch")
        self.bad_epochs = int(state.get("bad_epochs", 0))

    def replay(self, history: list[dict[str, Any]]) -> None:
        """Rebuild the state from per-epoch metrics (checkpoints older than this rule)."""
        self.value, self.epoch, self.bad_epochs = None, None, 0
        for row in history:
            self.update(row)


def best_row(history: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """The epoch row that is best under (metric, mode); the first of equals; {} if none."""
    tracker = BestTracker(metric=metric, mode=mode)
    best: dict[str, Any] = {}
    for row in history:
        if metric in row and tracker.update(row):
            best = row
    return best
