"""What a run needs from each node, and whether a cluster's nodes can give it.

The rule (checked before the trainer starts, and before Ray starts for a local run):

* every node that may host training workers gets ``data.generators_per_node``
  generators of ``data.generator_cpus`` each, pinned there (node affinity);
* a node may host workers if those generators plus at least one worker
  (``scaling.cpus_per_worker`` CPUs, ``scaling.gpus_per_worker`` GPUs on a GPU run) fit;
* the ``scaling.num_workers`` workers must then fit in what the generators leave:
  PACK and SPREAD anywhere on those nodes, STRICT_SPREAD one per node.

So per node: generators x generator_cpus + the workers that land there <= the node's
CPUs; the worker group never waits for CPUs a generator holds. Every error gives the
numbers: what the run needs and what each node has.

``run_needs(cfg)`` and ``check_fits(cfg, nodes)`` are plain functions so that a sweep
(several worker groups over one pool) and the Slurm checks can reuse them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from starray.config import ConfigError

EPS = 1e-9


class ResourceError(ConfigError):
    """The run's workers and generators do not fit the nodes."""


@dataclass(frozen=True)
class NodeResources:
    """One Ray node as the check sees it."""

    node_id: str
    cpus: float
    gpus: float = 0.0
    name: str = ""  # IP or hostname, for messages

    def label(self) -> str:
        """How messages name the node."""
        short = self.node_id[:8]
        return f"{self.name} ({short})" if self.name else short


@dataclass(frozen=True)
class RunNeeds:
    """One run's resources: its worker group and the generators of each of its nodes."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float  # 0 on a CPU run
    generators_per_node: int
    generator_cpus: float
    placement: str

    @property
    def generator_cpus_per_node(self) -> float:
        """CPUs the generators hold on each node that hosts workers."""
        return self.generators_per_node * self.generator_cpus

    def workers_on(self, node: NodeResources) -> int:
        """How many workers fit on ``node`` beside its generators."""
        free = node.cpus - self.generator_cpus_per_node
        if free + EPS < self.cpus_per_worker:
            return 0
        n = math.floor((free + EPS) / self.cpus_per_worker)
        if self.gpus_per_worker > 0:
            n = min(n, math.floor((node.gpus + EPS) / self.gpus_per_worker))
        return max(0, n)

    def describe(self) -> str:
        """The per-node need as a sentence."""
        return (f"{self.generators_per_node} generator(s) x {self.generator_cpus:g} CPUs "
                f"(data.generators_per_node x data.generator_cpus) per node + "
                f"{self.num_workers} worker(s) x {self.cpus_per_worker:g} CPUs"
                + (f", {self.gpus_per_worker:g} GPUs" if self.gpus_per_worker else "")
                + f" (scaling.num_workers x scaling.cpus_per_worker, {self.placement}"
                + (": one worker per node" if self.placement == "STRICT_SPREAD" else "") + ")")


def run_needs(cfg: Any) -> RunNeeds:
    """The resources of one run of ``cfg`` (an ExperimentConfig)."""
    s, d = cfg.scaling, cfg.data
    return RunNeeds(num_workers=s.num_workers, cpus_per_worker=s.cpus_per_worker,
                    gpus_per_worker=s.gpus_per_worker if s.use_gpu else 0.0,
                    generators_per_node=d.generators_per_node, generator_cpus=d.generator_cpus,
                    placement=s.placement)


@dataclass(frozen=True)
class Plan:
    """Where a run goes: the nodes that get generators and how many workers fit there."""

    generator_nodes: list[NodeResources]
    worker_slots: dict[str, int]  # node id -> workers that fit beside the generators

    def node_ids(self) -> list[str]:
        """Ids of the nodes that get generators."""
        return [n.node_id for n in self.generator_nodes]


def _table(needs: RunNeeds, nodes: list[NodeResources]) -> str:
    rows = []
    for n in nodes:
        gpus = f", {n.gpus:g} GPUs" if needs.gpus_per_worker else ""
        rows.append(f"node {n.label()}: {n.cpus:g} CPUs{gpus}, generators take "
                    f"{needs.generator_cpus_per_node:g}, room for {needs.workers_on(n)} worker(s)")
    return "; ".join(rows) or "no nodes"


def check_fits(cfg: Any, nodes: list[NodeResources], trials: int = 1) -> Plan:
    """Raise ResourceError unless ``trials`` worker groups of ``cfg`` fit ``nodes``.

    Generators go on every node that can hold them plus one worker; the workers of all
    ``trials`` groups must fit in what is left (STRICT_SPREAD: one per node per group).
    """
    needs = run_needs(cfg)
    slots = {n.node_id: needs.workers_on(n) for n in nodes}
    hosts = [n for n in nodes if slots[n.node_id] > 0]
    one = needs.generator_cpus_per_node + needs.cpus_per_worker
    gpus = f" and {needs.gpus_per_worker:g} GPUs" if needs.gpus_per_worker else ""
    if not hosts:
        raise ResourceError(
            f"scaling.cpus_per_worker: no node can hold its generators and one worker: each "
            f"needs {needs.generator_cpus_per_node:g} + {needs.cpus_per_worker:g} = {one:g} "
            f"CPUs{gpus}; {_table(needs, nodes)} (lower data.generators_per_node, "
            "data.generator_cpus or scaling.cpus_per_worker)")
    if needs.placement == "STRICT_SPREAD":
        # each group needs num_workers distinct nodes; groups share nodes' leftover slots
        capacity = sum(min(slots[n.node_id], trials) for n in hosts)
        fits = len(hosts) >= needs.num_workers and capacity >= trials * needs.num_workers
    else:
        capacity = sum(slots[n.node_id] for n in hosts)
        fits = capacity >= trials * needs.num_workers
    if not fits:
        total = trials * needs.num_workers
        what = f"{trials} trial(s) x " if trials > 1 else ""
        raise ResourceError(
            f"scaling.num_workers: the run needs {what}{needs.describe()}, i.e. "
            f"{needs.generator_cpus_per_node:g} + {needs.cpus_per_worker:g} x (its workers "
            f"there) CPUs on each node; {total} worker(s) do not fit: {_table(needs, nodes)} "
            f"(lower scaling.num_workers, scaling.cpus_per_worker, data.generators_per_node "
            "or data.generator_cpus, or add nodes)")
    return Plan(generator_nodes=hosts, worker_slots=slots)


def max_trials(cfg: Any, nodes: list[NodeResources]) -> int:
    """How many worker groups of ``cfg`` fit ``nodes`` at once beside one pool (0: none)."""
    n = 0
    while True:
        try:
            check_fits(cfg, nodes, trials=n + 1)
        except ResourceError:
            return n
        n += 1


def local_node() -> NodeResources:
    """This machine, before Ray starts (all its CPUs; GPUs that torch sees)."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return NodeResources(node_id="local", cpus=float(os.cpu_count() or 1), gpus=float(gpus),
                         name="this machine")


def cluster_nodes() -> list[NodeResources]:
    """The alive nodes of the connected Ray cluster with their total CPUs and GPUs."""
    import ray

    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        out.append(NodeResources(node_id=n["NodeID"], cpus=float(res.get("CPU", 0.0)),
                                 gpus=float(res.get("GPU", 0.0)),
                                 name=n.get("NodeManagerAddress", "")))
    return out
