"""Sweeps: a bad space fails before Ray; a real ASHA sweep on a local Ray; resume."""

from __future__ import annotations

import pytest
import yaml

from starray.config import ConfigError, load_config
from starray.tune.space import parse_space

BASE = load_config(None)


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
])
def test_bad_space_fails_before_ray_naming_the_key(space, match):
    import ray

    with pytest.raises(ConfigError, match=match):
        parse_space(space, BASE)
    assert not ray.is_initialized()


def test_shipped_spaces_are_valid():
    for name in ("tiny", "gpu"):
        data = yaml.safe_load(open(f"configs/tune/{name}.yaml"))
        spec = parse_space(data, BASE)
        assert spec.num_samples >= 8


@pytest.mark.ray
def test_asha_sweep_stops_trials_and_best_config_trains(tmp_path):
    import ray

    from starray.cli import main
    from starray.train.driver import read_history, run_training
    from starray.tune.sweep import run_sweep

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "num_samples": 6, "metric": "val_acc", "mode": "max",
        "asha": {"max_t": 4, "grace_period": 1, "reduction_factor": 3},
        "space": {"train.lr": {"loguniform": [1e-3, 1e-2]},
                  "model.d_model_heads": {"choice": [[32, 4], [48, 4]]},
                  "model.cnn_hidden": {"choice": [16, 24]}}}))
    base = load_config(None, [
        "data.stars_per_epoch=192", "data.val_stars=128", "data.batch_size=32",
        "data.generators=1", "data.generator_cpus=0.25", "scaling.num_workers=1",
        "scaling.cpus_per_worker=0.5", "model.n_layers=1", f"output_dir={tmp_path}",
        "name=sweep"])
    summary = run_sweep(str(space), base, [])
    ray.shutdown()
    assert not summary["errors"], summary["errors"]
    assert summary["leaked_placement_groups"] == 0
    trials = summary["trials"]
    assert len(trials) == 6
    assert any(t["stopped_early"] for t in trials), summary["table"]
    assert summary["total_epochs"] < summary["full_epochs"]
    sweep = tmp_path / "sweep"
    assert (sweep / "curves.png").stat().st_size > 5000
    assert (sweep / "best_checkpoint.pt").exists()
    best = load_config(sweep / "best_config.yaml", [
        f"output_dir={tmp_path}", "name=from-best", "train.epochs=1"])
    run_training(best)
    ray.shutdown()
    assert len(read_history(tmp_path / "from-best")) == 1
    # one W&B run per trial, grouped by the sweep (a trial killed by ASHA may leave its
    # offline log unfinished; the ones that ran to max_t are complete)
    from starray.tracking import offline_runs

    runs = [r for r in offline_runs(sweep / "trials") if r["run_id"]]
    finished = [t for t in trials if not t["stopped_early"]]
    assert len({r["run_id"] for r in runs}) >= len(finished) >= 1
    assert all(r["config"]["wandb"]["group"] == "sweep" for r in runs)
    # resuming a finished sweep keeps every trial and reruns nothing
    assert main(["tune", "--resume", str(sweep)]) == 0
    ray.shutdown()
    for t in trials:
        assert len(read_history(sweep / "trials" / t["trial"])) == t["epochs"]


@pytest.mark.ray
def test_interrupted_sweep_resumes_keeping_finished_trials(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import ray

    from starray.cli import main
    from starray.train.driver import read_history

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "num_samples": 3, "max_concurrent_trials": 1,
        "asha": {"max_t": 3, "grace_period": 3, "reduction_factor": 2},
        "space": {"train.lr": {"choice": [2e-3, 3e-3, 4e-3]}}}))
    args = [sys.executable, "-m", "starray.cli", "tune", "--space", str(space), "--name", "sw",
            "--output-dir", str(tmp_path)]
    for item in ["data.stars_per_epoch=128", "data.val_stars=64", "data.batch_size=32",
                 "data.generators=1", "data.generator_cpus=0.25", "scaling.num_workers=1",
                 "scaling.cpus_per_worker=0.5", "model.d_model=32", "model.cnn_hidden=16"]:
        args += ["--set", item]
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    trials = tmp_path / "sw" / "trials"

    def lengths() -> list[int]:
        return sorted((len(read_history(d)) for d in trials.glob("*")), reverse=True)

    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        n = lengths() if trials.exists() else []
        if len(n) >= 2 and n[0] == 3 and n[1] >= 1:
            break
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {d.name: read_history(d) for d in trials.glob("*")}
    finished = [k for k, h in before.items() if len(h) == 3]
    partial = [k for k, h in before.items() if 0 < len(h) < 3]
    assert finished and partial, before
    time.sleep(2)
    assert main(["tune", "--resume", str(tmp_path / "sw")]) == 0
    ray.shutdown()
    after = {d.name: read_history(d) for d in trials.glob("*")}
    assert len(after) == 3 and all(len(h) == 3 for h in after.values()), after
    for k in finished:  # kept as they were
        assert after[k] == before[k]
    for k in partial:  # continued from its checkpoint: no epoch repeated
        assert [h["epoch"] for h in after[k]] == [0, 1, 2]
        assert after[k][: len(before[k])] == before[k]
