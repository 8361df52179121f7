"""Options shared by `starray predict` and `starray inspect`: column names and limits."""

from __future__ import annotations

import argparse

from starray.data.lightcurve_checks import Limits
from starray.data.lightcurve_columns import ColumnChoice


def add_lightcurve_options(p: argparse.ArgumentParser) -> None:
    """--time-col/--flux-col/--mag-col/--err-col and the per-file resource limits."""
    g = p.add_argument_group("columns (default: guessed from the names; files without a "
                             "header have columns col1, col2, ...)")
    g.add_argument("--time-col", metavar="NAME", default=None,
                   help="time column, in days (default: time, mjd, bjd, hjd, jd, btjd, ...)")
    g.add_argument("--flux-col", metavar="NAME", default=None,
                   help="flux column (default: flux, pdcsap_flux, sap_flux, ...)")
    g.add_argument("--mag-col", metavar="NAME", default=None,
                   help="magnitude column, converted to relative flux "
                        "10**(-0.4 (m - median m)) (default: mag, magnitude, *_mag when "
                        "there is no flux column)")
    g.add_argument("--err-col", metavar="NAME", default=None,
                   help="error column of the flux or magnitude (default: flux_err, mag_err, "
                        "e_mag, err, ...)")
    d = Limits()
    g = p.add_argument_group("per-file limits (a file over one fails alone, before its "
                             "periodogram)")
    g.add_argument("--max-span-days", type=float, default=d.max_span_days, metavar="D",
                   help=f"longest time span accepted (default {d.max_span_days:g} d; a "
                        f"time column in seconds exceeds it)")
    g.add_argument("--max-points", type=int, default=d.max_points, metavar="N",
                   help=f"most points accepted per file (default {d.max_points:,})")
    g.add_argument("--max-frequencies", type=int, default=d.max_frequencies, metavar="N",
                   help=f"largest periodogram grid (default {d.max_frequencies:,}, "
                        f"~{d.max_frequencies * 32 / 2**30:.1f} GiB)")


def columns_and_limits(args: argparse.Namespace) -> tuple[ColumnChoice, Limits]:
    """The ColumnChoice and Limits of parsed options; ValueError for a bad combination."""
    for name in ("max_span_days", "max_points", "max_frequencies"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    columns = ColumnChoice(args.time_col, args.flux_col, args.mag_col, args.err_col)
    return columns, Limits(args.max_span_days, args.max_points, args.max_frequencies)
