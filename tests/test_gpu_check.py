"""The prepared device check runs every stage on CPU (``--cpu --quick``), in the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_quick_writes_the_table_and_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**__import__("os").environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = proc.stdout
    assert "stage 1 ok" in text and "(a) ref/s" in text and "wrote" in text
    assert text.index("stage 1 ok") < text.index("stage 2")  # the short stage runs first
    res = json.loads(out.read_text())
    row = res["rows"][0]
    assert row["preset"] == "tiny" and row["device"] == "cpu"
    assert row["reference_samples_per_s"] > 0 and row["ours_samples_per_s"] > 0
    assert row["flops_per_sample"] > 1e6 and row["peak_memory_mib"] > 50
    assert row["mfu"] is None  # no known peak on CPU
    assert any("Ray Train stage skipped (--quick)" in n for n in res["notes"])
    assert res["env"]["device"] == "cpu"
