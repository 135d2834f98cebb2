"""Runs one call: feeds a ``Session`` events and carries out its actions.

The thin asyncio edge around the pure session. It owns every task of the call (the main loop,
the recogniser reader, the speech worker, one model stream at a time, tool tasks), cancels them
when the call ends and awaits them. Queues are bounded: caller audio applies backpressure to the
transport; control events (marks, digits, hang-up) are few by construction and never dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from app.config import AgentSettings
from app.core.audio import CANONICAL, AudioChunk, Converter
from app.core.events import (
    Action,
    CallerAudio,
    CallStarted,
    CancelLlm,
    CancelSpeech,
    Clear,
    DtmfDigit,
    Emit,
    EndCall,
    Event,
    LlmDone,
    LlmFailed,
    LlmText,
    LlmTool,
    MarkReached,
    PlayAudio,
    PlayMark,
    RemoteHangup,
    RunTool,
    Shutdown,
    Speak,
    StartLlm,
    SttUpdate,
    Tick,
    ToolDone,
    TtsAudio,
    TtsDone,
    TtsFailed,
)
from app.core.providers import (
    AudioSink,
    CallInfo,
    LlmRequest,
    LlmUsage,
    Message,
    SttFailure,
    SttStream,
    TextDelta,
    ToolCall,
)
from app.core.records import CallEnded, CallEvent, TranscriptLine, TurnMetrics, Usage
from app.core.script import AgentScript
from app.core.session import Session
from app.logs import bind_call, event, get_logger
from app.runtime.hooks import CallHooks
from app.runtime.mailbox import Mailbox
from app.runtime.steps import Posted, Steps
from app.runtime.usage import UsageMeter, add

log = get_logger(__name__)
QUIET_EVENTS = frozenset({"dtmf"})


# Caller audio kept while the recogniser connects (500 Twilio frames: 10 s).
STT_BACKLOG_CHUNKS = 500

# How long the first audio of one sentence may take before we call the TTS failed.
TTS_FIRST_AUDIO_BUDGET_S = 2.0


class CallRunner:
    def __init__(
        self,
        call: CallInfo,
        sink: AudioSink,
        providers: Any,
        phrases: Any,
        agent: AgentSettings | None = None,
        observers: Iterable[Any] = (),
        clock: Callable[[], float] | None = None,
        script: AgentScript | None = None,
        hooks: CallHooks | None = None,
        history: Sequence[Message] = (),
    ) -> None:
        self.call = call
        self.sink = sink
        self.providers = providers
        self.phrases = phrases
        self.script = script or (agent or AgentSettings()).script()
        # ``history``: the conversation so far when this call continues one (a reconnected
        # stream): the session answers from it and does not greet again.
        stt = providers.stt
        self.session = Session(
            call,
            self.script,
            getattr(stt, "end_of_turn_model", False),
            history,
            confirm_ms=getattr(stt, "confirm_ms", 0),
        )
        self.observers = list(observers)
        self.hooks = hooks or CallHooks()
        self.tools = dict(self.hooks.tools)
        # Set while the agent is not speaking: what a feature waits for before it acts on the
        # line (keys pressed on an IVR). Kept by the main loop after each step, no polling.
        self.quiet = asyncio.Event()
        self._now = clock or time.monotonic

        self.transcript: list[TranscriptLine] = []
        self.turns: list[TurnMetrics] = []
        self.events: list[CallEvent] = []
        self.ended = False
        self.end_reason: str | None = None

        self._mailbox = Mailbox(maxsize=200)
        self._steps = Steps(self.session, self._execute, self._mailbox, self._now, self._step_done)
        self._looping = False
        self._speech: asyncio.Queue[Speak] = asyncio.Queue(maxsize=256)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._llm: tuple[int, asyncio.Task[Any]] | None = None
        self._speaker: asyncio.Task[Any] | None = None
        self._stt: SttStream | None = None
        self._stt_opening = True
        self._stt_backlog: collections.deque[AudioChunk] = collections.deque()
        self._stt_in = Converter(sink.format, providers.stt.input_format)
        tts_formats = providers.tts.formats
        self._tts_format = sink.format if sink.format in tts_formats else CANONICAL
        if self._tts_format not in tts_formats:
            self._tts_format = tts_formats[0]
        self.meter = UsageMeter()

    # ------------------------------------------------------------ transport-facing API

    async def caller_audio(self, chunk: AudioChunk) -> None:
        """Caller audio in ``sink.format``. Awaits when the call is behind (backpressure)."""
        if self.ended:
            return
        if self._stt is not None:
            self.meter.stt_ms += chunk.duration_ms
            try:
                await self._stt.send(self._stt_in.chunk(chunk))
            except Exception as exc:
                self._post(SttUpdate(SttFailure(type(exc).__name__)))
        elif self._stt_opening and len(self._stt_backlog) < STT_BACKLOG_CHUNKS:
            self._stt_backlog.append(chunk)  # the recogniser is still connecting
        if not self._looping:  # before the call's start is handled, frames queue behind it
            await self._mailbox.put(CallerAudio(chunk))
        elif (run := self._steps.frame(CallerAudio(chunk))) is not None:
            await run  # the VAD and barge-in decided here, in the socket reader's task

    def mark_reached(self, name: str) -> None:
        self._post(MarkReached(name))

    def dtmf(self, digit: str) -> None:
        """A keypad key from the caller: a feature's keypad hook may take it (a field being
        collected), else the session gets it."""
        if self.hooks.keypad is not None and self.hooks.keypad(digit):
            return
        self.keys(digit)

    def keys(self, keys: str) -> None:
        """Keys straight to the session (what a keypad hook releases)."""
        for key in keys:
            self._post(DtmfDigit(key))

    def note(self, record: CallEvent) -> None:
        """A feature's event on the call's record (a keypad field collected, ...)."""
        self._emit(record)

    def remote_hangup(self, reason: str = "caller hung up") -> None:
        self._post(RemoteHangup(reason))

    def shutdown(self, reason: str = "server shutting down") -> None:
        self._post(Shutdown(reason))

    def _post(self, ev: Event) -> None:
        self._mailbox.post(ev)

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        with bind_call(self.call.call_id):
            try:
                # The greeting does not wait for the recogniser's connection (100-300 ms to a
                # cloud service): caller audio meanwhile is kept and sent once it is open.
                self._spawn(self._open_stt())
                self._speaker = self._spawn(self._speak_loop())
                if self.hooks.started is not None:
                    self._spawn(self.hooks.started())
                self._post(CallStarted())
                await self._loop()
            finally:
                await self._close()
                if self.hooks.finished is not None:
                    self.hooks.finished(self)

    async def _open_stt(self) -> None:
        stream = None
        candidates = [self.providers.stt, getattr(self.providers, "stt_fallback", None)]
        for stt in [c for c in candidates if c is not None]:
            try:
                stream = await stt.open(self.call)
            except Exception as exc:
                event(log, "stt_open_failed", provider=stt.name, error=type(exc).__name__)
                self._post(SttUpdate(SttFailure(f"{stt.name} open: {type(exc).__name__}")))
                continue
            if stt is not self.providers.stt:
                event(log, "stt_failover", provider=stt.name)
                self._stt_in = Converter(self.sink.format, stt.input_format)
            break
        if stream is None:
            self._stt_opening = False
            self._stt_backlog.clear()
            self._post(SttUpdate(SttFailure("no recogniser could be opened", fatal=True)))
            return
        self._spawn(self._read_stt(stream))
        try:
            while self._stt_backlog:  # audio that arrived while connecting, in order
                chunk = self._stt_backlog.popleft()
                self.meter.stt_ms += chunk.duration_ms
                await stream.send(self._stt_in.chunk(chunk))
        except asyncio.CancelledError:
            await stream.aclose()  # the call ended while we caught up: nobody else will
            raise
        except Exception as exc:
            self._post(SttUpdate(SttFailure(type(exc).__name__)))
        # No await between the last check and this: new audio now goes straight to the stream.
        self._stt = stream
        self._stt_opening = False
        if self.ended:
            await stream.aclose()

    async def _loop(self) -> None:
        session, steps = self.session, self._steps
        while not session.ended:
            ev = await self._next_event()
            await steps.loop_step(ev)
            self._looping = True  # the call's start is handled: frames are handled on arrival
            deadline = session.next_deadline()
            if deadline is not None and self._now() >= deadline and not session.ended:
                await steps.loop_step(Tick())

    def _step_done(self) -> None:
        if self.session.agent_active:
            self.quiet.clear()
        else:
            self.quiet.set()

    async def _next_event(self) -> Event | Posted:
        while True:
            ev = self._mailbox.pop()
            if ev is not None:
                return ev
            deadline = self.session.next_deadline()
            timeout = None if deadline is None else deadline - self._now()
            if timeout is not None and timeout <= 0:
                return Tick()
            self._steps.waiting_until = math.inf if deadline is None else deadline
            try:
                if not await self._mailbox.wait(timeout):
                    return Tick()
            finally:
                self._steps.waiting_until = None

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case PlayAudio(chunk):
                    await self.sink.send_audio(chunk)
                case PlayMark(name):
                    await self.sink.send_mark(name)
                case Clear():
                    await self.sink.clear()
                case Speak():
                    self._queue_speech(action)
                case CancelSpeech():
                    await self._cancel_speech()
                case StartLlm(turn, request):
                    self._start_llm(turn, request)
                case CancelLlm(turn):
                    if self._llm is not None and self._llm[0] == turn:
                        self._llm[1].cancel()
                        self._llm = None
                case RunTool(call):
                    self._run_tool(call)
                case EndCall(reason):
                    event(log, "hangup", reason=reason)
                    try:
                        await self.sink.hangup(reason)
                    except Exception as exc:
                        event(log, "hangup_failed", error=type(exc).__name__)
                case Emit(record):
                    self._emit(record)

    # ------------------------------------------------------------ providers

    async def _read_stt(self, stream: SttStream) -> None:
        try:
            async for stt_event in stream.events():
                await self._mailbox.put(SttUpdate(stt_event))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._mailbox.put(SttUpdate(SttFailure(type(exc).__name__, fatal=True)))

    def _start_llm(self, turn: int, request: LlmRequest) -> None:
        if self._llm is not None:
            self._llm[1].cancel()
        self._llm = (turn, self._spawn(self._stream_llm(turn, request)))

    async def _stream_llm(self, turn: int, request: LlmRequest) -> None:
        usage = LlmUsage()
        try:
            async for item in self.providers.llm.stream(request):
                if isinstance(item, TextDelta):
                    if item.text:
                        await self._mailbox.put(LlmText(turn, item.text))
                elif isinstance(item, ToolCall):
                    await self._mailbox.put(LlmTool(turn, item))
                elif isinstance(item, LlmUsage):
                    usage = item
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            event(log, "llm_failed", provider=self.providers.llm.name, error=type(exc).__name__)
            await self._mailbox.put(LlmFailed(turn, type(exc).__name__))
            return
        await self._mailbox.put(LlmDone(turn, usage))

    def _queue_speech(self, speak: Speak) -> None:
        try:
            self._speech.put_nowait(speak)
        except asyncio.QueueFull:
            event(log, "speech_queue_full", utterance=speak.utterance)
            self._post(TtsFailed(speak.utterance, "queue full"))

    async def _cancel_speech(self) -> None:
        while not self._speech.empty():
            self._speech.get_nowait()
        old, self._speaker = self._speaker, None
        if old is not None and not old.done():
            # Wait for it to stop, so no stale audio is still being produced next to the new
            # speaker's (a provider stream must honour cancellation promptly).
            old.cancel()
            await asyncio.wait({old}, timeout=1.0)
        self._speaker = self._spawn(self._speak_loop())

    async def _speak_loop(self) -> None:
        """Synthesises queued utterances one after another, in order."""
        while True:
            speak = await self._speech.get()
            cached = self.phrases.get(speak.text, self.sink.format) if speak.cached else None
            if cached is not None:
                for chunk in cached:
                    await self._steps.in_turn(TtsAudio(speak.utterance, chunk))
                await self._mailbox.put(TtsDone(speak.utterance))
                continue
            try:
                await self._synthesize(speak)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event(log, "tts_failed", provider=self.providers.tts.name, error=type(exc).__name__)
                await self._mailbox.put(TtsFailed(speak.utterance, type(exc).__name__))
                continue
            await self._mailbox.put(TtsDone(speak.utterance))

    async def _synthesize(self, speak: Speak) -> None:
        convert = Converter(self._tts_format, self.sink.format)
        self.meter.tts_chars += len(speak.text)
        stream = self.providers.tts.synthesize(speak.text, self._tts_format).__aiter__()
        first = True
        while True:
            try:
                if first:
                    async with asyncio.timeout(TTS_FIRST_AUDIO_BUDGET_S):
                        chunk = await stream.__anext__()
                else:
                    chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            first = False
            out = convert.chunk(chunk)
            if out.data:  # straight to the line: no round trip through the main loop
                await self._steps.in_turn(TtsAudio(speak.utterance, out))
        tail = convert.convert(b"", last=True)
        if tail:
            await self._steps.in_turn(TtsAudio(speak.utterance, AudioChunk(tail, self.sink.format)))

    def _run_tool(self, call: ToolCall) -> None:
        handler = self.tools.get(call.name)
        if handler is None:
            event(log, "tool_unhandled", tool=call.name)
            self._post(ToolDone(call.id))
            return

        async def run() -> None:
            try:
                await handler(self.call, call)
            except Exception as exc:
                event(log, "tool_failed", tool=call.name, error=type(exc).__name__)
            finally:
                self._post(ToolDone(call.id))

        self._spawn(run())

    # ------------------------------------------------------------ records

    def _emit(self, record: Any) -> None:
        if isinstance(record, TranscriptLine):
            self.transcript.append(record)
            event(log, "transcript", role=record.role, chars=len(record.text),
                  interrupted=record.interrupted, turn=record.turn)  # fmt: skip
        elif isinstance(record, TurnMetrics):
            self.turns.append(record)
            event(log, "turn_latency", turn=record.turn, filler=record.filler,
                  fallback=record.fallback, **record.stages_ms())  # fmt: skip
            self._notify(record)
            # Usage so far goes out with every turn: a call that goes on elsewhere after a
            # crash keeps what it had spent.
            self._report_usage()
            return
        elif isinstance(record, CallEvent):
            self.events.append(record)
            # A keypad entry is one event per key: counted on the record, logged at debug.
            level = logging.DEBUG if record.kind in QUIET_EVENTS else logging.INFO
            event(log, record.kind, level, **record.detail)
        elif isinstance(record, Usage):
            self.meter.llm = add(self.meter.llm, record)
            return  # aggregated; observers get it with each turn and at the end
        elif isinstance(record, CallEnded):
            self.ended = True
            self.end_reason = record.reason
            self._report_usage()
            event(log, "call_ended", reason=record.reason, turns=len(self.turns))
        self._notify(record)

    @property
    def usage(self) -> Usage:
        return self.meter.total(self._stt)

    def _report_usage(self) -> None:
        """Observers get usage as increments (what was not reported yet)."""
        delta = self.meter.unreported(self._stt)
        if delta is not None:
            self._notify(delta)

    def _notify(self, record: Any) -> None:
        for observer in self.observers:
            try:
                observer.record(self.call, record)
            except Exception as exc:  # an observer must never break a call
                event(log, "observer_failed", observer=type(observer).__name__,
                      error=type(exc).__name__)  # fmt: skip

    # ------------------------------------------------------------ tasks

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _close(self) -> None:
        self.ended = True
        if not self.session.ended:  # the loop died (error or cancellation): record the end
            self.session.close()
            self._emit(
                CallEnded("error" if self.end_reason is None else self.end_reason, self._now())
            )
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._stt is not None:
            try:
                await self._stt.aclose()
            except Exception as exc:
                event(log, "stt_close_failed", error=type(exc).__name__)
