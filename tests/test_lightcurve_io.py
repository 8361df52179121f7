"""Reading light-curve files: format sniffing, column names, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from starray.data.lightcurve_io import (
    LightCurveReadError,
    read_lightcurve,
    sniff_format,
    write_lightcurve,
)


@pytest.fixture(scope="module")
def curve():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 12, 300))
    f = 1 + 0.05 * np.sin(2 * np.pi * t / 2.345) + rng.normal(0, 0.005, t.size)
    e = np.full(t.size, 0.005)
    return t, f, e


@pytest.mark.parametrize("fmt,sniffed", [("tbl", "ipac"), ("ipac", "ipac"), ("plain", "plain"),
                                         ("csv", "csv"), ("ecsv", "ecsv"), ("fits", "fits")])
@pytest.mark.parametrize("with_err", [True, False])
def test_round_trip(tmp_path, curve, fmt, sniffed, with_err):
    t, f, e = curve
    path = write_lightcurve(tmp_path / "star.dat", t, f, e if with_err else None, fmt)
    lc = read_lightcurve(path)
    assert lc.fmt == sniffed and sniff_format(path) == sniffed
    assert lc.name == "star"
    np.testing.assert_allclose(lc.time, t, rtol=1e-9)
    np.testing.assert_allclose(lc.flux, f, rtol=1e-9)
    if with_err:
        np.testing.assert_allclose(lc.flux_err, e, rtol=1e-9)
    else:
        assert lc.flux_err is None


def test_extension_is_not_trusted(tmp_path, curve):
    t, f, e = curve
    plain_tbl = write_lightcurve(tmp_path / "sample.tbl", t, f, e, "plain")
    ipac_txt = write_lightcurve(tmp_path / "archive.txt", t, f, e, "tbl")
    fits_csv = write_lightcurve(tmp_path / "odd.csv", t, f, e, "fits")
    assert read_lightcurve(plain_tbl).fmt == "plain"
    assert read_lightcurve(ipac_txt).fmt == "ipac"
    assert read_lightcurve(fits_csv).fmt == "fits"


def _rows(n=25, start=0.0):
    return [(start + 0.1 * i, 1.0 + 0.01 * (i % 5), 0.002) for i in range(n)]


def test_reference_style_plain_tbl(tmp_path):
    """The reference's sample data: whitespace columns under # comment lines."""
    text = "# TIC 12345 sector 7\n# time flux error\n" + "".join(
        f"  {t:.4f}\t{f:.5f}   {e}\n" for t, f, e in _rows()) + "\n"
    path = tmp_path / "ref.tbl"
    path.write_text(text)
    lc = read_lightcurve(path)
    assert lc.fmt == "plain" and len(lc.time) == 25
    assert lc.time[1] == pytest.approx(0.1) and lc.flux_err[0] == pytest.approx(0.002)


def test_ipac_fixed_width_with_nulls_and_extra_columns(tmp_path):
    lines = ["\\fixlen = T", "\\ comment line",
             "|   MJD      |  mag   |   flux    |  flux_err  |",
             "|   double   | double |  double   |  double    |",
             "|   days     |        |           |            |",
             "|   null     |  null  |  -999     |  null      |"]
    for i, (t, f, e) in enumerate(_rows(24)):
        flux = "-999" if i == 3 else f"{f:.5f}"
        err = "" if i == 5 else f"{e}"  # blank value: fixed-width slicing
        lines.append(f" {t:12.4f} {12.5:8.2f} {flux:>11} {err:>12} ")
    path = tmp_path / "archive.tbl"
    path.write_text("\n".join(lines) + "\n")
    lc = read_lightcurve(path)
    assert lc.fmt == "ipac" and len(lc.time) == 24
    assert np.isnan(lc.flux[3]) and np.isnan(lc.flux_err[5])
    assert lc.flux[0] == pytest.approx(1.0)  # picked "flux", not "mag"


