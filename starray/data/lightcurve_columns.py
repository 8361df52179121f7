"""Which columns of a light-curve table are time, brightness and error, and magnitudes.

Names are matched case-insensitively, in order of preference; a user can name any
column instead (``ColumnChoice``, the ``--time-col/--flux-col/--mag-col/--err-col``
options). A flux column is preferred over a magnitude column when a file has both.

Magnitudes become relative flux, ``flux = 10**(-0.4 (m - median(m)))`` (so the median
flux is 1), with errors propagated to first order, ``flux_err = 0.4 ln(10) flux m_err``.

Examples
--------
>>> pick_columns(["MJD", "mag", "e_mag"], ColumnChoice(), path="x.csv")
{'time': 'MJD', 'brightness': 'mag', 'kind': 'mag', 'err': 'e_mag'}
>>> import numpy as np
>>> f, e, note = magnitudes_to_flux(np.array([15.0, 15.0, 16.0]), np.array([0.1] * 3), "mag")
>>> np.round(f, 3).tolist(), note.split(":")[0]
([1.0, 1.0, 0.398], "magnitudes (column 'mag') converted to relative flux")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TIME_NAMES = ("time", "t", "mjd", "bjd", "hjd", "jd", "btjd", "bjd_tdb", "time_bjd", "hjd_utc",
              "mjd_obs", "obsmjd", "date")
FLUX_NAMES = ("flux", "pdcsap_flux", "sap_flux", "f", "rel_flux", "norm_flux")
FLUX_ERR_NAMES = ("flux_err", "err", "error", "sigma", "flux_error", "e_flux", "fluxerr",
                  "e", "dflux")
MAG_NAMES = ("mag", "magnitude")  # then any "*_mag" (v_mag, psf_mag, ...)
MAG_ERR_NAMES = ("mag_err", "magerr", "e_mag", "err_mag", "mag_error", "sigma_mag", "dmag",
                 "magnitude_err", "err", "error", "sigma", "e")
_ERR_PREFIXES = ("e_", "err_", "error_", "sigma_")


@dataclass(frozen=True)
class ColumnChoice:
    """Column names given by the user (None: guess from the names above)."""

    time: str | None = None
    flux: str | None = None
    mag: str | None = None
    err: str | None = None

    def __post_init__(self) -> None:
        if self.flux and self.mag:
            raise ValueError("give either a flux column or a magnitude column, not both "
                             f"(flux={self.flux!r}, mag={self.mag!r})")


class ColumnError(ValueError):
    """A wanted column is missing; the message lists the columns there are."""


def _find(names: Sequence[str], wanted: Sequence[str]) -> str | None:
    lower = {n.strip().lower(): n for n in reversed(list(names))}
    for w in wanted:
        if w.lower() in lower:
            return lower[w.lower()]
    return None


def _is_mag_name(name: str) -> bool:
    n = name.strip().lower()
    if n in MAG_NAMES:
        return True
    return n.endswith("_mag") and not n.startswith(_ERR_PREFIXES)


def _err_names_for(column: str, kind: str) -> list[str]:
    """Error-column names for a brightness column: ``X_err``, ``e_X``, ``Xerr`` ..."""
    c = column.strip().lower()
    own = [f"{c}_err", f"{c}err", f"e_{c}", f"err_{c}", f"{c}_error", f"sigma_{c}", f"{c}_sigma"]
    if c.endswith("_mag"):  # v_mag -> v_magerr, v_mag_err, e_v_mag, v_err
        own += [f"{c}err", f"{c[:-4]}_magerr", f"{c[:-4]}_err", f"e_{c[:-4]}"]
    return own + list(MAG_ERR_NAMES if kind == "mag" else FLUX_ERR_NAMES)


def pick_columns(names: Sequence[str], choice: ColumnChoice, path: str = "",
                 positional: bool = False) -> dict[str, str | None]:
    """Choose the time, brightness (flux or magnitude) and error columns.

    Parameters
    ----------
    names : sequence of str
        The table's column names.
    choice : ColumnChoice
        Names the user gave; each must exist.
    path : str
        The file, for error messages.
    positional : bool
        The table had no header (columns ``col1``, ``col2``, ...): time, flux, error by
        position unless the user named others.

    Returns
    -------
    dict
        ``time``, ``brightness``, ``kind`` (``flux`` or ``mag``) and ``err`` (or None).

    Raises
    ------
    ColumnError
        A named column is missing, or no time or brightness column can be guessed.
    """
    names = list(names)
    shown = ", ".join(names)

    def given(option: str, name: str) -> str:
        found = _find(names, [name])
        if found is None:
            raise ColumnError(f"{path}: {option} {name!r} is not a column (columns: {shown})")
        return found

    if choice.time:
        time = given("--time-col", choice.time)
    else:
        time = names[0] if positional else _find(names, TIME_NAMES)
    if time is None:
        raise ColumnError(f"{path}: no time column (columns: {shown}; expected one of "
                          f"{', '.join(TIME_NAMES)}; or name it with --time-col)")
    kind = "flux"
    if choice.flux:
        bright = given("--flux-col", choice.flux)
    elif choice.mag:
        bright, kind = given("--mag-col", choice.mag), "mag"
    elif positional:
        bright = names[1] if len(names) > 1 else None
    else:
        bright = _find(names, FLUX_NAMES)
        if bright is None:
            mags = [n for n in names if _is_mag_name(n)]
            mags.sort(key=lambda n: (n.strip().lower() not in MAG_NAMES, names.index(n)))
            bright, kind = (mags[0], "mag") if mags else (None, "flux")
    if bright is None:
        raise ColumnError(f"{path}: no flux or magnitude column (columns: {shown}; expected one "
                          f"of {', '.join(FLUX_NAMES)}, or magnitudes {', '.join(MAG_NAMES)}, "
                          f"*_mag; or name it with --flux-col / --mag-col)")
    if choice.err:
        err = given("--err-col", choice.err)
    elif positional and not (choice.time or choice.flux or choice.mag):
        err = names[2] if len(names) > 2 else None
    else:
        err = _find([n for n in names if n not in (time, bright)], _err_names_for(bright, kind))
    return {"time": time, "brightness": bright, "kind": kind, "err": err}


def magnitudes_to_flux(mag: np.ndarray, mag_err: np.ndarray | None, column: str
                       ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Magnitudes -> (relative flux with median 1, propagated errors, a note saying so)."""
    mag = np.asarray(mag, dtype=np.float64)
    finite = np.isfinite(mag)
    ref = float(np.median(mag[finite])) if finite.any() else 0.0
    flux = 10.0 ** (-0.4 * (mag - ref))
    err = None
    if mag_err is not None:
        err = 0.4 * np.log(10.0) * flux * np.asarray(mag_err, dtype=np.float64)
    note = (f"magnitudes (column {column!r}) converted to relative flux: "
            f"flux = 10**(-0.4 (mag - {ref:.4f})), median flux 1"
            + ("; errors 0.4 ln(10) flux mag_err" if err is not None else ""))
    return flux, err, note
