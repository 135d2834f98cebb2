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
