"""`starray` command line: a thin entry point over the package's modules.

Each command group lives in its own ``starray.commands.*`` module exposing
``register(subparsers)``; every sub-parser sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "starray.commands.data",      # generate, inspect, config
    "starray.commands.train",     # train, tune
    "starray.commands.evaluate",  # evaluate, predict, export
    "starray.commands.slurm",     # submit, jobs, logs, cancel, slurm render
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one sub-command per task)."""
    parser = argparse.ArgumentParser(
        prog="starray",
        description="Train, sweep, evaluate and deploy the multi-branch variable-star "
                    "classifier on Ray (laptop, Ray cluster or Slurm).",
        epilog="Run `starray COMMAND --help` for the options of each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command group not installed in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from starray.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"starray {args.command}: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
