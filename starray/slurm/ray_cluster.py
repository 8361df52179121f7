"""Ray on a Slurm allocation: per-job token, head/worker bring-up, node wait, teardown.

One Ray node per Slurm task (one task per node). The head writes a small state file
(``head-<attempt>.json``) into the job's folder on shared storage; workers poll for it and
join. Every Ray process of a job lives under its own temp dir
(``<ray_temp_root>/ray-<jobid>-n<node>``), so teardown can find and end exactly the job's
processes on a node, never another job's.

Security: token authentication (``RAY_AUTH_MODE=token``) with a fresh per-job secret in a
0600 file; the dashboard binds to 127.0.0.1; the Ray client server (which ``ray start``
always starts when grpc is installed) is token-protected like the GCS.

Also a small CLI, run by the job (starray/slurm/entry.py) in subprocesses so that
``ray.init`` stays out of the job's own process, and by hand::

    python -m starray.slurm.ray_cluster wait --address IP:PORT --nodes N [--timeout S]
    python -m starray.slurm.ray_cluster report --address IP:PORT
    python -m starray.slurm.ray_cluster stop TEMP_DIR [--gcs-address IP:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from starray.slurm.ports import NodePorts

TOKEN_FILE = "ray_token"


def write_token(path: str | os.PathLike) -> Path:
    """Write a fresh 256-bit token to ``path`` with mode 0600 (atomic); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


NODE_TAG = "STARRAY_RAY_NODE"  # in the environment of every process of one job's Ray node
MIN_RAY = (2, 52)  # RAY_AUTH_MODE=token exists from Ray 2.52


def ray_env(token_path: str | os.PathLike, base: dict[str, str] | None = None,
            node_tag: str | None = None) -> dict[str, str]:
    """Environment for every Ray process and driver of the job.

    ``node_tag`` (the node's temp dir) is inherited by every process Ray starts on the node
    (GCS, raylet, workers, which rename themselves ``ray::...``), so teardown finds them all.
    """
    env = dict(os.environ if base is None else base)
    env.pop("RAY_AUTH_TOKEN", None)  # the file is the only source
    env.update({
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_USAGE_STATS_ENABLED": "0",
    })
    if node_tag:
        env[NODE_TAG] = node_tag
    return env


class TokenAuthError(RuntimeError):
    """Token authentication would not be on for the job's Ray cluster."""


def check_token_auth(env: dict[str, str], ray_version: str | None = None) -> None:
    """Fail unless the job's Ray runs with token auth: ray>=2.52, RAY_AUTH_MODE=token, a
    private non-empty token file. Older Ray ignores RAY_AUTH_MODE (no auth at all)."""
    if ray_version is None:
        from importlib.metadata import version

        ray_version = version("ray")
    parts = tuple(int(x) for x in ray_version.split(".")[:2] if x.isdigit())
    if parts < MIN_RAY:
        raise TokenAuthError(
            f"Ray {ray_version} has no token authentication (RAY_AUTH_MODE=token needs "
            f"ray>=2.52): the job's cluster would accept anyone; upgrade ray on the nodes")
    if env.get("RAY_AUTH_MODE") != "token":
        raise TokenAuthError(f"RAY_AUTH_MODE is {env.get('RAY_AUTH_MODE')!r}, not 'token'")
    path = Path(env.get("RAY_AUTH_TOKEN_PATH", ""))
    if not path.is_file() or path.stat().st_size == 0:
        raise TokenAuthError(f"RAY_AUTH_TOKEN_PATH: no token in {str(path)!r}")
    if path.stat().st_mode & 0o077:
        raise TokenAuthError(f"RAY_AUTH_TOKEN_PATH: {path} is readable by others "
                             f"(mode {oct(path.stat().st_mode & 0o777)}, needs 0600)")


def node_ip() -> str:
    """This node's IP as Ray would pick it."""
    from ray.util import get_node_ip_address

    return get_node_ip_address()


def temp_dir(root: str, job_id: int | str, node_index: int) -> str:
    """Short per-job, per-node Ray temp dir (unix socket paths must stay < ~107 chars)."""
    return f"{root.rstrip('/')}/ray-{job_id}-n{node_index}"


def _ignore_usr2() -> None:  # pragma: no cover - runs in the child before exec
    # Slurm sends the pre-timeout USR2 to every process of the step; only the job's
    # Python entry (submitit) must act on it. Ignored dispositions survive exec.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def start_command(ray_bin: str, ports: NodePorts, tmp: str, ip: str, num_cpus: int,
                  num_gpus: int, head_address: str | None = None,
                  object_store_bytes: int | None = None) -> list[str]:
    """``ray start ... --block`` for a head (``head_address=None``) or a worker node."""
    cmd = [ray_bin, "start", "--block", "--disable-usage-stats",
           "--node-ip-address", ip,
           "--node-manager-port", str(ports.node_manager),
           "--object-manager-port", str(ports.object_manager),
           "--min-worker-port", str(ports.min_worker),
           "--max-worker-port", str(ports.max_worker),
           "--dashboard-agent-listen-port", str(ports.dashboard_agent_listen),
           "--dashboard-agent-grpc-port", str(ports.dashboard_agent_grpc),
           "--runtime-env-agent-port", str(ports.runtime_env_agent),
           "--metrics-export-port", str(ports.metrics_export),
           "--temp-dir", tmp,
           "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus)]
    if object_store_bytes:
        cmd += ["--object-store-memory", str(object_store_bytes)]
    if head_address is None:
        cmd += ["--head", "--port", str(ports.gcs),
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports.dashboard),
                "--ray-client-server-port", str(ports.client_server)]
    else:
        cmd += ["--address", head_address]
    return cmd


