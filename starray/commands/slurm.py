"""`starray submit`, `starray jobs`, `starray logs`, `starray cancel`, `starray slurm render`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PROFILE = os.environ.get("STARRAY_CLUSTER", "local")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help="cluster profile: a name in configs/cluster/ or a YAML path "
                        "(default: $STARRAY_CLUSTER or 'local')")
    p.add_argument("--cluster-set", dest="cluster_overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a profile key, e.g. nodes=2 (repeatable)")


def _run_args(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--config", help="run config YAML (as for `starray train`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run config field (repeatable)")
    p.add_argument("--name", help="run name: results go to OUTPUT_DIR/NAME")
    p.add_argument("--output-dir", help="folder of runs (default: config output_dir, 'runs'); "
                                        "the job registry is OUTPUT_DIR/slurm-jobs.jsonl")
    p.add_argument("--resume", metavar="RUN_DIR" if kind == "train" else "SWEEP_DIR",
                   help="continue an existing run/sweep in a new job")
    if kind == "tune":
        p.add_argument("--space", help="search space YAML (configs/tune/*.yaml)")
        p.add_argument("--num-samples", type=int, help="number of trials")
    p.add_argument("--wait", action="store_true",
                   help="stream the job's log until it ends; exit 0 only if it COMPLETED")
    p.add_argument("--dry-run", action="store_true",
                   help="run every check and print the sbatch script, queue nothing")


def cmd_submit(args: argparse.Namespace) -> int:
    from starray.slurm.profile import load_profile
    from starray.slurm.submit import make_executor, plan_job, submit_job

    profile = load_profile(args.profile, args.cluster_overrides)
    plan = plan_job(args.kind, profile, config=args.config, overrides=args.overrides,
                    name=args.name, output_dir=args.output_dir, resume=args.resume,
                    space=getattr(args, "space", None),
                    num_samples=getattr(args, "num_samples", None))
    if args.dry_run:
        executor = make_executor(plan)
        print(executor._make_submission_file_text("<command>", "<uid>"))
        print(f"# checks passed; driver: starray {args.kind} {' '.join(plan.job.argv)}")
        return 0
    job, log_folder = submit_job(plan)
    print(f"submitted {args.kind} job {job.job_id} ({profile.nodes} node(s), partition "
          f"{profile.partition}, {profile.time_min} min, up to {profile.max_requeues} requeues)")
    print(f"  results  {plan.run_dir}")
    print(f"  logs     {log_folder}  (starray logs {job.job_id} --follow)")
    print(f"  cancel   starray cancel {job.job_id}")
    sys.stdout.flush()
    if not args.wait:
        return 0
    state = follow_log(job.job_id, log_folder / f"{job.job_id}_0_log.out")
    print(f"job {job.job_id}: {state}")
    return 0 if state == "COMPLETED" else 1


def follow_log(job_id: str, path: Path, poll_s: float = 2.0, out=None) -> str:
    """Print ``path`` as it grows until the job reaches a final state; that state."""
    from starray.slurm.jobs import FINAL_STATES, job_state

    out = out or sys.stdout
    pos = 0
    state = "UNKNOWN"
    while True:
        if path.exists():
            with open(path, errors="replace") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
            if chunk:
                out.write(chunk)
                out.flush()
        if state in FINAL_STATES:
            return state
        state = job_state(job_id)
        time.sleep(poll_s if state not in FINAL_STATES else 1.0)


def cmd_jobs(args: argparse.Namespace) -> int:
    from starray.slurm.jobs import job_states, read_registry

    entries = read_registry(args.output_dir)[-args.limit:]
    states = job_states([e["job_id"] for e in entries])
    rows = []
    for e in entries:
        s = states.get(e["job_id"], {})
        rows.append({**e, "state": s.get("state", "UNKNOWN"), "elapsed": s.get("elapsed", ""),
                     "restarts": s.get("restarts", "")})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no jobs recorded in {Path(args.output_dir).resolve()}/slurm-jobs.jsonl")
        return 0
    print(f"{'JOBID':>8} {'KIND':5} {'STATE':11} {'ELAPSED':>10} {'REQ':>3} {'SUBMITTED':19}"
          f" RUN_DIR")
    for r in rows:
        print(f"{r['job_id']:>8} {r['kind']:5} {r['state']:11} {r['elapsed']:>10} "
              f"{r['restarts'] or '-':>3} {r['submitted'][:19]:19} {r['run_dir']}")
    return 0


def _entry(args: argparse.Namespace) -> dict:
    from starray.config import ConfigError
    from starray.slurm.jobs import find_job

    entry = find_job(args.job_id, args.output_dir)
    if entry is None:
        raise ConfigError(f"job {args.job_id}: not in "
                          f"{Path(args.output_dir).resolve()}/slurm-jobs.jsonl "
                          "(pass --output-dir of the run)")
    return entry


def cmd_logs(args: argparse.Namespace) -> int:
    from starray.slurm.jobs import log_files

    entry = _entry(args)
    files = log_files(entry, err=args.err)
    suffix = "err" if args.err else "out"
    path = Path(entry["log_folder"]) / f"{entry['job_id']}_{args.task}_log.{suffix}"
    if args.follow:
        state = follow_log(entry["job_id"], path)
        print(f"job {entry['job_id']}: {state}", file=sys.stderr)
        return 0
    if not path.exists():
        print(f"no log yet at {path} (job pending?); files: {[str(f) for f in files]}",
              file=sys.stderr)
        return 1
    sys.stdout.write(path.read_text(errors="replace"))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from starray.slurm.jobs import FINAL_STATES, wait_state
    from starray.slurm.ray_cluster import find_ray_processes, kill_ray_processes

    entry = _entry(args)
    job_id = entry["job_id"]
    subprocess.run(["scancel", job_id], check=True)
    state = wait_state(job_id, FINAL_STATES, timeout_s=args.timeout)
    # Slurm ends every process of the job's steps and the job's entry tears Ray down on
    # SIGTERM; as a last resort end what is left on this host (e.g. the local cluster).
    leftovers = 0
    for head in Path(entry["log_folder"], "ray").glob("head-*.json"):
        info = json.loads(head.read_text())
        tmp0 = info["temp_dir"]
        for node in range(int(info.get("nodes", 1))):
            tmp = tmp0[: tmp0.rfind("-n")] + f"-n{node}"
            if find_ray_processes(tmp, info.get("address")):
                leftovers += kill_ray_processes(tmp, info.get("address"))
    print(f"job {job_id}: {state}" + (f"; ended {leftovers} leftover Ray processes"
                                      if leftovers else ""))
    return 0 if state in FINAL_STATES else 1


def cmd_render(args: argparse.Namespace) -> int:
    from starray.slurm.profile import load_profile
    from starray.slurm.template import render_sbatch

    driver = list(args.driver)
    if "--" in driver:  # argparse.REMAINDER also swallows render options given before --
        cut = driver.index("--")
        pre, driver = driver[:cut], driver[cut + 1:]
        opts = argparse.ArgumentParser(prog="starray slurm render", add_help=False)
        opts.add_argument("--cluster-set", dest="cluster_overrides", action="append",
                          default=[])
        opts.add_argument("-o", "--output")
        extra = opts.parse_args(pre)
        args.cluster_overrides = args.cluster_overrides + extra.cluster_overrides
        args.output = extra.output or args.output
    profile = load_profile(args.profile, args.cluster_overrides)
    text = render_sbatch(profile, driver)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}; submit with: sbatch {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("submit", help="run `starray train|tune` as a multi-node Slurm job",
                       description="Queue one Slurm job that brings up a Ray cluster over its "
                                   "nodes and runs the train or tune driver on the head node.")
    kinds = s.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind in ("train", "tune"):
        k = kinds.add_parser(kind, help=f"submit `starray {kind}`")
        _cluster_args(k)
        _run_args(k, kind)
        k.set_defaults(func=cmd_submit)

    j = sub.add_parser("jobs", help="jobs submitted from this project, with their state")
    j.add_argument("--output-dir", default="runs", help="where slurm-jobs.jsonl lives")
    j.add_argument("--limit", type=int, default=50,
                   help="show the newest LIMIT jobs of the registry (default 50)")
    j.add_argument("--json", action="store_true",
                   help="print the jobs as JSON (each registry entry with its state, "
                        "elapsed time and requeues) instead of a table")
    j.set_defaults(func=cmd_jobs)

    lg = sub.add_parser("logs", help="print (or follow) a job's log")
    lg.add_argument("job_id", metavar="JOB", help="Slurm job id (as `starray jobs` lists it)")
    lg.add_argument("--follow", "-f", action="store_true", help="until the job ends")
    lg.add_argument("--err", action="store_true", help="stderr instead of stdout")
    lg.add_argument("--task", type=int, default=0, help="task (node) index; 0 is the head")
    lg.add_argument("--output-dir", default="runs",
                    help="folder of runs holding slurm-jobs.jsonl (default: runs)")
    lg.set_defaults(func=cmd_logs)

    c = sub.add_parser("cancel", help="cancel a job; its Ray processes end with it")
    c.add_argument("job_id", metavar="JOB", help="Slurm job id (as `starray jobs` lists it)")
    c.add_argument("--output-dir", default="runs",
                   help="folder of runs holding slurm-jobs.jsonl (default: runs)")
    c.add_argument("--timeout", type=float, default=90, help="seconds to wait for the end")
    c.set_defaults(func=cmd_cancel)

    sl = sub.add_parser("slurm", help="Slurm helpers (sbatch templates)")
    ssub = sl.add_subparsers(dest="slurm_cmd", metavar="CMD", required=True)
    r = ssub.add_parser("render", help="render slurm/ray-cluster.sbatch from a profile",
                        description="Example: starray slurm render local --cluster-set nodes=2 "
                                    "-o job.sbatch -- train --config configs/x.yaml")
    r.add_argument("profile", help="cluster profile: a name in configs/cluster/ (local, "
                                   "gpu-example) or a YAML path")
    r.add_argument("--cluster-set", dest="cluster_overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a profile key, e.g. --cluster-set nodes=2 (repeatable)")
    r.add_argument("-o", "--output", help="write here instead of stdout")
    r.add_argument("driver", nargs=argparse.REMAINDER,
                   help="-- train|tune ARGS: the driver command (without --address)")
    r.set_defaults(func=cmd_render)
