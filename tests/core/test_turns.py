"""Turn-taking policy: adaptive endpointing and barge-in decisions."""

from __future__ import annotations

import pytest

from app.core.turns import TurnPolicy, trailing_digits

P = TurnPolicy(endpointing_ms=200, unfinished_wait_ms=1800, max_endpoint_ms=2500)


@pytest.mark.parametrize(
    "text",
    [
        "My number is 555 123",
        "my number is five five five, one two",
        "It's 4111 1111",
        "I'd like to book and",
        "Um, I want to, um",
        "Can I come in on",
        "My name is Smith, S M I",
        "Let me think...",
    ],
)
def test_unfinished_turns_wait_longer(text: str) -> None:
    assert P.unfinished(text)
    assert P.endpoint_delay_ms(text) == 1800


@pytest.mark.parametrize(
    "text",
    [
        "Yes, tomorrow at ten works.",
        "My number is 555 123 4567.",
        "What are your opening hours?",
        "No thanks, goodbye.",
        "At 10.",
        "I'd like to book an appointment tomorrow at 10.",
        "Can you move it to Friday at 3 pm instead?",
        "Friday",
        "Is that okay?",
    ],
)
def test_complete_turns_get_the_normal_wait(text: str) -> None:
    assert not P.unfinished(text)
    assert P.endpoint_delay_ms(text) == 200


def test_a_number_of_a_plausible_whole_length_waits_less_than_one_half_read_out() -> None:
    """A 7-digit local number may be finished: a short wait, not the unfinished one. 10, 11
    and 16 digits (national, E.164, a card) get the normal wait; 3-6, 8 and 9 digits are
    half read out, so a 1.5 s pause between groups never ends the turn."""
    policy = TurnPolicy(endpointing_ms=0, unfinished_wait_ms=2000, number_wait_ms=600)
    assert policy.endpoint_delay_ms("My number is 555 1234") == 600
    assert policy.endpoint_delay_ms("it's five five five one two three four") == 600
    for done in ("555 123 4567", "1 555 123 4567", "4111 1111 1111 1111"):
        assert policy.endpoint_delay_ms(done) == 0, done
    for half in ("555", "555 123", "555 123 45", "4111 1111 1"):
        wait = policy.endpoint_delay_ms(half)
        assert wait == 2000 and wait > 1500, half


def test_wait_is_bounded() -> None:
    assert (
        TurnPolicy(unfinished_wait_ms=9000, max_endpoint_ms=3000).endpoint_delay_ms("and") == 3000
    )


def test_trailing_digits_counts_digits_and_number_words() -> None:
    assert trailing_digits("call me on 555-123-4567") == 10
    assert trailing_digits("it is five five five one") == 4
    assert trailing_digits("tomorrow at ten") == 0


@pytest.mark.parametrize("text", ["mm-hmm", "Mm-hmm.", "okay", "Yeah.", "uh huh", "got it"])
def test_backchannels(text: str) -> None:
    assert P.is_backchannel(text)


@pytest.mark.parametrize("text", ["no", "wait", "okay but Friday", "stop please"])
def test_not_backchannels(text: str) -> None:
    assert not P.is_backchannel(text)


def test_echo_of_the_agents_words_is_recognised() -> None:
    agent = "Of course, I can book you in tomorrow morning at ten."
    assert P.is_echo("I can book you in tomorrow", agent)
    assert not P.is_echo("no I said Friday afternoon", agent)


def test_interruption_decision() -> None:
    agent = "Of course, I can book you in tomorrow morning at ten."
    assert P.is_interruption(200, "wait I said Friday", agent)
    assert not P.is_interruption(400, "mm-hmm", agent)
    assert not P.is_interruption(900, "book you in tomorrow", agent)  # echo, however long
    assert not P.is_interruption(300, None, agent)
    assert P.is_interruption(800, None, agent)  # long speech without words yet
