"""The one Ray-on-Slurm lifecycle: every node of a job runs this (submitit or sbatch).

Task 0 (first node) starts the Ray head, writes the rendezvous file ``head-<restart>.json``
into the job's state folder on shared storage, waits until every node has joined, runs the
driver (``starray train|tune ... --address HEAD``) in its own process group and tears Ray
down; the other tasks poll for the rendezvous file, join as Ray workers and leave when the
head writes ``done-<restart>``. Resume rule: an attempt after a requeue runs
``starray KIND --resume RUN_DIR`` if the run folder holds a checkpoint.

Signals. Slurm sends USR2 ``signal_delay_s`` before the time limit (and on preemption) to
every task; task 0 stops the driver (SIGINT, SIGTERM, SIGKILL to its process group, each
wait returning as soon as it exits: training writes ``checkpoints/last.pt`` atomically at
every epoch end, so a stopped driver loses at most the partial epoch), tears Ray down on
every node and requeues the job. With submitit, :meth:`SlurmRayJob.checkpoint` does this
and submitit requeues; with the sbatch template (``python -m starray.slurm.entry``),
:meth:`SlurmRayJob.run_sbatch` installs the handler and runs ``scontrol requeue`` itself.
``scancel`` sends SIGTERM: the same teardown, no requeue.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from starray.slurm.escalate import escalation_steps, exited, stop_process_group

PREFIX = "[starray-slurm]"


def log(msg: str) -> None:
    print(f"{PREFIX} {time.strftime('%H:%M:%S')} {msg}", flush=True)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(f"{name} is not set: SlurmRayJob must run inside a Slurm job step")
    return value


def can_resume(kind: str, run_dir: Path) -> bool:
    """True if ``run_dir`` holds what ``starray KIND --resume`` needs."""
    if kind == "train":
        return (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "config.yaml").exists()
    return run_dir.is_dir() and any(run_dir.iterdir())


@dataclass
class _Node:
    """What this process started on its node (torn down exactly once)."""

    state: Path
    restart: int
    tmp: str = ""
    address: str | None = None
    ray: subprocess.Popen | None = None
    driver: subprocess.Popen | None = None
    down: bool = False

    @property
    def head_file(self) -> Path:
        return self.state / f"head-{self.restart}.json"

    @property
    def done_file(self) -> Path:
        return self.state / f"done-{self.restart}"

    def left_file(self, node: int) -> Path:
        return self.state / f"left-{self.restart}-n{node}"


@dataclass
class SlurmRayJob:
    """One Ray cluster over the job's nodes running one ``starray train|tune`` driver.

    Parameters
    ----------
    kind : "train" or "tune"
    argv : the driver's arguments after ``starray KIND`` (without ``--address``)
    run_dir : the run (or sweep) folder; resumed from on a requeue if it has checkpoints
    nodes, cpus_per_node, gpus_per_node : the allocation (one Ray node per Slurm node)
    python : interpreter on the nodes
    port_base, temp_root, node_wait_s : Ray ports, temp dirs, join timeout
    signal_delay_s : seconds between the pre-timeout USR2 and the limit (the stop budget)
    max_requeues : requeues after a timeout (sbatch path; submitit counts its own)
    state_dir : token, rendezvous and Ray logs; None: submitit's job folder + ``/ray``
    attempt : 0 for the first submission, +1 for each checkpoint-requeue
    """

    kind: str
    argv: list[str]
    run_dir: str
    nodes: int
    cpus_per_node: int
    gpus_per_node: int = 0
    python: str = sys.executable
    port_base: int = 20000
    temp_root: str = "/tmp"
    node_wait_s: int = 180
    object_store_bytes: int | None = None
    signal_delay_s: int = 90
    max_requeues: int = 3
    state_dir: str | None = None
    attempt: int = 0
    _node: _Node | None = field(default=None, repr=False, compare=False)

    # --- paths of this job ---
    @property
    def job_id(self) -> str:
        return os.environ.get("SLURM_ARRAY_JOB_ID") or _env("SLURM_JOB_ID")

    @property
    def restart(self) -> int:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)

    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        import submitit

        return Path(submitit.JobEnvironment().paths.folder) / "ray"

    def driver_argv(self, address: str) -> list[str]:
        """The resume rule: a later attempt resumes the run if it has a checkpoint."""
        run_dir = Path(self.run_dir)
        if (self.attempt > 0 or self.restart > 0) and can_resume(self.kind, run_dir):
            log(f"resuming {self.kind} from {run_dir}")
            args = ["--resume", str(run_dir)]
        else:
            args = list(self.argv)
        return [self.python, "-u", "-m", "starray.cli", self.kind, *args, "--address", address]

    def fresh(self, **changes: Any) -> SlurmRayJob:
        """A copy without runtime state (what a requeue submits)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_node"}
        return SlurmRayJob(**{**values, **changes})

    # --- entry points ---
    def __call__(self) -> int:
        """Run this node's part (submitit calls this on every task)."""
        rank = int(os.environ.get("SLURM_PROCID", "0"))
        node = int(os.environ.get("SLURM_NODEID", "0"))
        # scancel / requeue: SIGTERM -> SystemExit -> the finally blocks tear Ray down
        signal.signal(signal.SIGTERM, _raise_exit)
        if rank == 0:
            return self._head(node)
        self._worker(node)
        return 0

    def checkpoint(self, *args, **kwargs):
        """submitit's hook on the pre-timeout signal: stop, tear down, requeue a fresh job."""
        import submitit

        self.stop_for_requeue()
        return submitit.helpers.DelayedSubmission(self.fresh(attempt=self.attempt + 1))

    def run_sbatch(self) -> int:
        """The sbatch path: USR2 -> stop, tear down, ``scontrol requeue`` (task 0)."""
        if int(os.environ.get("SLURM_PROCID", "0")) == 0:
            signal.signal(signal.SIGUSR2, self._on_usr2)
        else:
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the head tells us via done-N
        return self()

    def _on_usr2(self, signum, frame):  # noqa: ARG002
        self.stop_for_requeue()
        if self.restart >= self.max_requeues:
            log(f"not requeueing: {self.restart} requeues done (max_requeues "
                f"{self.max_requeues}); continue with `starray submit {self.kind} --resume "
                f"{self.run_dir}`")
            raise SystemExit(1)
        out = subprocess.run(["scontrol", "requeue", self.job_id], capture_output=True,
                             text=True)
        if out.returncode != 0:
            log(f"scontrol requeue failed: {out.stderr.strip()}")
            raise SystemExit(1)
        log(f"requeued job {self.job_id} (restart {self.restart + 1})")
        raise SystemExit(0)

    def stop_for_requeue(self) -> None:
        """Stop the driver within ``signal_delay_s`` and tear Ray down on every node."""
        log(f"signal before the time limit: stopping the {self.kind} driver, requeueing "
            f"(attempt {self.attempt + 1}, restart {self.restart + 1})")
        t0 = time.monotonic()
        self._stop_driver(escalation_steps(self.signal_delay_s))
        if self._node is not None:
            self._teardown(self._node, wait_nodes=True)
        log(f"stopped for requeue in {time.monotonic() - t0:.1f} s")

    # --- head and workers ---
    def _head(self, node: int) -> int:
        from starray.slurm import ray_cluster as rc
        from starray.slurm.ports import free_node_ports

        state = self.state_path()
        state.mkdir(parents=True, exist_ok=True)
        n = self._node = _Node(state, self.restart)
        token = rc.write_token(state / rc.TOKEN_FILE)
        n.tmp = rc.temp_dir(self.temp_root, self.job_id, node)
        env = rc.ray_env(token, node_tag=n.tmp)
        rc.check_token_auth(env)
        ports = free_node_ports(int(self.job_id), node, self.port_base)
        ip = rc.node_ip()
        n.address = f"{ip}:{ports.gcs}"
        cmd = rc.start_command(self._ray_bin(), ports, n.tmp, ip, self.cpus_per_node,
                               self.gpus_per_node, object_store_bytes=self.object_store_bytes)
        log(f"job {self.job_id} attempt {self.restart}: Ray head on {os.uname().nodename} "
            f"({n.address}), temp dir {n.tmp}, {self.nodes} node(s)")
        n.ray = rc.start_node(cmd, env, state / f"ray-node{node}.log")
        try:
            _atomic_json(n.head_file, {"address": n.address, "ip": ip, "gcs_port": ports.gcs,
                                       "dashboard": f"127.0.0.1:{ports.dashboard}",
                                       "temp_dir": n.tmp, "nodes": self.nodes,
                                       "restart": self.restart})
            t0 = time.time()
            node_ids = self._helper(["wait", "--address", n.address, "--nodes", str(self.nodes),
                                     "--timeout", str(self.node_wait_s)], env)
            if node_ids is None:
                raise RuntimeError("Ray cluster did not come up (see the log above)")
            log(f"Ray cluster up: {len(node_ids)} nodes in {time.time() - t0:.1f} s "
                f"(token auth on): {' '.join(node_ids)}")
            argv = self.driver_argv(n.address)
            log("driver: " + " ".join(argv))
            n.driver = subprocess.Popen(argv, env=env, preexec_fn=rc._ignore_usr2,
                                        start_new_session=True)
            while not exited(n.driver.pid):  # no Popen.wait(): it would hold Popen's lock
                time.sleep(0.2)
            rc_code = n.driver.wait()
            n.driver = None
            if self.kind == "train":
                ids = self._helper(["report", "--address", n.address], env)
                if ids:
                    log(f"Ray Train workers ran on {len(ids)} node(s): {' '.join(ids)}")
            if rc_code != 0:
                raise RuntimeError(f"starray {self.kind} exited with code {rc_code}")
            log(f"driver finished; results in {self.run_dir}")
            return 0
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a 2nd TERM must not cut teardown
            self._stop_driver([(signal.SIGTERM, 1.0)])  # scancel: Slurm's KillWait is short
            self._teardown(n, wait_nodes=False)

    def _worker(self, node: int) -> None:
        from starray.slurm import ray_cluster as rc
        from starray.slurm.ports import free_node_ports

        n = self._node = _Node(self.state_path(), self.restart)
        deadline = time.time() + self.node_wait_s
        while not n.head_file.exists():
            if n.done_file.exists() or time.time() > deadline:
                log(f"node {node}: no Ray head appeared; leaving")
                return
            time.sleep(0.5)
        head = json.loads(n.head_file.read_text())
        n.tmp = rc.temp_dir(self.temp_root, self.job_id, node)
        env = rc.ray_env(n.state / rc.TOKEN_FILE, node_tag=n.tmp)
        rc.check_token_auth(env)
        ports = free_node_ports(int(self.job_id), node, self.port_base)
        cmd = rc.start_command(self._ray_bin(), ports, n.tmp, rc.node_ip(), self.cpus_per_node,
                               self.gpus_per_node, head_address=head["address"],
                               object_store_bytes=self.object_store_bytes)
        log(f"node {node}: joining {head['address']} from {os.uname().nodename}, "
            f"temp dir {n.tmp}")
        n.ray = rc.start_node(cmd, env, n.state / f"ray-node{node}.log")
        try:
            while not n.done_file.exists():
                if n.ray.poll() is not None:
                    raise RuntimeError(f"ray start on node {node} exited with "
                                       f"{n.ray.returncode}")
                time.sleep(0.5)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._teardown(n, wait_nodes=False)
            n.left_file(node).touch()

    # --- teardown ---
    def _stop_driver(self, steps: list[tuple[int, float]]) -> None:
        n = self._node
        if n is None or n.driver is None:
            return
        report = stop_process_group(n.driver, steps)
        if report.signals:
            log(f"driver stopped by {'/'.join(report.signals)} in {report.seconds:.1f} s")

    def _teardown(self, n: _Node, wait_nodes: bool) -> None:
        """Stop this node's Ray (once); on the head, tell the workers and maybe wait."""
        from starray.slurm import ray_cluster as rc

        if n.down:
            return
        n.down = True
        n.done_file.touch()
        t0 = time.monotonic()
        rc.stop_node(n.ray, n.tmp, n.address, grace_s=5.0 if wait_nodes else 2.0)
        if wait_nodes:  # before a requeue: let the workers leave before Slurm kills them
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not all(
                    n.left_file(i).exists() for i in range(1, self.nodes)):
                time.sleep(0.2)
        log(f"Ray stopped on this node in {time.monotonic() - t0:.1f} s")

    def _ray_bin(self) -> str:
        return str(Path(self.python).with_name("ray"))

    def _helper(self, args: list[str], env: dict[str, str]) -> list[str] | None:
        """Run ``python -m starray.slurm.ray_cluster ARGS`` (keeps ray.init out of here)."""
        from starray.slurm.ray_cluster import _ignore_usr2

        out = subprocess.run([self.python, "-m", "starray.slurm.ray_cluster", *args], env=env,
                             capture_output=True, text=True, preexec_fn=_ignore_usr2)
        if out.returncode != 0 or not out.stdout.strip():
            log(f"{args[0]} failed: {out.stderr[-2000:]}")
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])


