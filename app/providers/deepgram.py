"""Deepgram live transcription: one socket per call, phone audio straight through, no lost words.

Phone audio is µ-law 8 kHz and Deepgram takes it as is (``encoding=mulaw``), so nothing is
transcoded. Turn-taking comes from the service: ``endpointing`` (a pause of ~300 ms makes a
result ``speech_final``), ``utterance_end_ms`` (``UtteranceEnd`` after a longer gap, which also
catches pauses that noise kept endpointing from seeing) and ``vad_events`` (``SpeechStarted``,
for barge-in).

Why a replay buffer: audio sent on a socket that then drops is lost with it, and a caller's
words mid-utterance would vanish. Deepgram's final results say up to which second of the stream
they are settled (``start + duration``); everything after that is kept and, after a reconnect,
sent again first. Deepgram closes a socket after ~10 s without audio, and the SDK sends no
KeepAlive itself, so we send one when no audio went out for ``keepalive_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import warnings
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

with warnings.catch_warnings():
    # The SDK's async socket is built on ``websockets.legacy``, which warns on import; load it
    # once here so the warning cannot surface (or fail a strict test run) mid-call.
    warnings.simplefilter("ignore", DeprecationWarning)
    import deepgram.listen.v1.client
    import deepgram.listen.v2.client
    from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
    from deepgram.core.api_error import ApiError
    from deepgram.listen.v1.types import (
        ListenV1Metadata,
        ListenV1Results,
        ListenV1SpeechStarted,
        ListenV1UtteranceEnd,
    )
    from websockets.frames import Opcode
    from websockets.protocol import State as WsState

    # The SDK opens its sockets offering permessage-deflate. Phone audio does not compress, and
    # deflating every 20 ms frame cost ~7 % of a core at 30 calls (BENCHMARKS.md): connect
    # without it. The SDK passes no options through, so its connect function is wrapped here.
    for _module in (deepgram.listen.v1.client, deepgram.listen.v2.client):
        _original = getattr(_module, "websockets_client_connect", None)
        if _original is not None and not isinstance(_original, functools.partial):
            _module.websockets_client_connect = functools.partial(_original, compression=None)  # type: ignore[attr-defined]

from app.core.audio import MULAW_8K, AudioChunk
from app.core.providers import (
    CallInfo,
    SpeechStarted,
    SttEvent,
    SttFailure,
    Transcript,
    UtteranceEnd,
)
from app.logs import event, get_logger, register_secret

log = get_logger(__name__)
# At DEBUG the SDK and websockets log frames (transcripts, auth headers): keep them quiet.
for _name in ("deepgram", "websockets"):
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_WS_BASE = "wss://api.deepgram.com"


class DeepgramError(RuntimeError):
    """The socket could not be opened (bad key, unreachable endpoint) within the budget."""


def environment_for(url: str | None) -> DeepgramClientEnvironment:
    """SDK environment for a websocket base (``wss://host``); the REST base is derived from it."""
    ws = (url or DEFAULT_WS_BASE).rstrip("/")
    parts = urlsplit(ws)
    if parts.scheme not in {"ws", "wss"} or not parts.netloc:
        raise ValueError(f"DEEPGRAM_URL must be a ws:// or wss:// URL, got {url!r}")
    http = urlunsplit(
        ("https" if parts.scheme == "wss" else "http", parts.netloc, parts.path, "", "")
    )
    prod = DeepgramClientEnvironment.PRODUCTION
    return DeepgramClientEnvironment(
        base=http, production=ws, agent=prod.agent, agent_rest=prod.agent_rest
    )


# --------------------------------------------------------------------------- pure parts


class ReplayBuffer:
    """Audio not yet settled by a final result, and how much of it the current socket has.

    Offsets are absolute byte positions in the call's audio. ``base`` is where the current
    socket's time zero lies (a new socket starts counting from the first replayed byte).
    """

    def __init__(self, bytes_per_second: int, max_seconds: float = 30.0) -> None:
        self.bps = bytes_per_second
        self.max_bytes = int(bytes_per_second * max_seconds)
        self.data = bytearray()
        self.acked = 0  # absolute offset of data[0]
        self.sent = 0  # absolute offset sent on the current socket
        self.base = 0
        self.total = 0  # all audio ever appended
        self.dropped = 0  # bytes discarded unsettled because the buffer was full

    def append(self, data: bytes) -> None:
        self.data += data
        self.total += len(data)
        over = len(self.data) - self.max_bytes
        if over > 0:  # bounded: a long outage loses the oldest audio, not memory
            self._trim(self.acked + over)
            self.dropped += over

    def unsent(self, limit: int) -> bytes:
        start = self.sent - self.acked
        return bytes(self.data[start : start + limit])

    def mark_sent(self, n: int) -> None:
        self.sent += n

    def settle(self, stream_seconds: float) -> None:
        """A final result covered the current socket's audio up to ``stream_seconds``."""
        self._trim(min(self.sent, self.base + int(stream_seconds * self.bps)))

    def restart(self) -> int:
        """A new socket: replay from the first unsettled byte. Returns bytes to replay."""
        self.base = self.sent = self.acked
        return len(self.data)

    def _trim(self, upto: int) -> None:
        if upto > self.acked:
            del self.data[: upto - self.acked]
            self.acked = upto
            self.sent = max(self.sent, self.acked)


def map_message(msg: Any) -> tuple[SttEvent | None, float | None]:
    """One SDK message -> (event for the core, seconds of stream now settled)."""
    if isinstance(msg, ListenV1Results):
        alts = msg.channel.alternatives
        text = alts[0].transcript.strip() if alts else ""
        settled = msg.start + msg.duration if msg.is_final else None
        speech_final = bool(msg.speech_final)
        if not text and not speech_final:
            return None, settled
        conf = alts[0].confidence if alts and text else None
        return Transcript(text, bool(msg.is_final), speech_final, conf), settled
    if isinstance(msg, ListenV1SpeechStarted):
        return SpeechStarted(), None
    if isinstance(msg, ListenV1UtteranceEnd):
        return UtteranceEnd(), None
    return None, None


# --------------------------------------------------------------------------- provider


@dataclass(frozen=True, slots=True)
class DeepgramOptions:
    model: str = "nova-3"
    endpointing_ms: int = 300
    # Ask the service to end utterances after this much silence instead (0: off), so the
    # session can start its reply speculatively; it confirms the rest of ``endpointing_ms``
    # itself (its VAD's end of speech, or a timer).
    early_end_ms: int = 75
    utterance_end_ms: int = 1000  # the service's minimum

    @property
    def service_endpointing_ms(self) -> int:
        if 0 < self.early_end_ms < self.endpointing_ms:
            return self.early_end_ms
        return self.endpointing_ms

    keepalive_s: float = 3.0
    connect_timeout_s: float = 2.0
    reconnect_budget_s: float = 3.0  # give up (fatal SttFailure) after this long disconnected
    max_buffer_s: float = 30.0


# Past this much unsent in the socket's buffer, audio goes through the SDK's send (it drains).
DIRECT_WRITE_HIGH_WATER = 64 * 1024


class DeepgramStt:
    name = "deepgram"
    input_format = MULAW_8K

    def __init__(
        self, api_key: str, url: str | None = None, options: DeepgramOptions | None = None
    ) -> None:
        register_secret(api_key)
        self.options = options or DeepgramOptions()
        self._client = AsyncDeepgramClient(api_key=api_key, environment=environment_for(url))
        # The silence the session confirms after the service's early end of an utterance.
        self.confirm_ms = self.options.endpointing_ms - self.options.service_endpointing_ms

    async def open(self, call: CallInfo) -> DeepgramStream:
        stream = DeepgramStream(self._client, self.options, call)
        await stream.start()
        return stream


class LiveStream:
    """One call's recogniser socket that survives drops: audio is kept until a result covers
    it, and a dropped socket is reopened (within ``reconnect_budget_s``) and the audio not yet
    covered is sent again, so no caller words are lost. Subclasses say how to connect, what
    runs beside the receiver, and how to read messages (listen.v1 here, Flux in
    ``deepgram_flux``)."""

    provider = "deepgram"

    def __init__(self, client: AsyncDeepgramClient, options: Any, call: CallInfo) -> None:
        self.options = options
        self.call = call
        self._client = client
        self._buf = ReplayBuffer(MULAW_8K.bytes_per_second, options.max_buffer_s)
        self._events: asyncio.Queue[SttEvent | None] = asyncio.Queue(maxsize=256)
        self._audio = asyncio.Event()
        self._closing = False
        self._connected: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._session_ok = False
        self.sent_bytes = 0  # billed audio, replays included
        self.replayed_bytes = 0
        self.reconnects = 0

    @property
    def audio_seconds(self) -> float:
        return self.sent_bytes / MULAW_8K.bytes_per_second

    async def start(self) -> None:
        self._connected = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"{self.provider}-{self.call.call_id}")
        try:
            await self._connected
        except BaseException:
            await self.aclose()
            raise

    async def send(self, chunk: AudioChunk) -> None:
        if chunk.format != MULAW_8K:
            raise ValueError(f"{self.provider} stream expects {MULAW_8K}, got {chunk.format}")
        if self._closing:
            return
        self._buf.append(chunk.data)
        self._audio_arrived()
        self._audio.set()

    async def events(self) -> AsyncIterator[SttEvent]:
        while (item := await self._events.get()) is not None:
            yield item

    async def aclose(self) -> None:
        if self._closing and self._task is None:
            return
        self._closing = True
        self._audio.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(self.options.connect_timeout_s):
                    await asyncio.shield(task)  # let it flush and read the last results
            except Exception:
                pass
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        event(
            log,
            "stt_closed",
            provider=self.provider,
            audio_s=round(self.audio_seconds, 2),
            replayed_s=round(self.replayed_bytes / MULAW_8K.bytes_per_second, 2),
            reconnects=self.reconnects,
            **self._close_fields(),
        )
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    # ----------------------------------------------------------------------- socket loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._connected is not None
        down_since: float | None = None
        delay = 0.05
        while not self._closing:
            reason = "closed by server"
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # socket, HTTP and timeout errors alike: reconnect
                reason = self._reason(exc)
            if self._closing:
                break
            if self._session_ok:  # we were connected: the outage starts now
                down_since, delay = None, 0.05
            now = loop.time()
            down_since = now if down_since is None else down_since
            first = not self._connected.done()
            budget = self.options.connect_timeout_s if first else self.options.reconnect_budget_s
            if self._permanent(reason) or now - down_since >= budget:
                if first:
                    self._connected.set_exception(
                        DeepgramError(f"{self.provider} connect: {reason}")
                    )
                    return
                event(log, "stt_gave_up", provider=self.provider, reason=reason)
                await self._events.put(SttFailure(f"{self.provider}: {reason}", fatal=True))
                break
            event(log, "stt_reconnecting", provider=self.provider, reason=reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        await self._events.put(None)

    async def _session(self) -> None:
        self._session_ok = False
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self.options.connect_timeout_s):
                sock = await stack.enter_async_context(self._connect())
            replay = self._buf.restart()
            self._socket_opened()
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(None)
            else:
                self.reconnects += 1
                self.replayed_bytes += replay
                event(log, "stt_reconnected", provider=self.provider, replay_bytes=replay)
            self._session_ok = True
            helpers = [asyncio.create_task(job) for job in self._beside_receiver(sock)]
            try:
                await self._receive_loop(sock)
            finally:
                for task in helpers:
                    task.cancel()
                for task in helpers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    # ----------------------------------------------------------------------- per protocol

    def _connect(self) -> Any:
        raise NotImplementedError

    def _beside_receiver(self, sock: Any) -> list[Coroutine[Any, Any, None]]:
        """What runs while the receiver reads the socket (the sender, keep-alives)."""
        raise NotImplementedError

    async def _receive_loop(self, sock: Any) -> None:
        raise NotImplementedError

    def _audio_arrived(self) -> None:
        pass

    async def _send_audio(self, sock: Any, data: bytes) -> None:
        """One binary frame of caller audio. The SDK keeps the connection, auth and every
        message; the audio itself is written straight to its socket (``write_frame_sync``:
        no lock, no drain per frame, measured at ~12 % of a busy server's CPU through
        ``send_media``), unless the socket is not open or its buffer is backing up: then the
        SDK's send, which waits for the buffer to drain or raises the close.

        Each frame goes as it comes. Measured at 50 calls (BENCHMARKS.md), 40 ms batches saved
        ~2 % of server CPU and cost ~13 ms on the median turn (the service hears the end of
        speech later)."""
        ws = getattr(sock, "_websocket", None)
        write = getattr(ws, "write_frame_sync", None)
        if (
            write is not None
            and not ws.extensions  # no permessage-deflate: frames go as they are
            and ws.state is WsState.OPEN
            and ws.transport.get_write_buffer_size() < DIRECT_WRITE_HIGH_WATER
        ):
            write(True, Opcode.BINARY, data)
            return
        await sock.send_media(data)

    def _socket_opened(self) -> None:
        pass

    def _close_fields(self) -> dict[str, Any]:
        return {}

    def _reason(self, exc: BaseException) -> str:
        return _describe(exc)

    def _permanent(self, reason: str) -> bool:
        return _is_auth(reason)


