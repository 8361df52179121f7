"""The batch-first data library (issue 10): exact batched periodograms, cleaning that
keeps the signal, harmonics added, candidate quality against an oracle, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from starray.data.cleaning import clean, spike_mask
from starray.data.dataset import BATCH_KEYS, make_batch
from starray.data.features import batch_features, fold, star_features, zscore
from starray.data.labels import candidate_match
from starray.data.periodogram import freq_grid, lomb_scargle_batch
from starray.data.synth import CLASS_NAMES, N_CLASSES, PERIODIC, SynthSpec, ar1, synth_batch

EB = CLASS_NAMES.index("eclipsing_binary")


def test_batched_periodogram_matches_astropy_slow_on_200_stars():
    from astropy.timeseries import LombScargle

    rng = np.random.default_rng(0)
    worst = 0.0
    for _part in range(4):  # 4 cadence templates x 50 stars (short spans keep "slow" quick)
        sb = synth_batch(rng.integers(0, N_CLASSES, 50), rng, SynthSpec(min_days=5, max_days=7))
        grid = freq_grid(float(sb.time[-1] - sb.time[0]))
        y = zscore(sb.flux)
        power = lomb_scargle_batch(sb.time, y, grid)
        for i in range(len(y)):
            exact = LombScargle(sb.time, y[i]).power(grid.freq, method="slow")
            worst = max(worst, float(np.abs(power[i] - exact).max()))
    assert worst <= 1e-3, worst


def test_batch_keys_shapes_and_candidate_match():
    batch, redraws = make_batch(64, 3, 0, 0)
    assert set(batch) == set(BATCH_KEYS) and redraws == 0
    c = 4 + 4  # after the 4 peaks: P/2, 2P, the harmonic-sum search's period and twice it
    assert batch["lc"].shape == (64, 1, 1024) and batch["pgram"].shape == (64, 1, 512)
    assert batch["folded"].shape == (64, c, 200) and batch["cand_match"].shape == (64, c)
    assert batch["cand_match"].dtype == np.float32
    np.testing.assert_allclose(batch["cand_days"][:, 4], batch["cand_days"][:, 0] / 2, rtol=1e-6)
    # 2P: moved by its harmonic-sum refinement by at most 5% in frequency
    np.testing.assert_allclose(batch["cand_days"][:, 5], batch["cand_days"][:, 0] * 2, rtol=0.06)
    # the search's period and twice it, each refined within 2% of the search's peak
    ratio = batch["cand_days"][:, 7] / batch["cand_days"][:, 6]
    assert np.all((ratio > 1.91) & (ratio < 2.09)), ratio
    no_period = ~np.isfinite(batch["p1"])
    assert no_period.any() and np.all(batch["cand_match"][no_period] == 0)
    for key in BATCH_KEYS:
        if key not in ("p1", "p2"):
            assert np.all(np.isfinite(batch[key])), key
    assert make_batch(8, 3, 0, 0, harmonics=False)[0]["cand_days"].shape == (8, 4)
    m = candidate_match(np.array([[1.0, 2.0, 1.0099], [1.0, 1.0, 1.0]]), np.array([1.0, np.nan]))
    np.testing.assert_array_equal(m, [[1, 0, 1], [0, 0, 0]])
    assert candidate_match(np.array([[0.9901]]), np.array([1.0]))[0, 0] == 1  # log-symmetric


def test_same_seed_same_batch_other_index_other_stars_spaces_disjoint():
    a, _ = make_batch(32, 5, 1, 2)
    b, _ = make_batch(32, 5, 1, 2)
    for key in BATCH_KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    seen = {}
    for space in ("train", "fixed", "validation", "benchmark"):
        for index in (0, 1):
            batch, _ = make_batch(32, 5, 0, index, space=space)
            seen[(space, index)] = {row.tobytes() for row in batch["lc"]}
    keys = list(seen)
    for i, k1 in enumerate(keys):  # no star appears in two batches or two spaces
        for k2 in keys[i + 1:]:
            assert not seen[k1] & seen[k2], (k1, k2)


def test_vectorized_ar1_is_the_recursion():
    phi, amp = np.array([0.95, 0.99, 0.97]), np.array([0.02, 0.05, 0.08])
    x = ar1(phi, amp, 700, np.random.default_rng(9), block=64)
    e_rng = np.random.default_rng(9)
    e = e_rng.normal(0.0, 1.0, (3, 700)) * (amp * np.sqrt(1 - phi**2))[:, None]
    prev = e_rng.normal(0.0, 1.0, 3) * amp / phi
    ref = np.empty((3, 700))
    for i in range(700):
        prev = phi * prev + e[:, i]
        ref[:, i] = prev
    np.testing.assert_allclose(x, ref, rtol=1e-9, atol=1e-12)


def test_default_cleaning_removes_no_point_of_1000_stars_per_class():
    rng = np.random.default_rng(11)
    for label in range(N_CLASSES):
        for _ in range(4):  # 4 cadence templates x 250 stars
            sb = synth_batch(np.full(250, label), rng)
            for row in sb.flux:
                t, f = clean(sb.time, row)
                assert len(t) == len(sb.time), CLASS_NAMES[label]


def test_clip_option_removes_isolated_spikes_and_keeps_eclipse_minima():
    rng = np.random.default_rng(12)
    spec = SynthSpec()
    caught = injected = 0
    for label in range(N_CLASSES):
        sb = synth_batch(np.full(40, label), rng, spec)
        flux = sb.flux.copy()
        m = len(sb.time)
        idx = np.stack([rng.choice(np.arange(2, m - 2), 5, replace=False) for _ in range(40)])
        sign = rng.choice([-1.0, 1.0], idx.shape)
        np.put_along_axis(flux, idx, np.take_along_axis(flux, idx, 1) + sign * 10 * spec.noise, 1)
        mask = spike_mask(flux, 5.0)
        caught += int(np.take_along_axis(mask, idx, 1).sum())
        injected += idx.size
    assert caught / injected >= 0.95, caught / injected
    sb = synth_batch(np.full(1000, EB), rng, spec)
    deepest = np.argmin(sb.flux, axis=1)
    kept = ~spike_mask(sb.flux, 5.0)[np.arange(1000), deepest]
    assert kept.mean() >= 0.95, kept.mean()
    t, f = clean(sb.time, sb.flux[0], clip_sigma=5.0)  # the per-star path agrees
    assert len(t) == len(sb.time) - int(spike_mask(sb.flux[:1], 5.0).sum())


def test_star_features_is_the_batch_code_and_folds_at_the_candidates():
    rng = np.random.default_rng(2)
    sb = synth_batch(np.array([0, 7, 9]), rng)
    out = batch_features(sb.time, sb.flux, single=False)  # star_features is exact (float64)
    one = star_features(sb.time, sb.flux[1])
    np.testing.assert_allclose(one.cand_days, out["cand_days"][1], rtol=1e-6)
    np.testing.assert_allclose(one.folded, out["folded"][1], atol=1e-5)
    fz = zscore(sb.flux[1])
    np.testing.assert_allclose(fold(sb.time, fz, float(out["cand_days"][1, 2])),
                               out["folded"][1, 2], atol=1e-5)


def test_candidates_match_a_dense_oracle_small():
    from starray.data.oracle import candidate_quality_report

    report = candidate_quality_report(60, seed=1, batch=60)
    hits = sum(r["oracle_hits"] for r in report.values())
    both = sum(r["candidate_where_oracle"] * r["oracle_hits"] for r in report.values())
    assert set(report) == set(PERIODIC) and hits > 200
    assert both / hits >= 0.97, report
    for label, r in report.items():  # small samples: a looser bound per class
        assert r["candidate_where_oracle"] >= 0.9, (CLASS_NAMES[label], r)


def test_clip_sigma_config_and_batch_option():
    from starray.config import ConfigError, from_dict, validate

    assert from_dict({}).data.clip_sigma is None and from_dict({}).data.harmonics is True
    assert from_dict({"data": {"clip_sigma": 6}}).data.clip_sigma == 6.0
    with pytest.raises(ConfigError, match="data.clip_sigma"):
        validate(from_dict({"data": {"clip_sigma": -1}}))
    a, _ = make_batch(16, 2, 0, 0)
    b, _ = make_batch(16, 2, 0, 0, clip_sigma=8.0)  # synthetic stars have no spikes
    assert np.mean(np.all(a["lc"] == b["lc"], axis=(1, 2))) >= 0.8


def test_harmonic_sum_refine_pins_a_narrow_eclipse_period():
    """A few cycles of narrow eclipses: 2x the best Lomb-Scargle peak can miss the period by
    over 1%; the harmonic sum pins it (its many harmonics are much narrower peaks)."""
    from starray.data.candidates import harmonic_sum_refine
    from starray.data.features import zscore
    from starray.data.periodogram import freq_grid, lomb_scargle_batch

    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0, 7.0, 500))
    period = 2.9  # ~2.4 cycles
    phase = (t / period + 0.3) % 1.0
    flux = 1 - 0.3 * np.exp(-0.5 * (np.minimum(phase, 1 - phase) / 0.01) ** 2)
    flux -= 0.2 * np.exp(-0.5 * ((phase - 0.5) / 0.01) ** 2)
    flux += rng.normal(0, 0.005, len(t))
    grid = freq_grid(float(t[-1] - t[0]))
    power = lomb_scargle_batch(t, zscore(flux)[None], grid, single=False)
    start = np.array([1.035 / period])  # 3.5% off, as a coarse multiple may be
    f = harmonic_sum_refine(power, grid, start)
    assert abs(1 / f[0] / period - 1) < 0.003


def test_datagen_benchmark_prints_its_table_and_writes_json(tmp_path):
    """benchmarks/datagen.py as a user runs it, small: the pipeline rows side by side."""
    import json
    import subprocess
    import sys

    out = tmp_path / "datagen.json"
    proc = subprocess.run([sys.executable, "benchmarks/datagen.py", "--batch", "16",
                           "--batches", "2", "--reference-stars", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(b) starray batches" in proc.stdout and "one template per batch" in proc.stdout
    res = json.loads(out.read_text())
    for key in ("reference", "batch", "batch_one_template"):
        assert res[key]["stars_per_s_cpu"] > 0
    assert res["batch"]["stars"] == res["batch_one_template"]["stars"] == 32
