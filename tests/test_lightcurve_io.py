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
                                         ("csv", "csv"), ("fits", "fits")])
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
