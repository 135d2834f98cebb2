"""Two server processes on one PostgreSQL behind a small TCP balancer: a call survives the
SIGKILL of the process that holds it, and a SIGTERM hands live calls over instead of cutting
or waiting for them. The balancer routes each connection to a backend whose /health answers
200, as fly's proxy does; calls are placed by the simulator, which follows <Connect action> as
Twilio does."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time

import httpx
import pytest

from app.simulator import CallOptions, simulate_call
from tests.ops.serverproc import ServerProcess, start_server
from tests.store.pg import pg_url  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

AUTH = "e1d2c3b4a5968778695a4b3c2d1e0f00"  # shared by both instances: tokens verify anywhere
ACCOUNT = "AC" + "7" * 32
BOOKING = (
    "I'd like to book an appointment tomorrow at ten o'clock.",
    "My name is Alex Morgan.",
    "Yes, that's right.",
    "No, that's everything. Thank you, goodbye.",
)
SHORT = ("When are you open?", "No, that's everything. Thank you, goodbye.")


class Balancer:
    """Round-robin over backends whose /health is 200; bytes piped both ways."""

    def __init__(self, backends: list[ServerProcess]) -> None:
        self.backends = backends
        self._next = 0
        self._server: asyncio.Server | None = None
        self.port = 0
        self.routes: list[str] = []  # which backend each connection went to

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _healthy(self, backend: ServerProcess) -> bool:
        if backend.proc.returncode is not None:
            return False
        try:
            async with httpx.AsyncClient(timeout=3) as client:  # a busy machine answers late
                return (await client.get(backend.url + "/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        start, self._next = self._next, self._next + 1
        for i in range(len(self.backends)):  # each backend once, from this connection's turn
            backend = self.backends[(start + i) % len(self.backends)]
            if await self._healthy(backend):
                with contextlib.suppress(OSError):
                    upstream = await asyncio.open_connection("127.0.0.1", backend.port)
                    break
        self.routes.append("none" if upstream is None else str(backend.port))
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError, ConnectionError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def wait_live(servers: list[ServerProcess], sid: str, turns: int = 0) -> ServerProcess:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(600):
            for server in servers:
                if server.proc.returncode is not None:
                    continue
                with contextlib.suppress(httpx.HTTPError):
                    live = (await client.get(server.url + "/api/live")).json()
                    for call in live["calls"]:
                        if call["id"] == sid and call["turns"] >= turns:
                            return server
            await asyncio.sleep(0.1)
    raise AssertionError(f"{sid} never became live with {turns} turn(s)")


async def record_of(server: ServerProcess, sid: str) -> dict:
    """The call's record once its end is written (the writer batches for up to 100 ms)."""
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(100):
            record = (await client.get(f"{server.url}/api/calls/{sid}")).json()
            if record.get("end_reason"):
                return record
            await asyncio.sleep(0.1)
    return record


def options(sid: str) -> CallOptions:
    return CallOptions(call_sid=sid, auth_token=AUTH, account_sid=ACCOUNT, call_timeout=200)


@contextlib.asynccontextmanager
async def two_servers(tmp_path, url: str, **env: str):
    common = {"DATABASE_URL": url, "TWILIO_AUTH_TOKEN": AUTH, "TWILIO_ACCOUNT_SID": ACCOUNT,
              "ZOMBIE_SWEEP_INTERVAL_S": "5", **env}  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = await start_server(tmp_path / "a", **common)
    try:
        b = await start_server(tmp_path / "b", **common)
        try:
            async with Balancer([a, b]) as balancer:
                yield a, b, balancer
        finally:
            await b.stop()
    finally:
        await a.stop()


async def heard_agent_line(servers: list[ServerProcess], sid: str, text: str) -> None:
    """Until the shared record holds an agent line with ``text``, heard in full. (Not a count of
    lines: a slow recogniser on a loaded machine adds a "One moment, please." line.)"""
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(600):
            for server in servers:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    record = (await client.get(f"{server.url}/api/calls/{sid}")).json()
                    agent = [x for x in record.get("transcript", []) if x["role"] == "agent"]
                    if any(text in x["text"] for x in agent):
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{sid}: no agent line with {text!r} heard")


