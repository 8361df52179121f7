"""Render ``slurm/ray-cluster.sbatch`` from a cluster profile (``starray slurm render``).

The template is a working script with marked blocks (``# >>> sbatch``, ``# >>> setup``,
``# >>> variables``); rendering replaces those blocks and keeps the rest as written.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from starray.config import ConfigError
from starray.paths import sbatch_template
from starray.slurm.profile import ClusterProfile

TEMPLATE = sbatch_template()  # packaged with starray (starray/resources/slurm)


def sbatch_options(p: ClusterProfile, job_name: str, output: str) -> list[str]:
    """``#SBATCH`` lines for the profile (one task per node; USR2 to the tasks, not the
    batch shell: ``starray.slurm.entry`` on task 0 stops, tears down and requeues)."""
    opts: dict[str, object] = {
        "job-name": job_name, "partition": p.partition, "nodes": p.nodes,
        "ntasks-per-node": 1, "cpus-per-task": p.cpus_per_task, "time": p.time_min,
        "signal": f"USR2@{p.signal_delay_s}", "requeue": True, "open-mode": "append",
        "output": output,
    }
    if p.gpus_per_node:
        opts["gpus-per-node"] = p.gpus_per_node
    if p.mem_gb is not None:
        opts["mem"] = f"{int(p.mem_gb * 1024)}M"
    for key in ("account", "qos", "constraint"):
        if getattr(p, key):
            opts[key] = getattr(p, key)
    if p.exclusive:
        opts["exclusive"] = True
    for key, value in p.additional.items():
        opts[key.replace("_", "-")] = value
    return [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={v}" for k, v in opts.items()]


def _replace_block(text: str, name: str, lines: list[str]) -> str:
    pattern = re.compile(rf"(^# >>> {name}[^\n]*\n)(.*?)(^# <<< {name}\n)", re.S | re.M)
    if not pattern.search(text):
        raise ConfigError(f"{TEMPLATE}: block '# >>> {name}' not found")
    body = "".join(line + "\n" for line in lines)
    return pattern.sub(lambda m: m.group(1) + body + m.group(3), text, count=1)


def render_sbatch(p: ClusterProfile, driver: list[str], template: Path = TEMPLATE) -> str:
    """The sbatch script for ``driver`` (``["train", ARGS...]``) on profile ``p``."""
    from starray.slurm.submit import run_config

    if not driver or driver[0] not in ("train", "tune"):
        raise ConfigError("driver: expected `-- train ARGS` or `-- tune --space FILE ARGS`")
    if "--address" in driver:
        raise ConfigError("driver: --address is set by the job (its own Ray cluster)")
    kind, args = driver[0], driver[1:]
    opts = _parse_run_args(args)
    cfg = run_config(kind, opts.get("--config"), opts["--set"], opts.get("--name"),
                     opts.get("--output-dir"), opts.get("--resume"))
    run_dir = cfg.run_dir
    if "--name" not in opts and "--resume" not in opts:
        args += ["--name", str(cfg.name)]
    if "--output-dir" not in opts and "--resume" not in opts:
        args += ["--output-dir", str(cfg.output_dir)]
    (run_dir / "slurm").mkdir(parents=True, exist_ok=True)  # Slurm won't create it
    text = template.read_text()
    text = _replace_block(text, "sbatch", sbatch_options(
        p, f"starray-{kind}-{cfg.name}", str(run_dir / "slurm" / "sbatch-%j.out")))
    text = _replace_block(text, "setup", list(p.setup))
    variables = {
        "STARRAY_DRIVER": shlex.join([kind, *args]),
        "STARRAY_RUN_DIR": str(run_dir),
        "PYTHON": p.interpreter,
        "RAY_PORT_BASE": str(p.ray_port_base),
        "RAY_TEMP_ROOT": p.ray_temp_root,
        "NODE_WAIT_S": str(p.node_wait_s),
        "MAX_REQUEUES": str(p.max_requeues),
        "SIGNAL_DELAY_S": str(p.signal_delay_s),
        "RAY_OBJECT_STORE_BYTES": str(int(p.object_store_gb * 2**30)) if p.object_store_gb
        else "",
    }
    text = _replace_block(text, "variables", [
        f"{k}=${{{k}:-{shlex.quote(v)}}}" for k, v in variables.items()])
    return text


def _parse_run_args(args: list[str]) -> dict:
    """The few driver options the renderer needs (--config/--set/--name/--output-dir)."""
    out: dict = {"--set": []}
    it = iter(range(len(args)))
    for i in it:
        a = args[i]
        key, _, inline = a.partition("=")
        if key in ("--config", "--name", "--output-dir", "--resume", "--set", "--space"):
            value = inline if inline else (args[i + 1] if i + 1 < len(args) else None)
            if value is None:
                raise ConfigError(f"driver: {key} needs a value")
            if not inline:
                next(it, None)
            if key == "--set":
                out["--set"].append(value)
            else:
                out[key] = value
    return out
