"""Prediction on light-curve files in every format, and the safetensors export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from starray.cli import main
from starray.data.lightcurve_io import write_lightcurve
from starray.data.synth import CLASS_NAMES, SynthSpec, sample_times
from starray.export import ModelFileError, export_model, load_model
from starray.predict import predict_files
from starray.train.checkpoint import CheckpointError

PERIOD = 2.345


@pytest.fixture(scope="module")
def star_files(tmp_path_factory) -> dict[str, Path]:
    """One sinusoid (P = 2.345 d, amp 0.05, noise 0.005) in four formats + a broken file."""
    d = tmp_path_factory.mktemp("stars")
    rng = np.random.default_rng(11)
    t = sample_times(rng, SynthSpec(min_days=18, max_days=18))
    f = 1 + 0.05 * np.sin(2 * np.pi * t / PERIOD + 0.3) + rng.normal(0, 0.005, t.size)
    e = np.full(t.size, 0.005)
    files = {
        "ipac": write_lightcurve(d / "star_ipac.tbl", t, f, e, "tbl"),
        "plain": write_lightcurve(d / "star_plain.tbl", t, f, e, "plain"),
        "csv": write_lightcurve(d / "star.csv", t, f, e, "csv"),
        "fits": write_lightcurve(d / "star.fits", t, f, e, "fits"),
    }
    bad = d / "broken.tbl"
    bad.write_text("# time flux err\n" + "\n".join(f"{i} 1.0 0.1" for i in range(30))
                   + "\n31 oops 0.1\n")
    files["broken"] = bad
    return files


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory) -> Path:  # noqa: F811
    stem = tmp_path_factory.mktemp("export") / "starray-tiny"
    export_model(tiny_ckpt, stem, upload=False)
    return stem


def test_same_answer_from_every_format(tiny_ckpt, star_files, tmp_path):  # noqa: F811
    good = [star_files[k] for k in ("ipac", "plain", "csv", "fits")]
    rows, failures = predict_files(tiny_ckpt, good, out_csv=tmp_path / "p.csv",
                                   out_json=tmp_path / "p.json", plot_dir=tmp_path / "plots")
    assert failures == []
    assert [r["format"] for r in rows] == ["ipac", "plain", "csv", "fits"]
    assert len({r["class"] for r in rows}) == 1
    assert all(r["class"] in CLASS_NAMES for r in rows)
    chosen = np.array([r["chosen_days"] for r in rows])
    assert np.all(np.abs(chosen / chosen[0] - 1) < 0.01)
    for r in rows:
        # the periodogram's strongest peak is the true period; the attention picks from these
        assert abs(r["candidates_days"][0] / PERIOD - 1) < 0.01
        assert len(r["candidates_days"]) == len(r["candidate_weights"]) == 6  # 4 + P/2, 2P
        assert sum(r["candidate_weights"]) == pytest.approx(1.0, abs=1e-4)
        assert [c for c, _ in r["top3"]][0] == r["class"] and len(r["top3"]) == 3
        assert r["p1_days"] > 0 and r["p2_days"] > 0
    with open(tmp_path / "p.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and table[0]["class"] == rows[0]["class"]
    assert len(table[0]["candidates_days"].split(";")) == 6
    saved = json.loads((tmp_path / "p.json").read_text())
    assert len(saved["predictions"]) == 4 and saved["failures"] == []
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 4  # distinct names even for equal stems
    assert all(p.stat().st_size > 15_000 for p in pngs)


def test_exported_model_predicts_like_checkpoint(tiny_ckpt, exported, star_files):  # noqa: F811
    a, _ = predict_files(tiny_ckpt, [star_files["csv"]])
    b, _ = predict_files(exported.with_suffix(".safetensors"), [star_files["csv"]])
    assert a[0]["class"] == b[0]["class"]
    assert a[0]["probability"] == pytest.approx(b[0]["probability"], rel=1e-5)
    assert a[0]["chosen_days"] == pytest.approx(b[0]["chosen_days"])


def test_predict_cli_reports_and_skips_bad_file(tiny_ckpt, star_files, tmp_path,  # noqa: F811
                                               capsys):
    rc = main(["predict", str(tiny_ckpt), str(star_files["csv"]), str(star_files["broken"]),
               str(tmp_path / "missing.tbl"), "--json", str(tmp_path / "out.json")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "star.csv" in out and "1 classified, 2 failed" in out
    assert "broken.tbl" in err and "non-numeric value 'oops'" in err and "line 32" in err
    assert "missing.tbl: no such file" in err
    saved = json.loads((tmp_path / "out.json").read_text())
    assert [Path(f["file"]).name for f in saved["failures"]] == ["broken.tbl", "missing.tbl"]
    assert main(["predict", str(tiny_ckpt), str(star_files["fits"])]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "nope.pt"), str(star_files["fits"])]) == 2
    with pytest.raises(SystemExit) as info:  # no FILE: argparse usage error
        main(["predict", str(tiny_ckpt)])
    assert info.value.code == 2


def test_export_files_and_load(exported, tiny_ckpt):  # noqa: F811
    import starray

    meta = json.loads(exported.with_suffix(".json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES)
    norm = meta["normalization"]
    assert (norm["period_min_days"], norm["period_max_days"]) == (0.1, 50.0)
    assert (norm["lc_length"], norm["pgram_bins"], norm["fold_bins"],
            norm["n_candidates"]) == (1024, 512, 200, 4)
    assert len(meta["sha256"]) == 64
    model, meta2 = starray.load_model(exported)  # the lazy top-level alias
    assert not model.training and meta2["sha256"] == meta["sha256"]
    ckpt = torch.load(tiny_ckpt, weights_only=True)["model"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ckpt[k])


def test_export_cli(tiny_ckpt, tmp_path, capsys):  # noqa: F811
    assert main(["export", str(tiny_ckpt), str(tmp_path / "m"), "--no-upload"]) == 0
    assert (tmp_path / "m.safetensors").exists() and (tmp_path / "m.json").exists()
    assert main(["export", str(tmp_path / "none.pt"), str(tmp_path / "m2")]) == 2


def _copy_export(exported: Path, dest: Path) -> Path:
    stem = dest / "copy"
    stem.with_suffix(".safetensors").write_bytes(exported.with_suffix(".safetensors")
                                                 .read_bytes())
    stem.with_suffix(".json").write_text(exported.with_suffix(".json").read_text())
    return stem


def test_truncated_safetensors(exported, tmp_path):
    stem = _copy_export(exported, tmp_path)
    w = stem.with_suffix(".safetensors")
    w.write_bytes(w.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match=r"copy\.safetensors.*truncated or was modified"):
        load_model(stem)


def test_tampered_safetensors(exported, tmp_path):
    stem = _copy_export(exported, tmp_path)
    w = stem.with_suffix(".safetensors")
    data = bytearray(w.read_bytes())
    data[-100] ^= 0xFF  # one weight byte
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(stem)


def test_shapes_checked_even_with_matching_hash(exported, tmp_path):
    stem = _copy_export(exported, tmp_path)
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["model_dims"]["emb_dim"] = 32
    stem.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not fit model_dims"):
        load_model(stem)


def test_corrupt_header_with_matching_hash(exported, tmp_path):
    from starray.export import sha256_file

    stem = _copy_export(exported, tmp_path)
    w = stem.with_suffix(".safetensors")
    w.write_bytes(b"\xff" * 8 + w.read_bytes()[8:])  # absurd header length
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["sha256"] = sha256_file(w)
    stem.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="cannot read safetensors"):
        load_model(stem)


def test_missing_files(tmp_path):
    with pytest.raises(ModelFileError, match="no such model description"):
        load_model(tmp_path / "absent")


def test_pickled_code_never_runs_in_predict(tmp_path, star_files):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "epoch": 0, "config": {}, "model_dims": {}, "class_names": [],
                "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        predict_files(path, [star_files["csv"]])
    with pytest.raises(CheckpointError):
        export_model(path, tmp_path / "out")
    assert not marker.exists()


def test_truncated_checkpoint_in_predict(tiny_ckpt, tmp_path, star_files):  # noqa: F811
    path = tmp_path / "half.pt"
    path.write_bytes(tiny_ckpt.read_bytes()[:4000])
    with pytest.raises(CheckpointError, match="half.pt"):
        predict_files(path, [star_files["csv"]])
