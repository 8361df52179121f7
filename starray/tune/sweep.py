"""ASHA sweeps: Ray Tune function trials, each running a TorchTrainer (Train V2).

One data-generation pool and one validation set serve every trial, so trials are
compared on the same stars (and a space may not search the data keys that would change
them: see starray.tune.space). Each trial is a normal training run folder under
``SWEEP_DIR/trials/<trial_id>`` (its own checkpoints and W&B run, grouped by sweep).
ASHA's rungs and stops are kept in ``SWEEP_DIR/asha.jsonl`` (starray.tune.asha_state),
so ``--resume`` judges trials as the interrupted sweep would have.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import yaml

from starray.config import ConfigError, ExperimentConfig, apply_overrides, from_dict, load_config
from starray.tune.resources import (
    TRIAL_CPU,
    cluster_resources,
    concurrent_trials,
    local_resources,
)
from starray.tune.signals import StopOnSignal, SweepInterrupted, mark_local_ray
from starray.tune.space import (
    check_space_keys,
    flatten_params,
    load_space,
    parse_space,
    to_tune_space,
    trial_base,
)
from starray.tune.summary import format_table, summarize

__all__ = ["run_sweep", "summarize", "format_table", "trial_fn", "SweepInterrupted"]

START_RETRIES = 2  # worker-group start timeouts a trial may retry (Ray's default: forever)


def trial_fn(config: dict[str, Any], base: dict[str, Any], pool: Any, sweep_dir: str) -> None:
    """One trial: the sampled params on top of the base config, trained by a TorchTrainer."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from starray.train.driver import build_trainer, prepare_run_dir
    from starray.tune.asha_state import AshaLedger

    trial_id = tune.get_context().get_trial_id()
    stopped = AshaLedger(sweep_dir).stopped()
    if trial_id in stopped:  # restarted by a resume, but ASHA had stopped it: keep it so
        print(f"[starray] trial {trial_id} was stopped by ASHA after {stopped[trial_id]} "
              "epoch(s); not training it again", flush=True)
        return
    cfg = from_dict(apply_overrides(base, flatten_params(config)))
    cfg.name, cfg.output_dir = trial_id, str(Path(sweep_dir) / "trials")
    cfg.wandb.group = cfg.wandb.group or Path(sweep_dir).name
    meta = prepare_run_dir(cfg, resume=True)  # a resumed sweep continues from checkpoints
    (cfg.run_dir / "params.json").write_text(json.dumps(config))
    trainer = build_trainer(cfg, pool, meta["wandb_id"], callbacks=[TuneReportCallback()])
    failure = trainer.run_config.failure_config
    if getattr(failure, "controller_failure_limit", None) == -1:
        # Train V2 retries a worker group that cannot be placed without limit
        # (FailureConfig.controller_failure_limit=-1); bound it so a trial fails instead
        failure.controller_failure_limit = START_RETRIES
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


def finish_stopped_runs(sweep_dir: Path, ledger: Any) -> int:
    """Finish the W&B run of every trial ASHA stopped (its workers were killed mid-run).

    Each such run is reopened with its id (resume="allow") and finished with a summary
    saying it was stopped; the ledger remembers it, so a resume does not redo it.
    """
    from starray.tracking import init_tracker
    from starray.train.driver import read_history

    done = ledger.marked("wandb_finished")
    n = 0
    for trial_id, epochs in ledger.stopped().items():
        run_dir = sweep_dir / "trials" / trial_id
        if trial_id in done or not (run_dir / "run.json").exists():
            continue
        cfg = load_config(run_dir / "config.yaml")
        meta = json.loads((run_dir / "run.json").read_text())
        tracker = init_tracker(cfg.wandb.mode, cfg.wandb.project, run_dir, meta["wandb_id"],
                               trial_id, cfg.to_dict(), "train", cfg.wandb.group,
                               cfg.wandb.entity, cfg.wandb.tags)
        history = read_history(run_dir)
        tracker.summary({"stopped_by": "asha", "epochs_done": epochs,
                         **({cfg.train.best_metric: history[-1][cfg.train.best_metric]}
                            if history else {})})
        tracker.finish()
        ledger.append({"trial": trial_id, "wandb_finished": True})
        n += 1
    return n


