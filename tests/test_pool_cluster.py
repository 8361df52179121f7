"""A real 2-node Ray cluster on this machine: node-local generators, the per-node resource
check, and a generator killed mid-epoch (nothing lost, nothing repeated)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from starray.config import load_config

pytestmark = pytest.mark.ray

SMALL = ["data.stars_per_epoch=512", "data.val_stars=64", "data.batch_size=32",
         "train.warmup_epochs=0.5", "scaling.placement=STRICT_SPREAD"]


@pytest.fixture
def two_nodes(tmp_path):
    """Head + one worker node (2 CPUs each), private ports, temp dirs and token.

    Yields (address, env). Drivers connect from a subprocess: a process that has joined a
    cluster with its own token cannot start a local Ray later (the token is cached).
    """
    import shutil

    from starray.slurm import ray_cluster as rc
    from starray.slurm.ports import free_node_ports

    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    env = rc.ray_env(rc.write_token(tmp_path / "ray_token"))
    job = os.getpid() % 997
    procs: list[tuple] = []
    head_ports = free_node_ports(job, 0)
    address = f"127.0.0.1:{head_ports.gcs}"
    try:
        for i in range(2):
            ports = head_ports if i == 0 else free_node_ports(job, 1)
            tmp = f"/tmp/rpool-{os.getpid()}-n{i}"
            cmd = rc.start_command(ray_bin, ports, tmp, "127.0.0.1", 2, 0,
                                   head_address=None if i == 0 else address,
                                   object_store_bytes=200 * 2**20)
            procs.append((rc.start_node(cmd, env, tmp_path / f"node{i}.log"), tmp))
            if i == 0:
                time.sleep(3)
        yield address, env
    finally:
        for proc, tmp in reversed(procs):
            rc.stop_node(proc, tmp, address)


def test_two_nodes_local_generators_resource_check_and_killed_generator(two_nodes, tmp_path):
    address, env = two_nodes
    env = {**env, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, __file__, address, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "two-node checks passed" in proc.stdout


def _connect(address: str) -> None:
    import ray

    deadline = time.time() + 90
    while True:
        try:
            ray.init(address=address, log_to_driver=False)
            break
        except Exception:  # the head is not up yet  # noqa: BLE001
            if time.time() > deadline:
                raise
            time.sleep(1)
    while len([n for n in ray.nodes() if n["Alive"]]) < 2:
        assert time.time() < deadline, "the second node did not join"
        time.sleep(0.5)


def scenario(address: str, tmp: str) -> None:
    """The checks, run as a driver of the 2-node cluster (in a subprocess)."""
    from pathlib import Path

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from starray.train.data_pool import BatchStream, DataPool, NoLocalGenerators
    from starray.train.driver import read_history, run_training
    from starray.train.resources import ResourceError

    tmp_path = Path(tmp)
    two_nodes = address
    _connect(address)

    def _consume(pool, rank, world, epoch):
        """What a training worker does: stream its batches; returns (node, batch hashes)."""
        import hashlib

        import ray

        from starray.train.data_pool import BatchStream

        stream = BatchStream(pool, rank, world, prefetch=2)
        hashes = [hashlib.sha256(b["lc"].tobytes()).hexdigest() for b in stream.epoch(epoch)]
        return ray.get_runtime_context().get_node_id(), hashes

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    head = ray.get_runtime_context().get_node_id()
    other = next(n for n in nodes if n != head)

    # a run whose workers + generators do not fit a node fails at start, with the numbers
    big = load_config(None, SMALL + ["scaling.cpus_per_worker=1.75", f"output_dir={tmp_path}",
                                     "name=big"])
    with pytest.raises(ResourceError, match=r"0\.5 \+ 1\.75 = 2\.25 CPUs; node \S+ \(\w+\): "
                                            r"2 CPUs, generators take 0\.5, room for 0 .*; "
                                            r"node \S+ \(\w+\): 2 CPUs"):
        run_training(big, address=two_nodes)

    # the pool: one generator pinned to each node; each worker reads its own node's
    cfg = load_config(None, SMALL)
    pool = DataPool.for_run(cfg)
    assert sorted(pool.node_ids) == nodes
    consume = ray.remote(_consume)
    refs = [consume.options(num_cpus=0.75, scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote(pool, rank, 2, 0) for rank, node in enumerate(nodes)]
    results = ray.get(refs)
    assert [r[0] for r in results] == nodes
    served = {s["node_id"]: s["served"] for s in pool.stats()}
    assert served == {n: len(r[1]) for n, r in zip(nodes, results)} and len(results[0][1]) == 8

    # a generator killed mid-epoch: the same batches, none lost, none repeated
    rank = nodes.index(head)
    reference = ray.get(consume.remote(pool, rank, 2, 1))[1]
    victim = next(s["pid"] for s in pool.stats() if s["node_id"] == head)
    got = []
    for i, b in enumerate(BatchStream(pool, rank, 2, prefetch=2).epoch(1)):
        got.append(hashlib.sha256(b["lc"].tobytes()).hexdigest())
        if i == 2:
            os.kill(victim, signal.SIGKILL)
    assert got == reference
    assert next(s["pid"] for s in pool.stats() if s["node_id"] == head) != victim  # restarted
    pool.shutdown()

    # a worker on a node without generators fails at start (no fallback to other nodes)
    lonely = DataPool.create(pool.spec, 1, 0.5, nodes=[head])
    with pytest.raises(NoLocalGenerators, match=f"no data generator on this worker's node "
                                                f"{other}"):
        ray.get(consume.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            other, soft=False)).remote(lonely, 0, 1, 0))
    lonely.shutdown()

    # real DDP over the two nodes: each worker found generators on its node
    run = load_config(None, SMALL + ["train.epochs=1", f"output_dir={tmp_path}", "name=two",
                                     "scaling.max_failures=0"])
    run_training(run, address=two_nodes)
    assert [h["epoch"] for h in read_history(tmp_path / "two")] == [0]
    ray.shutdown()
    print("two-node checks passed", flush=True)


if __name__ == "__main__":
    scenario(sys.argv[1], sys.argv[2])