@pytest.mark.parametrize("header,expect_err", [
    ("MJD,Flux,Flux_Err", True), ("BJD,PDCSAP_FLUX,sigma", True), ("t,f", False),
    ("jd,sap_flux,error,extra", True),
])
def test_csv_column_names(tmp_path, header, expect_err):
    ncol = len(header.split(","))
    body = "".join(",".join(str(v) for v in (row + (7.0,))[:ncol]) + "\n" for row in _rows())
    path = tmp_path / "x.csv"
    path.write_text(header + "\n" + body)
    lc = read_lightcurve(path)
    assert lc.fmt == "csv" and len(lc.flux) == 25
    assert (lc.flux_err is not None) == expect_err


def test_fits_kepler_style_columns(tmp_path):
    from astropy.io import fits

    t = np.linspace(0, 5, 40)
    cols = [fits.Column(name="TIME", format="D", array=t),
            fits.Column(name="SAP_FLUX", format="E", array=np.full(40, 9.0)),
            fits.Column(name="PDCSAP_FLUX", format="E", array=np.linspace(1, 2, 40)),
            fits.Column(name="PDCSAP_FLUX_ERR", format="E", array=np.full(40, 0.1)),
            fits.Column(name="QUALITY", format="J", array=np.r_[[0] * 39, [128]])]
    path = tmp_path / "kplr.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    lc = read_lightcurve(path)
    assert lc.fmt == "fits"
    assert lc.flux[0] == pytest.approx(1.0)  # PDCSAP preferred over SAP
    assert lc.flux_err[0] == pytest.approx(0.1)
    assert np.isnan(lc.flux[-1])  # flagged cadence dropped


def _write(tmp_path, name, content):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


@pytest.mark.parametrize("name,content,match", [
    ("empty.tbl", "", "empty file"),
    ("blank.csv", "\n  \n", "empty file"),
    ("comments.tbl", "# only\n# comments\n", "unknown format"),
    ("binary.tbl", b"\x00\x01\x02garbage" * 10, "unknown format"),
    ("notime.csv", "flux,err\n" + "1.0,0.1\n" * 30, "no time column"),
    ("noflux.csv", "time,counts\n" + "1.0,12.1\n" * 30, "no flux or magnitude column"),
    ("few.tbl", "".join(f"{t} {f} {e}\n" for t, f, e in _rows(12)), "12 points"),
    ("nans.csv", "time,flux\n" + "1.0,nan\n" * 30, "0 points"),
    ("header_only.csv", "time,flux\n", "header row but no data"),
    ("one_col.tbl", "1.0\n2.0\n", "1 column"),
])
def test_errors_name_file_and_problem(tmp_path, name, content, match):
    path = _write(tmp_path, name, content)
    with pytest.raises(LightCurveReadError, match=match) as info:
        read_lightcurve(path)
    assert str(path) in str(info.value)


def test_non_numeric_value_reports_line(tmp_path):
    rows = [f"{t} {f} {e}" for t, f, e in _rows()]
    rows[6] = "0.6 1.0x 0.002"
    path = _write(tmp_path, "bad.tbl", "# time flux err\n# second comment\n" + "\n".join(rows))
    with pytest.raises(LightCurveReadError, match=r"'1.0x'.*line 9") as info:
        read_lightcurve(path)
    assert "bad.tbl" in str(info.value)


def test_short_row_and_missing_and_dir(tmp_path):
    rows = [f"{t},{f},{e}" for t, f, e in _rows()]
    rows[3] = "0.3,1.0"
    path = _write(tmp_path, "short.csv", "time,flux,err\n" + "\n".join(rows))
    with pytest.raises(LightCurveReadError, match="line 5 has 2 values"):
        read_lightcurve(path)
    with pytest.raises(LightCurveReadError, match="no such file"):
        read_lightcurve(tmp_path / "missing.tbl")
    with pytest.raises(LightCurveReadError, match="directory"):
        read_lightcurve(tmp_path)


