"""The data-generation actor pool: node-local generators inside the run's resources.

Every batch is a pure function of (run seed, epoch, global batch index), so any actor can
make any stream batch, a restarted actor picks up where the dead one was, and trials of a
sweep that ask for the same batch get the same stars (served from a small cache, which is
off when nothing shares the pool).

Placement: ``data.generators_per_node`` generators are pinned (hard node affinity) to
every node that may host training workers (see :mod:`starray.train.resources`); each
worker reads only from its own node's generators and fails at start if there are none.
In ``files`` mode workers read their own shards from disk and the generators make only
the validation set.

Backpressure: a worker keeps at most ``prefetch`` requests in flight; actors only work
on requested batches, so memory is bounded by workers x prefetch batches.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from starray.data.dataset import Batch, make_batch, spec_from
from starray.data.shards import DatasetInfo, RankReader, open_dataset
from starray.data.synth import N_CLASSES

VAL_BATCH = 64  # validation stars per generator call (16 calls for 1,024 stars)
SHARED_CACHE = 64  # batches each generator keeps when a sweep's trials share the pool
THREAD_ENV = {"env_vars": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                           "MKL_NUM_THREADS": "1"}}


class NoLocalGenerators(RuntimeError):
    """A training worker's node has no generator of the pool."""


@dataclass(frozen=True)
class DataSpec:
    """What the pool needs to know (picklable, built from DataConfig)."""

    seed: int
    mode: str
    stars_per_epoch: int
    n_per_class: int
    val_stars: int
    batch_size: int
    n_candidates: int
    harmonics: bool
    synth: Any
    dataset: DatasetInfo | None = None  # files mode

    @classmethod
    def from_config(cls, cfg: Any) -> DataSpec:
        """From an ExperimentConfig (files mode: checks the dataset, DatasetError if bad)."""
        d = cfg.data
        dataset = open_dataset(d.path, d) if d.mode == "files" else None
        return cls(seed=cfg.seed, mode=d.mode, stars_per_epoch=d.stars_per_epoch,
                   n_per_class=d.n_per_class, val_stars=d.val_stars, batch_size=d.batch_size,
                   n_candidates=d.n_candidates, harmonics=d.harmonics, synth=spec_from(d),
                   dataset=dataset)

    def batches_per_epoch(self) -> int:
        """Global number of training batches in one epoch."""
        if self.mode == "files":
            total = self.dataset.stars
        elif self.mode == "stream":
            total = self.stars_per_epoch
        else:
            total = self.n_per_class * N_CLASSES
        return max(1, total // self.batch_size)

    def val_batches(self) -> int:
        """Number of validation batches of VAL_BATCH stars (the last may be shorter)."""
        return -(-self.val_stars // VAL_BATCH)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class DataGenerator:
    """One member of the pool: makes batches on request (optionally caches recent ones).

    ``index`` is its place among the ``node_size`` generators of its node (fixed mode:
    it owns the dataset's batches k = index mod node_size).
    """

    def __init__(self, index: int, node_size: int, spec: DataSpec, cache: int = 0) -> None:
        self.index, self.node_size, self.spec = index, node_size, spec
        self._cache: collections.OrderedDict[tuple, Batch] = collections.OrderedDict()
        self._cache_size = cache
        self._val: dict[int, Batch] = {}
        self._shard: Batch | None = None
        self._lock = threading.Lock()
        self.generated = self.redraws = self.served = 0
        self.busy_s = 0.0  # seconds spent making stars

    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        return ray.get_runtime_context().get_node_id()

    def stats(self) -> dict[str, Any]:
        """Stars generated, redraws and batches served so far (since the last restart)."""
        return {"generated": self.generated, "redraws": self.redraws, "served": self.served,
                "busy_s": self.busy_s, "pid": os.getpid(), "node_id": self.node_id()}

    def _make(self, n: int, epoch: int, index: int, space: str = "train") -> Batch:
        s = self.spec
        t0 = time.perf_counter()
        batch, redraws = make_batch(n, s.seed, epoch, index, s.synth, s.n_candidates,
                                    s.harmonics, space=space)
        self.busy_s += time.perf_counter() - t0
        self.generated += n
        self.redraws += redraws
        return batch

    def batch(self, epoch: int, index: int, size: int) -> Batch:
        """Training batch ``index`` of ``epoch`` (stream: fresh stars; fixed: reshuffled).

        In stream mode ``size`` may differ between consumers (trials of a sweep); in fixed
        mode the dataset's own batch size is used.
        """
        self.served += 1
        key = (epoch, index, size)
        if self._cache_size:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
        if self.spec.mode == "stream":
            out = self._make(size, epoch, index)
        else:
            out = self._fixed_batch(epoch, index)
        if self._cache_size:
            with self._lock:
                self._cache[key] = out
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    def _fixed_batch(self, epoch: int, index: int) -> Batch:
        """Fixed mode: batches k = index mod node_size; rows reshuffled per epoch."""
        s = self.spec
        if self._shard is None:
            with self._lock:
                if self._shard is None:
                    own = range(self.index, s.batches_per_epoch(), self.node_size)
                    parts = [self._make(s.batch_size, 0, k, space="fixed") for k in own]
                    self._shard = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        n = len(self._shard["label"])
        perm = np.random.default_rng([s.seed, epoch + 2, self.index]).permutation(n)
        local = index // self.node_size
        rows = perm[(np.arange(s.batch_size) + local * s.batch_size) % n]
        return {k: v[rows] for k, v in self._shard.items()}

    def val_batch(self, j: int) -> Batch:
        """Validation batch ``j`` (seed space "validation")."""
        if j not in self._val:
            n = min(VAL_BATCH, self.spec.val_stars - j * VAL_BATCH)
            self._val[j] = self._make(n, 0, j, space="validation")
        return self._val[j]


class DataPool:
    """Handles to the generator actors; picklable, passed to every training worker."""

    def __init__(self, actors: list[Any], node_ids: list[str], spec: DataSpec) -> None:
        self.actors, self.node_ids, self.spec = actors, node_ids, spec
        self.val_refs: list[Any] | None = None

    @classmethod
    def create(cls, spec: DataSpec, per_node: int, cpus: float = 0.5,
               nodes: list[str] | None = None, cache: int = 0, name: str | None = None
               ) -> DataPool:
        """Start ``per_node`` generators pinned to each of ``nodes`` (default: every node).

        ``cache``: batches each generator keeps for consumers that ask for the same batch
        (a sweep's trials); 0 (a single run) turns the cache off.
        """
        if nodes is None:
            nodes = [n["NodeID"] for n in ray.nodes()
                     if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        actors, node_ids = [], []
        for node in nodes:
            for j in range(per_node):
                strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
                actors.append(DataGenerator.options(
                    num_cpus=cpus, scheduling_strategy=strategy, runtime_env=THREAD_ENV,
                    name=f"{name}-{node[:8]}-gen{j}" if name else None,
                ).remote(j, per_node, spec, cache))
                node_ids.append(node)
        placed = ray.get([a.node_id.remote() for a in actors])
        if placed != node_ids:  # hard affinity: cannot happen
            raise RuntimeError(f"generators started on {placed}, not on {node_ids}")
        return cls(actors, node_ids, spec)

    @classmethod
    def for_run(cls, cfg: Any, cache: int = 0, name: str | None = None) -> DataPool:
        """The pool of a run of ``cfg`` on the connected cluster, after the resource check.

        Raises ResourceError (with the numbers) when its workers and generators do not fit.
        """
        from starray.train.resources import check_fits, cluster_nodes

        plan = check_fits(cfg, cluster_nodes())
        return cls.create(DataSpec.from_config(cfg), cfg.data.generators_per_node,
                          cfg.data.generator_cpus, nodes=plan.node_ids(), cache=cache,
                          name=name)

    def prefill_validation(self) -> None:
        """Generate the one validation set now, in parallel over the pool; keep its refs."""
        self.val_refs = [self.actors[j % len(self.actors)].val_batch.remote(j)
                         for j in range(self.spec.val_batches())]
        ray.wait(self.val_refs, num_returns=len(self.val_refs), fetch_local=False)

    def node_actors(self, node_id: str) -> list[Any]:
        """The generators on ``node_id``; NoLocalGenerators if it has none."""
        local = [a for a, n in zip(self.actors, self.node_ids) if n == node_id]
        if not local:
            have = sorted(set(self.node_ids))
            raise NoLocalGenerators(
                f"no data generator on this worker's node {node_id}: the pool has "
                f"generators on node(s) {', '.join(have) or 'none'}; workers read only from "
                "their own node's generators (the run's resource check places them on every "
                "node that can host workers; was the pool made for another cluster?)")
        return local

    def stats(self) -> list[dict[str, Any]]:
        """Every generator's stats (generated, served, pid, node_id)."""
        return ray.get([a.stats.remote() for a in self.actors])

    def shutdown(self) -> None:
        """Kill the generators."""
        for a in self.actors:
            ray.kill(a, no_restart=True)


class BatchStream:
    """A worker's view of the pool: distinct batches per rank, ``prefetch`` in flight.

    ``local``: (local rank, workers on this node), to spread a node's workers over its
    generators; by default (rank, world).
    """

    def __init__(self, pool: DataPool, rank: int, world: int, prefetch: int,
                 batch_size: int | None = None, stars_per_epoch: int | None = None,
                 local: tuple[int, int] | None = None) -> None:
        self.pool, self.rank, self.world, self.prefetch = pool, rank, world, max(1, prefetch)
        spec = pool.spec
        self.local_rank, self.local_world = local or (rank, world)
        self.batch_size = batch_size if spec.mode == "stream" and batch_size else spec.batch_size
        self.node_id = ray.get_runtime_context().get_node_id()
        self.reader: RankReader | None = None
        self.actors: list[Any] = []
        if spec.mode == "files":
            self.reader = RankReader(spec.dataset, rank, world, spec.batch_size,
                                     seed=spec.dataset.seed)
            self.n_batches = self.reader.steps_per_epoch() * world
        else:
            self.actors = pool.node_actors(self.node_id)
            if spec.mode == "stream":
                self.n_batches = max(1, (stars_per_epoch or spec.stars_per_epoch)
                                     // self.batch_size)
            else:
                self.n_batches = spec.batches_per_epoch()

    def steps_per_epoch(self) -> int:
        """Training steps per worker per epoch."""
        return max(1, self.n_batches // self.world)

    def _request(self, epoch: int, step: int) -> Any:
        g = step * self.world + self.rank  # global batch index: distinct stars per rank
        if self.pool.spec.mode == "stream":
            # round-robin of this node's workers over this node's generators
            actor = self.actors[(step * self.local_world + self.local_rank) % len(self.actors)]
        else:  # fixed: the node's generator that owns batch g
            actor = self.actors[g % len(self.actors)]
        return actor.batch.remote(epoch, g, self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0):
        """Yield this rank's batches of ``epoch`` in order.

        ``prefetch`` requests stay in flight; ``ray.wait(fetch_local=True)`` pulls them to
        this node while the current batch trains, so the next one is local when needed.
        """
        if self.reader is not None:
            yield from self.reader.epoch(epoch, start_step)
            return
        steps = self.steps_per_epoch()
        inflight: collections.deque = collections.deque()
        nxt = start_step
        while inflight or nxt < steps:
            while nxt < steps and len(inflight) < self.prefetch:
                inflight.append(self._request(epoch, nxt))
                nxt += 1
            # start pulling every in-flight batch; returns at once
            ray.wait(list(inflight), num_returns=len(inflight), timeout=0, fetch_local=True)
            head = inflight.popleft()
            ray.wait([head], fetch_local=True)
            batch = ray.get(head)
            if nxt < steps:  # keep ``prefetch`` in flight while this batch trains
                inflight.append(self._request(epoch, nxt))
                nxt += 1
            yield batch

    def validation(self):
        """Yield this rank's share of the one validation set."""
        n = self.pool.spec.val_batches()
        if self.pool.val_refs is not None:
            refs = self.pool.val_refs[self.rank::self.world]
        else:
            refs = [self.pool.actors[j % len(self.pool.actors)].val_batch.remote(j)
                    for j in range(self.rank, n, self.world)]
        for ref in refs:
            yield ray.get(ref)
