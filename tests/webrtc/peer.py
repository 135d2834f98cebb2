"""A caller over WebRTC for tests: a real aiortc peer that speaks PCM, hears the agent and
reads the captions data channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from app.core.audio import CANONICAL, AudioChunk
from app.transports.webrtc_audio import AgentAudioTrack

# A received 20 ms frame louder than this is agent speech (eSpeak is far above; Opus silence
# decodes to near zero).
AUDIBLE_RMS = 300.0


@dataclass
class Heard:
    at: float
    rms: float


@dataclass
class CallerPeer:
    base_url: str
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration([])))
    captions: list[dict[str, Any]] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    call_id: str = ""

    def __post_init__(self) -> None:
        # The caller's microphone: a real-time paced track (the same pacing the server uses).
        self.mic = AgentAudioTrack(CANONICAL, lambda name: None)
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("captions")
        self.channel.on("message", self._on_caption)
        self._caption_added = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)

    def _on_caption(self, message: str) -> None:
        self.captions.append(json.loads(message))
        self._caption_added.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._listener is None:
            self._listener = asyncio.create_task(self._listen(track))

    async def _listen(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            samples = frame.to_ndarray().astype(np.float64)
            rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
            self.heard.append(Heard(loop.time(), rms))

    async def connect(self, http: httpx.AsyncClient) -> None:
        session = (await http.post(f"{self.base_url}/webrtc/session")).json()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "token": session["token"]}
        resp = await http.post(f"{self.base_url}/webrtc/offer", json=body)
        resp.raise_for_status()
        answer = resp.json()
        self.call_id = answer["call_id"]
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        )

    async def say(self, pcm16k: bytes) -> None:
        await self.mic.send_audio(AudioChunk(pcm16k, CANONICAL))

    async def wait_caption(
        self, role: str, contains: str = "", within: float = 30.0, after: int = 0
    ) -> dict[str, Any]:
        """The first caption from ``after`` on by ``role`` containing ``contains``."""
        try:
            return await asyncio.wait_for(self._find_caption(role, contains, after), within)
        except TimeoutError:
            seen = [(c.get("role"), c.get("text")) for c in self.captions]
            raise AssertionError(f"no {role} caption with {contains!r}; captions: {seen}") from None

    async def _find_caption(self, role: str, contains: str, after: int) -> dict[str, Any]:
        while True:
            for caption in self.captions[after:]:
                if (
                    caption.get("type") == "caption"
                    and caption["role"] == role
                    and contains.lower() in caption["text"].lower()
                ):
                    return caption
            self._caption_added.clear()
            await self._caption_added.wait()

    def audible_between(self, start: float, end: float) -> int:
        return sum(1 for h in self.heard if start <= h.at < end and h.rms > AUDIBLE_RMS)

    async def wait_silence(self, quiet_s: float = 0.6, within: float = 30.0) -> float:
        """Wait until the agent has been quiet for ``quiet_s``; returns when it went quiet."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while True:
                now = loop.time()
                loud = [h.at for h in self.heard if h.rms > AUDIBLE_RMS]
                last = loud[-1] if loud else None
                if last is not None and now - last >= quiet_s:
                    return last
                await asyncio.sleep(0.05)

    async def wait_audible(self, within: float = 30.0) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(within):
            while True:
                loud = [h.at for h in self.heard if h.at >= start and h.rms > AUDIBLE_RMS]
                if loud:
                    return loud[0]
                await asyncio.sleep(0.02)

    async def wait_until(self, done: Callable[[], bool], within: float = 10.0) -> None:
        """Poll server-side state the test can only observe (no event to wait on)."""
        async with asyncio.timeout(within):
            while not done():  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    def hang_up(self) -> None:
        self.channel.send(json.dumps({"type": "hangup"}))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        self.mic.stop()
        await self.pc.close()
