"""``voice-agent campaign create|run|pause|resume|cancel|status|list`` and ``voice-agent dnc``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.campaigns.engine import CampaignEngine
from app.campaigns.manage import CampaignInputError, create_from_csv, error_summary
from app.outbound.cli import _run, outbound
from app.outbound.numbers import NumberRefused, normalise
from app.store.campaigns import CampaignStateError

SHOW_ERRORS = 20  # bad rows printed one by one; the rest are counted by reason

console = Console(stderr=True)


def register(sub: Any) -> None:
    camp = sub.add_parser("campaign", help="outbound call campaigns")
    cs = camp.add_subparsers(dest="campaign_command", required=True)

    create = cs.add_parser("create", help="create a campaign from a CSV file")
    create.add_argument("--csv", required=True, type=Path, help="phone column + variables")
    create.add_argument("--name", required=True, help="a name to know it by")
    create.add_argument("--prompt", help="instructions for the agent; {column} is replaced")
    create.add_argument("--from", dest="from_number", help="caller id for this campaign")
    create.add_argument("--cps", type=float, help="calls per second (at most TWILIO_CPS)")
    create.add_argument("--max-concurrent", type=int, help="calls of this campaign at once")
    create.add_argument("--max-attempts", type=int, help="tries per contact (busy, no answer)")
    create.add_argument("--retry-base", type=float, help="first retry delay in seconds")
    create.add_argument(
        "--hours", help="calling hours in the callee's time: 09:00-20:00 or 09:00,20:00"
    )
    create.add_argument("--allow-invalid", action="store_true",
                        help="create with the valid rows even if some are rejected")
    create.add_argument("--start", action="store_true", help="set it running at once")
    create.set_defaults(func=lambda a: _run(_create(a)))

    run = cs.add_parser("run", help="start (or join) dialling a campaign from this process")
    run.add_argument("id", help="the campaign id (from create or list)")
    run.add_argument("--detach", action="store_true",
                     help="only mark it running; servers with CAMPAIGN_DIALER dial it")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    run.add_argument("--poll", type=float, default=1.0,
                     help="seconds between checks while calls are in flight")
    run.set_defaults(func=lambda a: _run(_run_campaign(a)))

    for name in ("pause", "resume", "cancel"):
        cmd = cs.add_parser(name, help=f"{name} a campaign")
        cmd.add_argument("id", help="the campaign id")
        cmd.set_defaults(func=lambda a, n=name: _run(_command(a.id, n)))

    status = cs.add_parser("status", help="progress of a campaign")
    status.add_argument("id", help="the campaign id")
    status.set_defaults(func=lambda a: _run(_status(a.id)))

    listing = cs.add_parser("list", help="all campaigns")
    listing.set_defaults(func=lambda a: _run(_list()))

    dnc = sub.add_parser("dnc", help="the do-not-call list")
    ds = dnc.add_subparsers(dest="dnc_command", required=True)
    add = ds.add_parser("add", help="block numbers")
    add.add_argument("numbers", nargs="+", help="numbers in E.164 (+14155550123)")
    add.add_argument("--reason", help="why (kept with the entry)")
    add.set_defaults(func=lambda a: _run(_dnc(a, add=True)))
    remove = ds.add_parser("remove", help="unblock numbers")
    remove.add_argument("numbers", nargs="+", help="numbers in E.164")
    remove.set_defaults(func=lambda a: _run(_dnc(a, add=False)))


async def _create(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for key, value in (
        ("cps", args.cps), ("max_concurrent", args.max_concurrent),
        ("max_attempts", args.max_attempts), ("retry_base_s", args.retry_base),
        ("hours", args.hours),
    ):
        if value is not None:
            overrides[key] = value
    try:
        text = args.csv.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        console.print(f"[red]cannot read {args.csv}: {exc}")
        return 2
    async with outbound(need_twilio=False) as service:
        try:
            campaign_id, parsed = await create_from_csv(
                service.store, service.out, name=args.name, csv_text=text,
                now=time.time(), prompt=args.prompt, from_number=args.from_number,
                overrides=overrides, allow_invalid=args.allow_invalid,
            )
        except CampaignInputError as exc:
            console.print(f"[red]{exc}")
            return 2
        for error in parsed.errors[:SHOW_ERRORS]:
            console.print(f"[yellow]line {error.line}: {error.reason}")
        if len(parsed.errors) > SHOW_ERRORS:
            reasons = error_summary(parsed.errors)["reasons"]
            console.print(
                f"[yellow]... and {len(parsed.errors) - SHOW_ERRORS} more bad row(s); by reason: "
                + "; ".join(f"{n} x {why}" for why, n in reasons.items())
            )
        if campaign_id is None:
            console.print(
                f"[red]not created: {len(parsed.errors)} bad row(s)"
                + ("" if args.allow_invalid else " (fix them, or use --allow-invalid)")
            )
            return 1
        if args.start:
            await service.store.campaigns.command(campaign_id, "run", time.time())
    console.print(f"created {campaign_id} with {len(parsed.contacts)} contacts")
    print(campaign_id)
    return 0


async def _command(campaign_id: str, name: str) -> int:
    async with outbound(need_twilio=False) as service:
        try:
            status = await service.store.campaigns.command(campaign_id, name, time.time())
        except KeyError:
            console.print(f"[red]no campaign {campaign_id}")
            return 1
        except CampaignStateError as exc:
            console.print(f"[red]{exc}")
            return 1
    console.print(f"{campaign_id}: {status}")
    return 0


async def _run_campaign(args: argparse.Namespace) -> int:
    async with outbound(need_twilio=not args.detach) as service:
        store = service.store.campaigns
        camp = await store.get(args.id)
        if camp is None:
            console.print(f"[red]no campaign {args.id}")
            return 1
        if camp["status"] in ("draft", "paused"):
            await store.command(args.id, "run" if camp["status"] == "draft" else "resume",
                                time.time())
        elif camp["status"] != "running":
            console.print(f"[red]the campaign is {camp['status']}")
            return 1
        if args.detach:
            console.print(f"{args.id}: running")
            return 0
        engine = CampaignEngine(service, args.id, poll_s=args.poll)
        if args.no_progress:
            status = await engine.run()
        else:
            status = await _with_progress(service, args.id, camp["name"], engine)
    console.print(f"{args.id}: {status} ({engine.placed} calls placed from this process)")
    return 0


async def _with_progress(service: Any, campaign_id: str, name: str, engine: Any) -> str:
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(name, total=None, detail="")
        dialling = asyncio.create_task(engine.run())
        try:
            while not dialling.done():
                p = await service.store.campaigns.progress(campaign_id)
                progress.update(task, total=p["total"], completed=p["done"], detail=_detail(p))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(dialling), 0.5)
            p = await service.store.campaigns.progress(campaign_id)
            progress.update(task, total=p["total"], completed=p["done"], detail=_detail(p))
            return dialling.result()
        finally:
            if not dialling.done():
                dialling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dialling


def _detail(p: dict[str, Any]) -> str:
    s, r = p["by_status"], p["by_result"]
    return (
        f"in flight {s.get('calling', 0)} | answered {r.get('answered', 0)} "
        f"| voicemail {r.get('voicemail', 0)} | failed {s.get('failed', 0)} "
        f"| dnc {s.get('dnc', 0)} | attempts {p['attempts']}"
    )


async def _status(campaign_id: str) -> int:
    async with outbound(need_twilio=False) as service:
        camp = await service.store.campaigns.get(campaign_id)
        if camp is None:
            console.print(f"[red]no campaign {campaign_id}")
            return 1
        p = await service.store.campaigns.progress(campaign_id)
    table = Table(title=f"{camp['name']} ({camp['status']})")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("contacts", str(p["total"]))
    table.add_row("done", str(p["done"]))
    table.add_row("attempts", str(p["attempts"]))
    for key, value in sorted(p["by_status"].items()):
        table.add_row(f"status: {key}", str(value))
    for key, value in sorted(p["by_result"].items()):
        table.add_row(f"result: {key}", str(value))
    for key, value in sorted(p["outcomes"].items()):
        table.add_row(f"outcome: {key}", str(value))
    Console().print(table)
    return 0


async def _list() -> int:
    async with outbound(need_twilio=False) as service:
        rows = await service.store.campaigns.list()
    table = Table()
    for col in ("id", "name", "status", "cps", "max concurrent"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["name"], r["status"], str(r["cps"]), str(r["max_concurrent"]))
    Console().print(table)
    return 0


async def _dnc(args: argparse.Namespace, *, add: bool) -> int:
    async with outbound(need_twilio=False) as service:
        phones = []
        for raw in args.numbers:
            try:
                phones.append(normalise(raw, None, service.out.default_region).e164)
            except NumberRefused as exc:
                console.print(f"[red]{exc.reason}")
                return 2
        if add:
            n = await service.store.campaigns.add_dnc(phones, now=time.time(), reason=args.reason)
        else:
            n = sum([await service.store.campaigns.remove_dnc(p) for p in phones])
    console.print(f"{'added' if add else 'removed'} {n}")
    return 0