def test_truncated_fits(tmp_path, curve):
    t, f, e = curve
    good = write_lightcurve(tmp_path / "good.fits", t, f, e, "fits")
    bad = _write(tmp_path, "bad.fits", good.read_bytes()[:3000])
    with pytest.raises(LightCurveReadError) as info:
        read_lightcurve(bad)
    assert "bad.fits" in str(info.value)


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_lightcurve(tmp_path / "a", np.arange(3.0), np.arange(3.0), None, "xlsx")
    with pytest.raises(ValueError, match="one length"):
        write_lightcurve(tmp_path / "a", np.arange(3.0), np.arange(4.0), None, "csv")


# ----------------------------------------------------------------------------- magnitudes
def _mag_csv(tmp_path, header, t, m, e=None, name="mags.csv"):
    cols = [t, m] + ([e] if e is not None else [])
    body = "".join(",".join(f"{v:.8f}" for v in row) + "\n" for row in zip(*cols))
    path = tmp_path / name
    path.write_text(header + "\n" + body)
    return path


@pytest.mark.parametrize("header,err", [("mjd,mag,mag_err", "mag_err"),
                                        ("hjd,v_mag,v_magerr", "v_magerr"),
                                        ("time,magnitude,e_mag", "e_mag"),
                                        ("HJD,V_MAG", None)])
def test_magnitude_columns_become_relative_flux(tmp_path, curve, header, err):
    t, f, _ = curve
    m = 15.0 - 2.5 * np.log10(f)
    path = _mag_csv(tmp_path, header, t, m, np.full(t.size, 0.01) if err else None)
    lc = read_lightcurve(path)
    assert lc.columns["kind"] == "mag" and lc.columns["err"] == err
    np.testing.assert_allclose(lc.flux, f / np.median(f), rtol=1e-6)
    assert np.median(lc.flux) == pytest.approx(1.0)
    assert any("converted to relative flux" in n and "10**(-0.4" in n for n in lc.notes)
    if err:  # first-order propagation: sigma_f = 0.4 ln10 f sigma_m
        np.testing.assert_allclose(lc.flux_err, 0.4 * np.log(10) * lc.flux * 0.01, rtol=1e-6)


def test_magnitudes_give_the_flux_conversions_period(tmp_path):
    from starray.data.features import star_features
    from starray.data.synth import SynthSpec, sample_times

    rng = np.random.default_rng(5)
    t = sample_times(rng, SynthSpec(min_days=20, max_days=20))
    f = 1 + 0.04 * np.sin(2 * np.pi * t / 3.21) + rng.normal(0, 0.004, t.size)
    flux_file = write_lightcurve(tmp_path / "flux.csv", t, f, None, "csv")
    mag_file = _mag_csv(tmp_path, "mjd,mag", t, 12.0 - 2.5 * np.log10(f))
    by_flux = star_features(*_tf(read_lightcurve(flux_file)), 4)
    by_mag = star_features(*_tf(read_lightcurve(mag_file)), 4)
    np.testing.assert_allclose(by_mag.cand_days, by_flux.cand_days, rtol=1e-4)
    assert by_mag.cand_days[0] == pytest.approx(3.21, rel=0.01)


def _tf(lc):
    return lc.time, lc.flux


