"""Ctrl-C / SIGTERM on `starray tune`: stop Tune, shut the local Ray down, say how to resume.

SIGTERM may reach the whole process group (``kill -- -PGID``, some batch systems), so
Ray's own processes die alongside the driver in no set order and some (dashboard,
workers, generator actors) can be left behind. Every process of a local Ray that the
sweep starts carries ``STARRAY_RAY_OWNER`` in its environment (set before ``ray.init``,
inherited by gcs_server, raylet, dashboard and every worker); on a stop signal, after
Tune's graceful stop and ``ray.shutdown()``, whatever still carries the mark is killed.
A watchdog does the same and exits if the graceful path hangs.

The stop message (with the resume command) is printed by a helper thread woken through
``signal.set_wakeup_fd`` the moment the signal arrives: Python runs its own handler only
when the main thread's current call returns, and after a SIGTERM to the whole group Ray's
core worker may see its raylet gone and end the process (exit code 1) before that.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

OWNER_ENV = "STARRAY_RAY_OWNER"


class SweepInterrupted(Exception):
    """The sweep was stopped by a signal; it can be resumed."""

    def __init__(self, signum: int, hint: str) -> None:
        super().__init__(f"{signal.Signals(signum).name}: {hint}")
        self.signum, self.hint = signum, hint


def mark_local_ray() -> str:
    """Mark the local Ray this process is about to start (returns the mark)."""
    mark = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # never inherited: our own Ray only
    os.environ[OWNER_ENV] = mark
    return mark


def marked_processes(mark: str) -> list[int]:
    """PIDs (other than this one) whose environment carries ``OWNER_ENV=mark``."""
    needle = f"{OWNER_ENV}={mark}".encode()
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.append(int(entry.name))
    return out


def kill_marked(mark: str, wait_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL, every process of the marked local Ray; returns how many."""
    pids = marked_processes(mark)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait_s
        while time.time() < deadline and marked_processes(mark):
            time.sleep(0.2)
        if not marked_processes(mark):
            break
    return len(pids)


class StopOnSignal:
    """While active, SIGINT and SIGTERM stop the sweep gracefully (Tune saves its state).

    Inside ``tuner.fit()`` the signal is passed on to Tune as SIGUSR1 (its own graceful
    stop); outside it, :class:`SweepInterrupted` is raised. ``received`` holds the signal.
    """

    def __init__(self, hint: str, mark: str | None, grace_s: float = 20.0) -> None:
        self.hint, self.mark, self.grace_s = hint, mark, grace_s
        self.received: int | None = None
        self.in_tune = False
        self._old: dict[int, Any] = {}
        self._announced = threading.Lock()
        self._wakeup: tuple[int, int] | None = None
        self._old_wakeup = -1

    def __enter__(self) -> StopOnSignal:
        self._tune_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # one handler for both signals
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        self._start_wakeup_reader()
        return self

    def _start_wakeup_reader(self) -> None:
        """Announce a signal from a helper thread at once (not when the main thread next
        runs Python code)."""
        r, w = os.pipe()
        os.set_blocking(w, False)
        try:
            self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: the handler announces
            os.close(r)
            os.close(w)
            return
        self._wakeup = (r, w)
        threading.Thread(target=self._read_wakeup, args=(r,), daemon=True,
                         name="starray-signal").start()

    def _read_wakeup(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 16)
            except OSError:
                return
            if not data:  # the write end was closed by __exit__
                os.close(fd)
                return
            for signum in data:
                if signum in (signal.SIGINT, signal.SIGTERM):
                    self._announce(signum)

    def reinstall(self) -> None:
        """Take the signals back after ``ray.init`` (its core worker installs a C++ SIGTERM
        handler in the driver that aborts the process)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            os.close(self._wakeup[1])  # the reader sees EOF and closes its end
            self._wakeup = None
        if self._tune_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._tune_env

    def _announce(self, signum: int) -> None:
        """Print the stop message and start the watchdog, once (first signal only)."""
        if not self._announced.acquire(blocking=False):
            return
        name = signal.Signals(signum).name
        print(f"\n[starray] {name}: stopping the sweep and its local Ray; {self.hint}",
              flush=True)
        threading.Thread(target=self._watchdog, args=(signum,), daemon=True).start()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second signal: no more waiting
            self._hard_exit(signum)
        self.received = signum
        self._announce(signum)  # already done by the wakeup reader, as a rule
        if self.in_tune and signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune: end the run, save experiment state
        else:
            raise SweepInterrupted(signum, self.hint)

    def _watchdog(self, signum: int) -> None:
        time.sleep(self.grace_s)
        print(f"[starray] the sweep did not stop within {self.grace_s:.0f} s; killing its "
              f"local Ray. {self.hint}", flush=True)
        self._hard_exit(signum)

    def _hard_exit(self, signum: int) -> None:
        if self.mark:
            kill_marked(self.mark, wait_s=2.0)
        os._exit(128 + signum)

    def cleanup(self) -> None:
        """After ``ray.shutdown()``: kill what is left of the marked local Ray."""
        if self.mark:
            kill_marked(self.mark)
