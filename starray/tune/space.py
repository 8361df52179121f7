"""Search spaces from YAML, checked before Ray starts.

A space file (configs/tune/*.yaml)::

    num_samples: 8            # trials
    metric: val_acc           # what ASHA compares
    mode: max
    max_concurrent_trials: 2  # default: what the CPUs/GPUs allow
    asha: {max_t: 6, grace_period: 1, reduction_factor: 3}
    base:                     # settings every trial starts from (--set overrides them)
      scaling.num_workers: 1
    space:
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}
      model.d_model_heads: {choice: [[64, 4], [96, 6]]}   # d_model and n_heads together
      model.n_layers: {choice: [1, 2]}

Kinds: choice (non-empty list), uniform [low, high], loguniform [low, high] (low > 0),
randint [low, high] (high exclusive). Every key must be a config field
(``section.key``) or ``model.d_model_heads``.

What a trial may vary: one data-generation pool and one validation set serve every
trial, built from the base config, so ``data.*`` keys that change the stars (or the pool)
are refused; only those that change how a trial consumes the stream are allowed
(:data:`CONSUMPTION_KEYS`). ``scaling.*`` (concurrency is computed from it), ``wandb.*``,
``train.epochs`` (``asha.max_t``) and ``train.best_metric``/``best_mode`` (``metric``/
``mode``) are set once for the whole sweep.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from starray.config import CHOICES, ConfigError, ExperimentConfig, apply_overrides, from_dict

KINDS = ("choice", "uniform", "loguniform", "randint")
TOP_KEYS = ("num_samples", "metric", "mode", "max_concurrent_trials", "asha", "base", "space")
# data keys a trial may search: they change how it reads the shared stream, not the stars
CONSUMPTION_KEYS = {"stream": ("data.batch_size", "data.stars_per_epoch", "data.prefetch"),
                    "fixed": ("data.prefetch",)}
# keys one sweep sets for all of its trials (searching them would be ignored or unsafe)
SWEEP_WIDE = {
    "scaling": "the trials' resources are sized once per sweep (set it under base:)",
    "wandb": "tracking is set once per sweep (set it under base:)",
    "train.epochs": "asha.max_t sets the trials' epochs",
    "train.best_metric": "the space's metric sets it",
    "train.best_mode": "the space's mode sets it",
}
ASHA_KEYS = ("max_t", "grace_period", "reduction_factor")
PAIR_KEY = "model.d_model_heads"


@dataclass
class SweepSpec:
    """A validated search space plus the ASHA settings."""

    space: dict[str, tuple[str, list[Any]]]
    num_samples: int = 8
    metric: str = "val_acc"
    mode: str = "max"
    max_concurrent_trials: int | None = None
    asha: dict[str, int] = field(default_factory=lambda: {"max_t": 6, "grace_period": 1,
                                                          "reduction_factor": 3})
    base: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Back to the YAML form."""
        return {"num_samples": self.num_samples, "metric": self.metric, "mode": self.mode,
                "max_concurrent_trials": self.max_concurrent_trials, "asha": dict(self.asha),
                "base": dict(self.base),
                "space": {k: {kind: args} for k, (kind, args) in self.space.items()}}

    def base_overrides(self) -> list[str]:
        """The space's ``base:`` settings as ``--set`` items."""
        return [f"{k}={json.dumps(v)}" for k, v in self.base.items()]

    def sweep_overrides(self) -> list[str]:
        """What the sweep itself fixes in every trial: epochs and the "best" rule."""
        return [f"train.epochs={self.asha['max_t']}", f"train.best_metric={self.metric}",
                f"train.best_mode={self.mode}"]


def trial_base(base: ExperimentConfig, spec: SweepSpec, overrides: list[str]
               ) -> ExperimentConfig:
    """The config every trial starts from: base < space ``base:`` < ``--set`` < sweep rules."""
    cfg = from_dict(base.to_dict(), spec.base_overrides() + list(overrides)
                    + spec.sweep_overrides())
    check_space_keys(spec.space, cfg)
    return cfg


