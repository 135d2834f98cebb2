"""A Twilio call survives the loss of its stream (a crash, a deploy, a network blip).

Every stream's TwiML carries ``<Connect action="/twilio/stream-ended">``. When the stream ends
Twilio requests that URL (signed, like every webhook) and runs what we answer:

- the call was ended on purpose (the agent hung up, transferred, left a voicemail, reached its
  length; written to the store *before* the stream was closed) or the caller is gone: ``<Hangup/>``;
- otherwise a new ``<Connect action><Stream>`` whose parameters carry a resume token: signed,
  bound to the CallSid, short-lived and single-use (the store redeems it once), and at most
  ``MAX_RESUMES`` per call in ``RESUME_WINDOW_S`` (then a polite goodbye).

Whichever instance the new stream reaches restores the call from the store: the agent, the
conversation as the caller heard it, where its record's lines go on. It says a short recovery
line and listens. The load balancer routes both requests to healthy instances, so a call on a
machine that died goes on on another one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from app.core.providers import Message
from app.logs import event, get_logger
from app.runtime.hooks import Resumed
from app.runtime.workers import token_key
from app.store import continuity
from telephony import paths
from telephony.call_status import FINAL_STATUSES
from telephony.security import ResumeTokens, StreamTokens, TokenCheck, stream_parameters
from twiml.voice import connect_stream, hang_up, say_and_hang_up

if TYPE_CHECKING:
    from app.runtime.context import AppContext

log = get_logger(__name__)

MAX_RESUMES = 3  # new streams for one call ...
RESUME_WINDOW_S = 600.0  # ... within this long
RESUME_TOKEN_TTL_S = 60  # Twilio opens the new stream within a second or two
GIVE_UP = "Sorry, we are having trouble with this line. Please call us again. Goodbye."
# End reasons that are the stream's, not the agent's: the call goes on over a new stream.
NOT_ON_PURPOSE = frozenset({"stream closed", "caller hung up", "error", "protocol error",
                            "internal error", "refused", "call ended", "stream ended"})  # fmt: skip


def action_url(webhook_url: str) -> str:
    """The ``<Connect action>`` for a call answered at ``webhook_url`` (same public base)."""
    parts = urlsplit(webhook_url)
    return urlunsplit((parts.scheme, parts.netloc, paths.STREAM_ENDED, "", ""))


class Continuity:
    def __init__(
        self, ctx: AppContext, tokens: StreamTokens, now: Callable[[], float] = time.time
    ) -> None:
        self.ctx = ctx
        self.tokens = tokens
        key = token_key(ctx.settings.twilio.auth_token)
        self.resume_tokens = ResumeTokens.from_auth_token(key, RESUME_TOKEN_TTL_S)
        self.now = now

    # ------------------------------------------------------------ the action request

    async def after_stream(self, fields: dict[str, str], url: str, ws_url: str) -> str:
        """The TwiML for Twilio's request when a stream of call ``CallSid`` ended."""
        sid = fields.get("CallSid", "")
        store = self.ctx.store
        if fields.get("CallStatus", "") in FINAL_STATUSES:
            return self._hang_up("caller gone")
        if store is None:
            return self._hang_up("no store")  # nothing shared to continue from
        now = self.now()
        nonce, token = self.resume_tokens.issue(sid, now)
        try:
            reason = await continuity.ended_on_purpose(store.db, sid)
            allowed = reason is None and await continuity.issue_resume(
                store.db, sid, nonce, now, window_s=RESUME_WINDOW_S, max_resumes=MAX_RESUMES
            )
        except Exception as exc:  # the database is down: a new stream could not be restored
            event(log, "twilio_resume_failed", logging.ERROR, error=type(exc).__name__)
            return say_and_hang_up(GIVE_UP)
        if reason is not None:
            return self._hang_up(f"ended on purpose: {reason}"[:80])
        if not allowed:
            event(log, "twilio_resume_refused", logging.WARNING, reason="too many resumes")
            return say_and_hang_up(GIVE_UP)
        outbound = fields.get("Direction", "").startswith("outbound")
        parameters = stream_parameters(
            self.tokens, sid, now, direction="outbound" if outbound else "inbound",
            from_number=fields.get("From"), to_number=fields.get("To"),
        )
        parameters["resume"] = token
        event(log, "twilio_stream_resuming")
        return connect_stream(ws_url, parameters, action=action_url(url))

    @staticmethod
    def _hang_up(why: str) -> str:
        event(log, "twilio_stream_not_resumed", reason=why)
        return hang_up()

    # ------------------------------------------------------------ the new stream

    async def restore(self, call_sid: str, token: str) -> tuple[str, Resumed | None, Any]:
        """Check a resume token and load the call so far: ("" or why refused, what the call
        had, its row)."""
        check, nonce = self.resume_tokens.verify(token, call_sid, self.now())
        store = self.ctx.store
        if check is not TokenCheck.OK:
            return f"resume token {check.value}", None, None
        if store is None:
            return "no store", None, None
        if not await continuity.redeem_resume(store.db, call_sid, nonce, self.now()):
            return "resume token replayed", None, None
        records = self.ctx.call_records
        if records is not None:
            # the dropped stream's last records (its end among them) land before we reopen
            await records.flush(wait_s=2.0)
        so_far = await continuity.call_so_far(store.db, call_sid)
        if so_far is None:
            return "unknown call", None, None
        if records is not None:
            records.continue_call(call_sid, so_far.next_transcript_seq, so_far.next_event_seq)
        event(log, "twilio_call_resumed", lines=len(so_far.transcript), resumes=so_far.resumes)
        resumed = Resumed(tuple(history_from(so_far.transcript)), tuple(so_far.keypad_fields))
        return "", resumed, so_far.row

    async def ended_on_purpose(self, call_sid: str, reason: str | None) -> None:
        """Before the stream closes: a call the agent ended stays ended."""
        store = self.ctx.store
        if store is None or reason is None or reason in NOT_ON_PURPOSE:
            return
        try:
            await continuity.mark_ended_on_purpose(store.db, call_sid, reason, self.now())
        except Exception as exc:  # the call ends all the same; a resume would be refused by
            # the rate limit at worst
            event(log, "call_end_unsaved", logging.ERROR, error=type(exc).__name__)


def history_from(lines: list[dict[str, Any]]) -> list[Message]:
    """The transcript as the model's history: the caller's lines and the agent's as heard
    (an interrupted reply is there only as far as it was played), sentences of one speaker
    joined into one message."""
    out: list[Message] = []
    for line in lines:
        role = "user" if line["role"] == "caller" else "assistant"
        text = str(line["text"]).strip()
        if not text:
            continue
        if out and out[-1].role == role:
            out[-1] = Message(role, f"{out[-1].content} {text}")
        else:
            out.append(Message(role, text))
    return out
