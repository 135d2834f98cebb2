"""The one place a Twilio REST client is made (outbound calls, live-call control, number set-up).

Credentials are an API key and secret (``SK...``, revocable, the recommended kind) or the
account's auth token. Constructing it does no I/O; ``base_url`` points it at staging or a
local fake.
"""

from __future__ import annotations

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client


def rest_client(
    account_sid: str,
    auth_token: str | None = None,
    *,
    api_key: str | None = None,
    api_secret: str | None = None,
    base_url: str | None = None,
    timeout_s: float = 15.0,
) -> Client:
    http = TwilioHttpClient(timeout=timeout_s)
    if api_key and api_secret:
        client = Client(api_key, api_secret, account_sid, http_client=http)
    elif auth_token:
        client = Client(account_sid, auth_token, http_client=http)
    else:
        raise ValueError("a Twilio REST client needs an API key and secret, or the auth token")
    if base_url:
        client.api.base_url = base_url.rstrip("/")
    return client
