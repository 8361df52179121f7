"""Stopping the job's driver, token-auth checks, CI's Slurm rule: no Slurm, no Ray needed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starray.slurm import ray_cluster
from starray.slurm.entry import SlurmRayJob, _Node
from starray.slurm.escalate import escalation_steps, exited, stop_process_group

ROOT = Path(__file__).resolve().parents[1]

# A driver that, like `starray train` on SIGINT, takes a moment to stop, and starts a child
# of its own (which must go with it: the whole process group is signalled).
DRIVER = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(child.pid))
def stop(signum, frame):
    time.sleep(0.3)
    sys.exit(130)
signal.signal(signal.SIGINT, stop if sys.argv[2] == "graceful" else signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[2] == "stubborn" else signal.SIG_DFL)
time.sleep(120)
"""


def _start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int]:
    pid_file = tmp_path / f"child-{mode}"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(pid_file), mode],
                            start_new_session=True)
    deadline = time.time() + 10
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    return proc, int(pid_file.read_text())


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("mode, signals, at_most_s", [
    ("graceful", ("SIGINT",), 2.5),            # stops on SIGINT after 0.3 s
    ("ignores-int", ("SIGINT", "SIGTERM"), 3.5),  # SIGINT ignored, SIGTERM ends it
    ("stubborn", ("SIGINT", "SIGTERM", "SIGKILL"), 5.5),  # only SIGKILL
])
def test_escalation_returns_early_from_a_signal_handler(tmp_path, mode, signals, at_most_s):
    """The stop runs in a signal handler while the main thread waits in Popen.wait(),
    which holds Popen's lock (the old code's waits then always ran their full length)."""
    proc, child = _start(tmp_path, mode)
    reports = []

    def on_alarm(signum, frame):
        reports.append(stop_process_group(proc, [(signal.SIGINT, 1.5), (signal.SIGTERM, 1.5)],
                                          kill_wait_s=2))

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        proc.wait(timeout=30)  # the handler runs inside this wait
        took = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        for pid in (proc.pid, child):
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
    (report,) = reports
    assert report.signals == signals and report.exited
    assert took < at_most_s, f"{mode}: stop took {took:.1f} s ({report})"
    if mode == "graceful":
        assert report.seconds < 1.0, report  # 0.3 s of the driver's own, not the 1.5 s wait
    assert _gone(child), "the driver's child survived: the process group was not signalled"


def test_job_stops_its_driver_and_tears_down_once(tmp_path):
    proc, child = _start(tmp_path, "graceful")
    job = SlurmRayJob(kind="train", argv=[], run_dir=str(tmp_path / "run"), nodes=1,
                      cpus_per_node=1, signal_delay_s=60)
    job._node = _Node(tmp_path, restart=0, tmp=str(tmp_path / "ray-0-n0"), driver=proc)
    t0 = time.monotonic()
    job.stop_for_requeue()
    assert time.monotonic() - t0 < 3 and exited(proc.pid) and _gone(child)
    assert (tmp_path / "done-0").exists() and job._node.down
    fresh = job.fresh(attempt=1)
    assert fresh._node is None and fresh.attempt == 1 and fresh.signal_delay_s == 60


def test_escalation_fits_the_signal_delay():
    for delay in (10, 60, 90, 300):
        waits = sum(w for _, w in escalation_steps(delay)) + 5  # + SIGKILL wait
        assert waits <= 0.75 * delay or delay < 20, (delay, waits)
    assert [s for s, _ in escalation_steps(60)] == [signal.SIGINT, signal.SIGTERM]


def test_token_auth_is_checked(tmp_path):
    token = ray_cluster.write_token(tmp_path / "ray_token")
    env = ray_cluster.ray_env(token, {"PATH": "/bin"}, node_tag="/tmp/ray-1-n0")
    assert env[ray_cluster.NODE_TAG] == "/tmp/ray-1-n0"
    ray_cluster.check_token_auth(env)  # the installed Ray has token auth
    with pytest.raises(ray_cluster.TokenAuthError, match=r"Ray 2.50.0 has no token "
                                                         r"authentication .* ray>=2.52"):
        ray_cluster.check_token_auth(env, ray_version="2.50.0")
    with pytest.raises(ray_cluster.TokenAuthError, match="RAY_AUTH_MODE is 'disabled'"):
        ray_cluster.check_token_auth({**env, "RAY_AUTH_MODE": "disabled"})
    os.chmod(token, 0o644)
    with pytest.raises(ray_cluster.TokenAuthError, match="readable by others"):
        ray_cluster.check_token_auth(env)
    token.unlink()
    with pytest.raises(ray_cluster.TokenAuthError, match="no token in"):
        ray_cluster.check_token_auth(env)


def test_pyproject_requires_ray_with_token_auth():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"ray[default,train,tune]>=2.52"' in text


def test_teardown_finds_renamed_orphans_by_node_tag(tmp_path):
    """A Ray worker renames itself (``ray::IDLE``) and is orphaned when its raylet dies:
    the node tag in its environment still finds it."""
    tag = str(tmp_path / "ray-12-n0")
    env = {**os.environ, ray_cluster.NODE_TAG: tag}
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**os.environ, ray_cluster.NODE_TAG: tag + "0"})
    try:
        found = ray_cluster.find_ray_processes(tag)
        assert orphan.pid in found and other.pid not in found
        assert ray_cluster.kill_ray_processes(tag, grace_s=2) == 1
        orphan.wait(timeout=5)
        assert other.poll() is None
    finally:
        for p in (orphan, other):
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("ci, rc", [("true", 1), ("", 0)])
def test_ci_fails_when_slurm_does_not_start_under_ci(tmp_path, ci, rc):
    """.ci/run with a local-slurm.sh that fails: CI=true stops; elsewhere it goes on."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "local-slurm.sh").write_text("echo no slurm >&2; exit 1\n")
    (tmp_path / "scripts" / "setup-venv.sh").write_text("echo VENV; exit 7\n")
    out = subprocess.run(["bash", ".ci/run"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "CI": ci})
    if rc:
        assert out.returncode == 1 and "VENV" not in out.stdout
        assert "local Slurm did not start (CI=true)" in out.stderr
    else:  # went on to build the venv (stubbed to exit 7)
        assert out.returncode == 7 and "VENV" in out.stdout
        assert "Slurm tests will skip with a reason" in out.stderr
