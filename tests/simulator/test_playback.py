"""The playback clock: Twilio's play-out buffer, fed explicit times (no sleeps)."""

from app.simulator.playback import PlaybackClock

SECOND = b"\x7f" * 8000  # one second of µ-law


def test_audio_plays_back_to_back_in_real_time() -> None:
    clock = PlaybackClock()
    clock.media(SECOND, now=1.0, turn=0)
    clock.media(SECOND[:4000], now=1.2, turn=0)  # arrives while the first plays: queued
    assert [s.start for s in clock.segments] == [1.0, 2.0]
    assert clock.play_end == 2.5
    assert clock.playing(2.4) and not clock.playing(2.5)


def test_mark_echoed_when_playback_reaches_it() -> None:
    clock = PlaybackClock()
    clock.media(SECOND, now=0.0, turn=0)
    assert clock.mark("a", now=0.1) == []
    clock.media(SECOND[:800], now=0.2, turn=0)
    assert clock.mark("b", now=0.2) == []
    assert clock.next_due() == 1.0
    assert clock.due(0.99) == []
    assert clock.due(1.0) == ["a"]
    assert clock.next_due() == 1.1
    assert clock.due(1.05) == []
    assert clock.due(5.0) == ["b"]
    assert clock.next_due() is None


def test_mark_with_nothing_buffered_is_echoed_at_once() -> None:
    clock = PlaybackClock()
    assert clock.mark("first", now=0.0) == ["first"]
    clock.media(SECOND[:1600], now=1.0, turn=0)
    assert clock.mark("later", now=1.3) == ["later"]  # 200 ms played out by 1.2


def test_mark_waits_behind_an_earlier_pending_mark() -> None:
    clock = PlaybackClock()
    clock.media(SECOND, now=0.0, turn=0)
    assert clock.mark("a", now=0.0) == []
    # Playback already reached the end by 2.0, but "a" has not been reported by the pacer:
    # "b" must not overtake it.
    assert clock.mark("b", now=2.0) == []
    assert clock.due(2.0) == ["a", "b"]


def test_clear_drops_unplayed_audio_and_echoes_pending_marks() -> None:
    clock = PlaybackClock()
    clock.media(SECOND, now=0.0, turn=1)
    clock.mark("one", now=0.0)
    clock.media(SECOND, now=0.1, turn=1)
    clock.mark("two", now=0.1)
    assert clock.clear(now=0.25) == ["one", "two"]
    assert [len(s.audio) for s in clock.segments] == [2000]  # 250 ms played of the first
    assert clock.segments[0].cleared
    assert clock.dropped_bytes == 6000 + 8000
    assert clock.interrupted_turns == {1}
    assert not clock.playing(0.25)
    assert clock.next_due() is None
    # New audio after the clear plays at once, not after the dropped audio.
    clock.media(SECOND[:800], now=0.3, turn=2)
    assert clock.segments[-1].start == 0.3


def test_clear_with_nothing_playing_changes_nothing() -> None:
    clock = PlaybackClock()
    clock.media(SECOND[:800], now=0.0, turn=0)
    assert clock.clear(now=1.0) == []
    assert [len(s.audio) for s in clock.segments] == [800]
    assert clock.interrupted_turns == set() and clock.dropped_bytes == 0


def test_underrun_within_a_turn_is_recorded_but_not_across_turns() -> None:
    clock = PlaybackClock()
    clock.media(SECOND[:800], now=0.0, turn=0)  # plays until 0.1
    clock.media(SECOND[:800], now=0.15, turn=0)  # 50 ms late: the caller heard a gap
    clock.media(SECOND[:800], now=0.2, turn=0)  # in time
    clock.media(SECOND[:800], now=3.0, turn=1)  # a new reply: silence between turns is fine
    assert [(g.turn, round(g.ms)) for g in clock.gaps] == [(0, 50)]
