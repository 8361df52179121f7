"""How many trials of a sweep run at once, and whether one can run at all.

Tune places only each trial's own driver (``TRIAL_CPU``); the trial's TorchTrainer then
asks for its worker group, which Tune does not see. So the sweep bounds concurrency:

    per trial  = num_workers x (cpus_per_worker [, gpus_per_worker]) + TRIAL_CPU
    shared     = data.generators_per_node x data.generator_cpus x nodes (one pool for
                 every trial)
    concurrent = min(floor((CPUs - shared) / per-trial CPUs),
                     floor(GPUs / per-trial GPUs) if use_gpu,
                     max_concurrent_trials, num_samples)

A trial that cannot fit even alone is a ConfigError with the numbers (before Ray starts
for a local sweep, right after connecting for a cluster).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from starray.config import ConfigError, ExperimentConfig

TRIAL_CPU = 0.001  # the trial's own driver (Tune's placement); it only waits on its trainer
_EPS = 1e-9


@dataclass(frozen=True)
class TrialNeed:
    """Resources of one trial and of the sweep's shared data pool."""

    cpus: float
    gpus: float
    pool_cpus: float
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    @classmethod
    def of(cls, cfg: ExperimentConfig, nodes: int = 1) -> TrialNeed:
        """From the config every trial starts from (``nodes``: nodes holding generators)."""
        s, d = cfg.scaling, cfg.data
        gpw = s.gpus_per_worker if s.use_gpu else 0.0
        return cls(cpus=s.num_workers * s.cpus_per_worker + TRIAL_CPU,
                   gpus=s.num_workers * gpw,
                   pool_cpus=d.generators_per_node * d.generator_cpus * nodes,
                   workers=s.num_workers, cpus_per_worker=s.cpus_per_worker,
                   gpus_per_worker=gpw)

    def describe(self) -> str:
        """'1 worker x 0.75 CPU + 0.001 (trial) = 0.751 CPU per trial; pool 0.4 CPU'."""
        gpu = f" and {self.gpus:g} GPU" if self.gpus else ""
        return (f"{self.workers} worker(s) x {self.cpus_per_worker:g} CPU + {TRIAL_CPU:g} "
                f"(the trial) = {self.cpus:g} CPU{gpu} per trial, plus {self.pool_cpus:g} CPU "
                "for the shared data generators (data.generators_per_node x data.generator_cpus)")


def concurrent_trials(cfg: ExperimentConfig, cpus: float, gpus: float, where: str,
                      limit: int | None = None, num_samples: int | None = None,
                      largest_node: tuple[float, float] | None = None, nodes: int = 1) -> int:
    """Trials that fit at once on ``cpus``/``gpus``; ConfigError if not even one fits.

    ``where`` names the resources in the error ("this machine", "the Ray cluster");
    ``largest_node`` (CPUs, GPUs) checks that one worker fits on some node.
    """
    need = TrialNeed.of(cfg, nodes)
    free = cpus - need.pool_cpus
    short = []
    if free + _EPS < need.cpus:
        short.append(f"{need.pool_cpus + need.cpus:g} CPUs but {where} has {cpus:g}")
    if need.gpus and gpus + _EPS < need.gpus:
        short.append(f"{need.gpus:g} GPUs but {where} has {gpus:g}")
    if largest_node is not None:
        node_cpus, node_gpus = largest_node
        if need.cpus_per_worker > node_cpus + _EPS or need.gpus_per_worker > node_gpus + _EPS:
            short.append(f"a worker needs {need.cpus_per_worker:g} CPU / "
                         f"{need.gpus_per_worker:g} GPU on one node but the largest node of "
                         f"{where} has {node_cpus:g} / {node_gpus:g}")
    if short:
        raise ConfigError(
            "scaling: a sweep trial cannot fit: it needs " + "; ".join(short) + ". "
            + need.describe() + ". Lower scaling.num_workers, scaling.cpus_per_worker, "
            "data.generators_per_node or data.generator_cpus (e.g. under base: in the "
            "space file).")
    n = math.floor((free + _EPS) / need.cpus)
    if need.gpus:
        n = min(n, math.floor((gpus + _EPS) / need.gpus))
    for cap in (limit, num_samples):
        if cap:
            n = min(n, cap)
    return max(1, n)


def local_resources(cfg: ExperimentConfig) -> tuple[float, float]:
    """(CPUs, GPUs) of this machine, as a local Ray would see them."""
    import os

    gpus = 0.0
    if cfg.scaling.use_gpu:
        import torch

        gpus = float(torch.cuda.device_count())
    return float(os.cpu_count() or 1), gpus


def cluster_resources() -> tuple[float, float, tuple[float, float]]:
    """(CPUs, GPUs, (CPUs, GPUs) of the largest node) of the connected Ray cluster."""
    import ray

    total = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    largest = max(((n.get("CPU", 0.0), n.get("GPU", 0.0)) for n in nodes), default=(0.0, 0.0))
    return float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0)), largest
