"""Call records as a real session would emit them, written through the real observer."""

from __future__ import annotations

from pathlib import Path

from app.core.providers import CallInfo
from app.core.records import CallEnded, CallEvent, TranscriptLine, TurnMetrics, Usage
from app.store import CallRecordObserver, Store
from app.store.campaigns import CampaignSettings, NewContact

CALLER = "+14155550123"


async def open_store(tmp_path: Path) -> Store:
    return await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")


def finished_call(i: int, transport: str = "twilio") -> tuple[CallInfo, list[object]]:
    call = CallInfo(
        call_id=f"CA{i:032x}" if transport == "twilio" else f"web-{i}",
        transport=transport,
        from_number=CALLER if transport == "twilio" else None,
        to_number="+14155550100" if transport == "twilio" else None,
    )
    t = 1000.0 + i
    records: list[object] = [
        CallEvent("call_started", t, {"transport": transport}),
        TranscriptLine("agent", "Hello, thank you for calling Sunrise Dental.", t + 0.4),
        CallEvent("greeting_first_audio", t + 0.4, {"ms": 380}),
        TranscriptLine("caller", "I'd like to book a cleaning for tomorrow.", t + 3.0, turn=1),
        TurnMetrics(1, speech_end=t + 3.0, stt_final=t + 3.35, turn_committed=t + 3.4,
                    llm_first_token=t + 3.9, tts_first_audio=t + 4.05, first_audio_sent=t + 4.06),
        TranscriptLine("agent", "Sure, what time suits you?", t + 4.1, turn=1),
        TranscriptLine("caller", "Ten in the morning.", t + 7.0, turn=2),
        TurnMetrics(2, speech_end=t + 7.0, stt_final=t + 7.2, turn_committed=t + 7.25,
                    llm_first_token=t + 8.4, tts_first_audio=t + 8.6, first_audio_sent=t + 8.61,
                    filler=True),
        TranscriptLine("agent", "Booked for ten tomorrow. Goodbye!", t + 8.7, turn=2,
                       interrupted=True),
        CallEvent("barge_in", t + 9.0, {"turn": 2}),
        Usage(llm_input_tokens=420, llm_output_tokens=60, stt_seconds=9.5, tts_characters=120),
        CallEnded("agent ended", t + 12.0),
    ]
    return call, records


async def write_calls(store: Store, calls: list[tuple[CallInfo, list[object]]]) -> None:
    observer = CallRecordObserver(store.db)
    observer.start()
    try:
        for call, records in calls:
            for record in records:
                observer.record(call, record)
        assert await observer.flush(), "records did not reach the store"
    finally:
        await observer.aclose()


async def add_campaign(store: Store, now: float) -> str:
    contacts = [NewContact(line=i + 2, phone=f"+1415555{i:04d}", timezones=("America/New_York",))
                for i in range(4)]
    return await store.campaigns.create(name="Spring recall", contacts=contacts,
                                        settings=CampaignSettings(), now=now)
