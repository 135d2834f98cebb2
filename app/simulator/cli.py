"""``voice-agent call``: phone the running server the way Twilio would and print what happened."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from app.simulator.call import simulate_call
from app.simulator.plan import (
    DEFAULT_CONVERSATION,
    DEFAULT_FROM,
    DEFAULT_TO,
    DUMMY_AUTH_TOKEN,
    CallerLine,
    CallOptions,
)
from app.simulator.results import CallResult


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "call",
        help="place a simulated Twilio call against the running server",
        description=(
            "Sign and post the voice webhook, open the media stream and speak the given lines "
            "(eSpeak NG voice), waiting for each reply. Prints the transcript with per-turn "
            "latency; exits non-zero if the call never connected or the server broke the "
            "Media Streams protocol."
        ),
    )
    p.add_argument("text", nargs="*", help="caller lines (default: a short booking call)")
    p.add_argument("--server", help="server URL (default http://127.0.0.1:$PORT, PORT=8080)")
    p.add_argument("--public-url", help="URL Twilio would call, for signatures ($PUBLIC_URL)")
    p.add_argument("--wav", action="append", type=Path, default=[], help="a WAV caller line")
    p.add_argument("--out", type=Path, help="write a stereo WAV (caller left, agent right)")
    p.add_argument("--from", dest="from_number", default=DEFAULT_FROM, help="caller number")
    p.add_argument("--to", dest="to_number", default=DEFAULT_TO, help="called number")
    p.add_argument("--dtmf", default="", help="key presses to send after the greeting")
    p.add_argument(
        "--barge-in",
        type=int,
        metavar="MS",
        help="speak the last line MS ms after the agent starts its previous reply",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many s")
    p.add_argument(
        "--no-transcribe", action="store_true", help="skip transcribing the agent's replies"
    )
    p.set_defaults(func=run)


def build_lines(args: argparse.Namespace) -> list[CallerLine]:
    lines: list[CallerLine] = []
    if args.dtmf:
        lines.append(CallerLine(dtmf=args.dtmf, expect_reply=False))
    spoken = [CallerLine(text=t) for t in args.text] + [CallerLine(wav=w) for w in args.wav]
    if not spoken:
        spoken = [CallerLine(text=t) for t in DEFAULT_CONVERSATION]
    if args.barge_in is not None:
        last = spoken[-1]
        spoken[-1] = CallerLine(text=last.text, wav=last.wav, barge_in_ms=args.barge_in)
    return lines + spoken


def run(args: argparse.Namespace) -> int:
    server = args.server or f"http://127.0.0.1:{os.environ.get('PORT', '8080').strip()}"
    options = CallOptions(
        public_url=args.public_url or os.environ.get("PUBLIC_URL") or None,
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or DUMMY_AUTH_TOKEN,
        from_number=args.from_number,
        to_number=args.to_number,
        call_timeout=args.timeout,
        wav_out=args.out,
        transcribe=not args.no_transcribe,
    )
    console = Console(highlight=False)
    try:
        lines = build_lines(args)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        return 2
    console.print(f"Calling {escape(server)}; the transcript follows the call …", style="dim")
    result = asyncio.run(simulate_call(server, lines, options))
    show(console, result)
    if result.connected:
        record = fetch_record(server, result.call_sid, os.environ.get("API_TOKEN"))
        if record is not None:
            show_record(console, record)
    return 0 if result.ok else 1


def fetch_record(server: str, call_sid: str, token: str | None) -> dict[str, Any] | None:
    """The server's own record of the call (exact words both ways, per-turn latency), from its
    calls API. None when the server keeps no records or refuses us: the printout above, which
    is what the phone heard, stands on its own."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{server.rstrip('/')}/api/calls/{call_sid}"
    for _ in range(10):  # records are written just after the call: give them a moment
        try:
            reply = httpx.get(url, headers=headers, timeout=3.0)
        except httpx.HTTPError:
            return None
        if reply.status_code == 200:
            record = reply.json()
            if record.get("transcript"):
                return record  # type: ignore[no-any-return]
        elif reply.status_code != 404:
            return None
        time.sleep(0.3)
    return None


def show_record(console: Console, record: dict[str, Any]) -> None:
    console.print("\nThe server's record of the call:", style="bold")
    stages = {t["turn"]: t.get("stages_ms", {}) for t in record.get("turns", [])}
    shown: set[int] = set()
    for line in record.get("transcript", []):
        role = "Caller" if line["role"] == "caller" else "Agent"
        colour = "cyan" if role == "Caller" else "green"
        cut = " [yellow](cut off)[/]" if line.get("interrupted") else ""
        console.print(f"[bold {colour}]{role}[/]: {escape(line['text'])}{cut}")
        turn = line.get("turn")
        if role == "Agent" and turn in stages and turn not in shown:
            shown.add(turn)
            parts = [f"{k} {v:.0f} ms" for k, v in stages[turn].items() if v is not None]
            console.print("  [dim]" + escape(", ".join(parts)) + "[/]")
    if record.get("end_reason"):
        console.print(f"ended: {escape(str(record['end_reason']))}", style="dim")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def show(console: Console, result: CallResult) -> None:
    for turn in result.turns:
        if turn.caller_text is not None:
            note = " (barging in)" if turn.barge_in else ""
            console.print(f"[bold cyan]Caller[/]{note}: {escape(turn.caller_text)}")
            if turn.barge_in_ms is not None:
                console.print(f"  [dim]clear after {_ms(turn.barge_in_ms)}[/]")
        if turn.timed_out:
            console.print("[bold yellow]Agent[/]: (no reply)")
            continue
        if turn.first_audio is None:
            continue
        heard = escape(f"[{turn.agent_audio_ms / 1000:.1f} s of audio]")
        words = escape(turn.agent_text) if turn.agent_text else f"[dim]{heard}[/]"
        cut = " [yellow](cut off)[/]" if turn.interrupted else ""
        label = "greeting" if turn.index == 0 else "reply"
        console.print(
            f"[bold green]Agent[/] [dim]({label} {_ms(turn.latency_ms)})[/]: {words}{cut}"
        )
    replies = [t.latency_ms for t in result.turns[1:] if t.latency_ms is not None]
    summary = [f"greeting {_ms(result.greeting_latency_ms)}"]
    if replies:
        summary.append(f"reply median {_ms(statistics.median(replies))}")
    summary.append(f"{result.duration_s:.1f} s")
    summary.append(f"hung up by {result.hangup}")
    if result.after_streams:  # what the <Connect action> answered after each stream
        summary.append("after the stream: " + ", ".join(result.after_streams))
    if result.resume_gaps_ms:
        summary.append("silence across the move: " + ", ".join(
            _ms(gap) for gap in result.resume_gaps_ms))
    console.print(" · ".join(summary), style="dim")
    if result.wav_path is not None:
        console.print(f"Recording: {escape(str(result.wav_path))}", style="dim")
    for v in result.violations:
        at = "" if v.at is None else f" at {v.at:.2f} s"
        console.print(f"[bold red]Protocol violation[/]{at}: {v.kind}: {escape(v.detail)}")
    if result.error:
        console.print(f"[bold red]Call failed[/]: {escape(result.error)}")
    elif not result.connected:
        console.print("[bold red]The call never connected.[/]")
