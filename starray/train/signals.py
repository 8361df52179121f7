"""Ctrl-C and SIGTERM for commands that start Ray: stop cleanly, say where to resume.

:func:`run_interruptible` runs the work (``trainer.fit()``, ``tuner.fit()``) in a helper
thread, so Ray installs none of its own signal handlers, and waits in the main thread.
On SIGINT or SIGTERM, sent to the process or to its whole process group, it shuts the
local Ray down (gcs_server, raylet, dashboard, workers, actors), prints the resume
command and raises :class:`Interrupted`.
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


def _shutdown_ray() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception as e:  # noqa: BLE001 - best effort while stopping
        print(f"[starray] ray.shutdown failed: {e}", file=sys.stderr, flush=True)


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
    A second signal while stopping exits at once (``os._exit``).
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
            print(f"\n[starray] {name}: stopping the {what} and shutting Ray down...",
                  file=sys.stderr, flush=True)
            _shutdown_ray()
            worker.join(timeout=10)
            message = f"{what} stopped by {name}; resume with: {resume_hint}"
            print(f"[starray] {message}", file=sys.stderr, flush=True)
            raise Interrupted(got[0], message)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if "error" in result:
        raise result["error"]
    return result["value"]