def check_space_keys(space: dict[str, Any], base: ExperimentConfig) -> None:
    """Refuse keys a trial cannot vary (names the key and says why)."""
    allowed = CONSUMPTION_KEYS[base.data.mode]
    for key in space:
        section = key.partition(".")[0]
        why = SWEEP_WIDE.get(key) or SWEEP_WIDE.get(section)
        if why:
            raise ConfigError(f"space.{key}: cannot be searched: {why}")
        if section == "data" and key not in allowed:
            raise ConfigError(
                f"space.{key}: cannot be searched: one data pool and validation set, built "
                f"from the base config, serve every trial, so each trial would train on the "
                f"base value; in {base.data.mode} mode a sweep may search only "
                f"{', '.join(allowed)} (set {key} in the base config or under base:)")


def flatten_params(params: dict[str, Any]) -> list[str]:
    """Sampled params -> ``--set``-style overrides (d_model_heads split in two)."""
    out = []
    for key, value in params.items():
        if key == PAIR_KEY:
            d_model, heads = pair_value(value)
            out += [f"model.d_model={d_model}", f"model.n_heads={heads}"]
        else:
            out.append(f"{key}={json.dumps(value)}")  # JSON is YAML: --set parses it back
    return out


def pair_value(value: Any) -> tuple[int, int]:
    """[d_model, n_heads] or its Tune form "d_modelxn_heads" -> (d_model, n_heads)."""
    if isinstance(value, str):
        a, _, b = value.partition("x")
        return int(a), int(b)
    return int(value[0]), int(value[1])


def _check_entry(key: str, entry: Any) -> tuple[str, list[Any]]:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(f"space.{key}: expected one of {{{', '.join(KINDS)}}}: [...], "
                          f"got {entry!r}")
    kind, args = next(iter(entry.items()))
    if kind not in KINDS:
        raise ConfigError(f"space.{key}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space.{key}: {kind} needs a non-empty list, got {args!r}")
    if kind != "choice":
        if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args):
            raise ConfigError(f"space.{key}: {kind} needs [low, high], got {args!r}")
        low, high = args
        if low > high or (kind == "randint" and low >= high):
            raise ConfigError(f"space.{key}: low {low} > high {high}")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"space.{key}: loguniform needs low > 0, got {low}")
    if key == PAIR_KEY and kind == "choice":
        for pair in args:
            if not (isinstance(pair, list) and len(pair) == 2 and pair[0] % pair[1] == 0):
                raise ConfigError(f"space.{key}: each choice must be [d_model, n_heads] with "
                                  f"n_heads dividing d_model, got {pair!r}")
    return kind, args


def _corners(kind: str, args: list[Any]) -> list[Any]:
    if kind == "choice":
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]
    return list(args)


def check_combinations(spec: SweepSpec, base: ExperimentConfig) -> None:
    """Every corner of the space must give a valid config (names the keys if not)."""
    keys = list(spec.space)
    values = [_corners(*spec.space[k]) for k in keys]
    combos = itertools.product(*values)
    for combo in itertools.islice(combos, 4096):
        params = dict(zip(keys, combo))
        try:
            from_dict(apply_overrides(base.to_dict(),
                                      spec.base_overrides() + flatten_params(params)))
        except ConfigError as e:
            raise ConfigError(f"space: the combination {params} is invalid: {e}") from e


