"""Supervised candidate choice: match labels on crafted stars, the masked losses, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from starray.config import PRESETS, load_config
from starray.data.dataset import make_batch
from starray.data.features import denormalize_period, normalize_period, star_features
from starray.data.labels import candidate_match
from starray.model.hybrid import CORRECTION_BOUND, build_model
from starray.model.inference import predict_arrays, to_tensors
from starray.train.loop import (
    candidate_loss,
    candidate_match_t,
    compute_loss,
    masked_smooth_l1,
    scaled_lr,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a loaded 2-core machine, two threads contend badly."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _times(days: float = 20.0, per_day: float = 75.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(0, days, 1 / per_day)
    return t[(t % 7) < 5.5] + rng.normal(0, 1e-4, (t % 7 < 5.5).sum())  # two gaps


def test_candidate_match_on_a_crafted_sine_and_eclipsing_binary():
    t = _times()
    rng = np.random.default_rng(1)
    sine = 0.03 * np.sin(2 * np.pi * t / 1.7) + rng.normal(0, 0.005, len(t))
    f = star_features(t, sine, n_candidates=6, harmonics=True)
    m = candidate_match(f.cand_days[None], np.array([1.7]))[0]
    assert m[0] == 1.0 and abs(f.cand_days[0] / 1.7 - 1) < 0.01  # sine: the top peak is P

    period = 2.6  # equal eclipses at phase 0 and 0.5: Lomb-Scargle's peak is at P/2
    phase = (t / period) % 1.0
    dist0, dist1 = np.minimum(phase, 1 - phase), np.abs(phase - 0.5)
    eb = 1 - 0.3 * np.exp(-0.5 * (dist0 / 0.025) ** 2) - 0.25 * np.exp(-0.5 * (dist1 / 0.025) ** 2)
    eb += rng.normal(0, 0.003, len(t))
    f = star_features(t, eb, n_candidates=6, harmonics=True)
    m = candidate_match(f.cand_days[None], np.array([period]))[0]
    assert abs(f.cand_days[0] / (period / 2) - 1) < 0.01  # the best peak: P/2 ...
    # 6 peaks, then P/2 and 2P of the best, then the harmonic-sum search's period and 2x it
    assert len(m) == 10 and m[7] == 1.0 and m[0] == 0.0  # ... so the added 2x matches P
    assert m[9] == 1.0  # the search: eclipses alike, so its sum peaks at P/2; twice it is P
    assert candidate_match(f.cand_days[None], np.array([np.nan]))[0].sum() == 0  # no period

    # narrow eclipses spread the power over many harmonics: the best peak is P/6, and
    # only the harmonic-sum search finds P
    period = 2.1
    phase = (t / period) % 1.0
    dist0, dist1 = np.minimum(phase, 1 - phase), np.abs(phase - 0.5)
    eb = 1 - 0.3 * np.exp(-0.5 * (dist0 / 0.005) ** 2) - 0.15 * np.exp(-0.5 * (dist1 / 0.005) ** 2)
    eb += np.random.default_rng(0).normal(0, 0.01, len(t))
    f = star_features(t, eb)
    m = candidate_match(f.cand_days[None], np.array([period]))[0]
    assert f.cand_days[0] == pytest.approx(period / 6, rel=0.01)
    np.testing.assert_array_equal(m, [0, 0, 0, 0, 0, 0, 0, 1])


def test_candidate_match_tolerance_and_tensor_twin_agree():
    cand = np.array([[1.0, 1.0099, 1.0101, 0.9902, 0.9899]])
    m = candidate_match(cand, np.array([1.0]))
    np.testing.assert_array_equal(m, [[1, 1, 0, 1, 0]])  # |ln(c/p)| <= ln(1.01)
    t = candidate_match_t(torch.tensor(normalize_period(cand), dtype=torch.float32),
                          torch.tensor(normalize_period([1.0]), dtype=torch.float32))
    np.testing.assert_array_equal(t.numpy(), m)
    with pytest.raises(ValueError, match="tol"):
        candidate_match(cand, np.array([1.0]), tol=0)


def test_losses_are_masked_and_their_gradients_finite():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 3.0, 1.0], [1.0, 1.0, 1.0]], requires_grad=True)
    match = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # 2 stars masked
    total, n = candidate_loss(logits, match)
    p = torch.softmax(logits.detach()[0], 0)
    expected = -np.log(float(p[1] + p[2]))
    assert int(n) == 1 and float(total.detach()) == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1:].abs().sum() == 0

    pred = torch.tensor([0.5, 0.2, 0.9], requires_grad=True)
    target = torch.tensor([0.4, float("nan"), 0.9])
    loss, count = masked_smooth_l1(pred, target, mask=torch.tensor([1.0, 1.0, 0.0]))
    assert int(count) == 1 and float(loss.detach()) == pytest.approx(0.5 * 0.1**2 / 0.1)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1:].abs().sum() == 0


def test_candidate_head_outputs_the_chosen_period_and_training_lowers_the_candidate_loss():
    torch.manual_seed(0)
    batch, _ = make_batch(32, 0, 0, 0, n_candidates=6, harmonics=True)
    cfg = load_config(None, ["train.candidate_weight=1.0"])
    model = build_model({**PRESETS["tiny"], "period_head": "candidate", "cand_context": True})
    x = to_tensors(batch, "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    cand = []
    for _ in range(10):
        out = model(x["lc"], x["pgram"], x["folded"], x["cand_logp"])
        loss, parts = compute_loss(out, x, cfg.train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cand.append(float(parts["cand"]))
    assert cand[-1] < 0.7 * cand[0], cand
    gap = (out["p1"] - x["cand_logp"].gather(1, out["chosen"][:, None]).squeeze(1)).abs()
    assert float(gap.max()) <= CORRECTION_BOUND + 1e-6  # a refinement, not a new period

    pred = predict_arrays(model, batch)
    rel = pred["p1_days"] / pred["chosen_days"] - 1
    assert np.all(np.abs(rel) <= 0.031)
    aperiodic = np.isin(pred["pred"], [9, 10, 12, 13])  # burster, dipper, trend, stochastic
    assert np.all(np.isnan(pred["period_days"][aperiodic]))
    assert np.all(np.isfinite(pred["period_days"][~aperiodic]))
    truth = denormalize_period(batch["p1"])
    assert np.isfinite(truth).any()


def test_regress_head_is_the_reference_and_lr_scales_with_the_batch():
    cfg = load_config(None, ["model.period_head=regress", "train.lr_scale_batch=128"])
    assert scaled_lr(cfg.train, 512) == pytest.approx(4 * cfg.train.lr)
    assert scaled_lr(load_config(None).train, 512) == pytest.approx(cfg.train.lr)
    model = build_model({**PRESETS["tiny"], "period_head": "regress"})
    b, _ = make_batch(4, 0, 0, 1)
    x = to_tensors(b, "cpu")
    out = model(x["lc"], x["pgram"], x["folded"], x["cand_logp"])
    assert "p1_correction" not in out
    with pytest.raises(ValueError, match="period_head"):
        build_model({**PRESETS["tiny"], "period_head": "both"})


@pytest.mark.ray
def test_budget_stop_ends_a_run_early_and_logs_the_candidate_loss(tmp_path):
    import ray

    from starray.train.driver import read_history, run_training

    cfg = load_config(None, [
        "data.stars_per_epoch=128", "data.val_stars=64", "data.batch_size=32",
        "data.generators=1", "data.generator_cpus=0.5", "data.n_candidates=6",
        "data.harmonics=true", "train.epochs=6", "train.budget_minutes=0.001",
        "train.lr_scale_batch=32", "scaling.num_workers=1", "wandb.mode=disabled",
        f"output_dir={tmp_path}", "name=budget"])
    try:
        run_training(cfg)
    finally:
        ray.shutdown()
    hist = read_history(tmp_path / "budget")
    assert len(hist) == 1  # the first epoch passed the budget
    h = hist[0]
    assert h["train_cand"] > 0 and 0 <= h["val_chosen_given_any"] <= 1
    assert h["lr"] > 0


def test_report_has_the_candidate_split_the_baseline_row_and_no_period_for_aperiodic(
        tiny_ckpt, tmp_path):
    import json

    from starray.evaluate import EvaluationError, evaluate_checkpoint

    bench = {"per_class": 2, "seed": 12345, "n_candidates": 4, "harmonics": True}
    row = {"model": "gbt", "accuracy": 0.5, "macro_f1": 0.4, "period_within_1pct": 0.3,
           "chosen_given_any": 0.6, "n_train": 512, "n_features": 80}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"baseline": row, "benchmark": bench}))
    m = evaluate_checkpoint(tiny_ckpt, tmp_path / "eval", per_class=2, device="cpu",
                            baseline=path)
    assert m["baseline"]["accuracy"] == 0.5
    burster = next(r for r in m["per_class"] if r["class"] == "burster")
    assert burster["n_periodic"] == 0 and np.isnan(burster["chosen_given_any"])
    assert "reported" in m["periods"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| feature baseline | 50.0% | 40.0% | 30.0% | 60.0% |" in report
    assert "chosen if some" in report
    line = next(x for x in report.splitlines() if x.startswith("| burster |"))
    assert line.count("–") >= 6  # every period column of an aperiodic class
    path.write_text(json.dumps({"baseline": row, "benchmark": {**bench, "seed": 1}}))
    with pytest.raises(EvaluationError, match="seed"):
        evaluate_checkpoint(tiny_ckpt, tmp_path / "eval2", per_class=2, device="cpu",
                            baseline=path)
