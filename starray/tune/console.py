"""A compact live trial table for `starray tune` (instead of Tune's full table).

Tune's own progress output is turned off (``RunConfig(verbose=0)``); this callback
prints one small table when trials start or stop (at most every ``min_gap_s``) and
otherwise every ``interval_s`` while results arrive: trial, state, epochs, the metric,
and only the searched values that differ between trials.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def trial_state(status: str, epochs: int, max_t: int, stopped: bool) -> str:
    """RUNNING, PENDING, ERROR, STOPPED (by ASHA) or DONE."""
    if status == "TERMINATED":
        return "STOPPED" if stopped or epochs < max_t else "DONE"
    return status


def render_table(rows: list[dict[str, Any]], metric: str, mode: str) -> str:
    """Rows (trial, state, epochs, metric value, params) -> an aligned text table.

    Only parameters whose values differ between the rows get a column.
    """
    keys = sorted({k for r in rows for k in r["params"]})
    varying = [k for k in keys if len({_fmt(r["params"].get(k)) for r in rows}) > 1]
    head = ["trial", "state", "epochs", metric, *[k.split(".")[-1] for k in varying]]
    body = [[r["trial"], r["state"], str(r["epochs"]), _fmt(r["value"]),
             *[_fmt(r["params"].get(k)) for k in varying]] for r in rows]
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
             for line in [head, *body]]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    scored = [r for r in rows if r["value"] is not None]
    best = ""
    if scored:
        top = (max if mode == "max" else min)(scored, key=lambda r: r["value"])
        best = f"; best {metric} {top['value']:.4f} ({top['trial']})"
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    return "\n".join([f"[starray] trials: {summary}{best}", *lines])


class TrialTable(Callback):
    """Prints :func:`render_table` for the live trials of a sweep."""

    def __init__(self, metric: str, mode: str, max_t: int, stopped: Any = None,
                 interval_s: float = 30.0, min_gap_s: float = 5.0,
                 stream: TextIO | None = None) -> None:
        self.metric, self.mode, self.max_t = metric, mode, max_t
        self.stopped = stopped or (lambda: {})
        self.interval_s, self.min_gap_s = interval_s, min_gap_s
        self.stream = stream
        self._last = 0.0
        self._changed = self._results = False

    def rows(self, trials: list[Any]) -> list[dict[str, Any]]:
        """One row per Tune trial."""
        stopped = self.stopped()
        out = []
        for t in trials:
            res = t.last_result or {}
            epochs = int(res.get("epochs_done", 0) or 0)
            out.append({"trial": t.trial_id, "epochs": epochs, "value": res.get(self.metric),
                        "state": trial_state(t.status, epochs, self.max_t,
                                             t.trial_id in stopped),
                        "params": dict(t.config)})
        return out

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial started."""
        self._changed = True

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial finished or was stopped."""
        self._changed = True

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial failed."""
        self._changed = True

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        """A trial reported an epoch."""
        self._results = True

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Print when something changed (throttled)."""
        now = time.monotonic()
        due = (self._changed and now - self._last >= self.min_gap_s) or \
            (self._results and now - self._last >= self.interval_s)
        if due and trials:
            print(render_table(self.rows(trials), self.metric, self.mode),
                  file=self.stream or sys.stdout, flush=True)
            self._last, self._changed, self._results = now, False, False
