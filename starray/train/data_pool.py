"""The shared data-generation actor pool.

Every batch is a pure function of (run seed, epoch, global batch index), so any actor can
make any stream batch, a restarted actor picks up where the dead one was, and trials of a
sweep that ask for the same batch get the same stars (served from a small cache).

Backpressure: a worker keeps at most ``prefetch`` requests in flight; actors only work
on requested batches, so memory is bounded by workers x prefetch batches.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from starray.data.dataset import Batch, make_batch, spec_from
from starray.data.synth import N_CLASSES

VAL_BATCH = 256


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

    @classmethod
    def from_config(cls, cfg: Any) -> DataSpec:
        """From an ExperimentConfig."""
        d = cfg.data
        return cls(seed=cfg.seed, mode=d.mode, stars_per_epoch=d.stars_per_epoch,
                   n_per_class=d.n_per_class, val_stars=d.val_stars, batch_size=d.batch_size,
                   n_candidates=d.n_candidates, harmonics=d.harmonics, synth=spec_from(d))

    def batches_per_epoch(self) -> int:
        """Global number of training batches in one epoch."""
        total = self.stars_per_epoch if self.mode == "stream" else self.n_per_class * N_CLASSES
        return max(1, total // self.batch_size)

    def val_batches(self) -> int:
        """Number of validation batches of VAL_BATCH stars (the last may be shorter)."""
        return -(-self.val_stars // VAL_BATCH)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class DataGenerator:
    """One member of the pool: makes batches on request, caches recent ones."""

    def __init__(self, index: int, pool_size: int, spec: DataSpec, cache: int = 64) -> None:
        self.index, self.pool_size, self.spec = index, pool_size, spec
        self._cache: collections.OrderedDict[tuple, Batch] = collections.OrderedDict()
        self._cache_size = cache
        self._val: dict[int, Batch] = {}
        self._shard: Batch | None = None
        self._lock = threading.Lock()
        self.generated = 0
        self.redraws = 0

    def node_id(self) -> str:
        """The Ray node this actor runs on (workers prefer generators on their node)."""
        return ray.get_runtime_context().get_node_id()

    def stats(self) -> dict[str, int]:
        """Stars generated and synthetic redraws so far (since the last restart)."""
        return {"generated": self.generated, "redraws": self.redraws, "pid": os.getpid()}

    def _make(self, n: int, epoch: int, index: int, space: str = "train") -> Batch:
        s = self.spec
        batch, redraws = make_batch(n, s.seed, epoch, index, s.synth, s.n_candidates,
                                    s.harmonics, space=space)
        self.generated += n
        self.redraws += redraws
        return batch

    def batch(self, epoch: int, index: int, size: int) -> Batch:
        """Training batch ``index`` of ``epoch`` (stream: fresh stars; fixed: reshuffled).

        In stream mode ``size`` may differ between consumers (trials of a sweep); in fixed
        mode the dataset's own batch size is used.
        """
        key = (epoch, index, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if self.spec.mode == "stream":
            out = self._make(size, epoch, index)
        else:
            out = self._fixed_batch(epoch, index)
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def _fixed_batch(self, epoch: int, index: int) -> Batch:
        """Fixed mode: this actor owns batches k = index mod pool; rows reshuffled per epoch."""
        s = self.spec
        if self._shard is None:
            total = s.batches_per_epoch()
            own = range(self.index, total, self.pool_size)
            parts = [self._make(s.batch_size, 0, k, space="fixed") for k in own]
            self._shard = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        n = len(self._shard["label"])
        perm = np.random.default_rng([s.seed, epoch + 2, self.index]).permutation(n)
        local = index // self.pool_size
        rows = perm[(np.arange(s.batch_size) + local * s.batch_size) % n]
        return {k: v[rows] for k, v in self._shard.items()}

    def val_batch(self, j: int) -> Batch:
        """Validation batch ``j`` (generated once, kept)."""
        if j not in self._val:
            n = min(VAL_BATCH, self.spec.val_stars - j * VAL_BATCH)
            self._val[j] = self._make(n, 0, j, space="validation")
        return self._val[j]


class DataPool:
    """Handles to the generator actors; picklable, passed to every training worker."""

    def __init__(self, actors: list[Any], node_ids: list[str], spec: DataSpec) -> None:
        self.actors, self.node_ids, self.spec = actors, node_ids, spec

    @classmethod
    def create(cls, spec: DataSpec, size: int, cpus: float = 0.5, name: str | None = None
               ) -> DataPool:
        """Start ``size`` generators spread over the cluster's nodes."""
        env = {"env_vars": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                            "MKL_NUM_THREADS": "1"}}
        actors = [
            DataGenerator.options(num_cpus=cpus, scheduling_strategy="SPREAD", runtime_env=env,
                                  name=f"{name}-gen{i}" if name else None,
                                  ).remote(i, size, spec)
            for i in range(size)
        ]
        node_ids = ray.get([a.node_id.remote() for a in actors])
        return cls(actors, node_ids, spec)

    def prefill_validation(self) -> None:
        """Generate the validation set now, in parallel over the pool."""
        refs = [self.actors[j % len(self.actors)].val_batch.remote(j)
                for j in range(self.spec.val_batches())]
        ray.get(refs)

    def local_actors(self, node_id: str) -> list[Any]:
        """Generators on ``node_id`` (all of them if none is there)."""
        local = [a for a, n in zip(self.actors, self.node_ids) if n == node_id]
        return local or list(self.actors)

    def shutdown(self) -> None:
        """Kill the generators."""
        for a in self.actors:
            ray.kill(a, no_restart=True)


