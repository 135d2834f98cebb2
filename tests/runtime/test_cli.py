"""The command line a new user meets: a version, help on every command and flag."""

from __future__ import annotations

import argparse

import pytest

from app.cli import build_parser, main


def walk(parser: argparse.ArgumentParser, path: str = "voice-agent"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", "(command)", helps.get(name)
                yield from walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, "/".join(action.option_strings) or action.dest, action.help


def test_every_command_and_flag_has_help():
    missing = [f"{cmd} {flag}" for cmd, flag, text in walk(build_parser()) if not text]
    assert missing == []


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("voice-agent 0.")
