"""The README is true: its commands run, parse, name existing files, or name their test.

Commands are taken from the README's fenced ``bash`` blocks, its ``$ command`` examples
(whose printed output must match) and the command table. Each is then
- run as written when it is cheap (``--help``, ``starray config``, ``starray jobs``,
  ``starray slurm render``), from a scratch folder: a packaged path such as
  ``configs/train/...`` must resolve there too;
- for ``starray submit``: run with ``--dry-run`` (every check, nothing queued) when a local
  Slurm answers, else parsed;
- otherwise parsed with the real parser, its config/space/profile files loaded and
  validated, and the test file that runs that command named in ``EXPENSIVE``;
- ``make TARGET``: the Makefile has the target (``make -n``).
Paths the README names must exist inside the repository; none may point outside it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from starray.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# sub-command -> the tests that run it for real (expensive: Ray, training or Slurm)
EXPENSIVE = {
    "train": ["tests/test_train.py", "tests/test_console.py"],
    "tune": ["tests/test_tune.py"],
    "submit": ["tests/test_slurm_submit.py"],
    "logs": ["tests/test_faults_slurm.py"],
    "cancel": ["tests/test_slurm_submit.py"],
    "evaluate": ["tests/test_evaluate.py"],
    "predict": ["tests/test_predict_export.py"],
    "export": ["tests/test_predict_export.py"],
    "generate": ["tests/test_pool.py"],
    "inspect": ["tests/test_lightcurve_io.py"],
}
CHEAP = {"config", "jobs", "slurm"}
OTHER_TOOLS = {"pip", "wandb", "sbatch", "bash", "cd", "python"}  # not ours: not run


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced code block."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        if lang is None and line.startswith("```"):
            lang, lines = line[3:].strip(), []
        elif lang is not None and line.strip() == "```":
            blocks.append((lang, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def bash_commands(text: str) -> list[str]:
    """Commands of the fenced bash blocks (continuations joined, comments dropped)."""
    out = []
    for lang, lines in fenced_blocks(text):
        if lang not in ("bash", "sh", "shell"):
            continue
        joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def dollar_examples(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines of plain fenced blocks, each with the output lines after it."""
    out = []
    for lang, lines in fenced_blocks(text):
        if lang:
            continue
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                printed = []
                for after in lines[i + 1:]:
                    if after.startswith("$ "):
                        break
                    printed.append(after)
                out.append((line[2:].strip(), printed))
    return out


def table_commands(text: str) -> list[str]:
    """Every `starray ...` code span in the first column of the command table."""
    out = []
    for row in re.findall(r"^\| (`starray.*?) \|", text, flags=re.M):
        out += [c.replace("\\|", "|") for c in re.findall(r"`(starray[^`]*)`", row)]
    return out


def _argv(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[0] == "starray", command
    return argv[1:]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "starray.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _check_parsed(command: str, args) -> None:
    """Load what an expensive command would load: config, space, profile."""
    from starray.commands.train import _config

    if args.command in ("train", "tune") and not args.resume:
        _config(args)  # config file (packaged fallback) + --set overrides, validated
    if args.command == "tune" and args.space:
        from starray.tune.space import load_space

        load_space(args.space, _config(args))
    if args.command == "submit":
        from starray.slurm.profile import load_profile

        load_profile(args.profile, args.cluster_overrides)
    tests = EXPENSIVE.get(args.command)
    assert tests, f"README command {command!r}: add the test that runs it to EXPENSIVE"
    for t in tests:
        assert f'"{args.command}"' in (ROOT / t).read_text(), f"{t} does not run {command!r}"


def test_readme_names_commands_in_every_form():
    assert len(bash_commands(README)) >= 5 and table_commands(README) and dollar_examples(README)


@pytest.mark.parametrize("command", bash_commands(README), ids=str)
def test_bash_block_command(command, tmp_path):
    word = command.split()[0]
    if word == "make":
        target = command.split()[1]
        out = subprocess.run(["make", "-n", *command.split()[1:]], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"Makefile has no target {target}: {out.stderr}"
        return
    if word in OTHER_TOOLS:
        return
    assert word == "starray", f"README command {command!r} is not checked by this test"
    argv = _argv(command)
    if "--help" in argv or "-h" in argv or argv[0] in CHEAP:
        out = _run(argv, tmp_path)
        assert out.returncode == 0, f"{command}:\n{out.stdout}\n{out.stderr}"
        return
    if argv[0] == "submit":
        from conftest import slurm_available

        if slurm_available():
            out = _run(argv + ["--dry-run", "--output-dir", str(tmp_path)], tmp_path)
            assert out.returncode == 0, f"{command} --dry-run:\n{out.stdout}\n{out.stderr}"
    _check_parsed(command, build_parser().parse_args(argv))


@pytest.mark.parametrize("command", [c for c, _ in dollar_examples(README)], ids=str)
def test_dollar_example_prints_what_the_readme_shows(command, tmp_path):
    printed = dict(dollar_examples(README))[command]
    out = _run(_argv(command), tmp_path)
    shown = [line for line in printed if line.strip()]
    got = (out.stdout + out.stderr).splitlines()
    for line in shown:
        assert line in got, f"{command}: README shows {line!r}, the command printed:\n{got}"


@pytest.mark.parametrize("command", table_commands(README), ids=str)
def test_table_command_exists_with_its_options(command):
    parser = build_parser()
    words = [w for w in command.split() if w not in ("...", "]...")]
    sub = next(a for a in parser._actions if a.dest == "command")
    name = words[1]
    assert name in sub.choices, f"table row {command!r}: no command {name!r}"
    p = sub.choices[name]
    kinds = [w for w in words[2:3] if re.fullmatch(r"[a-z|]+", w)]
    parsers = [p]
    if kinds:  # `submit train|tune`, `slurm render`
        nested = next(a for a in p._actions if hasattr(a, "choices") and a.choices)
        parsers = [nested.choices[k] for k in kinds[0].split("|")]
    for opt in re.findall(r"(--[a-z][a-z-]*)", command):
        for q in parsers:
            known = {s for a in q._actions for s in a.option_strings}
            assert opt in known, f"table row {command!r}: {q.prog} has no option {opt}"


def test_paths_in_readme_exist_inside_the_repository():
    assert "../" not in README, "the README points outside the repository"
    paths = set(re.findall(r"(?<![\w/.-])((?:configs|slurm|scripts|benchmarks|tests|docs|"
                           r"\.ci)/[\w./*-]*\w)", README))
    assert paths
    for p in sorted(paths):
        if "*" in p:
            assert list(ROOT.glob(p)), f"README names {p}: nothing matches"
        elif not p.startswith("benchmarks/results"):
            assert (ROOT / p).exists(), f"README names {p}, which does not exist"
