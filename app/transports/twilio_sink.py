"""The call's way back to a Twilio caller: audio, marks, clear and hang-up as Media Streams
text frames over one socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from app.core.audio import MULAW_8K, AudioChunk, AudioFormat
from telephony.media_stream import MediaStream, State

# Close codes: 1000 normal (Twilio then requests the <Connect action>), 1002 protocol,
# 1008 policy, 1011 internal.
CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_POLICY, CLOSE_INTERNAL = 1000, 1002, 1008, 1011


class TwilioSink:
    """``AudioSink`` over one Media Streams socket. Safe to use after the socket is gone:
    frames for a closed or stopped stream are dropped (the caller already hung up)."""

    format: AudioFormat = MULAW_8K

    def __init__(self, websocket: WebSocket, stream: MediaStream) -> None:
        self._ws = websocket
        self._stream = stream
        self._lock = asyncio.Lock()  # frames from the runner and a close from the reader
        self.closed = False
        self.close_reason: str | None = None
        self.frames_sent = 0
        self.before_hangup: Callable[[str], Awaitable[None]] | None = None

    async def send_audio(self, chunk: AudioChunk) -> None:
        if chunk.format != MULAW_8K:
            raise ValueError(f"Twilio plays {MULAW_8K} only, got {chunk.format}")
        if chunk.data:
            await self._send(lambda: list(self._stream.media_frames(chunk.data)))

    async def send_mark(self, name: str) -> None:
        await self._send(lambda: [self._stream.mark_frame(name)])

    async def clear(self) -> None:
        await self._send(lambda: [self._stream.clear_frame()])

    async def hangup(self, reason: str) -> None:
        """Close the socket; Twilio then requests the ``<Connect action>``. ``before_hangup``
        runs first (a call the agent ended is recorded as such, for whichever instance that
        request reaches)."""
        if not self.closed and self.before_hangup is not None:
            await self.before_hangup(reason)
        await self.close(CLOSE_NORMAL, reason)

    async def close(self, code: int, reason: str) -> None:
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            self.close_reason = reason
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                # The reason goes to the peer: keep it short and free of call data.
                await self._ws.close(code=code, reason=reason[:120])

    def mark_gone(self) -> None:
        """The peer disconnected: later frames are dropped silently."""
        self.closed = True

    async def _send(self, build: Callable[[], list[str]]) -> None:
        async with self._lock:
            if self.closed or self._stream.state is not State.STREAMING:
                return
            frames = build()
            try:
                for frame in frames:
                    await self._ws.send_text(frame)
                    self.frames_sent += 1
            except (WebSocketDisconnect, OSError, RuntimeError):
                self.closed = True  # the reader sees the disconnect and ends the call
