"""ASHA sweeps: Ray Tune function trials, each running a TorchTrainer (Train V2).

One data-generation pool and one validation set serve every trial, so trials are
compared on the same stars. Each trial is a normal training run folder under
``SWEEP_DIR/trials/<trial_id>`` (its own checkpoints and W&B run, grouped by sweep).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from starray.config import ConfigError, ExperimentConfig, apply_overrides, from_dict
from starray.tune.space import SweepSpec, flatten_params, load_space, parse_space, to_tune_space


def trial_fn(config: dict[str, Any], base: dict[str, Any], pool: Any, sweep_dir: str) -> None:
    """One trial: the sampled params on top of the base config, trained by a TorchTrainer."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from starray.train.driver import build_trainer, prepare_run_dir

    trial_id = tune.get_context().get_trial_id()
    cfg = from_dict(apply_overrides(base, flatten_params(config)))
    cfg.name, cfg.output_dir = trial_id, str(Path(sweep_dir) / "trials")
    cfg.wandb.group = cfg.wandb.group or Path(sweep_dir).name
    meta = prepare_run_dir(cfg, resume=True)  # a resumed sweep continues from checkpoints
    (cfg.run_dir / "params.json").write_text(json.dumps(config))
    trainer = build_trainer(cfg, pool, meta["wandb_id"], callbacks=[TuneReportCallback()])
    trainer.fit()


def _live_placement_groups(wait_s: float = 30.0) -> int:
    """Placement groups still held once the sweep is over (stopped trials must free theirs)."""
    from ray.util import placement_group_table

    deadline = time.time() + wait_s
    while True:
        live = [pg for pg in placement_group_table().values()
                if pg.get("state") not in ("REMOVED",)]
        if not live or time.time() > deadline:
            return len(live)
        time.sleep(1.0)


def _resources(spec: SweepSpec, base: ExperimentConfig) -> int:
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)
    s = base.scaling
    free = cpus - base.data.generators * base.data.generator_cpus
    fit = max(1, int(free // (s.num_workers * s.cpus_per_worker)))
    return min(spec.max_concurrent_trials or fit, spec.num_samples)


def run_sweep(space_path: str | None, base: ExperimentConfig | None, overrides: list[str],
              resume_dir: str | None = None, address: str | None = None,
              num_samples: int | None = None, points: list[dict[str, Any]] | None = None,
              scheduler: str = "asha", max_t: int | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the summary with a printable table.

    ``points`` fixes the trials' configurations (same trials under two schedulers);
    ``scheduler="fifo"`` runs every trial to max_t (the baseline ASHA is measured against).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from starray.train.data_pool import SHARED_CACHE, DataPool
    from starray.train.driver import ensure_ray

    if resume_dir:
        sweep_dir = Path(resume_dir).expanduser().resolve()
        saved = sweep_dir / "sweep.yaml"
        if not saved.exists():
            raise ConfigError(f"--resume: {sweep_dir} is not a sweep folder (no sweep.yaml)")
        data = yaml.safe_load(saved.read_text())
        base = from_dict(data["base"], overrides)
        spec = parse_space(data["spec"], base)
    else:
        assert base is not None and space_path is not None
        base = from_dict(base.to_dict(), overrides)
        spec = load_space(space_path, base)
        if num_samples:
            spec.num_samples = num_samples
        if max_t:
            spec.asha["max_t"] = max_t
        sweep_dir = base.run_dir if base.name else Path(base.output_dir).resolve() / "sweep"
        if (sweep_dir / "sweep.yaml").exists():
            raise ConfigError(f"name: sweep folder {sweep_dir} exists; resume it with "
                              f"`starray tune --resume {sweep_dir}` or pick another --name")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "sweep.yaml").write_text(
            yaml.safe_dump({"base": base.to_dict(), "spec": spec.to_dict()}, sort_keys=False))
    base.train.epochs = spec.asha["max_t"]
    if address is None:
        from starray.train.driver import check_local_resources

        check_local_resources(base, address)
    t0 = time.time()
    ensure_ray(address, base)
    pool = DataPool.for_run(base, cache=SHARED_CACHE)  # trials share batches: cache on
    try:
        print(f"[starray] sweep {sweep_dir.name}: {spec.num_samples} trials, ASHA "
              f"{spec.asha}, metric {spec.metric} ({spec.mode})", flush=True)
        pool.prefill_validation()
        trainable = tune.with_resources(
            tune.with_parameters(trial_fn, base=base.to_dict(), pool=pool,
                                 sweep_dir=str(sweep_dir)),
            {"CPU": 0.001})
        asha = ASHAScheduler(time_attr="epochs_done", max_t=spec.asha["max_t"],
                             grace_period=spec.asha["grace_period"],
                             reduction_factor=spec.asha["reduction_factor"])
        run_config = tune.RunConfig(name="tune", storage_path=str(sweep_dir),
                                    failure_config=tune.FailureConfig(max_failures=1))
        tune_path = sweep_dir / "tune"
        if resume_dir and tune.Tuner.can_restore(str(tune_path)):
            print(f"[starray] resuming the sweep in {sweep_dir}", flush=True)
            tuner = tune.Tuner.restore(str(tune_path), trainable=trainable,
                                       param_space=to_tune_space(spec),
                                       resume_unfinished=True, restart_errored=True)
        else:
            concurrent = _resources(spec, base)
            search = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrent,
                                           ) if points else None
            tuner = tune.Tuner(
                trainable, param_space=to_tune_space(spec), run_config=run_config,
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode=spec.mode,
                    scheduler=asha if scheduler == "asha" else None, search_alg=search,
                    num_samples=spec.num_samples, max_concurrent_trials=concurrent))
        results = tuner.fit()
        errors = [str(r.error) for r in results if r.error]
        # what Tune last heard from each trial: a trial ASHA stopped may still have run
        # (part of) one more epoch before it was killed
        reported = {r.metrics.get("trial_id"): r.metrics.get("epochs_done", 0)
                    for r in results if r.metrics}
        leaked = _live_placement_groups()
    finally:
        pool.shutdown()
    summary = summarize(sweep_dir, spec, base, reported)
    summary["wall_s"] = round(time.time() - t0, 1)
    summary["errors"] = errors
    summary["leaked_placement_groups"] = leaked
    (sweep_dir / "results.json").write_text(json.dumps(
        {k: v for k, v in summary.items() if k != "table"}, indent=1))
    if errors:
        print(f"[starray] {len(errors)} trial(s) failed; first error: {errors[0][:500]}")
    return summary


