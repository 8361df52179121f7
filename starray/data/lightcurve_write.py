"""Writing light-curve files: IPAC (``tbl``/``ipac``), ``plain``, ``csv``, ``ecsv``, ``fits``.

Every write is atomic (a temporary file in the same folder, then ``os.replace``). Also
importable from :mod:`starray.data.lightcurve_io`, whose readers read all of these.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FORMATS = ("tbl", "ipac", "plain", "csv", "ecsv", "fits")  # what write_lightcurve writes


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_lightcurve(path: str | os.PathLike, time: np.ndarray, flux: np.ndarray,
                     err: np.ndarray | None = None, fmt: str = "tbl") -> Path:
    """Write a light curve as ``tbl``/``ipac`` (IPAC table), ``plain``, ``csv``, ``ecsv``
    or ``fits``.

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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if fmt == "fits":
        from astropy.io import fits

        hdu = fits.BinTableHDU.from_columns(
            [fits.Column(name=n.upper(), format="D", array=a) for n, a in cols])
        hdu.header["TIMEUNIT"] = "d"
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
        return path
    if fmt == "ecsv":
        from astropy import units as u
        from astropy.table import Table

        table = Table({n: a for n, a in cols})
        table["time"].unit = u.day
        table.write(tmp, format="ascii.ecsv", overwrite=True)
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