def test_named_columns(tmp_path, curve):
    from starray.data.lightcurve_columns import ColumnChoice

    t, f, e = curve
    body = "".join(f"{a},{b},{c},{-2.5 * np.log10(b) + 9}\n" for a, b, c in zip(t, f, e))
    path = tmp_path / "odd.csv"
    path.write_text("obs_day,counts,unc,brightness\n" + body)
    with pytest.raises(LightCurveReadError, match="no time column.*--time-col"):
        read_lightcurve(path)
    lc = read_lightcurve(path, ColumnChoice(time="obs_day", flux="Counts", err="unc"))
    np.testing.assert_allclose(lc.flux, f, rtol=1e-9)
    np.testing.assert_allclose(lc.flux_err, e, rtol=1e-9)
    lc = read_lightcurve(path, ColumnChoice(time="obs_day", mag="brightness"))
    assert lc.columns["kind"] == "mag" and lc.flux_err is None
    np.testing.assert_allclose(lc.flux, f / np.median(f), rtol=1e-6)
    with pytest.raises(LightCurveReadError, match=r"--flux-col 'flx' is not a column "
                                                  r"\(columns: obs_day, counts"):
        read_lightcurve(path, ColumnChoice(time="obs_day", flux="flx"))
    with pytest.raises(ValueError, match="not both"):
        ColumnChoice(flux="counts", mag="brightness")
    headerless = tmp_path / "headerless.txt"
    headerless.write_text("".join(f"{b} {a} {c}\n" for a, b, c in zip(t, f, e)))
    lc = read_lightcurve(headerless, ColumnChoice(time="col2", flux="col1"))
    np.testing.assert_allclose(lc.time, t, rtol=1e-9)


def test_ecsv_time_unit_and_quality_flags(tmp_path, curve):
    from astropy import units as u
    from astropy.table import Table

    t, f, e = curve
    q = np.zeros(t.size, dtype=int)
    q[:7] = 4
    Table({"time": t * 86400 * u.s, "flux": f, "quality": q}).write(tmp_path / "s.ecsv")
    lc = read_lightcurve(tmp_path / "s.ecsv")
    assert lc.fmt == "ecsv" and sniff_format(tmp_path / "s.ecsv") == "ecsv"
    np.testing.assert_allclose(lc.time, t, rtol=1e-12)
    assert any("converted to days" in n for n in lc.notes)
    assert np.isnan(lc.flux[:7]).all() and np.isfinite(lc.flux[7:]).all()
    assert any("7 points" in n and "'quality'" in n for n in lc.notes)


def test_ipac_bad_value_reports_line_and_column(tmp_path, curve):
    t, f, e = curve
    path = write_lightcurve(tmp_path / "a.tbl", t[:30], f[:30], e[:30], "tbl")
    lines = path.read_text().splitlines()
    lines[10] = lines[10].replace(lines[10].split()[1], "1.0x".rjust(len(lines[10].split()[1])))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LightCurveReadError, match=r"a\.tbl: non-numeric value '1.0x' in column "
                                                  r"'flux' at line 11"):
        read_lightcurve(path)


def test_registry_takes_a_new_format(tmp_path):
    """A format is a reader plus an identifier; read_lightcurve dispatches to it."""
    from starray.data import lightcurve_io as lio

    def identify(origin, path, fileobj, *args, **kwargs):
        return lio.file_head(fileobj).startswith(b"LC1 ")

    def read(path, columns):
        rows = [line.split() for line in path.read_text().splitlines()[1:]]
        arr = np.array(rows, dtype=float)
        return lio.LightCurve(arr[:, 0], arr[:, 1], None, path.stem, "lc1")

    path = tmp_path / "x.dat"
    path.write_text("LC1 v1\n" + "".join(f"{i} {1 + 0.1 * (i % 3)}\n" for i in range(30)))
    lio.register_format("lc1", read, identify, priority=1)  # "LC1 v1" is also plain
    try:
        assert sniff_format(path) == "lc1" and len(read_lightcurve(path).time) == 30
    finally:
        lio.REGISTRY.unregister_reader("lc1", lio.LightCurve)
        lio.REGISTRY.unregister_identifier("lc1", lio.LightCurve)
        lio.PRIORITY.pop("lc1")
    with pytest.raises(LightCurveReadError, match="no time column"):  # read as plain now
        read_lightcurve(path)


# ----------------------------------------------------------------------------- checks
def _sine(t, period, rng, amp=0.05):
    return 1 + amp * np.sin(2 * np.pi * t / period) + rng.normal(0, 0.005, t.size)


