"""``voice-agent dial``, and what the ``campaign``/``dnc`` commands share with it.

Each command opens the store and (when it dials) the Twilio client from the same settings as
the server. Dialling from the command line is safe while servers dial too: pacing and claims
live in the shared database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

from app.agents import load_settings
from app.config import ConfigError
from app.logs import configure
from app.outbound.dialer import DialError, TwilioDialer
from app.outbound.service import DialRefused, OutboundService
from app.store import Store, StoreError


def register(sub: Any) -> None:
    dial = sub.add_parser("dial", help="place one outbound call")
    dial.add_argument("number", help="the number to call, +E.164")
    dial.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                      help="a prompt variable for this call (repeatable)")
    dial.add_argument("--prompt", help="instructions for the agent on this call")
    dial.add_argument("--from", dest="from_number", help="caller id (default OUTBOUND_FROM_NUMBER)")
    dial.set_defaults(func=lambda args: _run(_dial(args)))



def parse_vars(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--var expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro) or 0)
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


@contextlib.asynccontextmanager
async def outbound(need_twilio: bool = True) -> AsyncIterator[OutboundService]:
    """Settings, store and (if configured) the Twilio client, for one command."""
    settings = load_settings()
    configure("warning" if settings.server.log_level == "info" else settings.server.log_level,
              human=True)
    tw = settings.twilio
    dialer = None
    if tw.account_sid and tw.auth_token:
        dialer = TwilioDialer(tw.account_sid, tw.auth_token, api_base_url=tw.api_base_url)
    elif need_twilio:
        raise ConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required to dial")
    store = await Store.open(settings.store.database_url)
    try:
        yield OutboundService(settings, store, dialer)
    finally:
        await store.close()


async def _dial(args: argparse.Namespace) -> int:
    variables = parse_vars(args.var)
    # Number checks come first (and are logged) even when Twilio is not configured.
    async with outbound(need_twilio=False) as service:
        try:
            placed = await service.dial(
                args.number, variables=variables, prompt=args.prompt,
                from_number=args.from_number,
            )
        except DialRefused as exc:
            print(f"refused: {exc.reason}", file=sys.stderr)
            return 3
        except DialError as exc:
            print(f"Twilio refused the call: {exc.label}", file=sys.stderr)
            return 4
    print(placed.call_sid)
    return 0
