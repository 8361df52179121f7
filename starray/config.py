"""Typed, validated run configuration.

One YAML file (or the embedded defaults) plus ``--set section.key=value`` overrides
become an :class:`ExperimentConfig`. Every error names the field and what is allowed,
and all checks run before Ray starts.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


@dataclass(kw_only=True)
class DataConfig:
    """Synthetic stars and the data path (DESIGN sections 2-4)."""

    mode: str = "stream"  # stream: fresh stars each epoch; fixed: one dataset, reshuffled;
    # files: a dataset written by `starray generate --format shards` (data.path)
    path: str | None = None  # files mode: the dataset folder
    stars_per_epoch: int = 4096  # stream mode
    n_per_class: int = 300  # fixed mode: dataset size is 14 x n_per_class
    val_stars: int = 1024  # one fixed validation set, generated once
    batch_size: int = 64  # per worker
    min_days: float = 5.0
    max_days: float = 30.0
    points_per_day: float = 75.0
    noise: float = 0.02
    n_candidates: int = 4
    harmonics: bool = True  # add P/2, 2P, the harmonic-sum search's P and 2P (N + 4)
    clip_sigma: float | None = None  # remove isolated spikes beyond this many sigmas (off)
    # data-generation actors on every node that hosts training workers; 1 x 0.5 CPU plus
    # 2 workers x 0.75 CPU fits a 2-core machine exactly. (`data.generators`, the old name,
    # is read as this field.)
    generators_per_node: int = 1
    generator_cpus: float = 0.5
    prefetch: int = 4  # batches requested ahead per worker (bounded buffer)

    @property
    def generators(self) -> int:
        """Old name of ``generators_per_node`` (read-only, for callers of the old API)."""
        return self.generators_per_node


@dataclass(kw_only=True)
class ModelConfig:
    """Architecture; unset dimensions come from the preset."""

    preset: str = "tiny"
    emb_dim: int | None = None
    merged_dim: int | None = None
    cnn_hidden: int | None = None
    d_model: int | None = None
    n_heads: int | None = None
    n_layers: int | None = None
    dropout: float | None = None
    stem_stride: int | None = None  # >1 shortens the token sequence of each branch
    # candidate: p1 = the top-scored candidate's period x a bounded (<= 3%) learned correction;
    # regress: p1 regressed from the fused features (the reference definition)
    period_head: str = "candidate"
    # one attention layer over [lc, pgram, candidates] before the candidates are scored
    cand_context: bool = True
    # how many of each fold's statistics (phase dispersion, half-phase correlation) the
    # candidate branch gets as input channels (0-2): they tell an eclipsing binary's
    # period from its half
    fold_stats: int = 2


@dataclass(kw_only=True)
class TrainConfig:
    """Optimisation, schedule, checkpoints."""

    epochs: int = 12
    lr: float = 2e-3
    weight_decay: float = 0.01
    schedule: str = "cosine"  # cosine (with warmup) | plateau | none
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    patience: int = 5  # early stopping: epochs without a better best_metric; 0 disables it
    best_metric: str = "val_acc"  # the one "best" rule: best.pt, early stopping, summaries
    best_mode: str | None = None  # max | min; unset: inferred from best_metric (BEST_METRICS)
    class_weight: float = 1.0
    period_weight: float = 1.0
    candidate_weight: float = 2.0  # CE of the candidate scores against the matching candidates
    label_smoothing: float = 0.0
    checkpoint_every: int = 1
    bf16: bool = True  # autocast on GPU only
    compile: bool = False
    compile_order: str = "before_ddp"  # torch.compile the model before or after the DDP wrap
    lr_scale_batch: int = 0  # >0: lr x (global batch / this), the batch lr was tuned at
    budget_minutes: float = 0.0  # >0: stop after the epoch that passes this wall-clock budget


@dataclass(kw_only=True)
class ScalingConfig:
    """Ray Train workers."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.75  # 2 workers + 1 generator x 0.5 = 2 CPUs
    gpus_per_worker: float = 1.0
    placement: str = "PACK"  # PACK | SPREAD | STRICT_SPREAD
    max_failures: int = 3  # worker-group restarts from the last checkpoint
    start_timeout_s: float = 60.0  # the worker group must be scheduled within this (3 tries)


