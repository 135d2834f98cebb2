"""``voice-agent configure-number +E164 [--show]``: point a Twilio number at this server.

Sets the number's voice webhook (``VoiceUrl``, POST) and status callback to ``PUBLIC_URL``
through the REST API, the same as pasting them into the Twilio console's "A call comes in" and
"Call status changes" fields. ``--show`` only prints what the number is set to now.

Why the extra care: a number linked to a TwiML App (``VoiceApplicationSid``) or a SIP trunk
ignores its own ``VoiceUrl``, which is the classic "I set the webhook and nothing happens".
Updating clears the TwiML App link; a trunk link is reported, never changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import phonenumbers
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from app.config import ConfigError, Settings
from app.logs import event, get_logger, mask_phone, register_secret
from app.transports.twilio import FALLBACK_PATH, VOICE_PATH
from telephony import paths
from telephony.rest import rest_client

log = get_logger(__name__)

# The status callback route is served by app.outbound.routes.
STATUS_PATH = paths.STATUS
HTTP_TIMEOUT_S = 15.0


class ConfigureError(Exception):
    """Something the operator must fix; the message says what."""


class TrunkOverride(ConfigureError):
    """The number belongs to a SIP trunk, whose routing wins over the number's webhook."""


@dataclass(frozen=True, slots=True)
class Target:
    voice_url: str
    status_callback: str
    fallback_url: str


