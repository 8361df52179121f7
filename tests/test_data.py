"""Synthetic stars and features: 14 classes, seeded, DESIGN's data path."""

from __future__ import annotations

import numpy as np
import pytest

from starray.data.candidates import peak_periods
from starray.data.dataset import make_batch
from starray.data.features import (
    LightCurveError,
    clean,
    denormalize_period,
    fold,
    fold_batch,
    normalize_period,
    reduce_peaks,
    star_features,
)
from starray.data.synth import CLASS_NAMES, N_CLASSES, SynthSpec, generate_stars, make_star


def test_fourteen_classes_seeded_and_labelled():
    assert N_CLASSES == 14 and len(set(CLASS_NAMES)) == 14
    a = generate_stars(28, seed=3, labels=np.repeat(np.arange(14), 2))
    b = generate_stars(28, seed=3, labels=np.repeat(np.arange(14), 2))
    for s, t in zip(a, b):
        np.testing.assert_array_equal(s.flux, t.flux)
    periodic = {0, 1, 2, 3, 4, 5, 6, 7, 8, 11}
    for s in a:
        assert 5 * 0.6 <= s.time[-1] - s.time[0] <= 30.5
        assert np.all(np.diff(s.time) > 0)
        assert np.isfinite(s.primary) == (s.label in periodic) or s.label == 12
    pulsator = make_star(8, np.random.default_rng(1))
    assert 0.1 <= pulsator.primary <= 2.0  # the strongest mode, not the mean of modes


def test_sampling_density_and_sessions():
    rng = np.random.default_rng(0)
    star = make_star(0, rng, SynthSpec(min_days=10, max_days=10))
    gaps = np.diff(star.time)
    assert 1 <= np.sum(gaps > 0.4) <= 3  # 2-4 sessions
    observed = star.time[-1] - star.time[0] - gaps[gaps > 0.4].sum()
    assert 60 <= len(star.time) / observed <= 90  # about 75 points a day


def test_candidates_find_a_clean_sinusoid():
    t = np.sort(np.random.default_rng(0).uniform(0, 20, 1500))
    flux = 1 + 0.05 * np.sin(2 * np.pi * t / 2.345) + np.random.default_rng(1).normal(0, .005, 1500)
    feats = star_features(t, flux)
    assert abs(feats.cand_days[0] / 2.345 - 1) < 0.002
    assert feats.lc.shape == (1024,) and feats.pgram.shape == (512,)
    # 4 peaks + P/2, 2P, the harmonic-sum search's period and twice it
    assert feats.folded.shape == (8, 200) and feats.pgram.max() == pytest.approx(1.0)


def test_reduce_keeps_narrow_peaks():
    freq = np.linspace(1 / 50, 10, 40000)
    power = np.zeros_like(freq)
    power[12345] = 1.0  # one-sample peak: a stride subsample would lose it
    out = reduce_peaks(freq, power)
    assert out.max() == 1.0 and np.count_nonzero(out == 1.0) == 1


def test_fold_bins_by_phase_and_fills_gaps():
    t = np.linspace(0, 10, 500)
    f = np.sin(2 * np.pi * t / 2.0)
    folded = fold(t, f, 2.0, bins=200)
    phase = (np.arange(200) + 0.5) / 200
    assert np.corrcoef(folded, np.sin(2 * np.pi * phase))[0, 1] > 0.99
    sparse = fold(np.array([0.0, 0.5, 1.0, 1.5]), np.array([1.0, 2.0, 1.0, 2.0]), 2.0, bins=8)
    assert np.all(np.isfinite(sparse))