@dataclass(kw_only=True)
class WandbConfig:
    """Weights & Biases tracking (rank 0 only)."""

    mode: str = "auto"  # auto: online if WANDB_API_KEY is set, else offline
    project: str = "starray"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ExperimentConfig:
    """A whole run: what `starray train` reads."""

    name: str | None = None  # run folder name under output_dir; default: a stable hash-free name
    output_dir: str = "runs"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    @property
    def run_dir(self) -> Path:
        """Folder holding this run's config, checkpoints, metrics and plots."""
        return Path(self.output_dir).expanduser().resolve() / (self.name or "default")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON/W&B friendly)."""
        return dataclasses.asdict(self)


# Old key -> the field that replaced it (read as the new field; both given and different
# is an error). data.generators was the size of one cluster-wide pool.
ALIASES: dict[str, str] = {"data.generators": "generators_per_node"}


PRESETS: dict[str, dict[str, Any]] = {
    # tiny: for CPUs (laptops, CI); a stride-8 stem keeps token sequences short (4x faster than
    # stride 4 on one core: attention cost grows with the square of the sequence). No dropout:
    # in stream mode no star is seen twice and the tiny model underfits; dropout's masks also
    # cost ~30% of a CPU step (225 -> 330 samples/s on 2 workers).
    "tiny": dict(emb_dim=64, merged_dim=128, cnn_hidden=32, d_model=64, n_heads=4,
                 n_layers=1, dropout=0.0, stem_stride=8),
    "compact": dict(emb_dim=128, merged_dim=256, cnn_hidden=64, d_model=128, n_heads=4,
                    n_layers=2, dropout=0.2, stem_stride=1),
    "optimal": dict(emb_dim=192, merged_dim=384, cnn_hidden=96, d_model=192, n_heads=6,
                    n_layers=3, dropout=0.1, stem_stride=1),
    "large": dict(emb_dim=256, merged_dim=512, cnn_hidden=128, d_model=256, n_heads=8,
                  n_layers=4, dropout=0.15, stem_stride=1),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "data.mode": ("stream", "fixed", "files"),
    "model.preset": tuple(PRESETS) + ("custom",),
    "train.schedule": ("cosine", "plateau", "none"),
    "train.best_metric": ("val_acc", "val_loss", "val_cand_within_1pct", "val_p1_within_1pct",
                          "val_p1_median_rel_err"),
    "train.compile_order": ("before_ddp", "after_ddp"),
    "model.period_head": ("candidate", "regress"),
    "scaling.placement": ("PACK", "SPREAD", "STRICT_SPREAD"),
    "wandb.mode": ("auto", "online", "offline", "disabled"),
}

# Metrics an epoch reports that can define "best", and the direction inferred for each.
BEST_METRICS: dict[str, str] = {
    "val_acc": "max", "val_loss": "min", "val_p1_within_1pct": "max",
    "val_cand_within_1pct": "max", "val_p1_median_rel_err": "min",
}

_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "scaling": ScalingConfig,
    "wandb": WandbConfig,
}


def resolved_model(cfg: ModelConfig) -> dict[str, Any]:
    """Model dimensions with the preset filled in (``custom`` needs every field)."""
    base = dict(PRESETS.get(cfg.preset, {}))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name != "preset" and value is not None:
            base[f.name] = value
    missing = [k for k in PRESETS["tiny"] if k not in base]
    if missing:
        raise ConfigError(f"model.preset=custom needs model.{', model.'.join(missing)}")
    return base


def _coerce(path: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` to the annotated type of ``path`` or raise ConfigError."""
    text = str(typ)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path}: must not be null")
    if "list" in text:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [str(v) for v in value]
    if text.startswith("bool") or typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if "int" in text and "float" not in text:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if "float" in text:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if "str" in text:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    data = dict(data)
    for key in [k for k in data if f"{prefix}{k}" in ALIASES]:
        new = ALIASES[f"{prefix}{key}"]
        value = data.pop(key)
        if new in data and data[new] != value:
            raise ConfigError(f"{prefix}{key}: old name of {prefix}{new}; both are set and "
                              f"differ ({value!r} vs {data[new]!r}); keep only {prefix}{new}")
        data[new] = value
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{path}: unknown key; allowed: {', '.join(sorted(fields))}")
        if key in _SECTIONS and prefix == "":
            kwargs[key] = _build(_SECTIONS[key], value or {}, f"{key}.")
        else:
            kwargs[key] = _coerce(path, value, fields[key].type)
    return cls(**kwargs)


