"""Settings, read once from the environment and grouped by concern in frozen dataclasses.

Every variable is documented in ``.env.example``. A bad value fails start-up with a message
that names the variable; secrets are never echoed back. Reading the environment lives in
``app.config.env``, the sections in ``app.config.sections``; this module assembles them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.config.env import (
    DOTENV_FILE,
    ConfigError,
    Env,
    environment,
    networks,
    parse_hhmm,
    parse_hours,
)
from app.config.sections import (
    AgentSettings,
    CallCentreSettings,
    CloudProviderSettings,
    LocalProviderSettings,
    OpsSettings,
    OutboundSettings,
    ProviderSettings,
    ServerSettings,
    StoreSettings,
    TwilioSettings,
    WebRtcSettings,
    _callcentre_settings,
    _flux_settings,
    _ops_settings,
    _outbound_settings,
    _store_settings,
    _webrtc_settings,
)
from app.core.turns import TurnPolicy

__all__ = [
    "DOTENV_FILE",
    "AgentSettings",
    "CallCentreSettings",
    "CloudProviderSettings",
    "ConfigError",
    "LocalProviderSettings",
    "OpsSettings",
    "OutboundSettings",
    "ProviderSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "TwilioSettings",
    "WebRtcSettings",
    "environment",
    "parse_hhmm",
    "parse_hours",
]


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    webrtc: WebRtcSettings = field(default_factory=WebRtcSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    store: StoreSettings = field(default_factory=lambda: StoreSettings())
    outbound: OutboundSettings = field(default_factory=lambda: OutboundSettings())
    callcentre: CallCentreSettings = field(default_factory=lambda: CallCentreSettings())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = Env(environment() if env is None else env)
        public_url = e.opt("PUBLIC_URL")
        if public_url is not None:
            parts = urlsplit(public_url)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise ConfigError(f"PUBLIC_URL must be an http(s) URL, got {public_url!r}")
            public_url = public_url.rstrip("/")
        provider_names = ("auto", "local", "deepgram", "flux", "whisper")
        on_fly = bool(e.opt("FLY_APP_NAME"))
        server = ServerSettings(
            host=e.str("HOST", "127.0.0.1"),
            port=e.int("PORT", 8080, 1, 65535),
            public_url=public_url,
            log_level=e.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            max_concurrent_calls=e.int("MAX_CONCURRENT_CALLS", 30, 1, 100_000),
            drain_timeout_s=e.float("DRAIN_TIMEOUT_S", 240.0, 0, 3600),
            trusted_proxies=networks(e, "TRUSTED_PROXIES"),
            on_fly=on_fly,
            multi_instance=e.bool("MULTI_INSTANCE", on_fly),
            metrics_port=e.int("METRICS_PORT", 9091, 0, 65535),
            metrics_host=e.opt("METRICS_HOST") or e.str("HOST", "127.0.0.1"),
            http_header_timeout_s=e.float("HTTP_HEADER_TIMEOUT_S", 10.0, 0.5, 300),
            http_body_timeout_s=e.float("HTTP_BODY_TIMEOUT_S", 10.0, 0.5, 300),
            drain_handover=e.bool("DRAIN_HANDOVER", e.bool("MULTI_INSTANCE", on_fly)),
            workers=e.int("WORKERS", 0, 0, 256),
            event_loop=e.choice("EVENT_LOOP", "auto", ("auto", "uvloop", "asyncio")),
        )
        twilio = TwilioSettings(
            account_sid=e.opt("TWILIO_ACCOUNT_SID"),
            auth_token=e.opt("TWILIO_AUTH_TOKEN"),
            api_base_url=e.opt("TWILIO_API_BASE_URL"),
            api_key=e.opt("TWILIO_API_KEY"),
            api_secret=e.opt("TWILIO_API_SECRET"),
            stream_token_ttl_s=e.int("STREAM_TOKEN_TTL_S", 120, 5, 3600),
        )
        if server.metrics_port == server.port:
            raise ConfigError("METRICS_PORT must differ from PORT (or be 0 to turn it off)")
        if bool(twilio.api_key) != bool(twilio.api_secret):
            raise ConfigError("TWILIO_API_KEY and TWILIO_API_SECRET go together: set both")
        providers = ProviderSettings(
            stt=e.choice("STT_PROVIDER", "auto", provider_names),
            llm=e.choice("LLM_PROVIDER", "auto", ("auto", "local", "scripted", "anthropic")),
            tts=e.choice("TTS_PROVIDER", "auto", ("auto", "local", "espeak", "elevenlabs")),
            local=LocalProviderSettings(
                whisper_model=e.opt("WHISPER_MODEL_PATH"),
                whisper_threads=e.int("WHISPER_THREADS", 2, 1, 64),
                espeak_voice=e.str("ESPEAK_VOICE", "en-us"),
                espeak_rate_wpm=e.int("ESPEAK_RATE_WPM", 175, 80, 450),
                whisper_prompt=e.str("WHISPER_PROMPT", LocalProviderSettings().whisper_prompt),
                whisper_beam_size=e.int("WHISPER_BEAM_SIZE", 5, 1, 10),
                whisper_silence_ms=e.int("WHISPER_SILENCE_MS", 400, 100, 3000),
                whisper_piece_ms=e.int("WHISPER_PIECE_MS", 3000, 0, 30000),
            ),
            cloud=CloudProviderSettings(
                deepgram_api_key=e.opt("DEEPGRAM_API_KEY"),
                deepgram_url=e.opt("DEEPGRAM_URL"),
                deepgram_model=e.str("DEEPGRAM_MODEL", "nova-3"),
                deepgram_early_end_ms=e.int("DEEPGRAM_EARLY_END_MS", 75, 0, 300),
                **_flux_settings(e),
                anthropic_api_key=e.opt("ANTHROPIC_API_KEY"),
                anthropic_base_url=e.opt("ANTHROPIC_BASE_URL"),
                anthropic_model=e.str("ANTHROPIC_MODEL", "claude-haiku-4-5"),
                elevenlabs_api_key=e.opt("ELEVENLABS_API_KEY"),
                elevenlabs_base_url=e.opt("ELEVENLABS_BASE_URL"),
                elevenlabs_voice_id=e.str("ELEVENLABS_VOICE_ID", "21m00Tcm4TlvDq8ikWAM"),
                elevenlabs_model=e.str("ELEVENLABS_MODEL", "eleven_flash_v2_5"),
            ),
        )
        d = AgentSettings()
        agent = AgentSettings(
            name=e.str("AGENT_NAME", d.name),
            business=e.str("AGENT_BUSINESS", d.business),
            greeting=e.str("AGENT_GREETING", d.greeting),
            system_prompt=e.str("AGENT_SYSTEM_PROMPT", d.system_prompt),
            idle_timeout_s=e.float("IDLE_TIMEOUT_S", d.idle_timeout_s, 2, 3600),
            max_call_s=e.float("MAX_CALL_S", d.max_call_s, 10, 4 * 3600),
            policy=_turn_policy(e, d.policy),
            llm_filler_after_s=e.float("LLM_FILLER_AFTER_S", d.llm_filler_after_s, 0.1, 30),
            llm_giveup_after_s=e.float("LLM_GIVEUP_AFTER_S", d.llm_giveup_after_s, 0.5, 60),
            speculative_reply=e.bool("SPECULATIVE_REPLY", d.speculative_reply),
        )
        webrtc = _webrtc_settings(e, cloud_active=_cloud_active(providers))
        settings = cls(
            server=server,
            twilio=twilio,
            providers=providers,
            agent=agent,
            webrtc=webrtc,
            ops=_ops_settings(e),
            store=_store_settings(e),
            outbound=_outbound_settings(e),
            callcentre=_callcentre_settings(e),
        )
        _check_instances(settings)
        return settings


def _turn_policy(e: Env, d: TurnPolicy) -> TurnPolicy:
    return TurnPolicy(
        endpointing_ms=e.int("ENDPOINTING_MS", d.endpointing_ms, 0, 5000),
        unfinished_wait_ms=e.int("UNFINISHED_WAIT_MS", d.unfinished_wait_ms, 0, 10_000),
        max_endpoint_ms=e.int("MAX_ENDPOINT_MS", d.max_endpoint_ms, 0, 10_000),
        number_wait_ms=e.int("NUMBER_WAIT_MS", d.number_wait_ms, 0, 10_000),
        barge_in_min_speech_ms=e.int("BARGE_IN_MIN_SPEECH_MS", d.barge_in_min_speech_ms, 20, 5000),
        barge_in_sure_ms=e.int("BARGE_IN_SURE_MS", d.barge_in_sure_ms, 100, 10_000),
        barge_in_min_words=e.int("BARGE_IN_MIN_WORDS", d.barge_in_min_words, 1, 20),
    )


def _cloud_active(p: ProviderSettings) -> bool:
    """Would a call spend cloud credits? (A forced cloud provider, or auto with its key.)"""
    c = p.cloud
    return (
        p.stt in ("deepgram", "flux")
        or (p.stt == "auto" and bool(c.deepgram_api_key))
        or p.llm == "anthropic"
        or (p.llm == "auto" and bool(c.anthropic_api_key))
        or p.tts == "elevenlabs"
        or (p.tts == "auto" and bool(c.elevenlabs_api_key))
    )


FLY_STEPS = (
    "fly postgres create && fly postgres attach <db-app>   (sets DATABASE_URL), and "
    "fly secrets set WEBRTC_TOKEN_SECRET=$(openssl rand -hex 32); "
    "or, for a single machine, fly scale count 1 and MULTI_INSTANCE=false"
)


def _check_instances(settings: Settings) -> None:
    """Several instances must share their state: one PostgreSQL (call records, campaigns,
    pacing) and one WebRTC token secret (a web call's session and offer may land on two
    machines). Refused at start-up rather than found out from a split call log."""
    if not settings.server.multi_instance:
        return
    problems = []
    url = settings.store.database_url or ""
    if not url.startswith(("postgres://", "postgresql")):
        problems.append("DATABASE_URL must be a shared PostgreSQL (SQLite is per machine)")
    if not settings.webrtc.token_secret and settings.webrtc.max_calls > 0:
        problems.append("WEBRTC_TOKEN_SECRET must be set, the same on every instance")
    if problems:
        where = "on fly.io (FLY_APP_NAME is set)" if settings.server.on_fly else "MULTI_INSTANCE"
        raise ConfigError(
            f"several instances ({where}) need shared state: "
            + "; ".join(problems)
            + ". Fix: "
            + FLY_STEPS
        )
