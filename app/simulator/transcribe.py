"""What the agent said, heard back: each reply's played audio through the local Whisper model.

Runs after the call, one reply at a time on the model's own worker thread, so a server in the
same process keeps its recogniser responsive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from app.core.audio import CANONICAL, MULAW_8K, AudioChunk, convert_once
from app.logs import event, get_logger
from app.simulator.results import Turn

log = get_logger(__name__)

_MIN_AUDIO_MS = 200  # shorter than this is a click, not words
_QUEUE_RETRIES = 20


async def transcribe_turns(turns: Iterable[Turn]) -> None:
    """Fill ``agent_text`` of every turn with agent audio. Failures leave it ``None``."""
    from app.providers.local_stt import SttError, WhisperStt

    # Greedy decoding: about twice as fast as the server's beam search, and good enough to
    # show what was said.
    engine = WhisperStt(beam_size=1).engine
    for turn in turns:
        if turn.agent_audio_ms < _MIN_AUDIO_MS:
            turn.agent_text = "" if not turn.agent_audio else None
            continue
        pcm = convert_once(AudioChunk(turn.agent_audio, MULAW_8K), CANONICAL).data
        for _ in range(_QUEUE_RETRIES):
            try:
                turn.agent_text = (await engine.transcribe(pcm)).text
                break
            except SttError as exc:
                if "queue full" in str(exc):  # the server's calls come first: wait our turn
                    await asyncio.sleep(0.25)
                    continue
                event(log, "sim_transcribe_failed", turn=turn.index, error=str(exc))
                return  # no model: the other turns would fail the same way
            except Exception as exc:  # a transcript is a nicety: never lose the call's result
                event(log, "sim_transcribe_failed", turn=turn.index, error=repr(exc))
                break
