"""Reading and writing light-curve files (DESIGN section 3, item 6).

The format is sniffed from the content, never trusted from the extension: archives serve
IPAC tables as ``.tbl`` while the reference's sample data are ``.tbl`` files of plain
whitespace columns. Supported:

- IPAC tables: ``\\`` comment/keyword lines, then ``|name|`` and ``|type|`` header rows;
- plain whitespace columns (time in days, flux, error) under ``#`` comment lines;
- CSV (or whitespace) with a header row naming the columns;
- FITS binary tables (``TIME`` with ``FLUX``/``PDCSAP_FLUX``/``SAP_FLUX``).

Examples
--------
>>> import numpy as np, tempfile, os
>>> t = np.linspace(0, 10, 100); f = 1 + 0.01 * np.sin(t)
>>> path = os.path.join(tempfile.mkdtemp(), "star.tbl")
>>> _ = write_lightcurve(path, t, f, None, "tbl")
>>> lc = read_lightcurve(path)
>>> lc.fmt, len(lc.time), lc.name
('ipac', 100, 'star')
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_POINTS = 20
FORMATS = ("tbl", "ipac", "plain", "csv", "fits")

# Column names, case-insensitive, in order of preference.
TIME_NAMES = ("time", "t", "mjd", "bjd", "hjd", "jd", "btjd", "bjd_tdb", "time_bjd")
FLUX_NAMES = ("flux", "pdcsap_flux", "sap_flux", "f")
ERR_NAMES = ("flux_err", "err", "error", "sigma", "flux_error", "e_flux", "fluxerr")
NULL_TOKENS = {"", "null", "nan", "none", "na", "n/a", "-"}


class LightCurveReadError(ValueError):
    """A light-curve file cannot be read; the message names the file and the problem."""


@dataclass
class LightCurve:
    """One light curve as read from a file (float64 arrays; ``flux_err`` may be None)."""

    time: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray | None
    name: str
    fmt: str = ""  # the sniffed format: ipac, plain, csv, fits


def _fail(path: Path, problem: str) -> LightCurveReadError:
    return LightCurveReadError(f"{path}: {problem}")


def _pick(names: list[str], wanted: tuple[str, ...]) -> int | None:
    """Index of the first of ``wanted`` present in ``names`` (case-insensitive)."""
    lower = [n.strip().lower() for n in names]
    for w in wanted:
        if w in lower:
            return lower.index(w)
    return None


def _columns(path: Path, names: list[str]) -> tuple[int, int, int | None]:
    """(time, flux, err) column indices chosen by name; raises if time or flux is missing."""
    shown = ", ".join(names)
    it = _pick(names, TIME_NAMES)
    if it is None:
        raise _fail(path, f"no time column (columns: {shown}; expected one of "
                          f"{', '.join(TIME_NAMES)})")
    iflux = _pick(names, FLUX_NAMES)
    if iflux is None:
        raise _fail(path, f"no flux column (columns: {shown}; expected one of "
                          f"{', '.join(FLUX_NAMES)})")
    flux_name = names[iflux].strip().lower()
    ierr = _pick(names, (f"{flux_name}_err",) + ERR_NAMES)
    return it, iflux, ierr


def _number(path: Path, token: str, lineno: int, column: str, nulls: set[str]) -> float:
    tok = token.strip()
    if tok.lower() in NULL_TOKENS or tok in nulls:
        return math.nan
    try:
        return float(tok)
    except ValueError:
        raise _fail(path, f"non-numeric value {tok!r} in column {column!r} at line {lineno}"
                    ) from None


def _finish(path: Path, fmt: str, time: list[float] | np.ndarray, flux: list[float] | np.ndarray,
            err: list[float] | np.ndarray | None) -> LightCurve:
    t = np.asarray(time, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    e = None if err is None else np.asarray(err, dtype=np.float64)
    if len(t) == 0:
        raise _fail(path, f"no data rows ({fmt} format)")
    n_ok = int(np.count_nonzero(np.isfinite(t) & np.isfinite(f)))
    if n_ok < MIN_POINTS:
        raise _fail(path, f"only {n_ok} points with finite time and flux "
                          f"(need at least {MIN_POINTS})")
    return LightCurve(t, f, e, path.stem, fmt)


# ----------------------------------------------------------------------------- text formats
def _read_ipac(path: Path, lines: list[str]) -> LightCurve:
    header: list[str] = []
    first_data = None
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("\\"):
            continue
        if s.startswith("|"):
            header.append(line.rstrip("\n"))
            continue
        first_data = i
        break
    if not header:
        raise _fail(path, "IPAC table without a |name| header row")
    bars = [i for i, c in enumerate(header[0]) if c == "|"]
    names = [n.strip() for n in header[0].strip().strip("|").split("|")]
    nulls: list[set[str]] = [set() for _ in names]
    if len(header) >= 4:  # name, type, unit, null rows
        for j, tok in enumerate(header[3].strip().strip("|").split("|")[:len(names)]):
            if tok.strip():
                nulls[j].add(tok.strip())
    it, iflux, ierr = _columns(path, names)
    cols: list[list[float]] = [[], [], []]
    wanted = [it, iflux, ierr]
    for lineno, line in enumerate(lines[first_data or len(lines):], start=(first_data or 0) + 1):
        if not line.strip() or line.lstrip().startswith("\\"):
            continue
        tokens = line.split()
        if len(tokens) != len(names):  # fixed width: slice between the header's bars
            tokens = [line[bars[k] + 1:bars[k + 1]] if k + 1 < len(bars) else line[bars[k] + 1:]
                      for k in range(len(names))]
        for slot, col in enumerate(wanted):
            if col is not None:
                cols[slot].append(_number(path, tokens[col], lineno, names[col], nulls[col]))
    return _finish(path, "ipac", cols[0], cols[1], cols[2] if ierr is not None else None)


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return tok.strip().lower() in NULL_TOKENS - {""}
    return True


def _read_delimited(path: Path, lines: list[str], delimiter: str | None) -> LightCurve:
    """CSV (delimiter ",") or whitespace columns, with or without a header row."""
    comment_names: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            if not rows:  # a "# time flux error" comment line may name the columns
                words = s.lstrip("#").replace(",", " ").split()
                if words and _pick(words, TIME_NAMES) is not None:
                    comment_names = words
            continue
        if delimiter is None:
            tokens = s.split()
        else:
            tokens = next(csv.reader(io.StringIO(s), delimiter=delimiter))
        rows.append((lineno, tokens))
    if not rows:
        raise _fail(path, "no data rows (only comments or blank lines)")
    names: list[str] | None = None
    if not all(_is_number(t) for t in rows[0][1]):  # a header row
        names = [t.strip() for t in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise _fail(path, "a header row but no data rows")
    elif comment_names is not None and len(comment_names) == len(rows[0][1]):
        names = comment_names
    fmt = "csv" if delimiter == "," else "plain"
    if names is not None:
        it, iflux, ierr = _columns(path, names)
    else:  # positional: time (days), flux, error
        ncol = len(rows[0][1])
        if ncol < 2:
            raise _fail(path, f"{fmt} table with {ncol} column; need time and flux columns")
        names = ["time", "flux", "error"][:ncol] + [f"col{k + 1}" for k in range(3, ncol)]
        it, iflux, ierr = 0, 1, (2 if ncol >= 3 else None)
    cols: list[list[float]] = [[], [], []]
    for lineno, tokens in rows:
        if len(tokens) < len(names):
            raise _fail(path, f"line {lineno} has {len(tokens)} values, expected {len(names)}")
        for slot, col in enumerate((it, iflux, ierr)):
            if col is not None:
                cols[slot].append(_number(path, tokens[col], lineno, names[col], set()))
    return _finish(path, fmt, cols[0], cols[1], cols[2] if ierr is not None else None)


# ----------------------------------------------------------------------------- FITS
def _read_fits(path: Path) -> LightCurve:
    import warnings

    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                hdul.verify("silentfix")
                tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
                if not tables:
                    raise _fail(path, "FITS file without a binary table extension")
                for hdu in tables:
                    names = list(hdu.columns.names)
                    if _pick(names, TIME_NAMES) is None:
                        continue
                    it, iflux, ierr = _columns(path, names)
                    data = hdu.data

                    def col(i: int, data=data, names=names) -> np.ndarray:
                        arr = np.ma.filled(np.ma.asarray(data[names[i]]).astype(np.float64),
                                           np.nan)
                        return np.asarray(arr, dtype=np.float64).reshape(-1)

                    try:
                        t, f = col(it), col(iflux)
                        e = col(ierr) if ierr is not None else None
                    except (TypeError, ValueError) as ex:
                        raise _fail(path, f"non-numeric time/flux column: {ex}") from ex
                    iq = _pick(names, ("quality",))
                    if iq is not None:  # Kepler/TESS: flagged cadences are unusable
                        q = np.asarray(data[names[iq]]).reshape(-1)
                        f = np.where(q == 0, f, np.nan)
                    return _finish(path, "fits", t, f, e)
                shown = "; ".join(", ".join(h.columns.names) for h in tables)
                raise _fail(path, f"no time column in any FITS table (columns: {shown})")
    except LightCurveReadError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError) as ex:
        raise _fail(path, f"unreadable FITS file (truncated or corrupt?): "
                          f"{str(ex).splitlines()[0] if str(ex) else type(ex).__name__}") from ex


# ----------------------------------------------------------------------------- public API
def sniff_format(path: str | os.PathLike) -> str:
    """The format of a file from its content: ``ipac``, ``plain``, ``csv`` or ``fits``."""
    path = Path(path)
    head = _read_head(path)
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    text = _decode(path, head)
    return _sniff_text(path, text.splitlines())


def _read_head(path: Path, n: int = 4096) -> bytes:
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, not a light-curve file")
    with open(path, "rb") as fh:
        head = fh.read(n)
    if not head.strip():
        raise _fail(path, "empty file")
    return head


def _decode(path: Path, data: bytes) -> str:
    if b"\x00" in data:
        raise _fail(path, "unknown format (binary file that is not FITS)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _sniff_text(path: Path, lines: list[str]) -> str:
    for line in lines:
        s = line.strip()
        if not s or s.startswith("\\"):  # blank, or IPAC comment/keyword line
            continue
        if s.startswith("|"):
            return "ipac"
        if s.startswith("#"):
            continue
        if "," in s:
            return "csv"
        if len(s.split()) >= 2 or _is_number(s):
            return "plain"
        break
    raise _fail(path, "unknown format (not an IPAC table, whitespace or CSV columns, or FITS)")


def read_lightcurve(path: str | os.PathLike) -> LightCurve:
    """Read a light curve, sniffing the format from the file's content.

    Parameters
    ----------
    path : str or PathLike
        IPAC table, plain whitespace columns, CSV or FITS file (any extension).

    Returns
    -------
    LightCurve
        ``time`` (days), ``flux``, ``flux_err`` (or None), ``name`` (file stem), ``fmt``.

    Raises
    ------
    LightCurveReadError
        The message names the file and the problem: no such file, empty, unknown format,
        no time column, non-numeric value at line N, fewer than 20 finite points, ...
    """
    path = Path(path)
    head = _read_head(path)
    if head.startswith(b"SIMPLE  ="):
        return _read_fits(path)
    text = _decode(path, path.read_bytes())
    lines = text.splitlines()
    fmt = _sniff_text(path, lines)
    if fmt == "ipac":
        return _read_ipac(path, lines)
    return _read_delimited(path, lines, "," if fmt == "csv" else None)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_lightcurve(path: str | os.PathLike, time: np.ndarray, flux: np.ndarray,
                     err: np.ndarray | None = None, fmt: str = "tbl") -> Path:
    """Write a light curve as ``tbl``/``ipac`` (IPAC table), ``plain``, ``csv`` or ``fits``.

    ``plain`` is the reference's sample-data layout: whitespace columns time (days),
    flux, error under a ``#`` comment header.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: {fmt!r} is not one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.asarray(time, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    if t.shape != f.shape or t.ndim != 1:
        raise ValueError(f"time and flux must be 1-D arrays of one length, got {t.shape}, "
                         f"{f.shape}")
    e = None if err is None else np.asarray(err, dtype=np.float64)
    if e is not None and e.shape != t.shape:
        raise ValueError(f"err: shape {e.shape} does not match time {t.shape}")
    cols = [("time", t), ("flux", f)] + ([("flux_err", e)] if e is not None else [])
    if fmt == "fits":
        from astropy.io import fits

        hdu = fits.BinTableHDU.from_columns(
            [fits.Column(name=n.upper(), format="D", array=a) for n, a in cols])
        hdu.header["TIMEUNIT"] = "d"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
        return path
    rows = np.column_stack([a for _, a in cols])
    if fmt == "csv":
        body = "\n".join(",".join(f"{v:.10g}" for v in row) for row in rows)
        _atomic_write_text(path, ",".join(n for n, _ in cols) + "\n" + body + "\n")
    elif fmt == "plain":
        header = "# light curve written by starray\n# time(days) flux error\n"
        body = "\n".join(" ".join(f"{v:.10g}" for v in row) for row in rows)
        _atomic_write_text(path, header + body + "\n")
    else:  # IPAC
        width = 20
        def row_of(items: list[str]) -> str:
            return "|" + "|".join(s.center(width) for s in items) + "|"
        header = ["\\ light curve written by starray", "\\ TIMEUNIT = 'd'",
                  row_of([n for n, _ in cols]), row_of(["double"] * len(cols)),
                  row_of(["d"] + [""] * (len(cols) - 1)), row_of(["null"] * len(cols))]
        body = [" " + " ".join(f"{v:.12g}".rjust(width) for v in row) for row in rows]
        _atomic_write_text(path, "\n".join(header + body) + "\n")
    return path
