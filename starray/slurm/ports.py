"""Per-job, per-node Ray ports, so two jobs (or two Ray nodes) on one host never collide.

A job takes a block of ``BLOCK`` ports chosen from its Slurm job id; inside it each Ray
node takes a ``SLOT`` chosen from its node index (nodes on different hosts may share a
slot; nodes on one host, as on the 2-node local test cluster, must not). Blocks stay below
the Linux ephemeral range (32768+). If a port is already taken, the next block is tried.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

BLOCK = 1000  # ports per job
SLOT = 250  # ports per Ray node inside a job's block
SLOTS = BLOCK // SLOT
N_BLOCKS = 12  # base .. base + 12000


@dataclass(frozen=True)
class NodePorts:
    """Every port one Ray node listens on (head-only ones unused on workers)."""

    gcs: int
    node_manager: int
    object_manager: int
    dashboard: int
    client_server: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    metrics_export: int
    min_worker: int
    max_worker: int

    def fixed(self) -> list[int]:
        return [self.gcs, self.node_manager, self.object_manager, self.dashboard,
                self.client_server, self.dashboard_agent_listen, self.dashboard_agent_grpc,
                self.runtime_env_agent, self.metrics_export]


def node_ports(job_id: int, node_index: int, base: int = 20000, shift: int = 0) -> NodePorts:
    """Ports of Ray node ``node_index`` of job ``job_id`` (``shift``: blocks to skip)."""
    block = (job_id + shift) % N_BLOCKS
    start = base + block * BLOCK + (node_index % SLOTS) * SLOT
    return NodePorts(gcs=start, node_manager=start + 1, object_manager=start + 2,
                     dashboard=start + 3, client_server=start + 4,
                     dashboard_agent_listen=start + 5, dashboard_agent_grpc=start + 6,
                     runtime_env_agent=start + 7, metrics_export=start + 8,
                     min_worker=start + 10, max_worker=start + SLOT - 1)


def port_free(port: int) -> bool:
    """True if nothing on this host listens on ``port`` (TCP, any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_node_ports(job_id: int, node_index: int, base: int = 20000) -> NodePorts:
    """The first block (from the job's own) whose ports for this node are all free here."""
    for shift in range(N_BLOCKS):
        ports = node_ports(job_id, node_index, base, shift)
        if all(port_free(p) for p in ports.fixed() + [ports.min_worker, ports.max_worker]):
            return ports
    raise RuntimeError(f"no free Ray port block in [{base}, {base + N_BLOCKS * BLOCK}) for "
                       f"job {job_id} node {node_index}; change ray_port_base in the profile")
