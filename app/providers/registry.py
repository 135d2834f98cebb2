"""Which providers a process runs: chosen once from settings, warmed before the first call.

``*_PROVIDER=auto`` takes the cloud provider when its API key is set and the embedded local one
otherwise; a name forces that provider ("local" means the embedded one).

Cloud adapters plug in through ``CLOUD``: one ``factory(settings) -> provider`` per name, which
imports its adapter module only when selected, so the local path never imports a vendor SDK.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from app.config import ConfigError, Settings
from app.logs import event, get_logger, register_secret
from app.runtime.context import Providers

log = get_logger(__name__)

Kind = Literal["stt", "llm", "tts"]
_ENV = {"stt": "STT_PROVIDER", "llm": "LLM_PROVIDER", "tts": "TTS_PROVIDER"}


def _whisper(settings: Settings) -> Any:
    from app.providers.local_stt import WhisperStt

    local = settings.providers.local
    return WhisperStt(
        model_path=local.whisper_model,
        threads=local.whisper_threads,
        beam_size=local.whisper_beam_size,
        prompt=local.whisper_prompt,
        silence_ms=local.whisper_silence_ms,
        piece_ms=local.whisper_piece_ms,
    )


def _scripted(settings: Settings) -> Any:
    from app.providers.scripted import ScriptedAgent

    return ScriptedAgent(business=settings.agent.business)


def _espeak(settings: Settings) -> Any:
    from app.providers.local_tts import EspeakTts

    return EspeakTts(settings.providers.local)


LOCAL: dict[Kind, tuple[str, Callable[[Settings], Any]]] = {
    "stt": ("whisper", _whisper),
    "llm": ("scripted", _scripted),
    "tts": ("espeak", _espeak),
}


def _deepgram(settings: Settings) -> Any:
    from app.providers.deepgram import DeepgramOptions, DeepgramStt

    cloud = settings.providers.cloud
    assert cloud.deepgram_api_key is not None  # checked by build_one
    options = DeepgramOptions(model=cloud.deepgram_model, early_end_ms=cloud.deepgram_early_end_ms)
    return DeepgramStt(cloud.deepgram_api_key, cloud.deepgram_url, options)


def _flux(settings: Settings) -> Any:
    from app.providers.deepgram_flux import FluxOptions, FluxStt

    cloud = settings.providers.cloud
    assert cloud.deepgram_api_key is not None  # checked by build_one
    options = FluxOptions(
        model=cloud.deepgram_flux_model,
        eot_threshold=cloud.deepgram_eot_threshold,
        eager_eot_threshold=cloud.deepgram_eager_eot_threshold,
        eot_timeout_ms=cloud.deepgram_eot_timeout_ms,
    )
    return FluxStt(cloud.deepgram_api_key, cloud.deepgram_url, options)


def _anthropic(settings: Settings) -> Any:
    from app.providers.anthropic import ClaudeLlm

    cloud = settings.providers.cloud
    assert cloud.anthropic_api_key is not None  # checked by build_one
    return ClaudeLlm(cloud.anthropic_api_key, cloud.anthropic_model, cloud.anthropic_base_url)


def _elevenlabs(settings: Settings) -> Any:
    from app.providers.elevenlabs import create  # type: ignore[import-not-found]

    return create(settings)


@dataclass(frozen=True, slots=True)
class CloudEntry:
    factory: Callable[[Settings], Any]  # imports its adapter lazily: only when selected
    key_env: str  # the API key variable; its presence makes ``auto`` pick this provider
    key: Callable[[Settings], str | None]


CLOUD: dict[Kind, dict[str, CloudEntry]] = {
    "stt": {
        "deepgram": CloudEntry(
            _deepgram, "DEEPGRAM_API_KEY", lambda s: s.providers.cloud.deepgram_api_key
        ),
        # only by name (STT_PROVIDER=flux): ``auto`` takes the first entry whose key is set
        "flux": CloudEntry(_flux, "DEEPGRAM_API_KEY", lambda s: s.providers.cloud.deepgram_api_key),
    },
    "llm": {
        "anthropic": CloudEntry(
            _anthropic, "ANTHROPIC_API_KEY", lambda s: s.providers.cloud.anthropic_api_key
        ),
    },
    "tts": {
        "elevenlabs": CloudEntry(
            _elevenlabs, "ELEVENLABS_API_KEY", lambda s: s.providers.cloud.elevenlabs_api_key
        ),
    },
}


def choose(kind: Kind, settings: Settings) -> str:
    """The provider name ``kind`` resolves to (``auto`` and ``local`` resolved)."""
    wanted = getattr(settings.providers, kind).strip().lower()
    local_name = LOCAL[kind][0]
    if wanted in ("local", local_name):
        return local_name
    if wanted == "auto":
        for name, entry in CLOUD[kind].items():
            if entry.key(settings):
                return name
        return local_name
    if wanted in CLOUD[kind]:
        entry = CLOUD[kind][wanted]
        if not entry.key(settings):
            raise ConfigError(f"{_ENV[kind]}={wanted} needs {entry.key_env}")
        return wanted
    names = ", ".join(["auto", "local", local_name, *CLOUD[kind]])
    raise ConfigError(f"{_ENV[kind]} must be one of {names}; got {wanted!r}")


def build_one(kind: Kind, settings: Settings) -> Any:
    name = choose(kind, settings)
    local_name, local_factory = LOCAL[kind]
    if name == local_name:
        return local_factory(settings)
    entry = CLOUD[kind][name]
    key = entry.key(settings)
    if not key:
        raise ConfigError(f"{_ENV[kind]}={name} needs {entry.key_env}")
    register_secret(key)
    try:
        return entry.factory(settings)
    except ImportError as exc:
        if not (exc.name or "").startswith("app.providers."):
            raise  # the adapter exists but a library it needs is missing: show that
        raise ConfigError(
            f"{_ENV[kind]}={name}: this build has no {name} adapter ({exc}); "
            f"unset {entry.key_env} or set {_ENV[kind]}=local"
        ) from None


def build_providers(settings: Settings) -> Providers:
    """Build the three providers. Raises ConfigError naming the variable on a bad choice."""
    providers = Providers(
        stt=build_one("stt", settings),
        llm=build_one("llm", settings),
        tts=build_one("tts", settings),
    )
    if providers.stt.name != "whisper":
        # A cloud recogniser that cannot be reached must not leave a call deaf: the embedded
        # one takes such calls (its model loads on first use, off the event loop).
        providers.stt_fallback = _whisper(settings)
    event(
        log, "providers_selected",
        stt=providers.stt.name, llm=providers.llm.name, tts=providers.tts.name,
    )  # fmt: skip
    return providers


async def warm(providers: Providers) -> None:
    """Load models and libraries now (in worker threads), not on the first caller's time.

    A provider opts in with a ``warm()`` method, plain (run in a thread) or async.
    """

    async def one(provider: Any) -> None:
        warm_fn = getattr(provider, "warm", None)
        if warm_fn is None:
            return
        if inspect.iscoroutinefunction(warm_fn):
            await warm_fn()
        else:
            await asyncio.to_thread(warm_fn)

    # One after the other: a failure names its provider, and nothing is left running.
    for provider in (providers.stt, providers.llm, providers.tts):
        await one(provider)