class DeepgramStream(LiveStream):
    """listen.v1: interim results, endpointing and utterance ends; KeepAlive while idle."""

    def __init__(self, client: AsyncDeepgramClient, options: DeepgramOptions, call: CallInfo):
        super().__init__(client, options, call)
        self._last_send = 0.0

    def _params(self) -> dict[str, Any]:
        o = self.options
        return {
            "model": o.model,
            "encoding": "mulaw",
            "sample_rate": "8000",
            "channels": "1",
            "interim_results": "true",
            "endpointing": str(o.service_endpointing_ms),
            "utterance_end_ms": str(o.utterance_end_ms),
            "vad_events": "true",
            "smart_format": "true",
        }

    def _connect(self) -> Any:
        return self._client.listen.v1.connect(**self._params())

    def _socket_opened(self) -> None:
        self._last_send = time.monotonic()

    def _beside_receiver(self, sock: Any) -> list[Coroutine[Any, Any, None]]:
        return [self._send_loop(sock), self._keepalive_loop(sock)]

    async def _send_loop(self, sock: Any) -> None:
        while True:  # drain first: after a reconnect the replay is already waiting
            self._audio.clear()
            while data := self._buf.unsent(8000):
                await self._send_audio(sock, data)
                self._buf.mark_sent(len(data))
                self.sent_bytes += len(data)
                self._last_send = time.monotonic()
            if self._closing:
                await sock.send_close_stream()
                return
            await self._audio.wait()

    async def _keepalive_loop(self, sock: Any) -> None:
        period = self.options.keepalive_s
        while True:
            await asyncio.sleep(period / 3)
            if time.monotonic() - self._last_send >= period:
                await sock.send_keep_alive()
                self._last_send = time.monotonic()

    async def _receive_loop(self, sock: Any) -> None:
        async for msg in sock:
            ev, settled = map_message(msg)
            if settled is not None:
                self._buf.settle(settled)
            if ev is not None:
                await self._events.put(ev)
            elif isinstance(msg, ListenV1Metadata):
                event(log, "stt_metadata", provider="deepgram", duration_s=msg.duration)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status_code}"
    return f"{type(exc).__name__}: {exc}"[:200]


def _is_auth(reason: str) -> bool:
    return reason in {"HTTP 401", "HTTP 403"}