def test_fold_stats_are_pdm_theta_and_half_correlation_and_tell_p_from_p_over_2():
    from starray.data.features import FOLD_STATS, fold_stats, zscore

    assert FOLD_STATS == ("theta", "half_corr")
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 20, 900))
    y = zscore(np.sin(2 * np.pi * t / 1.3) + rng.normal(0, 0.1, 900))[None]
    periods = np.array([[1.3, 0.65, 1.77, 2.6]])
    folded, stats = fold_stats(t, y, periods)
    np.testing.assert_allclose(folded, fold_batch(t, y, periods))
    for j, period in enumerate(periods[0]):  # Stellingwerf's theta, written out
        k = np.minimum(((((t - t[0]) / period + 0.5) % 1.0) * 200).astype(int), 199)
        n, s1, s2 = (np.bincount(k, w, 200) for w in (None, y[0], y[0] ** 2))
        ok = n > 0
        within = (s2[ok] - s1[ok] ** 2 / n[ok]).sum() / (n.sum() - ok.sum())
        assert stats[0, j, 0] == pytest.approx(within / y[0].var(ddof=1), rel=0.02)
        fz = folded[0, j] - folded[0, j].mean()
        corr = np.corrcoef(fz, np.roll(fz, 100))[0, 1]
        assert stats[0, j, 1] == pytest.approx(corr, abs=1e-9)
    theta, half = stats[0, :, 0], stats[0, :, 1]
    assert theta[0] < 0.05 and theta[1] > 0.9 and theta[2] > 0.9 and theta[3] < 0.05
    assert half[0] < -0.95 and half[3] > 0.95  # a sinusoid at P and at 2P

    def eclipses(depth2: float) -> np.ndarray:
        phase = (t / 2.6) % 1.0
        flux = 1 - 0.3 * np.exp(-0.5 * (np.minimum(phase, 1 - phase) / 0.02) ** 2)
        flux -= depth2 * np.exp(-0.5 * ((phase - 0.5) / 0.02) ** 2)
        return zscore(flux + rng.normal(0, 0.01, 900))[None]

    both = np.array([[2.6, 1.3]])
    _, stats = fold_stats(t, eclipses(0.12), both)  # unlike eclipses: theta tells
    assert stats[0, 0, 0] < 0.5 * stats[0, 1, 0], stats
    _, stats = fold_stats(t, eclipses(0.3), both)  # alike: P/2-periodic, theta cannot tell
    assert stats[0, 0, 0] == pytest.approx(stats[0, 1, 0], rel=0.5)
    assert stats[0, 0, 1] > 0.9 and stats[0, 1, 1] < 0.1, stats  # ... the half correlation can


def test_clean_drops_nonfinite_and_outliers():
    t = np.array([3.0, 1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0])
    f = np.array([1.0, 1.01, 0.99, 1.0, np.inf, 1.0, 50.0, 1.02])
    tc, fc = clean(t, f)  # the default keeps every finite point (DESIGN 3.1)
    assert np.all(np.diff(tc) > 0) and 50.0 in fc and np.all(np.isfinite(fc)) and len(fc) == 6
    tc, fc = clean(t, f, clip_sigma=5.0)  # the option removes the isolated spike
    assert np.all(np.diff(tc) > 0) and 50.0 not in fc and np.all(np.isfinite(fc))


def test_bad_light_curves_raise():
    with pytest.raises(LightCurveError, match="usable points"):
        star_features(np.arange(5.0), np.ones(5))
    with pytest.raises(LightCurveError, match="constant"):
        star_features(np.arange(100.0), np.ones(100))


def test_batches_are_seeded_and_periods_normalized():
    a, _ = make_batch(16, 7, 2, 5)
    b, _ = make_batch(16, 7, 2, 5)
    c, _ = make_batch(16, 7, 3, 5)
    np.testing.assert_array_equal(a["lc"], b["lc"])
    assert not np.array_equal(a["lc"], c["lc"])
    ok = np.isfinite(a["p1"])
    assert np.all((a["p1"][ok] >= 0) & (a["p1"][ok] <= 1))
    np.testing.assert_allclose(denormalize_period(normalize_period(3.3)), 3.3)


def test_peak_candidates_pad_without_noise():
    freq = np.linspace(0.02, 10, 1000)
    power = np.exp(-0.5 * ((freq - 2.0) / 0.05) ** 2)  # one peak: the others repeat it
    cands = peak_periods(freq, power[None], 4)[0]
    np.testing.assert_allclose(cands, 0.5, rtol=1e-3)
    t = np.linspace(0, 10, 300)
    feats = star_features(t, np.sin(t * 3))  # harmonics added: 4 + 4
    assert len(feats.cand_days) == 8
    assert feats.cand_days[4] == pytest.approx(feats.cand_days[0] / 2, rel=1e-6)


def test_seed_spaces_are_disjoint_and_seeds_checked():
    from starray.data.seeds import SPACES, batch_rng, check_seed, entropy

    draws = {space: batch_rng(7, space, 0, 0).random(8).tobytes() for space in SPACES}
    assert len(set(draws.values())) == len(SPACES)
    assert batch_rng(7, "train", 1, 2).random(4).tobytes() == \
        batch_rng(7, "train", 1, 2).random(4).tobytes()
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="non-negative integer"):
            check_seed(bad)
    with pytest.raises(ValueError, match="not one of"):
        entropy(0, "nope", 0, 0)


def test_negative_or_fractional_seed_is_a_config_error():
    from starray.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="seed"):
        from_dict({"seed": -1})
    with pytest.raises(ConfigError, match="seed"):
        from_dict({"seed": 1.5})
