"""Evaluation: metric functions on hand-computed cases, and the whole report end to end.

The ``tiny_ckpt`` fixture (conftest.py) is a small checkpoint trained in-process.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from starray.evaluate import (
    EvaluationError,
    benchmark_batch,
    candidate_quality,
    confusion_matrix,
    evaluate_checkpoint,
    period_quality,
    precision_recall_f1,
)
from starray.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_confusion_and_prf_hand_computed():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = precision_recall_f1(cm)
    # class 0: P=2/2, R=2/3; class 1: P=1/2, R=1/2; class 2: P=1/2, R=1/1
    np.testing.assert_allclose(m["precision"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(m["recall"], [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(m["f1"], [0.8, 0.5, 2 / 3])
    assert m["support"].tolist() == [3, 2, 1]


def test_prf_classes_never_predicted_or_absent():
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 0]), 3)
    m = precision_recall_f1(cm)
    np.testing.assert_allclose(m["precision"], [2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(m["recall"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(m["f1"], [0.8, 0.0, 0.0])
    with pytest.raises(ValueError, match="y_pred"):
        confusion_matrix(np.array([0]), np.array([3]), 3)


def test_period_quality_hand_computed():
    true = np.array([1.0, 2.0, 4.0, 10.0, np.nan, 5.0])
    pred = np.array([1.005, 2.08, 2.0, 10.0, 3.0, np.nan])
    # relative errors over the 5 stars with a true period: .005, .04, .5, 0, inf (NaN pred)
    q = period_quality(true, pred)
    assert q["n"] == 5
    assert q["within_1pct"] == pytest.approx(2 / 5)
    assert q["within_5pct"] == pytest.approx(3 / 5)
    assert q["median_rel_err"] == pytest.approx(0.04)
    empty = period_quality(np.array([np.nan]), np.array([1.0]))
    assert empty["n"] == 0 and math.isnan(empty["within_1pct"])


def test_candidate_quality_hand_computed():
    true = np.array([2.0, 3.0, 5.0, np.nan])
    cands = np.array([[2.01, 4.0], [1.0, 3.0], [1.0, 2.0], [1.0, 2.0]])
    chosen = np.array([0, 0, 1, 0])
    q = candidate_quality(true, cands, chosen, tol=0.01)
    assert q["n"] == 3
    assert q["chosen_within_tol"] == pytest.approx(1 / 3)
    assert q["any_within_tol"] == pytest.approx(2 / 3)
    assert q["chosen_given_any"] == pytest.approx(1 / 2)


def test_benchmark_is_fixed():
    a, _ = benchmark_batch(1, seed=7)
    b, _ = benchmark_batch(1, seed=7)
    assert a["label"].tolist() == list(range(14))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def evaluated(tiny_ckpt, tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("eval")
    run_dir = tmp_path_factory.mktemp("trainrun")
    lines: list[str] = []
    metrics = evaluate_checkpoint(tiny_ckpt, out, per_class=10, device="cpu",
                                  wandb_run_dir=run_dir, progress=lines.append)
    return metrics, out, run_dir, lines


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("WANDB_API_KEY", raising=False)
    yield mp
    mp.undo()


def test_evaluate_end_to_end(evaluated):
    metrics, out, _, lines = evaluated
    for name in ("report.md", "metrics.json", "confusion.png", "periods.png", "recall.png"):
        assert (out / name).exists(), name
    for png in ("confusion.png", "periods.png", "recall.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, png
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"])
    assert metrics["n_stars"] == 140
    assert np.asarray(metrics["confusion_matrix"]).sum() == 140
    assert [r["support"] for r in metrics["per_class"]] == [10] * 14
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["non_finite_outputs"] == {"probs": 0, "p1_days": 0, "p2_days": 0,
                                             "cand_weights": 0}
    periods = metrics["periods"]
    assert periods["regression"]["n"] == periods["chosen"]["n"] > 50
    assert periods["chosen"]["within_1pct"] <= periods["chosen"]["within_5pct"]
    # the chosen candidate can only be right where some candidate is
    assert periods["candidates"]["chosen_within_tol"] <= periods["candidates"]["any_within_tol"]
    cpu = metrics["speed"]["cpu"]
    assert cpu["latency_batch1_ms"] > 0 and cpu["throughput_samples_per_s"] > 0
    assert metrics["speed"]["peak_rss_mib"] > 50
    report = (out / "report.md").read_text()
    assert "| accuracy |" in report and "eclipsing_binary" in report and "recall.png" in report
    assert any("generating benchmark 140/140" in s for s in lines)


def test_evaluate_logs_to_wandb_offline(evaluated):
    from starray.tracking import read_offline_history

    metrics, _, run_dir, _ = evaluated
    rows = read_offline_history(run_dir)
    accs = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
    assert accs and accs[0] == pytest.approx(metrics["accuracy"])
    assert metrics["wandb_run_id"]


def test_nan_outputs_fail_loudly(tiny_ckpt, tmp_path):
    state = load_checkpoint(tiny_ckpt)
    state["model"]["class_head.bias"][:] = float("nan")
    bad = save_checkpoint(tmp_path / "nan.pt", state)
    with pytest.raises(EvaluationError, match="NaN/Inf"):
        evaluate_checkpoint(bad, tmp_path / "out", per_class=1, device="cpu")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["non_finite_outputs"]["probs"] == 14 * 14


def test_evaluate_cli(tiny_ckpt, tmp_path, capsys):
    from starray.cli import main

    rc = main(["evaluate", str(tiny_ckpt), "--per-class", "1", "--out", str(tmp_path / "ev"),
               "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "generating benchmark 14/14" in out and "accuracy" in out
    assert (tmp_path / "ev" / "report.md").exists()
    assert main(["evaluate", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_pickled_code_in_checkpoint_is_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state = {"model": {}, "epoch": 0, "config": {}, "model_dims": {}, "class_names": [],
             "evil": Evil()}
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        evaluate_checkpoint(path, tmp_path / "out", per_class=1)
    assert not marker.exists()


def test_truncated_checkpoint(tiny_ckpt, tmp_path):
    data = tiny_ckpt.read_bytes()
    path = tmp_path / "trunc.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        evaluate_checkpoint(path, tmp_path / "out", per_class=1)
