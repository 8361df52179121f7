"""Cluster profiles: where and how a Slurm job runs (configs/cluster/*.yaml).

A profile is a small YAML mapping (see configs/cluster/local.yaml) plus ``--cluster-set
KEY=VALUE`` overrides. Every error names the key and what is allowed; all checks run
before anything is queued, including the checks against the live cluster (``sinfo``) and
against the run that will go into the job (:func:`check_run_fits`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from starray.config import ConfigError, ExperimentConfig
from starray.paths import profile_dir, resolve_packaged

PROFILE_DIR = profile_dir()  # packaged with starray (starray/resources/configs/cluster)


class ProfileError(ConfigError):
    """A cluster profile key is unknown, of the wrong type, or the cluster cannot satisfy it."""


@dataclass(kw_only=True)
class ClusterProfile:
    """One Slurm job: N nodes, one task (one Ray node) per node."""

    partition: str  # must exist in `sinfo`
    account: str | None = None
    qos: str | None = None
    nodes: int = 1  # Ray nodes: head on the first, workers on the rest
    gpus_per_node: int = 0  # requested as --gpus-per-node; needs GRES gpu on the partition
    cpus_per_task: int = 1  # one task per node, so these are the CPUs each Ray node gets
    mem_gb: float | None = None  # per node; None: the partition's default
    time_min: int = 60  # wall-clock limit of one attempt
    constraint: str | None = None
    exclusive: bool = False
    setup: list[str] = field(default_factory=list)  # shell lines before the job, e.g. module load
    max_requeues: int = 3  # timeouts to requeue after (preemptions always requeue)
    signal_delay_s: int = 90  # USR2 this long before the limit: time to checkpoint and requeue
    python: str | None = None  # interpreter on the nodes; None: the one running `starray`
    ray_port_base: int = 20000  # each job takes a block of ports from here (see ports.py)
    ray_temp_root: str = "/tmp"  # short! unix socket paths must stay under ~107 chars
    node_wait_s: int = 180  # how long the head waits for every node to join
    object_store_gb: float | None = None  # Ray object store per node; None: Ray's 30% of RAM
    additional: dict[str, Any] = field(default_factory=dict)  # extra sbatch options

    @property
    def interpreter(self) -> str:
        if not self.python:
            return sys.executable
        return os.path.expanduser(os.path.expandvars(self.python))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(ClusterProfile)}
_REQUIRED = [name for name, f in _FIELDS.items()
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _coerce(key: str, value: Any) -> Any:
    typ = str(_FIELDS[key].type)
    if value is None:
        if "None" in typ:
            return None
        raise ProfileError(f"cluster profile: {key}: must not be null")
    if typ.startswith("list"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProfileError(f"cluster profile: {key}: expected a list of strings, got {value!r}")
        return list(value)
    if typ.startswith("dict"):
        if not isinstance(value, dict):
            raise ProfileError(f"cluster profile: {key}: expected a mapping, got {value!r}")
        return dict(value)
    if typ == "bool":
        if not isinstance(value, bool):
            raise ProfileError(f"cluster profile: {key}: expected true or false, got {value!r}")
        return value
    if typ.startswith("int"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError(f"cluster profile: {key}: expected an integer, got {value!r}")
        return value
    if typ.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(f"cluster profile: {key}: expected a number, got {value!r}")
        return float(value)
    if typ.startswith("str"):
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ProfileError(f"cluster profile: {key}: expected a string, got {value!r}")
        return str(value)
    return value


def validate_profile(p: ClusterProfile) -> ClusterProfile:
    """Range checks that need no cluster."""
    for key, low in [("nodes", 1), ("cpus_per_task", 1), ("time_min", 1), ("gpus_per_node", 0),
                     ("max_requeues", 0), ("signal_delay_s", 0), ("node_wait_s", 1)]:
        value = getattr(p, key)
        if value < low:
            raise ProfileError(f"cluster profile: {key}: must be >= {low}, got {value}")
    if p.object_store_gb is not None and p.object_store_gb <= 0:
        raise ProfileError(f"cluster profile: object_store_gb: must be > 0, "
                           f"got {p.object_store_gb}")
    if p.mem_gb is not None and p.mem_gb <= 0:
        raise ProfileError(f"cluster profile: mem_gb: must be > 0, got {p.mem_gb}")
    if not 1024 <= p.ray_port_base <= 65535 - 5000:
        raise ProfileError(f"cluster profile: ray_port_base: must be in [1024, 60535], "
                           f"got {p.ray_port_base}")
    if p.signal_delay_s >= p.time_min * 60:
        raise ProfileError(f"cluster profile: signal_delay_s: {p.signal_delay_s} s is not "
                           f"shorter than time_min={p.time_min} min")
    if len(p.ray_temp_root) > 40:
        raise ProfileError(f"cluster profile: ray_temp_root: {p.ray_temp_root!r} is too long "
                           "(Ray's unix socket paths must stay under ~107 characters)")
    if not p.partition:
        raise ProfileError("cluster profile: partition: must not be empty")
    return p


def profile_from_dict(data: dict[str, Any], overrides: list[str] | None = None,
                      source: str = "cluster profile") -> ClusterProfile:
    """Build and validate a profile from a mapping plus ``KEY=VALUE`` overrides."""
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: expected a mapping, got {data!r}")
    data = dict(data)
    for item in overrides or []:
        if "=" not in item:
            raise ProfileError(f"--cluster-set {item!r}: expected KEY=VALUE, e.g. nodes=2")
        key, raw = item.split("=", 1)
        try:
            data[key.strip()] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ProfileError(f"--cluster-set {key}: cannot parse {raw!r}: {e}") from e
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ProfileError(f"cluster profile: {unknown[0]}: unknown key; allowed: "
                           f"{', '.join(sorted(_FIELDS))}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ProfileError(f"cluster profile: {missing[0]}: required key is missing")
    kwargs = {key: _coerce(key, value) for key, value in data.items()}
    return validate_profile(ClusterProfile(**kwargs))


def resolve_profile_path(name_or_path: str) -> Path:
    """``local`` -> configs/cluster/local.yaml; a path is taken as is."""
    p = resolve_packaged(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ProfileError(f"cluster profile {p} does not exist")
        return p
    candidate = PROFILE_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(x.stem for x in PROFILE_DIR.glob("*.yaml"))
        raise ProfileError(f"cluster profile {name_or_path!r} not found in {PROFILE_DIR}; "
                           f"known: {', '.join(known) or 'none'}")
    return candidate


def load_profile(name_or_path: str, overrides: list[str] | None = None) -> ClusterProfile:
    """Load ``configs/cluster/NAME.yaml`` (or a YAML path) and apply overrides."""
    path = resolve_profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML: {e}") from e
    return profile_from_dict(data, overrides, source=str(path))


# --- checks against the live cluster ----------------------------------------------------

@dataclass
class PartitionInfo:
    name: str
    nodes: int
    max_cpus: int  # CPUs of the largest node
    gres: list[str]  # GRES strings of its node groups, e.g. ["gpu:a100:4", "(null)"]

    @property
    def max_gpus(self) -> int:
        """GPUs on the best-equipped node (0 if no node has GRES gpu)."""
        best = 0
        for g in self.gres:
            for item in g.split(","):
                parts = item.split("(")[0].split(":")
                if parts[0] == "gpu":
                    count = parts[-1] if len(parts) > 1 else "1"
                    best = max(best, int(count) if count.isdigit() else 1)
        return best


def query_partitions(sinfo: str = "sinfo") -> dict[str, PartitionInfo]:
    """Partitions as ``sinfo`` reports them (one line per node group)."""
    if shutil.which(sinfo) is None:
        raise ProfileError("partition: cannot check it, `sinfo` is not on PATH "
                           "(run on a Slurm login node)")
    try:
        out = subprocess.run([sinfo, "-h", "-o", "%P|%D|%c|%G"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise ProfileError(f"partition: cannot check it, `sinfo` failed: {e}") from e
    parts: dict[str, PartitionInfo] = {}
    for line in out.splitlines():
        if line.count("|") != 3:
            continue
        name, nodes, cpus, gres = line.split("|")
        name = name.rstrip("*")
        info = parts.setdefault(name, PartitionInfo(name, 0, 0, []))
        info.nodes += int(nodes) if nodes.isdigit() else 0
        cpu_max = cpus.rstrip("+").split("-")[-1]
        info.max_cpus = max(info.max_cpus, int(cpu_max) if cpu_max.isdigit() else 0)
        info.gres.append(gres)
    return parts


def check_against_cluster(p: ClusterProfile,
                          partitions: dict[str, PartitionInfo] | None = None) -> PartitionInfo:
    """Partition exists, has enough nodes, CPUs per node and GPUs (GRES) for the profile."""
    partitions = query_partitions() if partitions is None else partitions
    info = partitions.get(p.partition)
    if info is None:
        raise ProfileError(f"cluster profile: partition: {p.partition!r} is not known to sinfo; "
                           f"available: {', '.join(sorted(partitions)) or 'none'}")
    if p.nodes > info.nodes:
        raise ProfileError(f"cluster profile: nodes: {p.nodes} requested but partition "
                           f"{p.partition!r} has {info.nodes} nodes")
    if info.max_cpus and p.cpus_per_task > info.max_cpus:
        raise ProfileError(f"cluster profile: cpus_per_task: {p.cpus_per_task} requested but the "
                           f"largest node of partition {p.partition!r} has {info.max_cpus} CPUs")
    if p.gpus_per_node > 0:
        gpus = info.max_gpus
        if gpus == 0:
            raise ProfileError(
                f"cluster profile: gpus_per_node: {p.gpus_per_node} GPUs requested but no node "
                f"of partition {p.partition!r} has GRES gpu (sinfo -o %G: "
                f"{', '.join(sorted(set(info.gres)))}); set gpus_per_node=0 or pick a GPU "
                "partition")
        if p.gpus_per_node > gpus:
            raise ProfileError(f"cluster profile: gpus_per_node: {p.gpus_per_node} requested but "
                               f"nodes of partition {p.partition!r} have at most {gpus}")
    return info


def check_run_fits(cfg: ExperimentConfig, p: ClusterProfile) -> None:
    """The Ray Train run (workers + data generators) fits in the job's allocation."""
    from starray.train.resources import NodeResources, ResourceError, check_fits

    s, d = cfg.scaling, cfg.data
    if s.cpus_per_worker > p.cpus_per_task:
        raise ProfileError(f"scaling.cpus_per_worker: {s.cpus_per_worker:g} CPUs per worker do "
                           f"not fit on one node (cpus_per_task={p.cpus_per_task})")
    if s.placement == "STRICT_SPREAD" and s.num_workers > p.nodes:
        raise ProfileError(f"scaling.placement: STRICT_SPREAD puts each of the "
                           f"{s.num_workers} workers on its own node, but the job has "
                           f"{p.nodes} nodes (set cluster nodes={s.num_workers})")
    if s.use_gpu and p.gpus_per_node == 0:
        raise ProfileError("scaling.use_gpu: the run uses GPUs but the cluster profile has "
                           "gpus_per_node=0")
    if s.use_gpu:
        gneed = s.num_workers * s.gpus_per_worker
        if gneed > p.nodes * p.gpus_per_node:
            raise ProfileError(
                f"scaling.num_workers: {s.num_workers} workers x {s.gpus_per_worker:g} GPUs = "
                f"{gneed:g} GPUs, but the job has nodes {p.nodes} x gpus_per_node "
                f"{p.gpus_per_node} = {p.nodes * p.gpus_per_node}")
        if s.gpus_per_worker > p.gpus_per_node:
            raise ProfileError(f"scaling.gpus_per_worker: {s.gpus_per_worker:g} GPUs per worker "
                               f"do not fit on one node (gpus_per_node={p.gpus_per_node})")
    nodes = [NodeResources(node_id=f"node{i + 1}", cpus=float(p.cpus_per_task),
                           gpus=float(p.gpus_per_node)) for i in range(p.nodes)]
    try:
        check_fits(cfg, nodes)
    except ResourceError as e:
        per_node = d.generators_per_node * d.generator_cpus
        need = s.num_workers * s.cpus_per_worker + per_node * p.nodes
        have = p.nodes * p.cpus_per_task
        fit = (p.cpus_per_task - per_node) / max(1, -(-s.num_workers // p.nodes))
        hint = (f"e.g. --set scaling.cpus_per_worker={_floor2(fit):g}" if fit >= 0.05
                else "lower data.generators_per_node or data.generator_cpus")
        raise ProfileError(
            f"scaling.num_workers: the run needs {s.num_workers} workers x "
            f"{s.cpus_per_worker:g} CPUs + data.generators_per_node {d.generators_per_node} x "
            f"{d.generator_cpus:g} CPUs on each of {p.nodes} node(s) = {need:g} CPUs, but the "
            f"job has nodes {p.nodes} x cpus_per_task {p.cpus_per_task} = {have} (raise "
            f"nodes/cpus_per_task or lower the run's CPUs: {hint}). Per node: {e}") from e


def _floor2(x: float) -> float:
    """``x`` rounded down to 2 decimals (a suggestion that really fits)."""
    return int(x * 100) / 100
