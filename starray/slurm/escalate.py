"""Stop a child process group in steps (SIGINT, SIGTERM, SIGKILL) with waits that return early.

Used for the job's driver (``starray train|tune``) when Slurm signals the end of the time
limit or cancels the job. The waits never take ``subprocess.Popen``'s internal lock: the
signal handler that stops the driver runs in the main thread, which may itself be inside
``Popen.wait()`` holding that lock (then ``wait(timeout)`` could only time out, so every
step ran its full length even after the driver had exited). Exit is detected with
``waitid(WNOWAIT)``, which leaves the child for ``Popen`` to reap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass


def exited(pid: int) -> bool:
    """True if child ``pid`` has exited (zombie or already reaped); never reaps it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # reaped already (or not our child)
    return info is not None and info.si_pid == pid


def wait_exit(pid: int, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Wait up to ``timeout_s`` for child ``pid`` to exit; True as soon as it has."""
    deadline = time.monotonic() + timeout_s
    while True:
        if exited(pid):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(poll_s, left))


@dataclass(frozen=True)
class StopReport:
    """What :func:`stop_process_group` did: signals sent and the seconds until exit."""

    signals: tuple[str, ...]
    seconds: float
    exited: bool


def stop_process_group(proc: subprocess.Popen, steps: list[tuple[int, float]],
                       kill_wait_s: float = 5.0) -> StopReport:
    """Send each ``(signal, wait_s)`` of ``steps`` to ``proc``'s process group, then SIGKILL.

    ``proc`` must lead its own process group (``start_new_session=True``), so that the
    signals reach the driver and anything it started, and nothing else. Returns as soon as
    the process has exited; the process is reaped before returning.
    """
    t0 = time.monotonic()
    sent: list[str] = []
    if exited(proc.pid):
        proc.poll()
        return StopReport((), 0.0, True)
    for sig, wait_s in [*steps, (signal.SIGKILL, kill_wait_s)]:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        except PermissionError:  # not a group leader after all: the process alone
            proc.send_signal(sig)
        sent.append(signal.Signals(sig).name)
        if wait_exit(proc.pid, wait_s):
            break
    done = exited(proc.pid)
    if done:
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:  # another frame holds the lock; it reaps
            pass
    try:  # leftovers of the group (children that ignored the driver's exit)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return StopReport(tuple(sent), round(time.monotonic() - t0, 2), done)


def escalation_steps(signal_delay_s: float) -> list[tuple[int, float]]:
    """SIGINT/SIGTERM waits that, with SIGKILL and Ray's teardown, fit in ``signal_delay_s``.

    About 40% of the delay for a graceful stop after SIGINT, 15% after SIGTERM (each at
    least 1 s, at most 30 s / 10 s); the rest is for SIGKILL, tearing Ray down and requeueing.
    """
    return [(signal.SIGINT, max(1.0, min(30.0, 0.4 * signal_delay_s))),
            (signal.SIGTERM, max(1.0, min(10.0, 0.15 * signal_delay_s)))]
