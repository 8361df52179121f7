"""Cluster profiles, pre-submission checks, ports, token, rendering: no Slurm needed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from starray.config import ConfigError, from_dict
from starray.slurm import ray_cluster
from starray.slurm.entry import SlurmRayJob, can_resume
from starray.slurm.ports import BLOCK, SLOT, node_ports
from starray.slurm.profile import (
    PROFILE_DIR,
    PartitionInfo,
    ProfileError,
    check_against_cluster,
    check_run_fits,
    load_profile,
    profile_from_dict,
)

CPU_ONLY = {"debug": PartitionInfo("debug", nodes=2, max_cpus=1, gres=["(null)"])}
GPU = {"gpu": PartitionInfo("gpu", nodes=4, max_cpus=32, gres=["gpu:a100:4(S:0-1)"])}


def tiny_run(**scaling):
    data = {"generators": 1, "generator_cpus": 0.25}
    return from_dict({"scaling": {"num_workers": 2, "cpus_per_worker": 0.5, **scaling},
                      "data": data})


@pytest.mark.parametrize("name", sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
def test_shipped_profiles_load(name):
    p = load_profile(name)
    assert p.nodes >= 1 and p.partition


def test_local_profile_matches_this_machine():
    p = load_profile("local", ["nodes=2"])
    assert (p.partition, p.nodes, p.gpus_per_node, p.cpus_per_task) == ("debug", 2, 0, 1)
    check_against_cluster(p, CPU_ONLY)


@pytest.mark.parametrize("overrides, match", [
    (["foo=1"], r"foo: unknown key; allowed: .*partition"),
    (["nodes=0"], r"nodes: must be >= 1, got 0"),
    (["nodes=two"], r"nodes: expected an integer, got 'two'"),
    (["cpus_per_task=1.5"], r"cpus_per_task: expected an integer"),
    (["mem_gb=-1"], r"mem_gb: must be > 0"),
    (["setup=5"], r"setup: expected a list of strings"),
    (["exclusive=maybe"], r"exclusive: expected true or false"),
    (["signal_delay_s=900"], r"signal_delay_s: 900 s is not shorter than time_min"),
    (["ray_temp_root=/a/very/long/path/that/would/break/ray/unix/sockets"], r"ray_temp_root"),
    (["nodes"], r"expected KEY=VALUE"),
])
def test_bad_profile_names_the_key(overrides, match):
    with pytest.raises(ProfileError, match=match):
        load_profile("local", overrides)


def test_profile_errors_are_config_errors():
    # so that `starray` prints them as config errors with exit code 2
    assert issubclass(ProfileError, ConfigError)
    with pytest.raises(ProfileError, match="partition: required key is missing"):
        profile_from_dict({"nodes": 1})
    with pytest.raises(ProfileError, match="not found"):
        load_profile("no-such-cluster")


def test_partition_must_be_known_to_sinfo():
    p = profile_from_dict({"partition": "gpu-big"})
    with pytest.raises(ProfileError, match=r"partition: 'gpu-big' is not known to sinfo; "
                                           r"available: debug"):
        check_against_cluster(p, CPU_ONLY)


def test_gpus_on_cpu_only_partition_fail():
    p = profile_from_dict({"partition": "debug", "gpus_per_node": 1})
    with pytest.raises(ProfileError, match=r"gpus_per_node: 1 GPUs requested but no node of "
                                           r"partition 'debug' has GRES gpu"):
        check_against_cluster(p, CPU_ONLY)


def test_gpu_partition_counts():
    assert GPU["gpu"].max_gpus == 4
    check_against_cluster(profile_from_dict({"partition": "gpu", "gpus_per_node": 4}), GPU)
    with pytest.raises(ProfileError, match="gpus_per_node: 8 requested .* at most 4"):
        check_against_cluster(profile_from_dict({"partition": "gpu", "gpus_per_node": 8}), GPU)
    with pytest.raises(ProfileError, match="nodes: 3 requested but partition 'debug' has 2"):
        check_against_cluster(profile_from_dict({"partition": "debug", "nodes": 3}), CPU_ONLY)
    with pytest.raises(ProfileError, match="cpus_per_task: 4 requested"):
        check_against_cluster(profile_from_dict({"partition": "debug", "cpus_per_task": 4}),
                              CPU_ONLY)


def test_run_must_fit_the_job():
    two = profile_from_dict({"partition": "debug", "nodes": 2, "cpus_per_task": 1})
    check_run_fits(tiny_run(placement="STRICT_SPREAD"), two)  # 2x0.5 + 1x0.25 <= 2
    one = profile_from_dict({"partition": "debug", "nodes": 1, "cpus_per_task": 1})
    with pytest.raises(ProfileError, match=r"scaling.num_workers: .* = 1.25 CPUs, but the job "
                                           r"has nodes 1 x cpus_per_task 1 = 1"):
        check_run_fits(tiny_run(), one)
    with pytest.raises(ProfileError, match="scaling.placement: STRICT_SPREAD"):
        check_run_fits(tiny_run(placement="STRICT_SPREAD", cpus_per_worker=0.25), one)
    with pytest.raises(ProfileError, match="scaling.cpus_per_worker: 2 CPUs per worker"):
        check_run_fits(tiny_run(cpus_per_worker=2.0, num_workers=1),
                       profile_from_dict({"partition": "debug", "nodes": 4}))
    with pytest.raises(ProfileError, match="scaling.use_gpu: .* gpus_per_node=0"):
        check_run_fits(tiny_run(use_gpu=True), two)
    gpu = profile_from_dict({"partition": "gpu", "nodes": 2, "gpus_per_node": 1,
                             "cpus_per_task": 8})
    with pytest.raises(ProfileError, match=r"3 workers x 1 GPUs = 3 GPUs, but the job has "
                                           r"nodes 2 x gpus_per_node 1 = 2"):
        check_run_fits(tiny_run(use_gpu=True, num_workers=3), gpu)


def test_cli_rejects_bad_profile_before_submission(capsys):
    from starray.cli import main

    rc = main(["submit", "train", "--dry-run", "--cluster-set", "nodes=0"])
    assert rc == 2
    assert "nodes: must be >= 1" in capsys.readouterr().err


def test_ports_are_distinct_per_node_and_job():
    a0, a1 = node_ports(7, 0), node_ports(7, 1)
    assert len(set(a0.fixed()) | set(a1.fixed())) == 2 * len(a0.fixed())
    assert a0.max_worker < a1.gcs and a0.max_worker - a0.min_worker >= SLOT - 20
    b0 = node_ports(8, 0)
    assert abs(b0.gcs - a0.gcs) == BLOCK
    assert all(p < 32768 for j in range(50) for p in node_ports(j, 3).fixed())


def test_token_file_is_private(tmp_path):
    path = ray_cluster.write_token(tmp_path / "ray" / "ray_token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert len(first) == 64
    ray_cluster.write_token(path)
    assert path.read_text() != first  # fresh secret per job attempt
    env = ray_cluster.ray_env(path, {"RAY_AUTH_TOKEN": "leaked", "PATH": "/bin"})
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(path)
    assert "RAY_AUTH_TOKEN" not in env


def test_start_command_is_private(tmp_path):
    ports = node_ports(3, 0)
    head = ray_cluster.start_command("ray", ports, "/tmp/ray-3-n0", "10.0.0.1", 4, 0)
    joined = " ".join(head)
    assert "--dashboard-host 127.0.0.1" in joined and "--include-dashboard" not in joined
    assert f"--port {ports.gcs}" in joined and "--temp-dir /tmp/ray-3-n0" in joined
    worker = ray_cluster.start_command("ray", node_ports(3, 1), "/tmp/ray-3-n1", "10.0.0.2",
                                       4, 0, head_address=f"10.0.0.1:{ports.gcs}")
    assert "--head" not in worker and "--dashboard-port" not in worker


def test_teardown_finds_only_this_jobs_processes(tmp_path):
    """Processes are matched by the job's temp dir, children included, others untouched."""
    mine = tmp_path / "ray-11-n0"
    other = tmp_path / "ray-111-n0"
    script = "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c'," \
             "'import time; time.sleep(60)']); time.sleep(60)"
    p1 = subprocess.Popen([sys.executable, "-c", script, f"--temp-dir={mine}"])
    p2 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                           f"--temp-dir={other}"])
    try:
        deadline = time.time() + 10
        while len(ray_cluster.find_ray_processes(str(mine))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        found = ray_cluster.find_ray_processes(str(mine))
        assert p1.pid in found and p2.pid not in found and len(found) == 2
        assert ray_cluster.kill_ray_processes(str(mine), grace_s=2) == 2
        p1.wait(timeout=5)
        assert ray_cluster.find_ray_processes(str(mine)) == []
        assert p2.poll() is None
    finally:
        for p in (p1, p2):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_requeued_job_resumes_from_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "r1"
    job = SlurmRayJob(kind="train", argv=["--name", "r1"], run_dir=str(run), nodes=2,
                      cpus_per_node=1)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert job.driver_argv("h:1")[-5:] == ["train", "--name", "r1", "--address", "h:1"]
    later = job.fresh(attempt=1)
    # no checkpoint yet: a requeued job starts the run afresh
    assert "--resume" not in later.driver_argv("h:1")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    (run / "config.yaml").write_text("name: r1\n")
    assert can_resume("train", run)
    assert later.driver_argv("h:1")[-5:] == ["train", "--resume", str(run), "--address", "h:1"]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued by Slurm itself
    assert "--resume" in job.driver_argv("h:1")


def test_checkpoint_returns_fresh_delayed_submission(monkeypatch):
    job = SlurmRayJob(kind="tune", argv=["--space", "s.yaml"], run_dir="/tmp/x", nodes=1,
                      cpus_per_node=1)
    delayed = job.checkpoint()
    nxt = delayed.function
    assert nxt is not job and nxt.attempt == 1 and nxt._node is None
    assert nxt.argv == job.argv and nxt.kind == "tune"


def test_render_sbatch_from_profile(tmp_path):
    from starray.slurm.template import render_sbatch

    p = load_profile("local", ["nodes=2", "setup=[module load foo]", "time_min=7"])
    text = render_sbatch(p, ["train", "--set", "train.epochs=2", "--name", "rt",
                             "--output-dir", str(tmp_path)])
    assert "#SBATCH --nodes=2" in text and "#SBATCH --time=7" in text
    # USR2 to the tasks (starray.slurm.entry stops, tears down, requeues), not the shell
    assert "#SBATCH --signal=USR2@60" in text and "#SBATCH --requeue" in text
    assert "module load foo\n" in text
    assert f"STARRAY_RUN_DIR=${{STARRAY_RUN_DIR:-{tmp_path}/rt}}" in text
    assert "SIGNAL_DELAY_S=${SIGNAL_DELAY_S:-60}" in text
    # a thin wrapper: one srun of the Python lifecycle, no bring-up or resume rule in bash
    body = [x for x in text.split("# <<< variables\n", 1)[1].splitlines()
            if x.strip() and not x.startswith("#")]
    assert body[0].startswith("eval ") and body[1].startswith("exec srun ")
    assert "-m starray.slurm.entry" in text and "ray start" not in text
    assert "--resume" not in "\n".join(body)
    out = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert out.returncode == 0, out.stderr
    with pytest.raises(ConfigError, match="--address is set by the job"):
        render_sbatch(p, ["train", "--address", "auto"])


def test_render_cli(tmp_path, capsys):
    from starray.cli import main

    out = tmp_path / "job.sbatch"
    rc = main(["slurm", "render", "local", "--cluster-set", "nodes=2", "-o", str(out), "--",
               "train", "--name", "x", "--output-dir", str(tmp_path)])
    assert rc == 0 and "#SBATCH --nodes=2" in out.read_text()
    assert os.access(tmp_path / "x" / "slurm", os.W_OK)


def test_readme_slurm_example_fits_the_local_profile():
    """The README's `starray submit train` command passes the submit-time checks as written
    against the local Slurm (2 nodes x 1 CPU)."""
    import re
    import shlex
    from pathlib import Path

    from starray.slurm.submit import plan_job

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Slurm", 1)[1]
    cmd = re.search(r"^(starray submit train .*?)(?:#|$)", section.replace("\\\n", " "),
                    re.M).group(1)
    argv = shlex.split(cmd)[3:]
    opts = {"--set": [], "--cluster-set": []}
    it = iter(argv)
    for a in it:
        if a in opts:
            opts[a].append(next(it))
        else:
            opts[a] = next(it)
    p = load_profile(opts["--profile"], opts["--cluster-set"])
    plan = plan_job("train", p, overrides=opts["--set"], name=opts["--name"],
                    output_dir="/tmp/starray-readme-check", partitions=CPU_ONLY)
    assert plan.profile.nodes == 2 and plan.job.signal_delay_s == p.signal_delay_s
    # and without its cpus_per_worker the error names the numbers and a value that fits
    sets = [s for s in opts["--set"] if not s.startswith("scaling.cpus_per_worker")]
    with pytest.raises(ProfileError, match=r"= \d+(\.\d+)? CPUs, but the job has nodes 2 x "
                                           r"cpus_per_task 1 = 2 .*scaling.cpus_per_worker="):
        plan_job("train", p, overrides=[*sets, "scaling.cpus_per_worker=1"],
                 name=opts["--name"], output_dir="/tmp/starray-readme-check",
                 partitions=CPU_ONLY)
