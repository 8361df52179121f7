"""What a person sees while `starray train` runs: a live bar per epoch and one line per epoch.

Progress is a callback chain on rank 0, in the style of Lightning's TQDMProgressBar:

- rank 0 (:class:`WorkerProgress`) pushes "epoch started", throttled step counts, its
  epoch metrics (just before ``ray.train.report``) and notes to a tiny Ray actor
  (:class:`ProgressBoard`, zero CPUs); other ranks are silent;
- the Train controller's :class:`ConsoleCallback` (a ``ray.train.UserCallback``) posts a
  note with the full error when a worker group fails, and whether Ray Train restarts it
  (the controller's ``after_report`` comes up to a health-check interval, 2 s, late, so
  the epoch line is not taken from there);
- the driver's :class:`Console` polls the board from a thread and draws one tqdm bar
  (steps, samples/s, loss, ETA) with the epoch line printed above it.

Ray's own per-report dicts and controller/worker-group logs stay out of the console
(``ray.init(log_to_driver=False)``); ``starray train --verbose`` shows them. The bar is
drawn when stderr is a terminal (``STARRAY_PROGRESS=bar`` forces it, ``off`` hides it);
the epoch lines are printed in every case (also into Slurm log files).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import ray
from ray.train import UserCallback

POLL_S = 0.25  # how often the driver asks the board for news
PUSH_S = 0.5  # how often rank 0 sends its step count


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_epoch_line(m: dict[str, Any], epochs: int, eta_s: float | None = None) -> str:
    """The one line printed per epoch (rank 0's metrics)."""
    line = (f"epoch {int(m['epoch']) + 1}/{epochs}  train_loss {m['train_loss']:.4f}  "
            f"val_loss {m['val_loss']:.4f}  val_acc {m['val_acc']:.3f}  "
            f"cand<1% {m.get('val_cand_within_1pct', float('nan')):.3f}  ")
    if "val_chosen_given_any" in m:  # the chosen candidate, where any candidate is right
        line = line[:-2] + f" (chosen|any {m['val_chosen_given_any']:.3f})  "
    line += f"{m['samples_per_s']:,.0f} samples/s  lr {m['lr']:.2e}"
    if eta_s is not None:
        line += f"  ETA {_fmt_time(eta_s)}"
    return line


@ray.remote(num_cpus=0, max_restarts=-1)
class ProgressBoard:
    """Holds rank 0's position in the epoch and the lines the driver has not printed yet."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.events: list[tuple[str, Any]] = []

    def epoch_start(self, epoch: int, steps: int, samples_per_step: int) -> None:
        """Rank 0 begins an epoch of ``steps`` steps."""
        now = time.time()
        self.state = {"epoch": epoch, "steps": steps, "done": 0, "phase": "train",
                      "samples_per_step": samples_per_step, "t0": now, "t_step": now,
                      "loss": None}
        self.events.append(("epoch_start", dict(self.state)))

    def step(self, done: int, loss: float | None, phase: str = "train") -> None:
        """Rank 0 has finished ``done`` steps of the current epoch."""
        self.state["phase"] = phase
        if done >= 0:
            self.state.update(done=done, t_step=time.time())
        if loss is not None:
            self.state["loss"] = loss

    def report(self, metrics: dict[str, Any]) -> None:
        """Rank 0's metrics of a finished epoch."""
        self.events.append(("epoch_end", metrics))

    def note(self, text: str) -> None:
        """A line for the console (resume, early stop, a worker group that failed)."""
        self.events.append(("note", text))

    def poll(self, cursor: int) -> tuple[dict[str, Any], list[tuple[str, Any]], int]:
        """The current state and the events after ``cursor``."""
        return self.state, self.events[cursor:], len(self.events)


class ConsoleCallback(UserCallback):
    """Runs in the Ray Train controller: tells the console when a worker group fails."""

    def __init__(self, board: Any, max_failures: int) -> None:
        self.board = board
        self.max_failures = max_failures
        self.failures = 0

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]
                        ) -> None:
        """A worker group failed: say which ranks, and whether Ray Train will restart it."""
        self.failures += 1
        ranks = ", ".join(str(r) for r in sorted(worker_exceptions))
        first = worker_exceptions[min(worker_exceptions)]
        left = self.max_failures - self.failures + 1
        then = ("Ray Train restarts the worker group from the last checkpoint"
                if self.max_failures < 0 or left > 0 else "no restarts left")
        # Ray hands the callback the bare exception (its traceback stays in the worker's
        # log; the final error, if any, prints it in full)
        self.board.note.remote(f"[starray] worker rank(s) {ranks} failed ({then}): "
                               f"{type(first).__name__}: {str(first).rstrip()}")


