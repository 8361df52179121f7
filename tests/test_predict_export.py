"""Prediction on light-curve files in every format, and the safetensors export."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from starray.cli import main
from starray.data.lightcurve_io import write_lightcurve
from starray.data.synth import CLASS_NAMES, SynthSpec, sample_times
from starray.export import ModelFileError, export_model, load_model
from starray.predict import APERIODIC_CLASSES, predict_files
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
    chosen = np.array([r["candidates_days"][int(np.argmax(r["candidate_weights"]))]
                       for r in rows])
    assert np.all(np.abs(chosen / chosen[0] - 1) < 0.01)
    for r in rows:
        # the periodogram's strongest peak is the true period; the attention picks from these
        assert abs(r["candidates_days"][0] / PERIOD - 1) < 0.01
        assert len(r["candidates_days"]) == len(r["candidate_weights"]) == 8  # 4 + 4 added
        assert sum(r["candidate_weights"]) == pytest.approx(1.0, abs=1e-4)
        assert [c for c, _ in r["top3"]][0] == r["class"] and len(r["top3"]) == 3
        if r["class"] in APERIODIC_CLASSES:  # no period: "-" in the table, null in JSON
            assert r["p1_days"] is r["p2_days"] is r["chosen_days"] is None
        else:
            assert r["p1_days"] > 0 and r["chosen_days"] == pytest.approx(chosen[0], rel=0.01)
    with open(tmp_path / "p.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and table[0]["class"] == rows[0]["class"]
    assert len(table[0]["candidates_days"].split(";")) == 8
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
    assert a[0]["chosen_days"] == (None if b[0]["chosen_days"] is None
                                   else pytest.approx(b[0]["chosen_days"]))
    assert a[0]["candidate_weights"] == pytest.approx(b[0]["candidate_weights"], rel=1e-4)


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


# ----------------------------------------------------------------------------- real-data paths
def test_predict_batch_with_seconds_file(tiny_ckpt, star_files, tmp_path, capsys):  # noqa: F811
    """A CSV whose time column is in seconds fails alone, before its periodogram (which
    would need ~1e9 frequencies); the good files in the same call are classified."""
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 116, 3000)) * 86400.0
    seconds = write_lightcurve(tmp_path / "seconds.csv", t, 1 + 0.05 * np.sin(t / 86400), None,
                               "csv")
    rc = main(["predict", str(tiny_ckpt), str(star_files["csv"]), str(seconds),
               str(star_files["fits"]), "--json", str(tmp_path / "out.json")])
    out, err = capsys.readouterr()
    assert rc == 1 and "2 classified, 1 failed" in out
    assert re.search(r"seconds\.csv: time span 1\.00\de\+07 d exceeds the limit", err), err
    assert "--max-span-days" in err and "in seconds" in err
    saved = json.loads((tmp_path / "out.json").read_text())
    assert [Path(r["file"]).name for r in saved["predictions"]] == ["star.csv", "star.fits"]
    assert "reading" not in err  # the progress bar stays off when stderr is not a terminal


def test_aperiodic_classes_show_dash(tiny_ckpt, star_files, tmp_path):  # noqa: F811
    from starray.predict import NO_SECONDARY_CLASSES, format_table, write_csv

    rows, _ = predict_files(tiny_ckpt, [star_files["csv"]], out_json=tmp_path / "p.json")
    row = dict(rows[0])
    for cls in ("burster", "sinusoidal"):  # the same star, as each kind of class would show
        row.update({"class": cls, "p1_days": None if cls == "burster" else 2.3,
                    "chosen_days": None if cls == "burster" else 2.345, "p2_days": None})
        line = format_table([row], []).splitlines()[1].split()
        assert line[1] == cls
        assert (line[3] == "-") == (cls == "burster") and line[5:7] in (["-", "-"], ["2.3", "-"])
    write_csv([row], tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as fh:
        assert next(csv.DictReader(fh))["p2_days"] == ""
    for r in json.loads((tmp_path / "p.json").read_text())["predictions"]:
        assert (r["chosen_days"] is None) == (r["class"] in APERIODIC_CLASSES)
        if r["class"] in APERIODIC_CLASSES | NO_SECONDARY_CLASSES:
            assert r["p2_days"] is None


def test_predict_warns_out_of_distribution(tiny_ckpt, tmp_path, capsys):  # noqa: F811
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0, 2723, 1196))
    mag = 14 + 1.2 * np.sin(2 * np.pi * t / 117.0) + rng.normal(0, 0.05, t.size)
    path = tmp_path / "lpv.csv"
    path.write_text("hjd,v_mag,v_magerr\n" + "".join(f"{a},{b},0.05\n" for a, b in zip(t, mag)))
    assert main(["predict", str(tiny_ckpt), str(path)]) == 0
    out, err = capsys.readouterr()
    assert "lpv.csv: magnitudes (column 'v_mag') converted to relative flux" in out
    for text in ("span 27", "points per day", "dominant period 11"):
        assert f"warning: {path}: " in err and text in err


def test_inspect_writes_pngs_for_magnitudes_and_fits(star_files, tmp_path, capsys):
    from starray.data.synth import SynthSpec, sample_times

    rng = np.random.default_rng(8)
    t = sample_times(rng, SynthSpec(min_days=12, max_days=12))
    mag = 16 + 0.3 * np.sin(2 * np.pi * t / 0.61) + rng.normal(0, 0.02, t.size)
    mags = tmp_path / "survey.csv"
    mags.write_text("mjd,mag,mag_err\n" + "".join(f"{a},{b},0.02\n" for a, b in zip(t, mag)))
    rc = main(["inspect", str(mags), str(star_files["fits"]), "--out", str(tmp_path / "png")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "magnitudes (column 'mag') converted to relative flux: flux = 10**(-0.4 (mag -" in out
    assert "columns time=mjd, mag=mag, err=mag_err" in out and "warning" not in out
    pngs = [tmp_path / "png" / "survey.png", tmp_path / "png" / "star.png"]
    for png in pngs:
        assert f"wrote {png}" in out and png.stat().st_size > 40_000
    from matplotlib.image import imread

    # 13 x (6.2 + 2.9 x 3 fold rows) inches at 100 dpi
    assert imread(pngs[0]).shape[:2][::-1] == (1300, 1490)


def test_inspect_reports_bad_files(tmp_path, capsys):
    t = np.linspace(0, 116 * 86400, 500)
    bad = write_lightcurve(tmp_path / "sec.csv", t, 1 + np.sin(t), None, "csv")
    rc = main(["inspect", str(bad), str(tmp_path / "nope.tbl"), "--no-plot"])
    _, err = capsys.readouterr()
    assert rc == 1 and "exceeds the limit" in err and "nope.tbl: no such file" in err
    assert main(["inspect", str(bad), "--flux-col", "flux", "--mag-col", "m"]) == 2
    assert main(["inspect", str(bad), "--time-col", "mjd", "--no-plot"]) == 1
    assert "--time-col 'mjd' is not a column (columns: time, flux)" in capsys.readouterr().err


def test_evaluate_progress_is_one_bar(capsys, monkeypatch):
    import io

    from starray.commands.evaluate import BenchmarkProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    bar = BenchmarkProgress()
    for done in [*range(256, 7000, 256), 7000]:
        bar(f"generating benchmark {done}/7000 stars")
    bar("evaluating 7000 stars on cpu ...")
    monkeypatch.undo()
    out, _ = capsys.readouterr()
    assert out == "evaluating 7000 stars on cpu ...\n"  # the bar went to stderr, not stdout
    drawn = term.getvalue()
    assert "generating benchmark" in drawn and "7000/7000" in drawn and drawn.count("\n") <= 1
    quiet = BenchmarkProgress()  # stderr not a terminal (capsys): no bar, one final line
    for done in (256, 512, 700):
        quiet(f"generating benchmark {done}/700 stars")
    quiet.close()
    assert capsys.readouterr() == ("generating benchmark 700/700 stars\n", "")


@pytest.mark.parametrize("command", ["inspect", "config", "predict", "evaluate", "export"])
def test_every_option_has_help(command):
    import argparse

    from starray.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, (command, action.dest)