class BatchStream:
    """A worker's view of the pool: distinct batches per rank, ``prefetch`` in flight."""

    def __init__(self, pool: DataPool, rank: int, world: int, prefetch: int,
                 batch_size: int | None = None, stars_per_epoch: int | None = None) -> None:
        self.pool, self.rank, self.world, self.prefetch = pool, rank, world, max(1, prefetch)
        spec = pool.spec
        self.batch_size = batch_size if spec.mode == "stream" and batch_size else spec.batch_size
        if spec.mode == "stream":
            self.n_batches = max(1, (stars_per_epoch or spec.stars_per_epoch) // self.batch_size)
        else:
            self.n_batches = spec.batches_per_epoch()
        node = ray.get_runtime_context().get_node_id()
        self.actors = pool.local_actors(node) if pool.spec.mode == "stream" else pool.actors

    def steps_per_epoch(self) -> int:
        """Training steps per worker per epoch."""
        return max(1, self.n_batches // self.world)

    def _request(self, epoch: int, step: int) -> Any:
        g = step * self.world + self.rank  # global batch index: distinct stars per rank
        if self.pool.spec.mode == "stream":
            actor = self.actors[(step + self.rank) % len(self.actors)]
        else:
            actor = self.pool.actors[g % len(self.pool.actors)]
        return actor.batch.remote(epoch, g, self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0):
        """Yield this rank's batches of ``epoch`` in order."""
        steps = self.steps_per_epoch()
        inflight: collections.deque = collections.deque()
        nxt = start_step
        while nxt < steps and len(inflight) < self.prefetch:
            inflight.append(self._request(epoch, nxt))
            nxt += 1
        while inflight:
            batch = ray.get(inflight.popleft())
            if nxt < steps:
                inflight.append(self._request(epoch, nxt))
                nxt += 1
            yield batch

    def validation(self):
        """Yield this rank's share of the fixed validation set."""
        n = self.pool.spec.val_batches()
        refs = [self.pool.actors[j % len(self.pool.actors)].val_batch.remote(j)
                for j in range(self.rank, n, self.world)]
        for ref in refs:
            yield ray.get(ref)
