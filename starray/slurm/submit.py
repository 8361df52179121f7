"""Submit one ``starray train|tune`` run as one multi-node Slurm job (submitit).

``plan_job`` does every check (profile, ``sinfo``, run vs allocation) and builds the job
without touching the queue; ``submit_job`` queues it and records it in the registry.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starray.config import ConfigError, ExperimentConfig, load_config
from starray.slurm.entry import SlurmRayJob
from starray.slurm.jobs import record_job
from starray.slurm.profile import (
    ClusterProfile,
    PartitionInfo,
    check_against_cluster,
    check_run_fits,
)


@dataclass
class JobPlan:
    """Everything needed to queue a job, checked."""

    kind: str
    cfg: ExperimentConfig
    profile: ClusterProfile
    job: SlurmRayJob
    run_dir: Path
    output_dir: Path
    log_root: Path  # submitit folder is log_root / %j
    job_name: str


def run_config(kind: str, config: str | None, overrides: list[str], name: str | None,
               output_dir: str | None, resume: str | None) -> ExperimentConfig:
    """The run's config as the driver will see it (for checks and the run dir)."""
    if resume:
        saved = Path(resume) / "config.yaml"
        if kind == "train" and not saved.exists():
            raise ConfigError(f"--resume {resume}: no config.yaml there (not a run folder)")
        cfg = load_config(saved if saved.exists() else None, overrides)
        cfg.output_dir = str(Path(resume).resolve().parent)
        cfg.name = Path(resume).resolve().name
        return cfg
    extra = list(overrides)
    if name:
        extra.append(f"name={name}")
    if output_dir:
        extra.append(f"output_dir={output_dir}")
    cfg = load_config(config, extra)
    if cfg.name is None:
        cfg.name = "default" if kind == "train" else "sweep"
    cfg.output_dir = str(Path(cfg.output_dir).expanduser().resolve())
    return cfg


def driver_args(kind: str, cfg: ExperimentConfig, config: str | None, overrides: list[str],
                space: str | None, num_samples: int | None, resume: str | None) -> list[str]:
    """Arguments after ``starray KIND`` (absolute paths: the job may run elsewhere)."""
    if resume:
        return ["--resume", str(Path(resume).resolve())]
    args: list[str] = []
    if kind == "tune":
        if not space:
            raise ConfigError("--space: required for `starray submit tune` "
                              "(e.g. configs/tune/tiny.yaml)")
        if not Path(space).exists():
            raise ConfigError(f"--space: {space} does not exist")
        args += ["--space", str(Path(space).resolve())]
        if num_samples is not None:
            args += ["--num-samples", str(num_samples)]
    if config:
        args += ["--config", str(Path(config).resolve())]
    for item in overrides:
        args += ["--set", item]
    args += ["--name", str(cfg.name), "--output-dir", str(cfg.output_dir)]
    return args


def plan_job(kind: str, profile: ClusterProfile, *, config: str | None = None,
             overrides: list[str] | None = None, name: str | None = None,
             output_dir: str | None = None, resume: str | None = None,
             space: str | None = None, num_samples: int | None = None,
             partitions: dict[str, PartitionInfo] | None = None) -> JobPlan:
    """Check everything and build the job; raises ConfigError (ProfileError) naming the field."""
    if kind not in ("train", "tune"):
        raise ConfigError(f"kind: {kind!r} is not one of train, tune")
    overrides = list(overrides or [])
    cfg = run_config(kind, config, overrides, name, output_dir, resume)
    check_against_cluster(profile, partitions)
    check_run_fits(cfg, profile)
    args = driver_args(kind, cfg, config, overrides, space, num_samples, resume)
    run_dir = cfg.run_dir
    job = SlurmRayJob(kind=kind, argv=args, run_dir=str(run_dir), nodes=profile.nodes,
                      cpus_per_node=profile.cpus_per_task, gpus_per_node=profile.gpus_per_node,
                      python=profile.interpreter, port_base=profile.ray_port_base,
                      temp_root=profile.ray_temp_root, node_wait_s=profile.node_wait_s,
                      object_store_bytes=(int(profile.object_store_gb * 2**30)
                                          if profile.object_store_gb else None),
                      signal_delay_s=profile.signal_delay_s, max_requeues=profile.max_requeues)
    return JobPlan(kind=kind, cfg=cfg, profile=profile, job=job, run_dir=run_dir,
                   output_dir=Path(cfg.output_dir), log_root=run_dir / "slurm",
                   job_name=f"starray-{kind}-{cfg.name}")


def executor_parameters(plan: JobPlan) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters from the profile (one task per node)."""
    p = plan.profile
    params: dict[str, Any] = dict(
        partition=p.partition, nodes=p.nodes, ntasks_per_node=1, cpus_per_task=p.cpus_per_task,
        time=p.time_min, signal_delay_s=p.signal_delay_s, job_name=plan.job_name,
        setup=list(p.setup), stderr_to_stdout=False,
        additional_parameters={"requeue": True, **p.additional},
    )
    if p.gpus_per_node:
        params["gpus_per_node"] = p.gpus_per_node
    if p.mem_gb is not None:
        params["mem"] = f"{int(p.mem_gb * 1024)}M"
    for key in ("account", "qos", "constraint"):
        if getattr(p, key):
            params[key] = getattr(p, key)
    if p.exclusive:
        params["exclusive"] = True
    return params


def make_executor(plan: JobPlan):
    import submitit

    executor = submitit.SlurmExecutor(folder=str(plan.log_root / "%j"),
                                      max_num_timeout=plan.profile.max_requeues,
                                      python=plan.profile.interpreter)
    executor.update_parameters(**executor_parameters(plan))
    return executor


def submit_job(plan: JobPlan):
    """Queue the job, record it in ``<output_dir>/slurm-jobs.jsonl``; the submitit Job."""
    plan.log_root.mkdir(parents=True, exist_ok=True)
    executor = make_executor(plan)
    job = executor.submit(plan.job)
    log_folder = Path(str(plan.log_root / "%j").replace("%j", str(job.job_id)))
    record_job(plan.output_dir, {
        "job_id": str(job.job_id), "kind": plan.kind, "name": plan.cfg.name,
        "run_dir": str(plan.run_dir), "log_folder": str(log_folder),
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "partition": plan.profile.partition, "nodes": plan.profile.nodes,
        "argv": plan.job.argv, "submit_host_python": sys.executable,
    })
    return job, log_folder