def _crafted(kind):
    """A light curve outside the training distribution in one way (or all, 'survey')."""
    rng = np.random.default_rng(7)
    if kind == "span":  # 120 d at the training cadence, P = 2.3 d
        t = np.sort(rng.uniform(0, 120, 9000))
        return t, _sine(t, 2.3, rng)
    if kind == "cadence":  # 15 d at 4 points per day
        t = np.sort(rng.uniform(0, 15, 60))
        return t, _sine(t, 2.3, rng)
    if kind == "short_period":  # a 0.04 d pulsation (delta Scuti-like)
        t = np.sort(rng.uniform(0, 15, 1125))
        return t, _sine(t, 0.04, rng)
    t = np.sort(rng.uniform(0, 2723, 1196))  # "survey": a 117-day LPV, MACHO-like sampling
    return t, _sine(t, 117.0, rng, amp=0.5)


@pytest.mark.parametrize("kind,expected", [
    ("span", ["span 120 d is outside the training range 5-30 d"]),
    ("cadence", ["4.03 points per day is far from the training cadence"]),
    ("short_period", ["dominant period 0.04 d is shorter than the model's period axis"]),
    ("survey", ["span 27", "points per day", "dominant period 116.9 d is longer"]),
])
def test_each_distribution_warning_fires(kind, expected):
    from starray.data.lightcurve_checks import TrainingRange, distribution_warnings

    warns = distribution_warnings(*_crafted(kind), TrainingRange()).warnings
    assert len(warns) == len(expected), warns
    for w, text in zip(warns, expected):
        assert text in w, (w, text)


def test_no_warning_on_synthetic_stars():
    from starray.data.lightcurve_checks import TrainingRange, distribution_warnings
    from starray.data.synth import N_CLASSES, SynthSpec, make_star

    rng = np.random.default_rng(0)
    for _ in range(3):
        for label in range(N_CLASSES):
            star = make_star(label, rng, SynthSpec())
            warns = distribution_warnings(star.time, star.flux, TrainingRange()).warnings
            assert warns == [], (label, warns)


def test_seconds_hint_below_the_span_limit():
    from starray.data.lightcurve_checks import TrainingRange, distribution_warnings

    t = np.linspace(0, 8 * 3600, 2000)  # one night in seconds: 28,800 "days"
    warns = distribution_warnings(t, _sine(t, 3000.0, np.random.default_rng(1)),
                                  TrainingRange()).warnings
    assert "is the time column in seconds?" in warns[0]


def test_training_range_from_config():
    from starray.data.lightcurve_checks import TrainingRange, distribution_warnings

    t, f = _crafted("span")
    wide = TrainingRange.from_config({"min_days": 50, "max_days": 200, "points_per_day": 75})
    assert distribution_warnings(t, f, wide).warnings == []


def test_resource_limits():
    from starray.data.lightcurve_checks import (
        Limits,
        ResourceLimitError,
        check_limits,
        frequency_grid_size,
    )

    seconds = np.linspace(0, 116 * 86400, 2000)
    with pytest.raises(ResourceLimitError, match=r"x\.csv: time span 1.002e\+07 d exceeds the "
                                                 r"limit.*--max-span-days.*seconds.*116 d"):
        check_limits(seconds, Limits(), "x.csv")
    check_limits(np.linspace(0, 2723, 1196))  # a long survey curve fits
    with pytest.raises(ResourceLimitError, match="--max-points"):
        check_limits(np.linspace(0, 10, 1000), Limits(max_points=999))
    with pytest.raises(ResourceLimitError, match="--max-frequencies"):
        check_limits(np.linspace(0, 2723, 1000), Limits(max_frequencies=100_000))
    assert frequency_grid_size(1e7) == pytest.approx(1e9, rel=3e-3)  # what took 29.7 GiB
