"""Synthetic-star generation rate (stars/s on one core), per stage, and with nifty-ls vs
astropy's Lomb-Scargle in the same run. Prints a table, writes benchmarks/results/data_rate.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(n: int = 256) -> None:
    """Time synthesis, features, and the two periodogram implementations."""
    from astropy.timeseries import LombScargle

    from starray.data.dataset import make_batch
    from starray.data.features import clean, lomb_scargle, zscore
    from starray.data.synth import SynthSpec, generate_stars

    stars = generate_stars(n, seed=0, spec=SynthSpec())
    t0 = time.perf_counter()
    generate_stars(n, seed=1)
    synth = n / (time.perf_counter() - t0)
    prepared = []
    for s in stars:
        t, f = clean(s.time, s.flux)
        prepared.append((t, zscore(f)))
    t0 = time.perf_counter()
    for t, f in prepared:
        lomb_scargle(t, f)
    nifty = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for t, f in prepared[: n // 4]:
        freq, _ = lomb_scargle(t, f)
        LombScargle(t, f).power(freq, method="fast")
    astropy = (n // 4) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    make_batch(n, 0, 0, 0)
    full = n / (time.perf_counter() - t0)
    rows = {"stars": n, "synthesis_per_s": round(synth, 1), "nifty_ls_per_s": round(nifty, 1),
            "astropy_fast_per_s": round(astropy, 1),
            "nifty_over_astropy": round(nifty / astropy, 2),
            "full_pipeline_stars_per_s": round(full, 1)}
    for k, v in rows.items():
        print(f"{k:28s} {v}")
    out = Path("benchmarks/results/data_rate.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