def _open_sweep(space_path: str | None, base: ExperimentConfig | None, overrides: list[str],
                resume_dir: str | None, num_samples: int | None, max_t: int | None):
    """(sweep folder, spec, trial base config) of a new or resumed sweep."""
    if resume_dir:
        sweep_dir = Path(resume_dir).expanduser().resolve()
        saved = sweep_dir / "sweep.yaml"
        if not saved.exists():
            raise ConfigError(f"--resume: {sweep_dir} is not a sweep folder (no sweep.yaml)")
        data = yaml.safe_load(saved.read_text())
        base = from_dict(data["base"], overrides)
        spec = parse_space(data["spec"], base)
        check_space_keys(spec.space, base)
        return sweep_dir, spec, base
    assert base is not None and space_path is not None
    spec = load_space(space_path, base)
    if num_samples:
        spec.num_samples = num_samples
    if max_t:
        spec.asha["max_t"] = max_t
    base = trial_base(base, spec, overrides)
    sweep_dir = base.run_dir if base.name else Path(base.output_dir).resolve() / "sweep"
    if (sweep_dir / "sweep.yaml").exists():
        raise ConfigError(f"name: sweep folder {sweep_dir} exists; resume it with "
                          f"`starray tune --resume {sweep_dir}` or pick another --name")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.yaml").write_text(
        yaml.safe_dump({"base": base.to_dict(), "spec": spec.to_dict()}, sort_keys=False))
    return sweep_dir, spec, base


