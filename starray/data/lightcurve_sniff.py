"""Identifiers of the light-curve formats: each sniffs a file's first 64 KiB.

astropy's identifier signature, ``identifier(origin, path, fileobj, *args, **kwargs)``,
with ``fileobj`` the file opened in binary mode. The text identifiers are disjoint
(ECSV, then IPAC, then CSV or whitespace by the first data row), so one file matches one
format; :mod:`starray.data.lightcurve_io` registers them with their readers.
"""

from __future__ import annotations

from typing import Any, BinaryIO

NULL_TOKENS = {"", "null", "nan", "none", "na", "n/a", "-", "--"}
HEAD_BYTES = 65536  # identifiers look at this much of a file


def decode_text(data: bytes) -> str:
    """UTF-8, else Latin-1 (which decodes any bytes)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def file_head(fileobj: BinaryIO | None) -> bytes:
    """The first HEAD_BYTES of an open binary file (b"" for None); the position is kept at 0."""
    if fileobj is None:
        return b""
    fileobj.seek(0)
    data = fileobj.read(HEAD_BYTES)
    fileobj.seek(0)
    return data


def _head_lines(fileobj: BinaryIO | None) -> list[str] | None:
    """The head as text lines, None for a binary file."""
    data = file_head(fileobj)
    if b"\x00" in data or data.startswith(b"SIMPLE  ="):
        return None
    return decode_text(data).splitlines()


def _first_row(lines: list[str]) -> str | None:
    """The first line that is not blank, a ``#`` comment or an IPAC ``\\`` line."""
    for line in lines:
        s = line.strip()
        if s and not s.startswith(("#", "\\")):
            return s
    return None


def is_number(tok: str) -> bool:
    """A float, or a null token such as ``nan``/``null``/``-`` (not the empty string)."""
    try:
        float(tok)
    except ValueError:
        return tok.strip().lower() in NULL_TOKENS - {""}
    return True


def identify_fits(origin: str, path: Any, fileobj: BinaryIO | None, *args, **kwargs) -> bool:
    """A FITS file starts with ``SIMPLE  =``."""
    return file_head(fileobj).startswith(b"SIMPLE  =")


def identify_ecsv(origin: str, path: Any, fileobj: BinaryIO | None, *args, **kwargs) -> bool:
    """ECSV starts with ``# %ECSV``."""
    lines = _head_lines(fileobj)
    return bool(lines) and lines[0].lstrip().startswith("# %ECSV")


def identify_ipac(origin: str, path: Any, fileobj: BinaryIO | None, *args, **kwargs) -> bool:
    """The first line after ``\\`` comments is a ``|name|`` header row."""
    lines = _head_lines(fileobj)
    row = _first_row(lines) if lines and not identify_ecsv(origin, path, fileobj) else None
    return row is not None and row.startswith("|")


def identify_csv(origin: str, path: Any, fileobj: BinaryIO | None, *args, **kwargs) -> bool:
    """The first row (after ``#`` comments) has a comma."""
    lines = _head_lines(fileobj)
    row = _first_row(lines) if lines and not identify_ecsv(origin, path, fileobj) else None
    return row is not None and not row.startswith("|") and "," in row


def identify_plain(origin: str, path: Any, fileobj: BinaryIO | None, *args, **kwargs) -> bool:
    """The first row (after ``#`` comments) is whitespace-separated: >= 2 words or a number."""
    lines = _head_lines(fileobj)
    row = _first_row(lines) if lines and not identify_ecsv(origin, path, fileobj) else None
    return (row is not None and not row.startswith("|") and "," not in row
            and (len(row.split()) >= 2 or is_number(row)))