def summarize(sweep_dir: Path, spec: SweepSpec, base: ExperimentConfig,
              reported: dict[str, int] | None = None) -> dict[str, Any]:
    """Trial table, best config YAML, best checkpoint copy and the curves plot.

    ``reported``: the last ``epochs_done`` Tune received per trial id; a trial whose
    last report is short of max_t was stopped by ASHA.
    """
    reported = reported or {}
    from starray.train.driver import read_history

    trials = []
    for trial_dir in sorted((sweep_dir / "trials").glob("*")):
        params_file = trial_dir / "params.json"
        if not params_file.exists():
            continue
        history = read_history(trial_dir)
        values = [h[spec.metric] for h in history]
        best = (max if spec.mode == "max" else min)(values) if values else None
        trials.append({"trial": trial_dir.name, "params": json.loads(params_file.read_text()),
                       "epochs": len(history), "best": best,
                       "stopped_early": (reported.get(trial_dir.name) or len(history))
                       < spec.asha["max_t"],
                       "curve": values})
    ranked = [t for t in trials if t["best"] is not None]
    ranked.sort(key=lambda t: t["best"], reverse=spec.mode == "max")
    summary: dict[str, Any] = {"sweep_dir": str(sweep_dir), "metric": spec.metric,
                               "trials": trials, "total_epochs": sum(t["epochs"] for t in trials),
                               "full_epochs": len(trials) * spec.asha["max_t"]}
    if ranked:
        top = ranked[0]
        best_cfg = from_dict(apply_overrides(base.to_dict(), flatten_params(top["params"])))
        best_cfg.name = None
        best_cfg.output_dir = "runs"
        best_cfg.train.epochs = spec.asha["max_t"]
        tmp = sweep_dir / "best_config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
        os.replace(tmp, sweep_dir / "best_config.yaml")
        ckpt = sweep_dir / "trials" / top["trial"] / "checkpoints" / "best.pt"
        if ckpt.exists():
            shutil.copy2(ckpt, sweep_dir / "best_checkpoint.pt")
        summary.update(best_trial=top["trial"], best_value=top["best"],
                       best_config=str(sweep_dir / "best_config.yaml"),
                       best_checkpoint=str(sweep_dir / "best_checkpoint.pt"))
        _plot_curves(trials, spec, sweep_dir / "curves.png")
    summary["table"] = format_table(trials, spec, summary)
    (sweep_dir / "trials.md").write_text(summary["table"] + "\n")
    return summary


def format_table(trials: list[dict[str, Any]], spec: SweepSpec, summary: dict[str, Any]) -> str:
    """Markdown table of trials, best first."""
    keys = list(spec.space)
    head = ["trial", *keys, "epochs", f"best {spec.metric}", "stopped early"]
    rows = []
    order = sorted(trials, key=lambda t: (t["best"] is None, -(t["best"] or 0)
                                          if spec.mode == "max" else (t["best"] or 0)))
    for t in order:
        vals = [_short(t["params"].get(k)) for k in keys]
        best = f"{t['best']:.4f}" if t["best"] is not None else "-"
        rows.append([t["trial"], *vals, str(t["epochs"]), best,
                     "yes" if t["stopped_early"] else "no"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if summary.get("best_trial"):
        lines += ["", f"best trial {summary['best_trial']}: {spec.metric} "
                      f"{summary['best_value']:.4f}; config {summary['best_config']}",
                  f"epochs run {summary['total_epochs']} of {summary['full_epochs']} "
                  f"({summary['total_epochs'] / max(1, summary['full_epochs']):.0%}) without "
                  "early stopping"]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _plot_curves(trials: list[dict[str, Any]], spec: SweepSpec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in trials:
        if t["curve"]:
            ax.plot(range(1, len(t["curve"]) + 1), t["curve"], marker="o", ms=3,
                    label=t["trial"][-5:])
    ax.set_xlabel("epoch")
    ax.set_ylabel(spec.metric)
    ax.set_title("validation metric per trial (ASHA)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
