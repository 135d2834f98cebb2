from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from app.config import ConfigError, ProviderSettings, Settings
from app.core.providers import LanguageModel, SpeechToText, TextToSpeech
from app.providers import registry
from app.providers.local_stt import WhisperStt
from app.providers.local_tts import EspeakTts
from app.providers.registry import CloudEntry, build_providers, choose, warm
from app.providers.scripted import ScriptedAgent


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def test_auto_without_keys_runs_everything_locally() -> None:
    p = build_providers(settings())
    assert isinstance(p.stt, WhisperStt) and isinstance(p.stt, SpeechToText)
    assert isinstance(p.llm, ScriptedAgent) and isinstance(p.llm, LanguageModel)
    assert isinstance(p.tts, EspeakTts) and isinstance(p.tts, TextToSpeech)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, ("whisper", "scripted", "espeak")),
        (
            {"STT_PROVIDER": "local", "LLM_PROVIDER": "local", "TTS_PROVIDER": "local"},
            ("whisper", "scripted", "espeak"),
        ),
        (
            {"STT_PROVIDER": "whisper", "LLM_PROVIDER": "scripted", "TTS_PROVIDER": "espeak"},
            ("whisper", "scripted", "espeak"),
        ),
        ({"DEEPGRAM_API_KEY": "dg-key-123456"}, ("deepgram", "scripted", "espeak")),
        (
            {"ANTHROPIC_API_KEY": "sk-ant-123456", "ELEVENLABS_API_KEY": "el-123456"},
            ("whisper", "anthropic", "elevenlabs"),
        ),
        # a key is set but a local provider is forced
        (
            {"DEEPGRAM_API_KEY": "dg-key-123456", "STT_PROVIDER": "whisper"},
            ("whisper", "scripted", "espeak"),
        ),
        (
            {"ANTHROPIC_API_KEY": "sk-ant-123456", "LLM_PROVIDER": "local"},
            ("whisper", "scripted", "espeak"),
        ),
    ],
)
def test_choice(env: dict[str, str], names: tuple[str, str, str]) -> None:
    s = settings(**env)
    assert (choose("stt", s), choose("llm", s), choose("tts", s)) == names


def test_local_settings_reach_the_providers() -> None:
    p = build_providers(
        settings(
            ESPEAK_VOICE="en-gb",
            ESPEAK_RATE_WPM="200",
            WHISPER_SILENCE_MS="600",
            WHISPER_BEAM_SIZE="3",
            AGENT_BUSINESS="Hillside Dental",
        )  # fmt: skip
    )
    assert (p.tts.voice, p.tts.rate_wpm) == ("en-gb", 200)
    assert p.stt.silence_ms == 600 and p.stt.engine.beam_size == 3
    assert p.llm.business == "Hillside Dental"


def test_explicit_cloud_provider_without_its_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="STT_PROVIDER=deepgram needs DEEPGRAM_API_KEY"):
        build_providers(settings(STT_PROVIDER="deepgram"))
    with pytest.raises(ConfigError, match="TTS_PROVIDER=elevenlabs needs ELEVENLABS_API_KEY"):
        build_providers(settings(TTS_PROVIDER="elevenlabs"))


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="STT_PROVIDER"):
        settings(STT_PROVIDER="watson")
    # settings built in code skip from_env's check; the registry still names the variable
    s = dataclasses.replace(Settings(), providers=ProviderSettings(llm="gpt"))
    with pytest.raises(ConfigError, match="LLM_PROVIDER must be one of auto, local, scripted"):
        build_providers(s)


def test_cloud_adapter_missing_from_the_build_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def factory(s: Settings) -> Any:
        from app.providers.no_such_adapter import create  # type: ignore[import-not-found]  # noqa: F401

    entry = CloudEntry(factory, "ANTHROPIC_API_KEY", lambda s: s.providers.cloud.anthropic_api_key)
    monkeypatch.setitem(registry.CLOUD["llm"], "anthropic", entry)
    with pytest.raises(ConfigError, match="LLM_PROVIDER=anthropic: this build has no anthropic"):
        build_providers(settings(ANTHROPIC_API_KEY="sk-ant-123456"))


def test_a_library_missing_inside_an_adapter_is_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def factory(s: Settings) -> Any:
        import no_such_vendor_sdk  # type: ignore[import-not-found]  # noqa: F401

    entry = CloudEntry(factory, "ANTHROPIC_API_KEY", lambda s: s.providers.cloud.anthropic_api_key)
    monkeypatch.setitem(registry.CLOUD["llm"], "anthropic", entry)
    with pytest.raises(ModuleNotFoundError, match="no_such_vendor_sdk"):
        build_providers(settings(ANTHROPIC_API_KEY="sk-ant-123456"))


def test_cloud_factory_gets_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Settings] = []

    class Model:
        name = "anthropic"

        async def stream(self, request: Any) -> Any:  # pragma: no cover - not called
            yield None

    def factory(s: Settings) -> Model:
        made.append(s)
        return Model()

    entry = CloudEntry(factory, "ANTHROPIC_API_KEY", lambda s: s.providers.cloud.anthropic_api_key)
    monkeypatch.setitem(registry.CLOUD["llm"], "anthropic", entry)
    s = settings(ANTHROPIC_API_KEY="sk-ant-123456")
    assert isinstance(build_providers(s).llm, Model)
    assert made == [s]


def test_deepgram_is_built_from_its_settings() -> None:
    p = build_providers(settings(DEEPGRAM_API_KEY="dg-key-123456", DEEPGRAM_MODEL="nova-2"))
    assert p.stt.name == "deepgram"
    assert p.stt.options.model == "nova-2"


def test_anthropic_is_built_from_its_settings() -> None:
    s = settings(
        ANTHROPIC_API_KEY="sk-ant-123456",
        ANTHROPIC_MODEL="claude-sonnet-4-5",
        ANTHROPIC_BASE_URL="http://127.0.0.1:9",
    )
    p = build_providers(s)
    assert p.llm.name == "anthropic"
    assert p.llm.model == "claude-sonnet-4-5"


async def test_warm_loads_local_providers(whisper_stt: WhisperStt) -> None:
    p = build_providers(settings())
    assert p.stt.engine is whisper_stt.engine  # one model per process
    await warm(p)
    assert p.stt.engine.loaded
    from app.providers import local_tts

    assert local_tts._engine is not None


async def test_warm_calls_sync_and_async_warmers_and_reports_failures() -> None:
    calls: list[str] = []

    class Sync:
        name = "sync"

        def warm(self) -> None:
            calls.append("sync")

    class Async:
        name = "async"

        async def warm(self) -> None:
            calls.append("async")

    class Broken:
        name = "broken"

        def warm(self) -> None:
            raise RuntimeError("model file unreadable")

    await warm(registry.Providers(stt=Sync(), llm=ScriptedAgent(), tts=Async()))  # type: ignore[arg-type]
    assert calls == ["sync", "async"]
    with pytest.raises(RuntimeError, match="unreadable"):
        await warm(registry.Providers(stt=Broken(), llm=Sync(), tts=Async()))  # type: ignore[arg-type]
