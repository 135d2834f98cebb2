"""The ``voice-agent`` command. Each subcommand lives with its feature and registers here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app import doctor
from app import main as serve_cmd
from app.ops import configure_number
from app.outbound import cli as outbound_cli
from app.simulator import cli as call_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # One line per feature: module.register(sub) adds its subcommand(s).
    serve_cmd.register(sub)
    doctor.register(sub)
    configure_number.register(sub)
    call_cli.register(sub)
    outbound_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
