"""``voice-agent doctor``: which providers a call would use, and whether each key works.

One cheap request per configured key, through the same SDK the calls use: Deepgram lists the
projects (``GET /v1/projects``), Anthropic looks up the configured model (``GET /v1/models/
{id}``, which checks the key and the model id together), ElevenLabs reads the account
(``GET /v1/user``). Failures are one clear line each (what failed, the HTTP status or network
error, what to check); never a stack trace, never the key.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.agents import load_settings
from app.config import ConfigError, Settings
from app.logs import configure, register_secret

TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Check:
    what: str  # "stt: deepgram", "key: ANTHROPIC_API_KEY"
    ok: bool
    detail: str
    ms: float | None = None

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        took = f" ({self.ms:.0f} ms)" if self.ms is not None else ""
        return f"[{mark}] {self.what}: {self.detail}{took}"


def selection(settings: Settings) -> list[Check]:
    from app.providers.registry import choose

    out = []
    for kind in ("stt", "llm", "tts"):
        try:
            name = choose(kind, settings)  # type: ignore[arg-type]
            out.append(Check(f"{kind}", True, f"{name} ({_why(kind, name, settings)})"))
        except ConfigError as exc:
            out.append(Check(f"{kind}", False, str(exc)))
    return out


def _why(kind: str, name: str, settings: Settings) -> str:
    wanted = getattr(settings.providers, kind)
    if wanted == "auto":
        return (
            "auto: key set" if name in {"deepgram", "anthropic", "elevenlabs"} else "auto: no key"
        )
    return f"{kind.upper()}_PROVIDER={wanted}"


async def _deepgram(settings: Settings) -> str:
    from app.providers.deepgram import AsyncDeepgramClient, environment_for

    cloud = settings.providers.cloud
    env = environment_for(cloud.deepgram_url)
    client = AsyncDeepgramClient(api_key=cloud.deepgram_api_key or "", environment=env)
    projects = await client.manage.v1.projects.list(request_options={"max_retries": 0})
    return f"{len(projects.projects or [])} project(s) at {urlsplit(env.base).netloc}"


async def _anthropic(settings: Settings) -> str:
    import anthropic

    cloud = settings.providers.cloud
    async with anthropic.AsyncAnthropic(
        api_key=cloud.anthropic_api_key,
        base_url=cloud.anthropic_base_url,
        max_retries=0,
        timeout=TIMEOUT_S,
    ) as client:
        model = await client.models.retrieve(cloud.anthropic_model)
        return f"model {model.id} available at {client.base_url.host}"


async def _elevenlabs(settings: Settings) -> str:
    import httpx
    from elevenlabs.client import AsyncElevenLabs

    cloud = settings.providers.cloud
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        client = AsyncElevenLabs(
            api_key=cloud.elevenlabs_api_key,
            base_url=cloud.elevenlabs_base_url,
            timeout=TIMEOUT_S,
            httpx_client=http,
        )
        await client.user.get(request_options={"max_retries": 0})
    host = urlsplit(cloud.elevenlabs_base_url or "https://api.elevenlabs.io").netloc
    return f"account readable at {host}, voice {cloud.elevenlabs_voice_id}"


_KEY_CHECKS: tuple[tuple[str, str, Callable[[Settings], Awaitable[str]]], ...] = (
    ("DEEPGRAM_API_KEY", "deepgram_api_key", _deepgram),
    ("ANTHROPIC_API_KEY", "anthropic_api_key", _anthropic),
    ("ELEVENLABS_API_KEY", "elevenlabs_api_key", _elevenlabs),
)


def explain(exc: BaseException) -> str:
    """One line for what went wrong, from the SDKs' error types without importing them all."""
    status = getattr(exc, "status_code", None)
    if status is None and isinstance(getattr(exc, "status", None), int):  # the twilio package
        status = exc.status  # type: ignore[attr-defined]
    if status is None and getattr(exc, "response", None) is not None:
        status = getattr(exc.response, "status_code", None)  # type: ignore[union-attr]
    if status in (401, 403):
        return f"key rejected (HTTP {status}): check the key"
    if status == 404:
        return "not found (HTTP 404): check the model or voice id and the base URL"
    if status is not None:
        return f"service answered HTTP {status}"
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return f"no answer within {TIMEOUT_S:.0f} s"
    if isinstance(exc, ValueError):
        return str(exc)
    cause = exc.__cause__ or exc.__context__
    name = type(cause or exc).__name__
    return f"cannot reach the service ({name}): check the URL and the network"


async def key_checks(settings: Settings) -> list[Check]:
    cloud = settings.providers.cloud
    out = []
    for env, attr, probe in _KEY_CHECKS:
        key = getattr(cloud, attr)
        if not key:
            continue
        register_secret(key)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(TIMEOUT_S + 1):
                detail = await probe(settings)
            ok = True
        except Exception as exc:  # every failure becomes one readable line
            detail, ok = explain(exc), False
        out.append(Check(f"key {env}", ok, detail, (time.perf_counter() - started) * 1000))
    if not out:
        out.append(Check("keys", True, "none set: every call runs on the local providers"))
    return out