@pytest.mark.parametrize(
    "moment",
    # as the first answer starts; or between turns, once the second answer was heard in full
    ["mid-reply", "between-turns"],
)
async def test_a_call_survives_the_sigkill_of_its_server(
    tmp_path, pg_url, moment  # noqa: F811
) -> None:
    sid = "CA" + secrets.token_hex(16)
    async with two_servers(tmp_path, pg_url) as (a, b, balancer):
        call = asyncio.create_task(simulate_call(balancer.url, BOOKING, options(sid)))
        try:
            holder = await wait_live([a, b], sid, turns=1)
            if moment == "between-turns":
                # the second answer heard in full, up to its question
                await heard_agent_line([holder], sid, "Shall I book it?")
        except AssertionError:
            if call.done():
                raise AssertionError(f"the call ended early: {call.result()}") from None
            raise
        holder.proc.kill()
        killed_at = time.monotonic()
        survivor = b if holder is a else a
        try:
            await wait_live([survivor], sid)
        except AssertionError:
            done = await asyncio.wait_for(call, 60)
            raise AssertionError(
                f"not resumed: {done.after_streams} {done.error} {done.violations}\n"
                + "\n".join(survivor.log().splitlines()[-25:])
            ) from None
        back_in = time.monotonic() - killed_at
        result = await call
        record = await record_of(survivor, sid)
    print(f"\nSIGKILL: back on the other instance in {back_in:.2f} s; silence across the "
          f"move {result.resume_gaps_ms} ms; after the streams: {result.after_streams}")
    assert back_in < 3.0
    assert result.after_streams == ["stream", "hangup"], result.after_streams
    agent = [line["text"] for line in record["transcript"] if line["role"] == "agent"]
    caller = [line["text"] for line in record["transcript"] if line["role"] == "caller"]
    assert any("cut off" in line for line in agent)  # the recovery line
    said = [(line["role"], line["text"]) for line in record["transcript"]]
    assert "booked" in " ".join(agent) and "Alex" in " ".join(agent), "\n".join(map(str, said))
    assert len(caller) == len(set(caller)) >= 3  # one record, no line twice
    assert record["end_reason"] == "end_call"
    # usage goes out with every turn, so the killed instance's part is not lost
    sent_s = result.frames_sent * 0.02
    print(f"caller audio sent {sent_s:.1f} s, recogniser seconds on the record "
          f"{record['usage'].get('stt_seconds')}")
    assert record["usage"]["stt_seconds"] >= 0.7 * sent_s


async def test_a_sigterm_hands_live_calls_over(tmp_path, pg_url) -> None:  # noqa: F811
    """Three calls live on one instance; a second one joins the pool; the first gets SIGTERM."""
    sids = ["CA" + secrets.token_hex(16) for _ in range(3)]
    async with two_servers(tmp_path, pg_url, DRAIN_HANDOVER="true") as (a, b, balancer):
        balancer.backends.remove(b)  # every call starts on a
        calls = [
            asyncio.create_task(simulate_call(balancer.url, SHORT, options(sid))) for sid in sids
        ]
        assert [await wait_live([a, b], sid) for sid in sids] == [a, a, a]
        balancer.backends.append(b)
        a.signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await a.wait(30)
        exited_in = time.monotonic() - signalled
        results = await asyncio.gather(*calls)
        records = [await record_of(b, sid) for sid in sids]
    gaps = [r.resume_gaps_ms for r in results]
    print(f"\nSIGTERM with 3 calls live: exited {code} in {exited_in:.1f} s; silence across "
          f"each move (ms): {gaps}")
    assert code == 0 and exited_in < 30
    for result, record in zip(results, records, strict=True):
        assert result.error is None, result.error
        assert not any(t.timed_out for t in result.turns)  # nobody was cut off
        assert result.after_streams == ["stream", "hangup"]
        assert len(result.resume_gaps_ms) == 1
        assert record["end_reason"] == "end_call"  # every call reached its own goodbye
