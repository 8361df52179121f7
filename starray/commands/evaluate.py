"""`starray evaluate`, `starray predict`, `starray export`."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

EVALUATE_EPILOG = """\
example:
  starray evaluate runs/demo/checkpoints/best.pt --out runs/demo/eval
  starray evaluate runs/demo/checkpoints/best.pt --per-class 50 --wandb-run-dir runs/demo

The benchmark is fixed (seeded): the same stars every time, so reports of different
checkpoints are comparable. Writes report.md, metrics.json, confusion.png, periods.png
and recall.png. Exit code 1 if the model outputs NaN/Inf.
"""

PREDICT_EPILOG = """\
example:
  starray predict exported/starray-compact data/*.tbl --csv predictions.csv --plot plots/

MODEL is a checkpoint (.pt, or a run's checkpoint folder) or an export (stem,
.safetensors or .json). FILE formats are sniffed from the content: IPAC tables, plain
whitespace columns (time, flux, error) under # comments, CSV with a header, FITS tables.
Magnitude columns (mag, magnitude, *_mag) become relative flux. Files that cannot be
read or processed, or exceed a per-file limit, are listed and skipped; the others are
classified. A warning names each way a file lies outside the training distribution
(span, points per day, a dominant period beyond the 0.1-50 d axis). The period columns
show "-" (JSON null, CSV empty) where the predicted class has no such period: no period
for burster, dipper, stochastic and long_term_trend (its texture period is incidental);
no p2 for sinusoidal, eclipsing_binary and co_rotating_thin_material.
Exit codes: 0 all files classified, 1 some file failed, 2 bad usage or unusable MODEL.
"""

EXPORT_EPILOG = """\
example:
  starray export runs/demo/checkpoints/best.pt exported/starray-demo

Writes OUT.safetensors (weights only; loading it never runs code) and OUT.json (model
dimensions, class names, input normalization, sha256 of the weights). Load it with
`starray.load_model("exported/starray-demo")`. Uploads a W&B model artifact only when
W&B is online (WANDB_API_KEY set).
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the evaluate, predict and export sub-commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on the fixed synthetic benchmark",
                       description="Accuracy, per-class precision/recall/F1, confusion "
                                   "matrix, period quality, latency and memory of a "
                                   "checkpoint on a fixed, seeded benchmark.",
                       epilog=EVALUATE_EPILOG, formatter_class=fmt)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file (.pt)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="report folder (default: eval/ next to the checkpoint's folder)")
    p.add_argument("--per-class", type=int, default=500, metavar="N",
                   help="benchmark stars per class (default 500: 7000 stars)")
    p.add_argument("--seed", type=int, default=12345, help="benchmark seed (default 12345)")
    p.add_argument("--batch", type=int, default=256, help="inference batch size (default 256)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--wandb-run-dir", metavar="RUN_DIR", default=None,
                   help="also log to W&B (job type 'evaluate', grouped with the training "
                        "run), W&B files under RUN_DIR")
    p.add_argument("--baseline", metavar="JSON", default=None,
                   help="add the row of benchmarks/feature_baseline.py's JSON to the report")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify light-curve files with a trained model",
                       description="Class, probabilities and periods for each light-curve "
                                   "file.", epilog=PREDICT_EPILOG, formatter_class=fmt)
    p.add_argument("model", metavar="MODEL", help="checkpoint or exported model")
    p.add_argument("files", metavar="FILE", nargs="+", help="light-curve files")
    p.add_argument("--csv", metavar="PATH", default=None, help="write predictions as CSV")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write predictions and failures as JSON")
    p.add_argument("--plot", metavar="DIR", default=None,
                   help="write each star folded at its chosen period as DIR/NAME.png")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    from starray.commands.lightcurve_options import add_lightcurve_options

    add_lightcurve_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint as safetensors + JSON",
                       description="Export a checkpoint for deployment.",
                       epilog=EXPORT_EPILOG, formatter_class=fmt)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint file (.pt) or a run's checkpoint folder")
    p.add_argument("out", metavar="OUT", help="output stem: writes OUT.safetensors, OUT.json")
    p.add_argument("--no-upload", action="store_true",
                   help="never upload a W&B artifact, even when W&B is online")
    p.set_defaults(func=cmd_export)


class BenchmarkProgress:
    """evaluate's ``progress`` callback: one tqdm bar (stderr) for the benchmark's
    "generating benchmark N/M stars" messages; other messages printed as lines.

    The bar turns itself off when stderr is not a terminal (``disable=None``); a log then
    gets the last "generating benchmark M/M stars" line once instead of one per chunk."""

    PATTERN = re.compile(r"generating benchmark (\d+)/(\d+) stars")

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, message: str) -> None:
        from tqdm import tqdm

        m = self.PATTERN.fullmatch(message.strip())
        if m is None:
            self.close()
            print(message, flush=True)
            return
        done, total = int(m.group(1)), int(m.group(2))
        if self.bar is None:
            self.bar = tqdm(total=total, desc="generating benchmark", unit="star",
                            file=sys.stderr, disable=None, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if self.bar.disable and done >= total:
            print(message, flush=True)

    def close(self) -> None:
        """Close the bar (idempotent)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _err(command: str, msg: str) -> None:
    print(f"starray {command}: {msg}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run the benchmark; print the summary and where the report is."""
    from starray.evaluate import EvaluationError, evaluate_checkpoint
    from starray.train.checkpoint import CheckpointError

    if args.per_class < 1 or args.batch < 1:
        _err("evaluate", "--per-class and --batch must be >= 1")
        return 2
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt.parent.parent if ckpt.is_file() else ckpt) / "eval"
    bar = BenchmarkProgress()
    try:
        m = evaluate_checkpoint(ckpt, out, per_class=args.per_class, seed=args.seed,
                                batch=args.batch, device=args.device,
                                wandb_run_dir=args.wandb_run_dir, progress=bar,
                                baseline=args.baseline)
    except CheckpointError as e:
        _err("evaluate", str(e))
        return 2
    except EvaluationError as e:
        _err("evaluate", str(e))
        return 1
    finally:
        bar.close()
    p = m["periods"]
    cpu = m["speed"]["cpu"]
    print(f"accuracy {m['accuracy']:.3f}  macro F1 {m['macro_f1']:.3f}  "
          f"period within 5%: regression {p['regression']['within_5pct']:.3f}, "
          f"chosen candidate {p['chosen']['within_5pct']:.3f}")
    c = p["candidates"]
    print(f"period within 1%: model {p['regression']['within_1pct']:.3f}; some candidate "
          f"{c['any_within_tol']:.3f}, chosen when some is {c['chosen_given_any']:.3f}")
    print(f"CPU latency (batch 1) {cpu['latency_batch1_ms']:.1f} ms, "
          f"throughput {cpu['throughput_samples_per_s']:.0f} samples/s")
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify files; exit 1 if any failed."""
    from starray.commands.lightcurve_options import columns_and_limits
    from starray.export import ModelFileError
    from starray.predict import PredictionError, format_table, predict_files
    from starray.train.checkpoint import CheckpointError

    try:
        columns, limits = columns_and_limits(args)
    except ValueError as e:
        _err("predict", str(e))
        return 2
    try:
        rows, failures = predict_files(args.model, args.files, out_csv=args.csv,
                                       out_json=args.json, plot_dir=args.plot,
                                       device=args.device, columns=columns, limits=limits,
                                       progress=True)
    except (CheckpointError, ModelFileError) as e:
        _err("predict", f"MODEL: {e}")
        return 2
    except PredictionError as e:
        _err("predict", str(e))
        return 1
    print(format_table(rows, []))
    for r in rows:
        for note in r["notes"]:
            print(f"{Path(r['file']).name}: {note}")
        for w in r["warnings"]:
            _err("predict", f"warning: {r['file']}: {w}")
    for f in failures:
        _err("predict", f"skipped {f['reason']}")
    print(f"{len(rows)} classified, {len(failures)} failed")
    for path in (args.csv, args.json):
        if path:
            print(f"wrote {path}")
    if args.plot and rows:
        print(f"plots in {args.plot}")
    return 1 if failures else 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export weights and description."""
    from starray.export import export_model
    from starray.train.checkpoint import CheckpointError

    try:
        weights, meta = export_model(args.checkpoint, args.out,
                                     upload=False if args.no_upload else None)
    except CheckpointError as e:
        _err("export", str(e))
        return 2
    print(f"wrote {weights}\nwrote {meta}")
    return 0
