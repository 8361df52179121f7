"""Sweeps: a bad space fails before Ray; a real ASHA sweep on a local Ray; resume."""

from __future__ import annotations

import pytest
import yaml

from starray.config import ConfigError, load_config
from starray.tune.space import parse_space

# the old defaults (2 workers x 1 CPU, 2 generators x 0.5), which the numbers below use
BASE = load_config(None, ["scaling.cpus_per_worker=1", "data.generators_per_node=2"])


@pytest.mark.parametrize("space, match", [
    ({"space": {"train.lrr": {"uniform": [0, 1]}}}, r"space.train.lrr: unknown config key"),
    ({"space": {"train.lr": {"choice": []}}}, r"space.train.lr: choice needs a non-empty list"),
    ({"space": {"train.lr": {"uniform": [0.1, 0.01]}}}, r"space.train.lr: low 0.1 > high 0.01"),
    ({"space": {"train.lr": {"normal": [0, 1]}}}, r"unknown kind 'normal'"),
    ({"space": {"model.d_model_heads": {"choice": [[64, 5]]}}}, r"n_heads dividing d_model"),
    ({"space": {"model.n_heads": {"choice": [4, 6]}}}, r"model.n_heads: 6 does not divide"),
    ({"spaces": {}}, r"spaces: unknown key"),
    ({"space": {"train.lr": {"uniform": [0, 1]}}, "asha": {"max_tt": 3}}, r"asha.max_tt"),
    ({"space": {}}, r"space: empty"),
    # the shared pool makes every trial's stars: data keys that change them are refused
    ({"space": {"data.n_candidates": {"choice": [4, 6]}}},
     r"space.data.n_candidates: cannot be searched: one data pool"),
    ({"space": {"data.noise": {"uniform": [0.01, 0.05]}}}, r"space.data.noise: cannot be"),
    ({"space": {"data.batch_size": {"choice": [32, 64]}}, "base": {"data.mode": "fixed"}},
     r"in fixed mode a sweep may search only data.prefetch"),
    ({"space": {"scaling.num_workers": {"choice": [1, 2]}}}, r"space.scaling.num_workers: "
     r"cannot be searched: the trials' resources"),
    ({"space": {"train.lr": {"uniform": [0, 1]}}, "metric": "acc"}, r"metric: 'acc' is not"),
    ({"space": {"train.lr": {"uniform": [0, 1]}}, "base": {"scaling.workers": 1}},
     r"base: scaling.workers: unknown key"),
    ({"space": {"train.lr": {"uniform": [0, 1]}}, "base": {"train.lr": 0.1}},
     r"base.train.lr: also searched"),
])
def test_bad_space_fails_before_ray_naming_the_key(space, match):
    import ray

    with pytest.raises(ConfigError, match=match):
        parse_space(space, BASE)
    assert not ray.is_initialized()


def test_shipped_spaces_are_valid():
    from starray.tune.resources import concurrent_trials
    from starray.tune.space import trial_base

    for name in ("tiny", "gpu"):
        data = yaml.safe_load(open(f"configs/tune/{name}.yaml"))
        spec = parse_space(data, BASE)
        assert spec.num_samples >= 8
        assert not [k for k in spec.space if k.startswith("data.") and k != "data.batch_size"]
    # tiny.yaml fits 2 cores with 2 trials at once, as its comment says; gpu.yaml needs GPUs
    tiny = parse_space(yaml.safe_load(open("configs/tune/tiny.yaml")), BASE)
    assert concurrent_trials(trial_base(BASE, tiny, []), 2, 0, "this machine") == 2
    gpu = parse_space(yaml.safe_load(open("configs/tune/gpu.yaml")), BASE)
    with pytest.raises(ConfigError, match=r"1 GPUs but this machine has 0"):
        concurrent_trials(trial_base(BASE, gpu, []), 64, 0, "this machine")
    assert concurrent_trials(trial_base(BASE, gpu, []), 64, 8, "the Ray cluster") == 8


