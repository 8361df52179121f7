"""What `starray train` shows: one line per epoch, a live bar, no Ray chatter, a summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from starray.report_plots import plot_curves
from starray.train.progress import format_epoch_line

SMALL = ["data.stars_per_epoch=256", "data.val_stars=128", "data.batch_size=32",
         "data.generators=1", "data.generator_cpus=0.5", "train.warmup_epochs=0.5"]
ROW = {"epoch": 0, "train_loss": 2.8, "val_loss": 2.7, "val_acc": 0.1,
       "val_cand_within_1pct": 0.05, "samples_per_s": 150.0, "lr": 1e-3}


def test_epoch_line_and_curves_plot(tmp_path):
    line = format_epoch_line(ROW, 10, eta_s=75)
    assert line.startswith("epoch 1/10  train_loss 2.8000  val_loss 2.7000  val_acc 0.100")
    assert line.endswith("ETA 1m15s")
    rows = [dict(ROW, epoch=e, val_acc=0.1 + 0.05 * e, lr=1e-3 / (e + 1)) for e in range(5)]
    png = plot_curves(rows, tmp_path / "plots" / "curves.png", title="run")
    assert png.stat().st_size > 20_000
    plot_curves(rows[:1], tmp_path / "one.png")  # a first epoch plots too


@pytest.mark.ray
def test_train_console_shows_each_epoch_once_and_no_ray_chatter(tmp_path):
    args = [sys.executable, "-m", "starray.cli", "train", "--output-dir", str(tmp_path),
            "--name", "console", "--set", "train.epochs=2"]
    for item in SMALL:
        args += ["--set", item]
    env = {**os.environ, "STARRAY_PROGRESS": "bar", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=400)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    segments = [s for s in re.split(r"[\r\n]", text) if s.strip()]
    for n in (1, 2):
        lines = [s for s in segments if s.startswith(f"epoch {n}/2  train_loss")]
        assert len(lines) == 1, f"epoch {n} line {len(lines)} times:\n{text[-3000:]}"
    # the bar drew steps, throughput and ETA (tqdm's [elapsed<remaining]) inside an epoch
    assert any(re.match(r"epoch 1/2: +\d+%\|.*\| \d/4 \[\d\d:\d\d<", s) for s in segments)
    assert any("samples/s" in s and "%|" in s for s in segments)
    for chatter in ("TrainingReport(", "Reporting training result", "TrainController",
                    "RayTrainWorker", "Started training worker group", "Token authentication"):
        assert chatter not in text, f"{chatter!r} reached the console:\n{text[-3000:]}"
    assert re.search(r"best val_acc \d\.\d{4} \(epoch \d, max\), final \d\.\d{4}, 2 "
                     r"epochs", out.stdout)
    assert "best_checkpoint" in out.stdout
    run = tmp_path / "console"
    assert (run / "plots" / "curves.png").stat().st_size > 20_000  # written each epoch
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [0, 1]
