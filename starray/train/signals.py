"""Ctrl-C and SIGTERM for commands that start Ray: stop cleanly, say where to resume.

:func:`run_interruptible` runs the work (``trainer.fit()``, ``tuner.fit()``) in a helper
thread, so Ray installs none of its own signal handlers, and waits in the main thread.
On SIGINT or SIGTERM, sent to the process or to its whole process group, it prints the
resume command, stops the local Ray (gcs_server, raylet, dashboard, workers, actors) and
ends the process with exit code 128 + signal (or 1, when a signal to the whole group
killed the raylet and Ray's core worker exits the process first); without Ray running it
raises :class:`Interrupted` instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def _stop_local_ray() -> bool:
    """Kill the Ray processes this process started (gcs_server, raylet, dashboard, agents;
    workers and actors die with their raylet). True if Ray was running here.

    Not ``ray.shutdown()``: after a SIGTERM to the whole process group the raylet is
    already gone and a core worker disconnecting from it aborts (SIGABRT)."""
    import ray
    from ray._private import worker as ray_worker

    if not ray.is_initialized():
        return False
    node = getattr(ray_worker, "_global_node", None)
    if node is not None:  # a driver connected to a cluster (address=...) has no processes
        try:
            node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
        except Exception as e:  # noqa: BLE001 - best effort while stopping
            print(f"[starray] stopping Ray: {e}", file=sys.stderr, flush=True)
    return True


def run_interruptible(fn: Callable[[], T], resume_hint: str, what: str = "run") -> T:
    """Run ``fn()``; on SIGINT/SIGTERM shut Ray down, print ``resume_hint``, raise.

    Parameters
    ----------
    fn : the work; it may start Ray itself (``ray.init`` off the main thread installs no
        signal handler).
    resume_hint : the command that continues the work, e.g.
        ``starray train --resume runs/r1``.
    what : a word for the messages ("training", "sweep").

    Returns ``fn``'s result; re-raises its exception. Must be called from the main thread.
    A second signal while stopping exits at once (``os._exit``). With Ray running, a
    signal ends the process (``os._exit(128 + signum)``) once Ray is down.
    """
    result: dict[str, Any] = {}
    got: list[int] = []
    done = threading.Event()

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            result["error"] = e
        finally:
            done.set()

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        if got:
            os._exit(128 + signum)
        got.append(signum)
        done.set()

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        worker = threading.Thread(target=target, name=f"starray-{what}", daemon=True)
        worker.start()
        while not done.wait(0.5):
            pass
        if got:
            name = signal.Signals(got[0]).name
            message = f"{what} stopped by {name}; resume with: {resume_hint}"
            print(f"\n[starray] {name}: stopping the {what} and shutting Ray down",
                  file=sys.stderr, flush=True)
            print(f"[starray] {message}", file=sys.stderr, flush=True)
            if _stop_local_ray():
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(128 + got[0])  # no atexit: Ray's own shutdown would abort here
            raise Interrupted(got[0], message)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if "error" in result:
        raise result["error"]
    return result["value"]
