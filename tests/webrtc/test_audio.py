"""The outbound playout buffer and track, and the inbound frame adapter."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from app.core.audio import CANONICAL, PCM_8K, AudioChunk
from app.transports.webrtc_audio import (
    AgentAudioTrack,
    BufferFull,
    CallerAudioAdapter,
    PlayoutBuffer,
    downmix_s16,
)

FRAME = CANONICAL.bytes_for_ms(20)  # 640 bytes


def tone(ms: int, value: int = 1000) -> bytes:
    return np.full(CANONICAL.bytes_for_ms(ms) // 2, value, dtype=np.int16).tobytes()


def test_pull_pads_with_silence_and_counts_audible_bytes() -> None:
    buf = PlayoutBuffer(CANONICAL)
    buf.push(tone(30))
    first, second, third = buf.pull(), buf.pull(), buf.pull()
    assert len(first.pcm) == len(second.pcm) == len(third.pcm) == FRAME
    assert (first.audible, second.audible, third.audible) == (FRAME, FRAME // 2, 0)
    assert second.pcm[FRAME // 2 :] == bytes(FRAME // 2)
    assert third.pcm == bytes(FRAME)


def test_mark_is_reached_when_playout_passes_it() -> None:
    buf = PlayoutBuffer(CANONICAL)
    buf.push(tone(40))
    assert buf.mark("a") == []
    buf.push(tone(20))
    assert buf.mark("b") == []
    assert buf.pull().marks == []
    assert buf.pull().marks == ["a"]
    assert buf.pull().marks == ["b"]
    assert buf.pending_marks == 0


def test_mark_with_nothing_buffered_is_reached_at_once() -> None:
    buf = PlayoutBuffer(CANONICAL)
    assert buf.mark("now") == ["now"]
    buf.push(tone(20))
    buf.pull()
    assert buf.mark("after-drain") == ["after-drain"]


def test_clear_drops_audio_and_reports_pending_marks_in_order() -> None:
    buf = PlayoutBuffer(CANONICAL)
    buf.push(tone(100))
    buf.mark("one")
    buf.push(tone(100))
    buf.mark("two")
    buf.pull()
    assert buf.clear() == ["one", "two"]
    assert buf.buffered == 0
    assert buf.pull().audible == 0
    # positions stay consistent after a clear
    buf.push(tone(20))
    assert buf.mark("three") == []
    assert buf.pull().marks == ["three"]


def test_buffer_is_bounded() -> None:
    buf = PlayoutBuffer(CANONICAL, max_ms=100)
    buf.push(tone(100))
    with pytest.raises(BufferFull):
        buf.push(tone(20))


def test_buffer_rejects_non_pcm_formats() -> None:
    from app.core.audio import MULAW_8K

    with pytest.raises(ValueError):
        PlayoutBuffer(MULAW_8K)


def test_downmix_interleaved_and_planar() -> None:
    left = np.array([100, 200, -300], dtype=np.int16)
    right = np.array([300, 0, -100], dtype=np.int16)
    interleaved = np.stack([left, right], axis=1).reshape(1, -1)
    planar = np.stack([left, right])
    want = np.array([200, 100, -200], dtype=np.int16).tobytes()
    assert downmix_s16(interleaved, 2, planar=False) == want
    assert downmix_s16(planar, 2, planar=True) == want


def test_adapter_turns_48k_stereo_opus_frames_into_the_sink_format() -> None:
    adapter = CallerAudioAdapter(CANONICAL)
    t = np.arange(960 * 10) / 48_000
    wave = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = b""
    for i in range(10):
        mono = wave[i * 960 : (i + 1) * 960]
        stereo = np.stack([mono, mono], axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 48_000
        chunk = adapter.convert(frame)
        assert chunk.format == CANONICAL
        out += chunk.data
    # 200 ms in, about 200 ms out at 16 kHz (the resampler holds back a few samples)
    assert abs(len(out) - CANONICAL.bytes_for_ms(200)) <= 64
    samples = np.frombuffer(out, dtype=np.int16)[200:]
    assert 5000 < np.abs(samples).max() <= 8200  # the tone survived, not clipped or lost


async def test_track_paces_frames_in_real_time_and_reports_marks() -> None:
    reached: list[str] = []
    track = AgentAudioTrack(CANONICAL, reached.append)
    await track.send_audio(AudioChunk(tone(100), CANONICAL))
    await track.send_mark("end")
    loop = asyncio.get_running_loop()
    start = loop.time()
    frames = [await track.recv() for _ in range(10)]
    elapsed = loop.time() - start
    await asyncio.sleep(0)
    # the first frame goes at once, then one every 20 ms: 9 intervals
    assert 0.17 <= elapsed < 0.4
    assert [f.samples for f in frames] == [320] * 10
    assert frames[1].pts - frames[0].pts == 320
    assert frames[0].sample_rate == 16_000
    assert reached == ["end"]
    assert track.audible_frames == 5
    loud = [np.abs(f.to_ndarray()).max() for f in frames]
    assert loud[:5] == [1000] * 5 and loud[5:] == [0] * 5
    track.stop()


async def test_track_clear_reports_pending_marks_at_once() -> None:
    reached: list[str] = []
    track = AgentAudioTrack(CANONICAL, reached.append)
    await track.send_audio(AudioChunk(tone(2000), CANONICAL))
    await track.send_mark("utterance-1")
    await track.recv()
    await track.clear()
    await asyncio.sleep(0)
    assert reached == ["utterance-1"]
    frame = await track.recv()
    assert not frame.to_ndarray().any()
    track.stop()


async def test_track_rejects_audio_in_another_format() -> None:
    track = AgentAudioTrack(CANONICAL, lambda name: None)
    with pytest.raises(ValueError):
        await track.send_audio(AudioChunk(bytes(320), PCM_8K))
    track.stop()


async def test_send_audio_waits_for_room_then_continues() -> None:
    track = AgentAudioTrack(CANONICAL, lambda name: None, max_ms=40)
    sender = asyncio.create_task(track.send_audio(AudioChunk(tone(100), CANONICAL)))
    try:
        await asyncio.sleep(0.01)
        assert not sender.done()  # 100 ms of audio cannot fit in 40 ms of buffer
        for _ in range(3):
            await track.recv()
        await asyncio.wait_for(sender, 1)
        assert track.buffer.buffered == CANONICAL.bytes_for_ms(40)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        track.stop()


async def test_stop_reports_pending_marks_and_ends_the_track() -> None:
    from aiortc.mediastreams import MediaStreamError

    reached: list[str] = []
    track = AgentAudioTrack(CANONICAL, reached.append)
    await track.send_audio(AudioChunk(tone(500), CANONICAL))
    await track.send_mark("goodbye")
    track.stop()
    await asyncio.sleep(0)
    assert reached == ["goodbye"]
    with pytest.raises(MediaStreamError):
        await track.recv()