def _positive(path: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{path}: must be {bound}, got {value}")


def validate(cfg: ExperimentConfig, available_cpus: float | None = None) -> ExperimentConfig:
    """Check ranges and choices; raise ConfigError naming the field."""
    for path, allowed in CHOICES.items():
        section, key = path.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(allowed)}")
    if cfg.seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {cfg.seed}")
    d, m, t, s = cfg.data, cfg.model, cfg.train, cfg.scaling
    for path, value in [
        ("data.stars_per_epoch", d.stars_per_epoch), ("data.n_per_class", d.n_per_class),
        ("data.val_stars", d.val_stars), ("data.batch_size", d.batch_size),
        ("data.points_per_day", d.points_per_day), ("data.n_candidates", d.n_candidates),
        ("data.generators_per_node", d.generators_per_node),
        ("data.generator_cpus", d.generator_cpus),
        ("data.prefetch", d.prefetch), ("train.epochs", t.epochs), ("train.lr", t.lr),
        ("train.checkpoint_every", t.checkpoint_every), ("scaling.num_workers", s.num_workers),
        ("scaling.cpus_per_worker", s.cpus_per_worker), ("data.min_days", d.min_days),
        ("scaling.start_timeout_s", s.start_timeout_s),
    ]:
        _positive(path, value)
    for path, value in [
        ("train.weight_decay", t.weight_decay), ("train.warmup_epochs", t.warmup_epochs),
        ("train.grad_clip", t.grad_clip), ("train.patience", t.patience),
        ("train.class_weight", t.class_weight), ("train.period_weight", t.period_weight),
        ("train.candidate_weight", t.candidate_weight), ("train.lr_scale_batch", t.lr_scale_batch),
        ("train.budget_minutes", t.budget_minutes),
        ("data.noise", d.noise), ("scaling.max_failures", s.max_failures),
    ]:
        _positive(path, value, allow_zero=True)
    if d.mode == "files" and not d.path:
        raise ConfigError("data.path: required when data.mode is files (a folder written by "
                          "`starray generate --format shards`)")
    if d.clip_sigma is not None and not d.clip_sigma > 0:
        raise ConfigError(f"data.clip_sigma: must be > 0 or null (off), got {d.clip_sigma}")
    if d.max_days < d.min_days:
        raise ConfigError(
            f"data.max_days: must be >= data.min_days ({d.min_days}), got {d.max_days}")
    if not 0 <= t.label_smoothing < 1:
        raise ConfigError(f"train.label_smoothing: must be in [0, 1), got {t.label_smoothing}")
    if t.class_weight == 0 and t.period_weight == 0:
        raise ConfigError("train.class_weight, train.period_weight: both are 0; nothing to learn")
    dims = resolved_model(m)
    for key in ("emb_dim", "merged_dim", "cnn_hidden", "d_model", "n_heads", "n_layers",
                "stem_stride"):
        _positive(f"model.{key}", dims[key])
    if dims["d_model"] % dims["n_heads"]:
        raise ConfigError(
            f"model.n_heads: {dims['n_heads']} does not divide model.d_model={dims['d_model']}")
    if not 0 <= dims["dropout"] < 1:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {dims['dropout']}")
    if m.fold_stats not in (0, 1, 2):
        raise ConfigError(f"model.fold_stats: must be 0, 1 (phase dispersion) or 2 (+ half-phase "
                          f"correlation), got {m.fold_stats}")
    if t.best_metric not in BEST_METRICS:
        raise ConfigError(f"train.best_metric: {t.best_metric!r} is not one of "
                          f"{', '.join(BEST_METRICS)}")
    if t.best_mode is None:
        t.best_mode = BEST_METRICS[t.best_metric]
    elif t.best_mode not in ("max", "min"):
        raise ConfigError(f"train.best_mode: {t.best_mode!r} is not one of max, min")
    if s.use_gpu:
        _positive("scaling.gpus_per_worker", s.gpus_per_worker)
    if available_cpus is not None:
        need = s.num_workers * s.cpus_per_worker
        if need > available_cpus:
            raise ConfigError(
                f"scaling.num_workers: {s.num_workers} workers x {s.cpus_per_worker} CPUs "
                f"= {need:g} CPUs, but only {available_cpus:g} are available "
                "(lower scaling.num_workers or scaling.cpus_per_worker)")
    return cfg


def parse_override(item: str) -> tuple[str, Any]:
    """``section.key=value`` -> (path, YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot parse {raw!r}: {e}") from e
    return key.strip(), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` items to a nested dict (returns a new dict)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        key, value = parse_override(item)
        if key in ALIASES:  # an old key given later replaces the new one (it wins)
            key = f"{key.split('.')[0]}.{ALIASES[key]}"
        parts = key.split(".")
        if len(parts) == 1:
            out[parts[0]] = value
        elif len(parts) == 2:
            if parts[0] not in _SECTIONS:
                raise ConfigError(f"{key}: unknown section {parts[0]!r}; allowed: "
                                  f"{', '.join(_SECTIONS)}")
            out.setdefault(parts[0], {})
            out[parts[0]] = {**(out[parts[0]] or {}), parts[1]: value}
        else:
            raise ConfigError(f"{key}: expected section.key")
    return out


def from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    """Build and validate a config from a nested dict plus overrides."""
    data = apply_overrides(data or {}, overrides or [])
    return validate(_build(ExperimentConfig, data, ""))


def load_config(path: str | os.PathLike | None = None,
                overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (``None``: the embedded default) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        from starray.paths import resolve_packaged

        p = resolve_packaged(path)  # configs/... falls back to the packaged copy
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
    return from_dict(data, overrides)


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config next to the results (atomic)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    os.replace(tmp, p)
