"""The callable that submitit runs on every node of a job: Ray up, driver, Ray down.

Task 0 (first node) starts the Ray head, waits until every node has joined, runs the
driver (``starray train|tune ... --address HEAD``) and tears Ray down; the other tasks
join as Ray workers and leave when the head says it is done. On the pre-timeout signal
(USR2) or a preemption submitit calls :meth:`SlurmRayJob.checkpoint` on task 0: the driver
is stopped (training has checkpointed every ``train.checkpoint_every`` epochs) and a fresh
job object is requeued; the next attempt resumes with ``--resume RUN_DIR``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

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
    attempt: int = 0
    _driver: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    # --- paths of this job ---
    @property
    def job_id(self) -> str:
        return os.environ.get("SLURM_ARRAY_JOB_ID") or _env("SLURM_JOB_ID")

    @property
    def restart(self) -> int:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)

    def state_dir(self) -> Path:
        import submitit

        return Path(submitit.JobEnvironment().paths.folder) / "ray"

    def driver_argv(self, address: str) -> list[str]:
        run_dir = Path(self.run_dir)
        if (self.attempt > 0 or self.restart > 0) and can_resume(self.kind, run_dir):
            log(f"resuming {self.kind} from {run_dir}")
            args = ["--resume", str(run_dir)]
        else:
            args = list(self.argv)
        return [self.python, "-u", "-m", "starray.cli", self.kind, *args, "--address", address]

    # --- submitit entry points ---
    def __call__(self) -> int:
        node = int(os.environ.get("SLURM_NODEID", "0"))
        rank = int(os.environ.get("SLURM_PROCID", "0"))
        # scancel / requeue: SIGTERM -> SystemExit -> the finally blocks tear Ray down
        signal.signal(signal.SIGTERM, _raise_exit)
        if rank == 0:
            return self._head(node)
        self._worker(node)
        return 0

    def checkpoint(self, *args, **kwargs):
        """Timeout/preemption on task 0: stop the driver, requeue a fresh job object."""
        import submitit

        log(f"signal before the time limit: stopping the {self.kind} driver, requeueing "
            f"(attempt {self.attempt + 1})")
        self._stop_driver()
        fresh = replace(self, attempt=self.attempt + 1, _driver=None)
        return submitit.helpers.DelayedSubmission(fresh)

    # --- head and workers ---
    def _head(self, node: int) -> int:
        from starray.slurm import ray_cluster as rc
        from starray.slurm.ports import free_node_ports

        state = self.state_dir()
        state.mkdir(parents=True, exist_ok=True)
        head_file, done_file = state / f"head-{self.restart}.json", state / f"done-{self.restart}"
        token = rc.write_token(state / rc.TOKEN_FILE)
        env = rc.ray_env(token)
        ports = free_node_ports(int(self.job_id), node, self.port_base)
        ip = rc.node_ip()
        tmp = rc.temp_dir(self.temp_root, self.job_id, node)
        address = f"{ip}:{ports.gcs}"
        ray_bin = str(Path(self.python).with_name("ray"))
        cmd = rc.start_command(ray_bin, ports, tmp, ip, self.cpus_per_node, self.gpus_per_node,
                                 object_store_bytes=self.object_store_bytes)
        log(f"job {self.job_id} attempt {self.restart}: Ray head on {os.uname().nodename} "
            f"({address}), temp dir {tmp}, {self.nodes} node(s)")
        proc = rc.start_node(cmd, env, state / f"ray-node{node}.log")
        try:
            _atomic_json(head_file, {"address": address, "ip": ip, "gcs_port": ports.gcs,
                                     "dashboard": f"127.0.0.1:{ports.dashboard}",
                                     "temp_dir": tmp, "nodes": self.nodes,
                                     "restart": self.restart})
            t0 = time.time()
            out = subprocess.run(
                [self.python, "-m", "starray.slurm.ray_cluster", "wait", "--address", address,
                 "--nodes", str(self.nodes), "--timeout", str(self.node_wait_s)],
                env=env, capture_output=True, text=True, preexec_fn=rc._ignore_usr2)
            if out.returncode != 0:
                raise RuntimeError(f"Ray cluster did not come up: {out.stderr[-2000:]}")
            node_ids = json.loads(out.stdout.strip().splitlines()[-1])
            log(f"Ray cluster up: {len(node_ids)} nodes in {time.time() - t0:.1f} s: "
                f"{' '.join(node_ids)}")
            argv = self.driver_argv(address)
            log("driver: " + " ".join(argv))
            self._driver = subprocess.Popen(argv, env=env, preexec_fn=rc._ignore_usr2)
            rc_code = self._driver.wait()
            self._driver = None
            if self.kind == "train":
                self._report(address, env)
            if rc_code != 0:
                raise RuntimeError(f"starray {self.kind} exited with code {rc_code}")
            log(f"driver finished; results in {self.run_dir}")
            return 0
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a 2nd TERM must not cut teardown
            self._stop_driver()
            done_file.touch()
            rc.stop_node(proc, tmp, address)
            log(f"Ray stopped on node {node}")

    def _worker(self, node: int) -> None:
        from starray.slurm import ray_cluster as rc
        from starray.slurm.ports import free_node_ports

        state = self.state_dir()
        head_file, done_file = state / f"head-{self.restart}.json", state / f"done-{self.restart}"
        deadline = time.time() + self.node_wait_s
        while not head_file.exists():
            if done_file.exists() or time.time() > deadline:
                log(f"node {node}: no Ray head appeared; leaving")
                return
            time.sleep(0.5)
        head = json.loads(head_file.read_text())
        env = rc.ray_env(state / rc.TOKEN_FILE)
        ports = free_node_ports(int(self.job_id), node, self.port_base)
        tmp = rc.temp_dir(self.temp_root, self.job_id, node)
        ray_bin = str(Path(self.python).with_name("ray"))
        cmd = rc.start_command(ray_bin, ports, tmp, rc.node_ip(), self.cpus_per_node,
                               self.gpus_per_node, head_address=head["address"],
                               object_store_bytes=self.object_store_bytes)
        log(f"node {node}: joining {head['address']} from {os.uname().nodename}, temp dir {tmp}")
        proc = rc.start_node(cmd, env, state / f"ray-node{node}.log")
        try:
            while not done_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"ray start on node {node} exited with {proc.returncode}")
                time.sleep(1)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            rc.stop_node(proc, tmp)
            log(f"Ray stopped on node {node}")

    def _report(self, address: str, env: dict[str, str]) -> None:
        from starray.slurm.ray_cluster import _ignore_usr2

        out = subprocess.run([self.python, "-m", "starray.slurm.ray_cluster", "report",
                              "--address", address], env=env, capture_output=True, text=True,
                             preexec_fn=_ignore_usr2)
        if out.returncode == 0 and out.stdout.strip():
            ids = json.loads(out.stdout.strip().splitlines()[-1])
            log(f"Ray Train workers ran on {len(ids)} node(s): {' '.join(ids)}")
        else:
            log(f"warning: could not list the Ray Train workers: {out.stderr[-500:]}")

    def _stop_driver(self) -> None:
        proc = self._driver
        if proc is None or proc.poll() is not None:
            return
        # Training has checkpointed at the last epoch end; give Ray Train a moment to abort
        # gracefully, but the signal delay must cover this and the requeue.
        for sig, wait_s in ((signal.SIGINT, 8), (signal.SIGTERM, 4), (signal.SIGKILL, 10)):
            proc.send_signal(sig)
            try:
                proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def _raise_exit(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