def normalise_e164(raw: str) -> str:
    """``+1 415 555 0123`` -> ``+14155550123``; anything that is not a full E.164 number fails."""
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise ConfigureError(
            f"{raw!r} is not an E.164 phone number (+ and country code): {exc}"
        ) from None
    if not phonenumbers.is_possible_number(number):
        raise ConfigureError(f"{mask_phone(raw)} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def target_for(public_url: str | None) -> Target:
    if not public_url:
        raise ConfigureError("PUBLIC_URL is not set: the https:// address Twilio reaches us on")
    if not public_url.startswith("https://"):
        # The stream URL is derived from it, and Twilio accepts only wss:// streams.
        raise ConfigureError(f"PUBLIC_URL must start with https:// (got {public_url!r})")
    base = public_url.rstrip("/")
    return Target(
        voice_url=base + VOICE_PATH,
        status_callback=base + STATUS_PATH,
        fallback_url=base + FALLBACK_PATH,
    )


def make_client(settings: Settings) -> Client:
    t = settings.twilio
    if not t.account_sid or not (t.auth_token or t.api_key):
        raise ConfigureError(
            "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET) "
            "must be set"
        )
    register_secret(t.auth_token)
    register_secret(t.api_secret)
    return rest_client(
        t.account_sid, t.auth_token, api_key=t.api_key, api_secret=t.api_secret,
        base_url=t.api_base_url, timeout_s=HTTP_TIMEOUT_S,
    )


def find_number(client: Client, e164: str) -> Any:
    found = client.incoming_phone_numbers.list(phone_number=e164, limit=2)
    exact = [n for n in found if n.phone_number == e164]
    if not exact:
        raise ConfigureError(
            f"{mask_phone(e164)} is not a number of account {client.account_sid}: buy or port "
            "it first, or check TWILIO_ACCOUNT_SID (a subaccount has its own numbers)"
        )
    return exact[0]


def describe(number: Any, target: Target | None, out: TextIO) -> None:
    rows = [
        ("number", mask_phone(number.phone_number)),
        ("sid", number.sid),
        ("voice url", f"{number.voice_method or '-'} {number.voice_url or '-'}"),
        ("status callback", f"{number.status_callback_method or '-'} "
                            f"{number.status_callback or '-'}"),
        ("voice fallback", number.voice_fallback_url or "-"),
        ("twiml app", number.voice_application_sid or "-"),
        ("sip trunk", number.trunk_sid or "-"),
    ]
    for label, value in rows:
        print(f"  {label:<16} {value}", file=out)
    if target is not None:
        ok = (
            number.voice_url == target.voice_url
            and (number.voice_method or "").upper() == "POST"
            and number.status_callback == target.status_callback
            and number.voice_fallback_url == target.fallback_url
            and not number.voice_application_sid
            and not number.trunk_sid
        )
        print(f"  {'points here':<16} {'yes' if ok else 'NO'}", file=out)


def configure(client: Client, e164: str, target: Target, out: TextIO) -> Any:
    number = find_number(client, e164)
    print("before:", file=out)
    describe(number, None, out)
    changes: dict[str, str] = {
        "voice_url": target.voice_url,
        "voice_method": "POST",
        "status_callback": target.status_callback,
        "status_callback_method": "POST",
        # Twilio asks this when the voice URL fails (an error, a timeout, a bad answer): the
        # caller hears an apology and is sent to OVERFLOW_NUMBER, not "an application error".
        "voice_fallback_url": target.fallback_url,
        "voice_fallback_method": "POST",
    }
    if number.voice_application_sid:
        changes["voice_application_sid"] = ""  # else Twilio keeps using the app's URLs
    updated = client.incoming_phone_numbers(number.sid).update(**changes)
    print("after:", file=out)
    describe(updated, target, out)
    event(log, "number_configured", number=mask_phone(e164), sid=updated.sid,
          cleared_app=bool(number.voice_application_sid), trunk=bool(updated.trunk_sid))
    if updated.trunk_sid:
        raise TrunkOverride(
            "the number belongs to SIP trunk " + updated.trunk_sid + ", which routes its calls "
            "instead of the voice URL: remove it from the trunk (console: Elastic SIP Trunking "
            "-> the trunk -> Numbers), then run this again"
        )
    return updated


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        settings = Settings.from_env()
        e164 = normalise_e164(args.number)
        client = make_client(settings)
        if args.show:
            number = find_number(client, e164)
            target = target_for(settings.server.public_url) if settings.server.public_url else None
            describe(number, target, out)
            return 0
        configure(client, e164, target_for(settings.server.public_url), out)
        return 0
    except TrunkOverride as exc:
        print(f"error: {exc}", file=err)
        return 3
    except (ConfigureError, ConfigError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    except TwilioRestException as exc:
        event(log, "configure_number_failed", status=exc.status, code=exc.code)
        print(f"error: {twilio_refusal(exc.status, exc.code, exc.msg)}", file=err)
        return 1
    except TwilioException as exc:
        # A non-JSON error page (a proxy, an outage) comes as a plain TwilioException that
        # still carries the HTTP response: an answer, not a network failure.
        response = exc.args[1] if len(exc.args) > 1 else None
        status = getattr(response, "status_code", None)
        if status is not None:
            code = _error_code(getattr(response, "text", ""))
            event(log, "configure_number_failed", status=status, code=code)
            print(f"error: {twilio_refusal(status, code, str(exc.args[0]))}", file=err)
        else:
            print(f"error: could not reach Twilio: {type(exc).__name__}: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"error: could not reach Twilio: {type(exc).__name__}: {exc}", file=err)
        return 1


def _error_code(text: str) -> int | None:
    try:
        code = json.loads(text).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def twilio_refusal(status: int, code: int | None, message: str) -> str:
    """What a Twilio error answer means for the person at the keyboard."""
    said = f"HTTP {status}" + (f", code {code}" if code else "")
    if status in (401, 403):
        return (
            f"Twilio refused the credentials ({said}): check TWILIO_ACCOUNT_SID and "
            "TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET, made in the same "
            "account or subaccount)"
        )
    return f"Twilio answered {said}: {message}"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "configure-number",
        help="point a Twilio number's voice webhook, fallback and status callback at PUBLIC_URL",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("number", help="the Twilio number, E.164 (e.g. +14155550123)")
    parser.add_argument("--show", action="store_true", help="only print the current settings")
    parser.set_defaults(func=run)
