"""The ``voice-agent`` command. Each subcommand lives with its feature and registers here."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence

from app import doctor
from app import main as serve_cmd
from app.campaigns import cli as campaigns_cli
from app.logs import configure
from app.ops import configure_number
from app.outbound import cli as outbound_cli
from app.simulator import cli as call_cli


def version() -> str:
    try:
        return importlib.metadata.version("voice-agent")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-agent",
        description="A telephony voice agent server: Twilio Media Streams and WebRTC callers.",
        epilog="Settings come from the environment and ./.env (see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One line per feature: module.register(sub) adds its subcommand(s).
    serve_cmd.register(sub)
    doctor.register(sub)
    configure_number.register(sub)
    call_cli.register(sub)
    outbound_cli.register(sub)
    campaigns_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":  # a command's own output is for people: short log lines
        configure("warning", human=True)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
