"""Every option and argument of every `starray` command has a help sentence."""

from __future__ import annotations

import argparse

from starray.cli import build_parser


def walk(parser: argparse.ArgumentParser, path: str):
    """Yield (command path, action) for every action of ``parser`` and its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_of_every_command_has_help():
    missing = []
    for path, action in walk(build_parser(), "starray"):
        text = (action.help or "").strip()
        if action.help == argparse.SUPPRESS:
            continue
        if len(text) < 8:  # a sentence, not a word
            name = "/".join(action.option_strings) or action.dest
            missing.append(f"{path} {name}")
    assert not missing, "options without help text:\n  " + "\n  ".join(missing)


def test_every_command_has_a_description_or_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    bare = [name for name in sub.choices if not (helps.get(name) or "").strip()]
    assert not bare, f"commands without help: {bare}"
