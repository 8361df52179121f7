"""`starray train` and `starray tune`."""

from __future__ import annotations

import argparse
import json
import sys

from starray.config import load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    """--config, --set, --name, --output-dir, --address (shared by train and tune)."""
    p.add_argument("--config", help="YAML config (default: the embedded default run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--name", help="run name: results go to OUTPUT_DIR/NAME (default: from config)")
    p.add_argument("--output-dir", help="folder of runs (default: config output_dir, 'runs')")
    p.add_argument("--address", help="Ray cluster address ('auto' inside a Ray/Slurm job); "
                                     "default: start a local Ray on this machine")


def _config(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.name:
        overrides.append(f"name={args.name}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """Run (or resume) a training run and print where its results are.

    Ctrl-C or SIGTERM (to the process or its group) shuts the local Ray down and prints
    the ``starray train --resume`` command that continues the run."""
    from starray.train.checkpoint import CheckpointError
    from starray.train.driver import TrainingError, load_run_config, run_training
    from starray.train.signals import Interrupted, run_interruptible

    if args.resume:
        cfg = load_run_config(args.resume, args.overrides)
    else:
        cfg = _config(args)
        if cfg.name is None:
            cfg.name = "default"
    try:
        summary = run_interruptible(
            lambda: run_training(cfg, address=args.address,
                                 resume=bool(args.resume), verbose=args.verbose),
            resume_hint=f"starray train --resume {cfg.run_dir}", what="training")
    except Interrupted as e:
        return e.exit_code
    except (TrainingError, CheckpointError) as e:
        print(f"starray train: error: {e}", file=sys.stderr)
        print(f"starray train: the run can be resumed with: starray train --resume "
              f"{cfg.run_dir}", file=sys.stderr)
        return 1
    print()
    if summary["best_epoch"] is None:
        print(f"no epoch to run (the run has {summary['epochs_run']} of "
              f"{cfg.train.epochs} epochs)")
    else:
        final = summary["final"].get(summary["best_metric"])
        print(f"best {summary['best_metric']} {summary['best_value']:.4f} (epoch "
              f"{summary['best_epoch'] + 1}, {summary['best_mode']}), final {final:.4f}, "
              f"{summary['epochs_run']} epochs, {summary['wall_s']:.0f} s")
    for key in ("best_checkpoint", "last_checkpoint", "metrics", "plots"):
        print(f"  {key:16s} {summary[key]}")
    print(f"  {'wandb run id':16s} {summary['wandb_id']} (files under {summary['run_dir']}/wandb)")
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Run (or resume) an ASHA sweep; 128+signal when stopped by SIGINT/SIGTERM."""
    import sys

    from starray.tune.sweep import SweepInterrupted, run_sweep

    try:
        if args.resume:
            if args.overrides or args.space:
                raise SystemExit("starray tune: --resume continues the sweep as saved; "
                                 "--set and --space do not apply to it")
            summary = run_sweep(None, None, [], resume_dir=args.resume, address=args.address,
                                verbose=args.verbose)
        else:
            if not args.space:
                raise SystemExit("starray tune: --space is required (e.g. configs/tune/tiny.yaml)")
            where = [f"name={args.name}"] if args.name else []
            where += [f"output_dir={args.output_dir}"] if args.output_dir else []
            base = load_config(args.config, where)  # --set goes on top of the space's base:
            summary = run_sweep(args.space, base, list(args.overrides), address=args.address,
                                num_samples=args.num_samples, verbose=args.verbose)
    except SweepInterrupted as e:
        print(f"starray tune: stopped by {e}", file=sys.stderr)
        return 128 + e.signum
    print(json.dumps(summary, indent=1) if args.json else summary["table"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the train and tune commands."""
    p = sub.add_parser(
        "train", help="train the model with Ray Train (DDP)",
        description="Train with Ray Train on N DDP workers fed by the data-generation actor "
                    "pool. Without --config this runs the embedded default: a local Ray, 2 CPU "
                    "workers, the tiny preset, 12 epochs of 4,096 fresh stars (about 4 minutes).",
        epilog="examples:\n  starray train\n"
               "  starray train --config configs/train/default.yaml --set train.epochs=3 "
               "--name d3\n"
               "  starray train --resume runs/d3 --set train.epochs=5\n"
               "  starray train --config configs/train/gpu-compact.yaml "
               "--set scaling.num_workers=4 --name c1   # 4 GPUs",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run from its last checkpoint (its saved config, same W&B id)")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's logs (workers, Train controller); by default the "
                        "console shows a progress bar and one line per epoch")
    p.set_defaults(func=cmd_train)

    t = sub.add_parser(
        "tune", help="ASHA sweep over architecture and training hyperparameters",
        description="Ray Tune sweep: each trial runs a TorchTrainer; ASHA stops weak trials "
                    "early; one data-generation pool and validation set serve all trials. "
                    "Settings: the config, then the space file's base:, then --set. Trials at "
                    "once: (CPUs - data.generators x data.generator_cpus) // (workers x "
                    "cpus_per_worker + 0.001), bounded by GPUs. Ctrl-C or SIGTERM stops the "
                    "sweep and its local Ray; --resume continues it with ASHA's rungs kept.",
        epilog="examples:\n  starray tune --space configs/tune/tiny.yaml --name sweep1\n"
               "  starray tune --space configs/tune/tiny.yaml --name s2 --num-samples 4 "
               "--set data.stars_per_epoch=512\n"
               "  starray tune --resume runs/sweep1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(t)
    t.add_argument("--space", help="search space YAML (configs/tune/*.yaml)")
    t.add_argument("--num-samples", type=int, help="number of trials (default: from the space)")
    t.add_argument("--resume", metavar="SWEEP_DIR", help="continue an interrupted sweep")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    t.add_argument("--verbose", action="store_true",
                   help="also show Ray's and the trials' own logs; by default the console "
                        "shows the compact trial table")
    t.set_defaults(func=cmd_tune)
