"""The resume contract: what ``starray train --resume RUN_DIR --set ...`` may change.

Refused (ConfigError naming the key): anything that changes the stars, the model's
weights' shapes, the loss, the schedule's kind or the meaning of "best", so that a
resumed run is the run it continues. Applied, with a printed line each: the rest (more or
fewer epochs, a new lr, patience, checkpoint_every, scaling, W&B...). What a new
``train.lr`` or ``train.epochs`` does to the schedule: see :class:`starray.train.loop.Schedule`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starray.config import ConfigError, ExperimentConfig, resolved_model

# section -> keys a resume may change; every other key of that section is refused.
ALLOWED: dict[str, set[str]] = {
    "": set(),  # seed: the stars and the RNG streams follow it
    "data": {"generators", "generator_cpus", "prefetch"},  # throughput only, same stars
    "model": {"dropout"},  # no effect on the weights' shapes
    "train": {"epochs", "lr", "weight_decay", "grad_clip", "patience", "checkpoint_every",
              "bf16", "compile"},
    "scaling": {"*"},
    "wandb": {"*"},
}
WHY: dict[str, str] = {
    "": "the stars and the RNG streams follow it",
    "data": "it changes the stars (training or validation) or the batches",
    "model": "the checkpoint's weights have the saved dimensions",
    "train": "the schedule's state, the loss or the best-metric rule were built on it",
}
EFFECT: dict[str, str] = {
    "train.epochs": "the cosine is re-planned from its current value to the new last epoch",
    "train.lr": "the new base lr from the resume point; the schedule's multiplier is kept",
    "train.weight_decay": "set on the optimizer's decayed parameter group",
    "train.patience": "early stopping counts the epochs since the best one under the new "
                      "patience",
}


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_changes(saved: ExperimentConfig, new: ExperimentConfig,
                   log: Callable[[str], None] = print) -> list[tuple[str, Any, Any]]:
    """Check ``new`` (the saved config plus ``--set``) against ``saved``.

    Returns the (key, old, new) changes it applies, after printing one line for each;
    raises ConfigError naming the first refused key.
    """
    old_d, new_d = _flat(saved.to_dict()), _flat(new.to_dict())
    old_d.update({f"model.{k}": v for k, v in resolved_model(saved.model).items()})
    new_d.update({f"model.{k}": v for k, v in resolved_model(new.model).items()})
    changes = []
    for key in sorted(set(old_d) | set(new_d)):
        if key in ("name", "output_dir") or old_d.get(key) == new_d.get(key):
            continue
        if key == "model.preset":
            continue  # compared through the resolved dimensions
        section, _, field = key.rpartition(".")
        allowed = ALLOWED.get(section, set())
        if "*" not in allowed and field not in allowed:
            ok = ", ".join(f"{section + '.' if section else ''}{k}" for k in sorted(allowed))
            raise ConfigError(
                f"{key}: cannot change on --resume ({old_d.get(key)!r} -> {new_d.get(key)!r}):"
                f" {WHY.get(section, 'not resumable')}; start a new run (another --name) "
                f"instead. A resume may change: {ok or 'nothing here'}"
                + (", and scaling.*, wandb.*" if section in ("", "data", "model", "train")
                   else ""))
        changes.append((key, old_d.get(key), new_d.get(key)))
    for key, a, b in changes:
        log(f"[starray] resume: {key} {a!r} -> {b!r}"
            + (f" ({EFFECT[key]})" if key in EFFECT else ""))
    return changes