def run_sweep(space_path: str | None, base: ExperimentConfig | None, overrides: list[str],
              resume_dir: str | None = None, address: str | None = None,
              num_samples: int | None = None, points: list[dict[str, Any]] | None = None,
              scheduler: str = "asha", max_t: int | None = None, verbose: bool = False
              ) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the summary with a printable table.

    ``verbose`` shows Ray's and the trials' own logs (hidden by default: the console shows
    the compact trial table).

    ``overrides`` (``--set``) win over the space's ``base:`` settings, which win over
    ``base``. ``points`` fixes the trials' configurations (same trials under two
    schedulers); ``scheduler="fifo"`` runs every trial to max_t (ASHA's baseline).
    Raises SweepInterrupted after SIGINT/SIGTERM (local Ray shut down; resumable).
    """
    import ray

    from starray.train.driver import ensure_ray

    sweep_dir, spec, base = _open_sweep(space_path, base, overrides, resume_dir, num_samples,
                                        max_t)
    if address is None:  # before Ray starts: can one trial fit this machine at all?
        cpus, gpus = local_resources(base)
        concurrent_trials(base, cpus, gpus, "this machine", spec.max_concurrent_trials,
                          spec.num_samples)
    own_ray = address is None and not ray.is_initialized()
    hint = f"resume with `starray tune --resume {sweep_dir}`"
    stop = StopOnSignal(hint, mark_local_ray() if own_ray else None)
    t0 = time.time()
    with stop:
        try:
            results = _fit(sweep_dir, spec, base, address, resume_dir, points, scheduler,
                           stop, functools.partial(ensure_ray, verbose=verbose))
        except SweepInterrupted:
            results = None
        finally:
            if stop.received is not None:
                if own_ray:
                    ray.shutdown()
                    stop.cleanup()
                print(f"[starray] sweep stopped; {hint}", flush=True)
    if stop.received is not None:
        raise SweepInterrupted(stop.received, hint)
    errors, reported, leaked, ledger = results
    finish_stopped_runs(sweep_dir, ledger)
    summary = summarize(sweep_dir, spec, base, reported, ledger.stopped())
    summary["wall_s"] = round(time.time() - t0, 1)
    summary["errors"] = errors
    summary["leaked_placement_groups"] = leaked
    summary["concurrent_trials"] = results_concurrency(sweep_dir)
    (sweep_dir / "results.json").write_text(json.dumps(
        {k: v for k, v in summary.items() if k != "table"}, indent=1))
    if errors:
        print(f"[starray] {len(errors)} trial(s) failed; first error: {errors[0][:500]}")
    return summary


def results_concurrency(sweep_dir: Path) -> int | None:
    """The concurrency the sweep ran with (recorded at its start)."""
    path = sweep_dir / "concurrency.json"
    return json.loads(path.read_text())["concurrent"] if path.exists() else None


def _generator_nodes(base: ExperimentConfig) -> int:
    """Nodes of the connected cluster that get the shared pool's generators."""
    from starray.train.resources import check_fits, cluster_nodes

    try:
        return max(1, len(check_fits(base, cluster_nodes()).generator_nodes))
    except ConfigError:
        return 1  # concurrent_trials reports what does not fit


def _fit(sweep_dir: Path, spec: Any, base: ExperimentConfig, address: str | None,
         resume_dir: str | None, points: list[dict[str, Any]] | None, scheduler: str,
         stop: StopOnSignal, ensure_ray: Any) -> tuple[list[str], dict[str, int], int, Any]:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from starray.train.data_pool import SHARED_CACHE, DataPool
    from starray.tune.asha_state import AshaLedger, PersistentASHA
    from starray.tune.console import TrialTable

    ensure_ray(address, base)
    stop.reinstall()
    cpus, gpus, largest = cluster_resources()
    concurrent = concurrent_trials(base, cpus, gpus,
                                   "the Ray cluster" if address else "the local Ray",
                                   spec.max_concurrent_trials, spec.num_samples, largest,
                                   nodes=_generator_nodes(base))
    (sweep_dir / "concurrency.json").write_text(json.dumps(
        {"concurrent": concurrent, "cpus": cpus, "gpus": gpus, "trial_cpu": TRIAL_CPU}))
    ledger = AshaLedger(sweep_dir)
    pool = DataPool.for_run(base, cache=SHARED_CACHE)  # trials share batches: cache on
    try:
        print(f"[starray] sweep {sweep_dir.name}: {spec.num_samples} trials, {concurrent} at "
              f"a time ({cpus:g} CPUs, {gpus:g} GPUs), ASHA {spec.asha}, metric "
              f"{spec.metric} ({spec.mode})", flush=True)
        pool.prefill_validation()
        trainable = tune.with_resources(
            tune.with_parameters(trial_fn, base=base.to_dict(), pool=pool,
                                 sweep_dir=str(sweep_dir)),
            {"CPU": TRIAL_CPU})
        asha = PersistentASHA(ledger, time_attr="epochs_done", max_t=spec.asha["max_t"],
                              grace_period=spec.asha["grace_period"],
                              reduction_factor=spec.asha["reduction_factor"])
        table = TrialTable(spec.metric, spec.mode, spec.asha["max_t"], ledger.stopped)
        run_config = tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0,
                                    callbacks=[table],
                                    failure_config=tune.FailureConfig(max_failures=1))
        tune_path = sweep_dir / "tune"
        if resume_dir and tune.Tuner.can_restore(str(tune_path)):
            print(f"[starray] resuming the sweep in {sweep_dir} ({len(ledger.rungs())} rung "
                  f"record(s), {len(ledger.stopped())} trial(s) stopped by ASHA)", flush=True)
            tuner = tune.Tuner.restore(str(tune_path), trainable=trainable,
                                       param_space=to_tune_space(spec),
                                       resume_unfinished=True, restart_errored=True)
        else:
            search = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrent,
                                           ) if points else None
            tuner = tune.Tuner(
                trainable, param_space=to_tune_space(spec), run_config=run_config,
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode=spec.mode,
                    scheduler=asha if scheduler == "asha" else None, search_alg=search,
                    num_samples=spec.num_samples, max_concurrent_trials=concurrent))
        stop.in_tune = True
        try:
            results = tuner.fit()
        finally:
            stop.in_tune = False
        if stop.received is not None:
            raise SweepInterrupted(stop.received, stop.hint)
        errors = [str(r.error) for r in results if r.error]
        # what Tune last heard from each trial: a trial ASHA stopped may still have run
        # (part of) one more epoch before it was killed
        reported = {r.metrics.get("trial_id"): r.metrics.get("epochs_done", 0)
                    for r in results if r.metrics}
        leaked = _live_placement_groups()
    finally:
        try:
            pool.shutdown()
        except Exception:  # noqa: BLE001 - Ray may already be gone after a signal
            if stop.received is None:
                raise
    return errors, reported, leaked, ledger