def start_node(cmd: list[str], env: dict[str, str], log_path: str | os.PathLike
               ) -> subprocess.Popen:
    """Start ``ray start --block`` in the background, output to ``log_path``."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=_ignore_usr2)


# --- teardown -----------------------------------------------------------------------------

def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) for every process we can read."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] == "Z":
                continue
            table[pid] = (int(fields[1]), cmd)
        except (OSError, IndexError, ValueError):
            continue
    return table


def _has_tag(pid: int, tag: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"{NODE_TAG}={tag}".encode() in fh.read().split(b"\0")
    except OSError:
        return False


def find_ray_processes(tmp: str, gcs_address: str | None = None) -> list[int]:
    """PIDs of the Ray processes of one node of one job, and all their descendants.

    Matched by the job's temp dir in the command line (gcs_server, raylet, agents,
    dashboard), by the node tag in the environment (workers renamed ``ray::...``, even
    once their parent is gone) or, for the Ray client server, by the job's GCS address.
    """
    table = _proc_table()
    me = os.getpid()
    roots = {pid for pid, (_, cmd) in table.items()
             if pid != me and (f"{tmp}/" in cmd or f"={tmp} " in cmd or cmd.endswith(f"={tmp}")
                               or f" {tmp} " in cmd
                               or (gcs_address and "ray.util.client.server" in cmd
                                   and f"--address={gcs_address}" in cmd)
                               or _has_tag(pid, tmp))}
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in found and pid not in found and pid != me:
                found.add(pid)
                changed = True
    return sorted(found)


def kill_ray_processes(tmp: str, gcs_address: str | None = None, grace_s: float = 5.0) -> int:
    """SIGTERM the node's Ray processes, SIGKILL what is left after ``grace_s``."""
    pids = find_ray_processes(tmp, gcs_address)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace_s
    while time.time() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        time.sleep(0.2)
    for pid in find_ray_processes(tmp, gcs_address) + [p for p in pids if _alive(p)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        return stat[stat.rfind(")") + 2:].split()[0] != "Z"
    except OSError:
        return False


def stop_node(proc: subprocess.Popen | None, tmp: str, gcs_address: str | None = None,
              grace_s: float = 5.0) -> None:
    """End ``ray start --block`` and every Ray process under ``tmp`` on this node."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
    kill_ray_processes(tmp, gcs_address, grace_s=grace_s)
    if proc is not None:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- helpers run in a subprocess (keep ray.init out of the submitit process) --------------

def wait_for_nodes(address: str, nodes: int, timeout_s: float) -> list[str]:
    """Connect to ``address`` and wait until ``nodes`` Ray nodes are alive; their ids."""
    import ray
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    if not is_token_auth_enabled():
        raise TokenAuthError("token authentication is off in this process "
                             f"(RAY_AUTH_MODE={os.environ.get('RAY_AUTH_MODE')!r})")
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        deadline = time.time() + timeout_s
        while True:
            alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
            if len(alive) >= nodes:
                return alive
            if time.time() > deadline:
                raise TimeoutError(f"only {len(alive)} of {nodes} Ray nodes joined within "
                                   f"{timeout_s:.0f} s")
            time.sleep(1)
    finally:
        ray.shutdown()


def train_worker_nodes(address: str) -> list[str]:
    """Node ids that hosted Ray Train workers (alive or finished) in this cluster."""
    import ray
    from ray.util.state import list_actors

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        actors = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True,
                             limit=10000, raise_on_missing_output=False)
        return sorted({a.node_id for a in actors if a.node_id})
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m starray.slurm.ray_cluster")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait", help="wait until N nodes joined; print their ids as JSON")
    w.add_argument("--address", required=True)
    w.add_argument("--nodes", type=int, required=True)
    w.add_argument("--timeout", type=float, default=180)
    r = sub.add_parser("report", help="print the node ids of the Ray Train workers as JSON")
    r.add_argument("--address", required=True)
    s = sub.add_parser("stop", help="end every Ray process under TEMP_DIR on this node")
    s.add_argument("temp_dir")
    s.add_argument("--gcs-address")
    args = parser.parse_args(argv)
    if args.cmd == "wait":
        print(json.dumps(wait_for_nodes(args.address, args.nodes, args.timeout)))
    elif args.cmd == "report":
        print(json.dumps(train_worker_nodes(args.address)))
    elif args.cmd == "stop":
        print(kill_ray_processes(args.temp_dir, args.gcs_address))
    return 0


if __name__ == "__main__":
    sys.exit(main())