async def flux_check(settings: Settings) -> list[Check]:
    """With STT_PROVIDER=flux: open one Flux socket as a call would (key, model and end-of-turn
    parameters are all checked by the upgrade), then close it."""
    from app.core.providers import CallInfo
    from app.providers.registry import build_one, choose

    try:
        if choose("stt", settings) != "flux" or not settings.providers.cloud.deepgram_api_key:
            return []
    except ConfigError:
        return []  # already reported by ``selection``
    cloud = settings.providers.cloud
    what = f"stt flux ({cloud.deepgram_flux_model})"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(TIMEOUT_S + 1):
            stream = await build_one("stt", settings).open(CallInfo("doctor", "doctor"))
            await stream.aclose()
    except Exception as exc:
        reason = str(exc).removeprefix("flux connect: ")
        if reason in {"HTTP 401", "HTTP 403"}:
            detail = f"key rejected ({reason}): check the key"
        elif reason == "HTTP 400":
            detail = "parameters refused (HTTP 400): check DEEPGRAM_FLUX_MODEL, DEEPGRAM_EOT_*"
        else:
            detail = f"cannot open the socket ({reason[:80]}): check DEEPGRAM_URL and the network"
        return [Check(what, False, detail, (time.perf_counter() - started) * 1000)]
    host = urlsplit(cloud.deepgram_url or "wss://api.deepgram.com").netloc
    took = (time.perf_counter() - started) * 1000
    return [Check(what, True, f"socket opened at {host}, eot {cloud.deepgram_eot_threshold}", took)]


async def _timed(what: str, probe: Callable[[], Awaitable[str]]) -> Check:
    """Run one probe within the time limit; any failure becomes one readable line."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(TIMEOUT_S + 1):
            detail, ok = await probe(), True
    except Exception as exc:
        detail, ok = explain(exc), False
    return Check(what, ok, detail, (time.perf_counter() - started) * 1000)


async def twilio_check(settings: Settings) -> list[Check]:
    """The account's credentials, by reading the account (``GET /Accounts/{sid}.json``)."""
    from telephony.rest import rest_client

    t = settings.twilio
    if not t.account_sid and not t.auth_token:
        return [Check("twilio", True, "not configured: only loopback callers (the simulator)")]
    if not t.account_sid or not (t.auth_token or t.api_key):
        return [Check("twilio", False, "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN together")]
    register_secret(t.auth_token)
    register_secret(t.api_secret)

    async def probe() -> str:
        client = rest_client(t.account_sid or "", t.auth_token, api_key=t.api_key,
                             api_secret=t.api_secret, base_url=t.api_base_url, timeout_s=TIMEOUT_S)
        account = await asyncio.to_thread(lambda: client.api.v2010.accounts(t.account_sid).fetch())
        return f"account {account.friendly_name!r} is {account.status}"

    checks = [await _timed("twilio credentials", probe)]
    if not t.auth_token:
        checks.append(Check("twilio signatures", False,
                            "TWILIO_AUTH_TOKEN is needed to check webhook signatures"))
    return checks


async def public_url_check(settings: Settings) -> list[Check]:
    """Can the internet (Twilio) reach us? ``GET PUBLIC_URL/health`` from here."""
    import httpx

    url = settings.server.public_url
    if not url:
        return [Check("PUBLIC_URL", not settings.twilio.auth_token,
                      "not set: Twilio cannot reach this server (set it to the https address)")]
    if not url.startswith("https://"):
        return [Check("PUBLIC_URL", False, "must be https://: Twilio opens only wss:// streams")]

    async def probe() -> str:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            resp = await client.get(url + "/health")
        if resp.status_code != 200 or "status" not in resp.text:
            raise ValueError(f"{url}/health answered HTTP {resp.status_code}: is it this server?")
        return f"{url}/health answers ({resp.json().get('status')})"

    return [await _timed("PUBLIC_URL", probe)]


async def database_check(settings: Settings) -> list[Check]:
    from app.store import Store, StoreError

    async def probe() -> str:
        try:
            store = await Store.open(settings.store.database_url)
        except StoreError as exc:
            raise ValueError(str(exc)) from None
        await store.close()
        return f"{store.db.dialect} opens and has the current schema"

    return [await _timed("database", probe)]


def agents_check(settings: Settings) -> list[Check]:
    from app.agents import with_agents

    cc = settings.callcentre
    if not cc.agents_file:
        return []
    try:
        book = with_agents(settings).callcentre.agents
    except ConfigError as exc:
        return [Check("agents file", False, str(exc))]
    names = sorted(book.agents)
    return [Check("agents file", True, f"{cc.agents_file}: {len(names)} agent(s): "
                  + ", ".join(names[:8]))]


async def turn_check(settings: Settings) -> list[Check]:
    """Each TURN server's host and port accept a connection (TCP, as turns: and most relays do)."""
    out = []
    for url in settings.webrtc.turn_urls:
        scheme, _, rest = url.partition(":")
        hostport = rest.split("?", 1)[0]
        host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
        port_n = int(port) if port.isdigit() else (5349 if scheme == "turns" else 3478)
        target = host or hostport

        async def probe(target: str = target, port_n: int = port_n) -> str:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(target, port_n), TIMEOUT_S
            )
            writer.close()
            return f"{target}:{port_n} accepts connections"

        out.append(await _timed(f"turn {scheme}:{target}:{port_n}", probe))
    return out


async def diagnose(settings: Settings) -> list[Check]:
    return (
        selection(settings)
        + await key_checks(settings)
        + await flux_check(settings)
        + await twilio_check(settings)
        + await public_url_check(settings)
        + await database_check(settings)
        + agents_check(settings)
        + await turn_check(settings)
    )


def run(args: argparse.Namespace) -> int:
    configure("error")  # the report is the output; library chatter would only hide it
    for name in ("httpx", "httpx2", "anthropic", "elevenlabs", "deepgram"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"[FAIL] configuration: {exc}")
        return 2
    checks = asyncio.run(diagnose(settings))
    for check in checks:
        print(check.line())
    return 0 if all(c.ok for c in checks) else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "doctor",
        help="check the providers, keys, Twilio account, PUBLIC_URL, database, agents and TURN",
    )
    p.set_defaults(func=run)
