from __future__ import annotations

import pytest

from app.providers.local_stt import WhisperStt


@pytest.fixture(scope="session")
def whisper_stt() -> WhisperStt:
    """The local recogniser with the default settings, loaded and warm once per test session."""
    stt = WhisperStt()
    stt.warm()
    return stt
