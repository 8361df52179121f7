"""Reading and writing light-curve files (DESIGN section 3, item 6).

Readers live in a registry (``REGISTRY``, an astropy ``UnifiedInputRegistry``): each
format is a reader built on astropy's ``Table.read`` plus an identifier that sniffs the
file's content, never its extension (archives serve IPAC tables as ``.tbl`` while the
reference's sample data are ``.tbl`` files of plain whitespace columns). Registered:

- ``ipac``: IPAC tables, ``\\`` comment/keyword lines, then ``|name|``, ``|type|`` rows;
- ``ecsv``: astropy's enhanced CSV (``# %ECSV`` header; units are honoured);
- ``csv``: comma-separated, with a header row naming the columns or without one;
- ``plain``: whitespace columns (time in days, flux, error) under ``#`` comment lines,
  with or without a header row;
- ``fits``: FITS binary tables (``TIME`` with ``FLUX``/``PDCSAP_FLUX``/``SAP_FLUX``);
  cadences with a non-zero ``QUALITY`` flag are dropped (set to NaN).

Columns are chosen by name (:mod:`starray.data.lightcurve_columns`), magnitudes are
converted to relative flux, a time column with a unit (ECSV, FITS, IPAC unit row) is
converted to days; otherwise time is taken as days, as given. Errors name the file and
the problem, with the line (text) or row (FITS) and the column where there is one.
Another format can be added with :func:`register_format`.

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
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io.registry import UnifiedInputRegistry

from starray.data.lightcurve_columns import (
    ColumnChoice,
    ColumnError,
    magnitudes_to_flux,
    pick_columns,
)
from starray.data.lightcurve_sniff import (
    NULL_TOKENS,
    decode_text,
    file_head,  # noqa: F401 - for identifiers of formats registered elsewhere
    identify_csv,
    identify_ecsv,
    identify_fits,
    identify_ipac,
    identify_plain,
    is_number,
)
from starray.data.lightcurve_write import FORMATS, write_lightcurve  # noqa: F401 - public here

MIN_POINTS = 20


class LightCurveReadError(ValueError):
    """A light-curve file cannot be read; the message names the file and the problem."""


@dataclass
class LightCurve:
    """One light curve as read from a file (float64 arrays; ``flux_err`` may be None).

    ``columns`` maps ``time``/``brightness``/``err`` to the file's column names and
    ``kind`` to ``flux`` or ``mag``; ``notes`` says what was converted or dropped.
    """

    time: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray | None
    name: str
    fmt: str = ""  # the sniffed format: ipac, ecsv, csv, plain, fits
    columns: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


Reader = Callable[[Path, ColumnChoice], LightCurve]
Identifier = Callable[..., bool]

REGISTRY = UnifiedInputRegistry()
PRIORITY: dict[str, int] = {}  # used only if two identifiers claim one file


def register_format(name: str, reader: Reader, identifier: Identifier, priority: int = 0,
                    force: bool = False) -> None:
    """Add a light-curve format: ``reader(path, columns) -> LightCurve`` and
    ``identifier(origin, path, fileobj, *args, **kwargs) -> bool`` (astropy's signature;
    ``fileobj`` is the file opened in binary mode)."""
    REGISTRY.register_reader(name, LightCurve, reader, force=force, priority=priority)
    REGISTRY.register_identifier(name, LightCurve, identifier, force=force)
    PRIORITY[name] = priority


def _fail(path: Path, problem: str) -> LightCurveReadError:
    return LightCurveReadError(f"{path}: {problem}")


# ----------------------------------------------------------------------------- tables -> curve
def _floats(path: Path, table: Any, name: str, where: Callable[[int], str]) -> np.ndarray:
    """A column as float64 (masked and null tokens -> NaN); names line/row of a bad value."""
    data = np.ma.asarray(table[name])
    if data.ndim != 1:
        raise _fail(path, f"column {name!r} holds {data.shape[1:]} values per row, not one")
    if data.dtype.kind in "fiub":
        return np.ma.filled(data.astype(np.float64), np.nan)
    out = np.empty(len(data))
    mask = np.ma.getmaskarray(data)
    for i, (v, m) in enumerate(zip(data.data, mask, strict=True)):
        tok = (v.decode("latin-1") if isinstance(v, bytes) else str(v)).strip()
        if m or tok.lower() in NULL_TOKENS:
            out[i] = np.nan
            continue
        try:
            out[i] = float(tok)
        except ValueError:
            raise _fail(path, f"non-numeric value {tok!r} in column {name!r} at {where(i)}"
                        ) from None
    return out


def _time_in_days(table: Any, name: str, time: np.ndarray, notes: list[str]) -> np.ndarray:
    """Convert a time column with a known unit (s, h, yr, ...) to days."""
    from astropy import units as u

    unit = getattr(table[name], "unit", None)
    if unit is None or isinstance(unit, u.UnrecognizedUnit):
        return time
    try:
        factor = float((1 * unit).to(u.day).value)
    except (u.UnitConversionError, TypeError, ValueError):
        return time
    if factor != 1.0:
        notes.append(f"time column {name!r} in {unit} converted to days")
    return time * factor


def from_table(path: Path, fmt: str, table: Any, choice: ColumnChoice,
               where: Callable[[int], str], positional: bool = False) -> LightCurve:
    """An astropy Table -> LightCurve: choose columns, convert, apply quality flags."""
    try:
        cols = pick_columns(table.colnames, choice, str(path), positional)
    except ColumnError as e:
        raise LightCurveReadError(str(e)) from None
    notes: list[str] = []
    t = _time_in_days(table, cols["time"], _floats(path, table, cols["time"], where), notes)
    b = _floats(path, table, cols["brightness"], where)
    e = None if cols["err"] is None else _floats(path, table, cols["err"], where)
    quality = next((n for n in table.colnames if n.lower() == "quality"), None)
    if quality is not None and quality not in cols.values():
        q = np.ma.filled(np.ma.asarray(table[quality]).astype(np.float64), 0.0)
        flagged = q != 0  # Kepler/TESS: flagged cadences are unusable
        if flagged.any():
            b = np.where(flagged, np.nan, b)
            notes.append(f"{int(flagged.sum())} points with a non-zero {quality!r} flag dropped")
    if cols["kind"] == "mag":
        b, e, note = magnitudes_to_flux(b, e, cols["brightness"])
        notes.append(note)
    if len(t) == 0:
        raise _fail(path, f"no data rows ({fmt} format)")
    n_ok = int(np.count_nonzero(np.isfinite(t) & np.isfinite(b)))
    if n_ok < MIN_POINTS:
        raise _fail(path, f"only {n_ok} points with finite time and flux "
                          f"(need at least {MIN_POINTS})")
    return LightCurve(t, b, e, path.stem, fmt, cols, notes)


def _table_read(path: Path, fmt: str, source: Any, **kwargs: Any) -> Any:
    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unit warnings: units we cannot parse are ignored
        try:
            if fmt.startswith("ascii."):
                kwargs["guess"] = False  # the identifier chose the format
            return Table.read(source, format=fmt, **kwargs)
        except (ValueError, TypeError, IndexError, KeyError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise _fail(path, f"unreadable {fmt.removeprefix('ascii.')} table: {msg}") from e


# ----------------------------------------------------------------------------- text readers
def _text_lines(path: Path) -> list[str]:
    return decode_text(path.read_bytes()).splitlines()


def _ipac_types_as_char(lines: list[str]) -> list[str]:
    """The same IPAC table with every column typed ``char``, so that astropy keeps a bad
    value as text and :func:`_floats` can say where it is."""
    bars = [i for i, line in enumerate(lines) if line.strip().startswith("|")]
    if len(bars) < 2:
        return lines
    row = lines[bars[1]]
    cuts = [i for i, c in enumerate(row) if c == "|"]
    new = list(row)
    for a, b in zip(cuts, cuts[1:], strict=False):
        new[a + 1:b] = list("c".ljust(b - a - 1))
    return lines[:bars[1]] + ["".join(new)] + lines[bars[1] + 1:]


def read_ipac(path: Path, choice: ColumnChoice) -> LightCurve:
    """IPAC table via astropy ``ascii.ipac`` (fixed width, null values, unit row)."""
    lines = _text_lines(path)
    data_lines = [i + 1 for i, line in enumerate(lines)
                  if line.strip() and not line.strip().startswith(("\\", "|"))]
    try:
        table = _table_read(path, "ascii.ipac", lines)
    except LightCurveReadError as first:  # a value that is not of the declared type
        if "failed to convert" not in str(first):
            raise
        table = _table_read(path, "ascii.ipac", _ipac_types_as_char(lines))
    return from_table(path, "ipac", table, choice, lambda i: f"line {data_lines[i]}")


def read_ecsv(path: Path, choice: ColumnChoice) -> LightCurve:
    """ECSV via astropy ``ascii.ecsv`` (typed columns with units)."""
    lines = _text_lines(path)
    data_lines = [i + 1 for i, line in enumerate(lines)
                  if line.strip() and not line.lstrip().startswith("#")][1:]  # after header
    table = _table_read(path, "ascii.ecsv", lines)
    return from_table(path, "ecsv", table, choice, lambda i: f"line {data_lines[i]}")


def _split(row: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return row.split()
    if '"' in row:
        return next(csv.reader(io.StringIO(row), delimiter=delimiter))
    return row.split(delimiter)


def _delimited(path: Path, choice: ColumnChoice, fmt: str) -> LightCurve:
    """CSV (``,``) or whitespace columns, with a header row or without (``#`` comments)."""
    from starray.data.lightcurve_columns import TIME_NAMES

    delimiter = "," if fmt == "csv" else None
    lines = _text_lines(path)
    if delimiter is None:  # astropy's whitespace splitter takes spaces, not tabs
        lines = [line.replace("\t", " ") for line in lines]
    rows: list[tuple[int, str]] = []
    comment_names: list[str] | None = None
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            words = s.lstrip("#").replace(",", " ").split()
            if not rows and words and any(w.lower() in TIME_NAMES for w in words):
                comment_names = words  # "# time flux error" may name the columns
            continue
        rows.append((lineno, s))
    if not rows:
        raise _fail(path, "no data rows (only comments or blank lines)")
    ncol = len(_split(rows[0][1], delimiter))
    header = not all(is_number(t) for t in _split(rows[0][1], delimiter))
    if header:
        rows = rows[1:]
        if not rows:
            raise _fail(path, "a header row but no data rows")
    elif ncol < 2:
        raise _fail(path, f"{fmt} table with {ncol} column; need time and flux columns")
    for lineno, s in rows:  # astropy pads short CSV rows silently: a short row is an error
        n = len(_split(s, delimiter))
        if n != ncol:
            raise _fail(path, f"line {lineno} has {n} values, expected {ncol}")
    kwargs: dict[str, Any] = {"comment": "#"}
    if delimiter:
        kwargs["delimiter"] = delimiter
    positional = False
    if header:
        table = _table_read(path, "ascii.csv" if delimiter else "ascii.basic", lines, **kwargs)
    else:
        if comment_names is not None and len(comment_names) == ncol:
            kwargs["names"] = comment_names
        else:
            positional = True  # time (days), flux, error by position: col1, col2, col3
        table = _table_read(path, "ascii.no_header", lines, **kwargs)
    line_of = [lineno for lineno, _ in rows]
    return from_table(path, fmt, table, choice, lambda i: f"line {line_of[i]}", positional)


def read_csv(path: Path, choice: ColumnChoice) -> LightCurve:
    """CSV via astropy ``ascii.csv`` (header row) or ``ascii.no_header``."""
    return _delimited(path, choice, "csv")


def read_plain(path: Path, choice: ColumnChoice) -> LightCurve:
    """Whitespace columns via astropy ``ascii.basic`` (header row) or ``ascii.no_header``."""
    return _delimited(path, choice, "plain")


def read_fits(path: Path, choice: ColumnChoice) -> LightCurve:
    """The first FITS binary table with a time column, via ``Table.read(hdu)``."""
    from astropy.io import fits

    from starray.data.lightcurve_columns import TIME_NAMES

    wanted = [choice.time] if choice.time else list(TIME_NAMES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                hdul.verify("silentfix")
                tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
                if not tables:
                    raise _fail(path, "FITS file without a binary table extension")
                for hdu in tables:
                    if not {n.lower() for n in hdu.columns.names} & {w.lower() for w in wanted}:
                        continue
                    table = _table_read(path, "fits", hdu)
                    return from_table(path, "fits", table, choice, lambda i: f"row {i + 1}")
                shown = "; ".join(", ".join(h.columns.names) for h in tables)
                raise _fail(path, f"no time column in any FITS table (columns: {shown})")
    except LightCurveReadError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError) as ex:
        raise _fail(path, f"unreadable FITS file (truncated or corrupt?): "
                          f"{str(ex).splitlines()[0] if str(ex) else type(ex).__name__}") from ex


register_format("fits", read_fits, identify_fits)
register_format("ecsv", read_ecsv, identify_ecsv)
register_format("ipac", read_ipac, identify_ipac)
register_format("csv", read_csv, identify_csv)
register_format("plain", read_plain, identify_plain)


# ----------------------------------------------------------------------------- public API
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


def sniff_format(path: str | os.PathLike) -> str:
    """The registered format of a file from its content (``ipac``, ``csv``, ...)."""
    path = Path(path)
    head = _read_head(path)
    with open(path, "rb") as fh:
        found = REGISTRY.identify_format("read", LightCurve, str(path), fh, [], {})
    if not found:
        if b"\x00" in head:
            raise _fail(path, "unknown format (binary file that is not FITS)")
        raise _fail(path, "unknown format (not an IPAC table, ECSV, CSV, whitespace columns "
                          "or FITS)")
    return max(found, key=lambda f: PRIORITY.get(f, 0))


def read_lightcurve(path: str | os.PathLike, columns: ColumnChoice | None = None
                    ) -> LightCurve:
    """Read a light curve, sniffing the format from the file's content.

    Parameters
    ----------
    path : str or PathLike
        IPAC table, ECSV, CSV, plain whitespace columns or FITS file (any extension).
    columns : ColumnChoice, optional
        Column names to use instead of guessing (time, flux or mag, err).

    Returns
    -------
    LightCurve
        ``time`` (days), ``flux`` (relative flux when the file has magnitudes),
        ``flux_err`` (or None), ``name`` (file stem), ``fmt``, ``columns``, ``notes``.

    Raises
    ------
    LightCurveReadError
        The message names the file and the problem: no such file, empty, unknown format,
        no time column, non-numeric value at line N in column C, fewer than 20 points, ...
    """
    path = Path(path)
    fmt = sniff_format(path)
    return REGISTRY.get_reader(fmt, LightCurve)(path, columns or ColumnChoice())
