"""ASHA's state kept in the sweep folder, so a resumed sweep judges trials as before.

Ray Tune's own restore rebuilds the scheduler empty (ray-project/ray#30838): the rungs'
recorded results are lost, so after an interruption every continuing or new trial meets
empty rungs and is never stopped, and a trial ASHA stopped just before the interruption
may be restarted. Here every rung record and every stop decision is appended, as it
happens, to ``SWEEP_DIR/asha.jsonl``::

    {"trial": "a1b2c_00001", "rung": 1, "value": 0.21, "epochs": 1}
    {"trial": "a1b2c_00001", "stopped": 1}

:class:`PersistentASHA` replays the rung records into its brackets when a sweep resumes,
and the trial function refuses to train a trial the ledger marks as stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

LEDGER = "asha.jsonl"


class AshaLedger:
    """Append-only record of ASHA's rungs and stops (one JSON object a line)."""

    def __init__(self, sweep_dir: str | os.PathLike) -> None:
        self.path = Path(sweep_dir) / LEDGER

    def append(self, record: dict[str, Any]) -> None:
        """Add one record, flushed to disk before returning."""
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> list[dict[str, Any]]:
        """Every complete record (a torn last line from a killed driver is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def rungs(self) -> list[dict[str, Any]]:
        """Rung records: trial, rung (epochs milestone), value (the raw metric)."""
        return [r for r in self.records() if "rung" in r]

    def stopped(self) -> dict[str, int]:
        """Trials ASHA stopped -> the epochs they had when stopped."""
        return {r["trial"]: int(r["stopped"]) for r in self.records() if "stopped" in r}

    def marked(self, key: str) -> set[str]:
        """Trials with a ``{"trial": id, key: true}`` record (e.g. wandb_finished)."""
        return {r["trial"] for r in self.records() if r.get(key)}


class PersistentASHA(ASHAScheduler):
    """ASHA (one bracket) whose rung records and stop decisions live in an AshaLedger."""

    def __init__(self, ledger: AshaLedger, **kwargs: Any) -> None:
        kwargs.setdefault("brackets", 1)
        if kwargs["brackets"] != 1:
            raise ValueError("PersistentASHA keeps one bracket")
        super().__init__(**kwargs)
        self.ledger = ledger
        self._replayed = False

    def _replay(self) -> None:
        """Put the ledger's rung records back into the bracket (once, metric known)."""
        if self._replayed or not self._metric_op:
            return
        rungs = {milestone: recorded for milestone, recorded in self._brackets[0]._rungs}
        for r in self.ledger.rungs():
            if r["rung"] in rungs and r.get("value") is not None:
                rungs[r["rung"]][r["trial"]] = self._metric_op * r["value"]
        self._replayed = True

    def recorded(self) -> dict[int, dict[str, float]]:
        """milestone -> {trial id: metric} as the scheduler holds them now (raw metric)."""
        self._replay()
        return {m: {t: v * self._metric_op for t, v in rec.items()}
                for m, rec in self._brackets[0]._rungs}

    def _log_new(self, trial: Any, result: dict[str, Any], before: set[int]) -> None:
        for milestone, recorded in self._brackets[0]._rungs:
            if trial.trial_id in recorded and milestone not in before:
                self.ledger.append({"trial": trial.trial_id, "rung": milestone,
                                    "value": result.get(self._metric),
                                    "epochs": result.get(self._time_attr)})

    def _held(self, trial: Any) -> set[int]:
        return {m for m, rec in self._brackets[0]._rungs if trial.trial_id in rec}

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """Replay the ledger before the first trial is placed."""
        self._replay()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """ASHA's decision, with new rung records and stops appended to the ledger."""
        self._replay()
        before = self._held(trial)
        action = super().on_trial_result(tune_controller, trial, result)
        self._log_new(trial, result, before)
        done = result.get(self._time_attr, 0)
        if action == TrialScheduler.STOP and done < self._max_t:
            self.ledger.append({"trial": trial.trial_id, "stopped": done})
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]
                          ) -> None:
        """As ASHA, recording the final rung result too."""
        self._replay()
        before = self._held(trial)
        super().on_trial_complete(tune_controller, trial, result)
        self._log_new(trial, result, before)
