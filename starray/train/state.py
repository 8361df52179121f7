"""Everything a training checkpoint restores, as one object: model, optimizer, schedule,
epoch, history, the best-metric rule's state, per-rank RNG states and the W&B id.

``TrainState.payload`` builds the checkpoint dict (rank 0 saves it through
:class:`~starray.train.checkpoint.CheckpointManager`); ``TrainState.restore`` loads one
into the live objects under this run's config (the resume contract of
:mod:`starray.train.resume` has already refused unsafe changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from starray.data.synth import CLASS_NAMES
from starray.train import rng
from starray.train.best import BestTracker
from starray.train.checkpoint import check_model_dims
from starray.train.loop import Schedule


@dataclass
class TrainState:
    """The live training objects of one rank, and the bookkeeping around them."""

    model: torch.nn.Module  # unwrapped (no DDP, no torch.compile)
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    best: BestTracker
    config: dict[str, Any]
    model_dims: dict[str, Any]
    wandb_id: str | None
    epoch: int = -1  # last completed epoch
    history: list[dict[str, Any]] = field(default_factory=list)

    def payload(self, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint dict (tensors and primitives only); ``rng_states`` per rank."""
        best_loss = min((h["val_loss"] for h in self.history if "val_loss" in h),
                        default=None)
        best_acc = max((h["val_acc"] for h in self.history if "val_acc" in h), default=None)
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(), "epoch": self.epoch,
            "config": self.config, "model_dims": self.model_dims,
            "class_names": list(CLASS_NAMES), "history": self.history,
            "best": self.best.state_dict(), "rng": rng_states, "world_size": len(rng_states),
            "wandb_id": self.wandb_id, "best_val_loss": best_loss, "best_val_acc": best_acc,
        }

    def restore(self, state: dict[str, Any], rank: int, source: str) -> None:
        """Load a checkpoint into the live objects; this rank's RNG state if it has one."""
        check_model_dims(state, self.model_dims, source)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        train_cfg = self.config["train"]
        self.optimizer.param_groups[0]["weight_decay"] = train_cfg["weight_decay"]
        self.schedule.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state.get("history", []))
        saved_best = state.get("best")
        if saved_best and (saved_best.get("metric"), saved_best.get("mode")) == (
                self.best.metric, self.best.mode):
            self.best.load_state_dict(saved_best)
        else:  # an older checkpoint: rebuild from its history
            self.best.replay(self.history)
        states = state.get("rng") or []
        if rank < len(states):
            rng.restore(states[rank])