def _raise_exit(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _int_env(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name, "")
        digits = value.split("(")[0].split(":")[-1]  # SLURM_GPUS_PER_NODE=gpu:a100:4
        if digits.isdigit():
            return int(digits)
    return default


def main(argv: list[str] | None = None) -> int:
    """``python -m starray.slurm.entry [OPTIONS] -- train|tune ARGS`` (one task per node)."""
    p = argparse.ArgumentParser(prog="python -m starray.slurm.entry",
                                description="Run one node's part of a Ray-on-Slurm job "
                                            "(srun it with one task per node).")
    p.add_argument("--run-dir", required=True, help="the run or sweep folder (resume source)")
    p.add_argument("--state-dir", help="token, rendezvous, Ray logs (default: "
                                       "RUN_DIR/slurm/JOBID)")
    p.add_argument("--port-base", type=int, default=20000, help="first Ray port of the job")
    p.add_argument("--temp-root", default="/tmp", help="Ray temp dirs go below (keep short)")
    p.add_argument("--node-wait-s", type=int, default=180, help="wait this long for nodes")
    p.add_argument("--object-store-bytes", type=int, default=0, help="0: Ray's default")
    p.add_argument("--signal-delay-s", type=int, default=90, help="as in #SBATCH --signal")
    p.add_argument("--max-requeues", type=int, default=3, help="requeues after a timeout")
    p.add_argument("driver", nargs=argparse.REMAINDER, help="-- train|tune ARGS")
    args = p.parse_args(argv)
    driver = args.driver[1:] if args.driver[:1] == ["--"] else args.driver
    if not driver or driver[0] not in ("train", "tune"):
        p.error("expected `-- train ARGS` or `-- tune --space FILE ARGS` after the options")
    job = SlurmRayJob(
        kind=driver[0], argv=driver[1:], run_dir=args.run_dir,
        nodes=_int_env("SLURM_JOB_NUM_NODES", "SLURM_NNODES", default=1),
        cpus_per_node=_int_env("SLURM_CPUS_PER_TASK", default=1),
        gpus_per_node=_int_env("SLURM_GPUS_PER_NODE", default=0),
        port_base=args.port_base, temp_root=args.temp_root, node_wait_s=args.node_wait_s,
        object_store_bytes=args.object_store_bytes or None,
        signal_delay_s=args.signal_delay_s, max_requeues=args.max_requeues,
        state_dir=args.state_dir or str(Path(args.run_dir) / "slurm" / _env("SLURM_JOB_ID")))
    return job.run_sbatch()


if __name__ == "__main__":
    sys.exit(main())