class WorkerProgress:
    """Rank 0's side: cheap, throttled pushes to the board; a no-op elsewhere."""

    def __init__(self, board: Any | None, is_rank0: bool) -> None:
        self.board = board if is_rank0 else None
        self.is_rank0 = is_rank0
        self._last = 0.0

    @property
    def active(self) -> bool:
        """True on rank 0 of a run whose driver draws the console."""
        return self.board is not None

    def epoch_start(self, epoch: int, steps: int, samples_per_step: int) -> None:
        """Start of an epoch's training steps."""
        if self.board is not None:
            self.board.epoch_start.remote(epoch, steps, samples_per_step)
            self._last = time.monotonic()

    def step(self, done: int, loss: Any = None, phase: str = "train") -> None:
        """After each step; sends at most every PUSH_S seconds (``loss`` read only then)."""
        if self.board is None or time.monotonic() - self._last < PUSH_S:
            return
        self._last = time.monotonic()
        self.board.step.remote(done, None if loss is None else float(loss), phase)

    def epoch_end(self, metrics: dict[str, Any]) -> None:
        """Rank 0's metrics of the epoch: the console prints its one line from them."""
        if self.board is not None:
            self.board.report.remote(dict(metrics))

    def phase(self, name: str) -> None:
        """A new phase of the epoch (``validate``), sent at once."""
        if self.board is not None:
            self.board.step.remote(-1, None, name)

    def note(self, text: str) -> None:
        """A console line from rank 0 (printed in the worker's log without a board)."""
        if self.board is not None:
            self.board.note.remote(text)
        elif self.is_rank0:
            print(text, flush=True)


def _bar_wanted() -> bool:
    mode = os.environ.get("STARRAY_PROGRESS", "auto")
    if mode == "off":
        return False
    return mode == "bar" or sys.stderr.isatty()


class Console:
    """The driver's view: polls the board from a thread, draws the bar, prints lines."""

    def __init__(self, epochs: int, bar: bool | None = None) -> None:
        self.epochs = epochs
        self.board = ProgressBoard.remote()
        self.bar_enabled = _bar_wanted() if bar is None else bar
        self._bar: Any = None
        self._epoch: int | None = None
        self._cursor = 0
        self._epoch_times: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="starray-console", daemon=True)

    def __enter__(self) -> Console:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._drain(timeout=5)
        except Exception:  # noqa: BLE001 - Ray may already be down after a failure
            pass
        self._close_bar()
        if ray.is_initialized():
            ray.kill(self.board)

    def callback(self, max_failures: int) -> ConsoleCallback:
        """The Ray Train callback that feeds this console."""
        return ConsoleCallback(self.board, max_failures)

    def write(self, text: str) -> None:
        """Print a line above the bar."""
        from tqdm import tqdm

        with self._lock:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    # ---- drawing -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self._drain(timeout=10)
            except ray.exceptions.RayError:
                continue

    def _drain(self, timeout: float) -> None:
        state, events, self._cursor = ray.get(self.board.poll.remote(self._cursor),
                                              timeout=timeout)
        for kind, payload in events:
            if kind == "epoch_start":
                self._open_bar(payload)
            elif kind == "epoch_end":
                self._epoch_end(payload)
            else:
                self._close_bar()
                self.write(str(payload))
        if state and state.get("epoch") == self._epoch:
            self._update_bar(state)

    def _open_bar(self, state: dict[str, Any]) -> None:
        from tqdm import tqdm

        self._close_bar()
        self._epoch = state["epoch"]
        if not self.bar_enabled:
            return
        with self._lock:
            self._bar = tqdm(total=state["steps"], desc=f"epoch {state['epoch'] + 1}/"
                             f"{self.epochs}", unit="step", leave=False, dynamic_ncols=True,
                             file=sys.stderr, mininterval=0.2,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}<{remaining}{postfix}]")

    def _update_bar(self, state: dict[str, Any]) -> None:
        if self._bar is None:
            return
        with self._lock:
            done = state["done"]
            if done >= 0 and done != self._bar.n:
                self._bar.update(done - self._bar.n)
            elapsed = state["t_step"] - state["t0"]  # frozen while validating
            post = []
            if self._bar.n and elapsed > 0:
                post.append(f"{self._bar.n * state['samples_per_step'] / elapsed:,.0f} samples/s")
            if state.get("loss") is not None:
                post.append(f"loss {state['loss']:.4f}")
            if state.get("phase") != "train":
                post.append(state["phase"])
            self._bar.set_postfix_str(", ".join(post), refresh=True)

    def _close_bar(self) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.close()
            self._bar = None

    def _epoch_end(self, metrics: dict[str, Any]) -> None:
        self._close_bar()
        self._epoch = None
        self._epoch_times.append(float(metrics.get("epoch_time_s", 0.0)))
        left = self.epochs - int(metrics["epoch"]) - 1
        recent = self._epoch_times[-3:]
        self.write(format_epoch_line(metrics, self.epochs, sum(recent) / len(recent) * left))