def load_space(path: str | Path, base: ExperimentConfig) -> SweepSpec:
    """Read and validate a space file against the base config."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--space {path}: no such file")
    data = yaml.safe_load(path.read_text()) or {}
    return parse_space(data, base)


def parse_space(data: dict[str, Any], base: ExperimentConfig) -> SweepSpec:
    """Validate a space dict; raise ConfigError naming the key."""
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(TOP_KEYS)}")
    raw = data.get("space") or {}
    if not raw:
        raise ConfigError("space: empty; give at least one parameter to search")
    base_dict = base.to_dict()
    space = {}
    for key, entry in raw.items():
        if key != PAIR_KEY:
            section, _, name = key.partition(".")
            if section not in base_dict or not isinstance(base_dict[section], dict) \
                    or name not in base_dict[section]:
                raise ConfigError(f"space.{key}: unknown config key (expected section.key, "
                                  "e.g. train.lr, model.n_layers)")
        space[key] = _check_entry(key, entry)
    asha = {"max_t": 6, "grace_period": 1, "reduction_factor": 3, **(data.get("asha") or {})}
    for key, value in asha.items():
        if key not in ASHA_KEYS:
            raise ConfigError(f"asha.{key}: unknown key; allowed: {', '.join(ASHA_KEYS)}")
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"asha.{key}: must be a positive integer, got {value!r}")
    if asha["grace_period"] > asha["max_t"]:
        raise ConfigError("asha.grace_period: must be <= asha.max_t")
    mode = data.get("mode", "max")
    if mode not in ("max", "min"):
        raise ConfigError(f"mode: {mode!r} is not one of max, min")
    metric = data.get("metric", "val_acc")
    if metric not in CHOICES["train.best_metric"]:
        raise ConfigError(f"metric: {metric!r} is not one of "
                          f"{', '.join(CHOICES['train.best_metric'])}")
    trial_set = data.get("base") or {}
    if not isinstance(trial_set, dict):
        raise ConfigError(f"base: expected a mapping of section.key: value, got {trial_set!r}")
    for key in trial_set:
        if key in space:
            raise ConfigError(f"base.{key}: also searched in space; keep one of the two")
        if key in SWEEP_WIDE and not key.startswith(("scaling", "wandb")):
            raise ConfigError(f"base.{key}: cannot be set here: {SWEEP_WIDE[key]}")
    try:
        base = from_dict(base.to_dict(), [f"{k}={json.dumps(v)}" for k, v in trial_set.items()])
    except ConfigError as e:
        raise ConfigError(f"base: {e}") from e
    check_space_keys(space, base)
    num = data.get("num_samples", 8)
    if not isinstance(num, int) or num < 1:
        raise ConfigError(f"num_samples: must be a positive integer, got {num!r}")
    conc = data.get("max_concurrent_trials")
    if conc is not None and (not isinstance(conc, int) or conc < 1):
        raise ConfigError(f"max_concurrent_trials: must be a positive integer, got {conc!r}")
    spec = SweepSpec(space=space, num_samples=num, metric=metric, mode=mode,
                     max_concurrent_trials=conc, asha=asha, base=dict(trial_set))
    check_combinations(spec, base)
    return spec


def to_tune_space(spec: SweepSpec) -> dict[str, Any]:
    """Ray Tune search-space objects (keys with dots replaced for Tune's flat config)."""
    from ray import tune

    make = {"choice": lambda a: tune.choice(a), "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    out = {}
    for key, (kind, args) in spec.space.items():
        if key == PAIR_KEY:  # Tune reads lists in points_to_evaluate as paths: use "AxB"
            args = [f"{d}x{h}" for d, h in args]
        out[key] = make[kind](args)
    return out


def sample_points(spec: SweepSpec, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` seeded draws from the space (to run the same trials under two schedulers)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        point: dict[str, Any] = {}
        for key, (kind, args) in spec.space.items():
            if kind == "choice":
                point[key] = args[int(rng.integers(len(args)))]
                if key == PAIR_KEY:
                    point[key] = "{}x{}".format(*point[key])
            elif kind == "uniform":
                point[key] = float(rng.uniform(*args))
            elif kind == "loguniform":
                point[key] = float(10 ** rng.uniform(np.log10(args[0]), np.log10(args[1])))
            else:
                point[key] = int(rng.integers(args[0], args[1]))
        points.append(point)
    return points