def test_concurrency_counts_trial_cpu_generators_and_gpus():
    from starray.tune.resources import concurrent_trials

    # the numbers: 2 workers x 1 CPU + 2 generators x 0.5 CPU + the trial's 0.001
    # does not fit the 3 CPUs Ray was started with; it fails with the numbers, at once
    with pytest.raises(ConfigError, match=r"needs 3.001 CPUs but this machine has 3.*"
                                          r"2 worker\(s\) x 1 CPU"):
        concurrent_trials(BASE, 3, 0, "this machine")
    assert concurrent_trials(BASE, 4.001, 0, "x") == 1
    assert concurrent_trials(BASE, 9, 0, "x") == 3  # (9 - 1) // 2.001
    assert concurrent_trials(BASE, 9, 0, "x", limit=2) == 2
    assert concurrent_trials(BASE, 9, 0, "x", num_samples=1) == 1
    gpu = load_config(None, ["scaling.use_gpu=true", "scaling.num_workers=2"])
    assert concurrent_trials(gpu, 64, 5, "x") == 2  # GPU-bound: 5 // 2
    with pytest.raises(ConfigError, match=r"largest node"):
        concurrent_trials(gpu, 64, 8, "the Ray cluster", largest_node=(0.5, 4))


def test_sweep_that_cannot_fit_fails_before_ray(tmp_path, capsys):
    import ray

    from starray.cli import main

    rc = main(["tune", "--space", "configs/tune/tiny.yaml", "--output-dir", str(tmp_path),
               "--name", "S", "--set", "scaling.num_workers=2", "--set",
               "scaling.cpus_per_worker=1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "a sweep trial cannot fit: it needs 2.401 CPUs but this machine has" in err, err
    assert not ray.is_initialized()


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def test_asha_rungs_survive_in_the_ledger(tmp_path):
    """A rebuilt scheduler judges a new trial against the rungs recorded before."""
    from ray.tune.schedulers import ASHAScheduler

    from starray.tune.asha_state import AshaLedger, PersistentASHA

    kw = dict(time_attr="epochs_done", metric="val_loss", mode="min", max_t=4,
              grace_period=1, reduction_factor=2)
    first = PersistentASHA(AshaLedger(tmp_path), **kw)
    for tid, loss in [("a", 1.0), ("b", 3.0), ("c", 0.5)]:
        first.on_trial_add(None, _Trial(tid))
        action = first.on_trial_result(None, _Trial(tid), {"epochs_done": 1, "val_loss": loss})
        assert action == ("STOP" if tid == "b" else "CONTINUE"), tid
    ledger = AshaLedger(tmp_path)
    assert ledger.stopped() == {"b": 1}
    assert {(r["trial"], r["rung"], r["value"]) for r in ledger.rungs()} == {
        ("a", 1, 1.0), ("b", 1, 3.0), ("c", 1, 0.5)}
    # after an interruption: Ray's own restore starts with empty rungs (the weak trial
    # continues); the ledger-backed one stops it as the interrupted sweep would have
    fresh = ASHAScheduler(**kw)
    fresh.on_trial_add(None, _Trial("d"))
    assert fresh.on_trial_result(None, _Trial("d"), {"epochs_done": 1, "val_loss": 2.0}) \
        == "CONTINUE"
    rebuilt = PersistentASHA(AshaLedger(tmp_path), **kw)
    rebuilt.on_trial_add(None, _Trial("d"))
    assert rebuilt.recorded()[1] == {"a": 1.0, "b": 3.0, "c": 0.5}
    assert rebuilt.on_trial_result(None, _Trial("d"), {"epochs_done": 1, "val_loss": 2.0}) \
        == "STOP"
    assert AshaLedger(tmp_path).stopped() == {"b": 1, "d": 1}


def test_trial_table_shows_only_the_values_that_differ():
    from starray.tune.console import render_table

    rows = [{"trial": "t_00000", "state": "RUNNING", "epochs": 2, "value": 0.31,
             "params": {"train.lr": 0.001, "model.n_layers": 1}},
            {"trial": "t_00001", "state": "STOPPED", "epochs": 1, "value": 0.12,
             "params": {"train.lr": 0.004, "model.n_layers": 1}}]
    text = render_table(rows, "val_acc", "max")
    lines = text.splitlines()
    assert lines[0] == "[starray] trials: 1 running, 1 stopped; best val_acc 0.3100 (t_00000)"
    assert lines[1].split() == ["trial", "state", "epochs", "val_acc", "lr"]
    assert lines[3].split() == ["t_00001", "STOPPED", "1", "0.12", "0.004"]
    assert "n_layers" not in text


# what a user would type on top of the README's command to make it test-sized
CHEAP = ["data.stars_per_epoch=192", "data.val_stars=128", "data.batch_size=32",
         "model.n_layers=1"]


def _cli(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "starray.cli", *args]


@pytest.mark.ray
def test_readme_sweep_command_stops_trials_and_best_config_trains(tmp_path, capsys):
    """`starray tune --space configs/tune/tiny.yaml --name S`, made cheap with --set only."""
    import json

    import ray

    from starray.cli import main
    from starray.tracking import offline_runs
    from starray.train.checkpoint import load_checkpoint
    from starray.train.driver import read_history, run_training

    sets = [a for item in CHEAP for a in ("--set", item)]
    assert main(["tune", "--space", "configs/tune/tiny.yaml", "--name", "S", "--output-dir",
                 str(tmp_path), "--num-samples", "6", *sets]) == 0
    ray.shutdown()
    out = capsys.readouterr().out
    sweep = tmp_path / "S"
    summary = json.loads((sweep / "results.json").read_text())
    assert not summary["errors"], summary["errors"]
    assert summary["leaked_placement_groups"] == 0
    # tiny.yaml: 1 worker x 0.75 CPU + 0.001 per trial, 1 x 0.4 CPU of generators (2 on 2 CPUs)
    cpus = json.loads((sweep / "concurrency.json").read_text())["cpus"]
    assert summary["concurrent_trials"] == min(6, int((cpus - 0.4) // 0.751))
    # the compact live table, not Tune's own status table; the final table as before
    assert "[starray] trials:" in out and "Trial status" not in out, out[-3000:]
    assert "| trial |" in out
    trials = summary["trials"]
    assert len(trials) == 6
    assert any(t["stopped_early"] for t in trials), summary["table"]
    assert summary["total_epochs"] < summary["full_epochs"]
    assert (sweep / "curves.png").stat().st_size > 5000
    # one "best" rule: the trials' best.pt follows the space's metric, and the sweep copies
    # the best trial's best.pt (its epoch is the best val_acc epoch of that trial)
    top = next(t for t in trials if t["trial"] == summary["best_trial"])
    assert load_checkpoint(sweep / "best_checkpoint.pt")["epoch"] == top["best_epoch"]
    assert load_config(sweep / "trials" / top["trial"] / "config.yaml").train.best_metric \
        == "val_acc"
    best = load_config(sweep / "best_config.yaml", [
        f"output_dir={tmp_path}", "name=from-best", "train.epochs=1"])
    run_training(best)
    ray.shutdown()
    assert len(read_history(tmp_path / "from-best")) == 1
    # one W&B run per trial, grouped by the sweep, each finished (ASHA-stopped ones too)
    runs = [r for r in offline_runs(sweep / "trials") if r["run_id"]]
    assert len({r["run_id"] for r in runs}) == len(trials)
    finished = {r["run_id"] for r in runs if r["finished"]}
    assert finished == {r["run_id"] for r in runs}, [r["summary"] for r in runs]
    assert all(r["config"]["wandb"]["group"] == "S" for r in runs)
    # resuming a finished sweep keeps every trial and reruns nothing
    assert main(["tune", "--resume", str(sweep)]) == 0
    ray.shutdown()
    for t in trials:
        assert len(read_history(sweep / "trials" / t["trial"])) == t["epochs"]


SMALL_SWEEP = ["data.stars_per_epoch=128", "data.val_stars=64", "data.batch_size=32",
               "data.generators=1", "data.generator_cpus=0.25", "scaling.num_workers=1",
               "scaling.cpus_per_worker=0.5", "model.d_model=32", "model.cnn_hidden=16"]


@pytest.mark.ray
def test_sigkilled_sweep_resumes_with_asha_state(tmp_path):
    """SIGKILL the driver mid-sweep; the resume keeps stopped trials stopped and judges a
    new trial against the rungs recorded before the kill (Ray alone forgets them)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import ray

    from starray.cli import main
    from starray.train.driver import read_history
    from starray.tune.asha_state import AshaLedger

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "num_samples": 4, "max_concurrent_trials": 1, "metric": "val_loss", "mode": "min",
        "asha": {"max_t": 3, "grace_period": 1, "reduction_factor": 3},
        "space": {"train.lr": {"choice": [3e-3, 1e-8]}}}))
    # in this order: good (to max_t), bad (stopped at rung 1), good, bad; lr 1e-8 leaves
    # the model as initialised, so its val_loss is surely the worse
    points = [{"train.lr": lr} for lr in (3e-3, 1e-8, 3e-3, 1e-8)]
    base = SMALL_SWEEP + [f"output_dir={tmp_path}", "name=sw"]
    code = ("from starray.config import load_config; from starray.tune.sweep import run_sweep;"
            f"run_sweep({str(space)!r}, load_config(None, {base!r}), [], points={points!r})")
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    sweep = tmp_path / "sw"
    ledger = AshaLedger(sweep)

    def histories() -> dict[str, list]:
        return {d.name: read_history(d) for d in sorted((sweep / "trials").glob("*"))}

    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        h = histories() if (sweep / "trials").exists() else {}
        if ledger.stopped() and len(h) >= 3 and 1 <= len(list(h.values())[2]) < 3:
            break
        time.sleep(0.3)
    assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its local Ray must not outlive it
    proc.wait()
    deadline = time.time() + 30
    while _marked(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not _marked(proc.pid), [(p.pid, p.name()) for p in _marked(proc.pid)]
    before = histories()
    rungs_before = ledger.rungs()
    names = sorted(before)
    # a stopped trial may have run (part of) one more epoch before Tune ended it
    assert len(before[names[0]]) == 3 and len(before[names[1]]) in (1, 2), before
    assert ledger.stopped() == {names[1]: 1}
    time.sleep(1)
    assert main(["tune", "--resume", str(sweep)]) == 0
    ray.shutdown()
    after = histories()
    assert len(after) == 4, after
    names = sorted(after)
    assert after[names[0]] == before[names[0]]  # finished: kept as it was
    assert after[names[1]] == before[names[1]]  # stopped by ASHA: not trained again
    assert [h["epoch"] for h in after[names[2]]] == [0, 1, 2]  # continued, nothing redone
    assert after[names[2]][: len(before[names[2]])] == before[names[2]]
    # the new weak trial met the rungs recorded before the kill and was stopped at rung 1
    # (with Ray's restore alone it would find empty rungs and train to max_t)
    assert AshaLedger(sweep).stopped() == {names[1]: 1, names[3]: 1}
    assert len(after[names[3]]) < 3, after[names[3]]
    assert rungs_before == ledger.rungs()[: len(rungs_before)]


def _marked(pid: int) -> list:
    """Processes of the local Ray that the sweep with driver ``pid`` started."""
    import psutil

    from starray.tune.signals import OWNER_ENV

    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(OWNER_ENV, "").startswith(f"{pid}-"):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.ray
def test_sigterm_to_the_sweeps_process_group_leaves_no_ray(tmp_path):
    """`kill -- -PGID` on `starray tune`: it says how to resume and no Ray process stays."""
    import os
    import signal
    import subprocess
    import time

    sets = [a for item in CHEAP for a in ("--set", item)]
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen(_cli("tune", "--space", "configs/tune/tiny.yaml", "--name", "S",
                                 "--output-dir", str(tmp_path), "--num-samples", "2", *sets),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def ours() -> list:
        return _marked(proc.pid)

    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None:
        if list((tmp_path / "S" / "trials").glob("*/metrics.jsonl")):
            break
        time.sleep(0.3)
    assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
    names = {p.name() for p in ours()}
    assert {"gcs_server", "raylet"} <= names, names
    os.killpg(proc.pid, signal.SIGTERM)
    rc = proc.wait(timeout=90)
    text = (tmp_path / "log.txt").read_text()
    # 128 + 15 from our handler, or 1 when Ray's core worker saw its raylet gone (the
    # group's SIGTERM reached it too) and ended the process first: a race inside Ray. The
    # resume line is printed at the signal either way, and no process of Ray stays.
    assert rc in (128 + signal.SIGTERM, 1), text[-3000:]
    assert f"resume with `starray tune --resume {tmp_path / 'S'}`" in text
    deadline = time.time() + 15
    while ours() and time.time() < deadline:
        time.sleep(0.5)
    assert not ours(), [(p.pid, p.name()) for p in ours()]
