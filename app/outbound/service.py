"""Outbound calls: place one, and apply what Twilio tells us about it afterwards.

Placing: validate the number (ALLOWED_COUNTRIES), check the do-not-call list, take a slot from
the global pacing row (Twilio's calls-per-second limit is per account, across instances), then
``calls.create`` with signed status callbacks and asynchronous answering-machine detection.

Afterwards: status callbacks move the call forward only (duplicates and stragglers are no-ops)
and, for a campaign call, finish its contact's attempt in the same transaction. The AMD callback
leaves the voicemail message on a machine, or hangs up, exactly once per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from app.config import Settings
from app.logs import bind_call, event, get_logger, mask_phone
from app.outbound.clock import Clock, SystemClock
from app.outbound.dialer import DialError, TwilioDialer
from app.outbound.numbers import NumberRefused, normalise
from app.outbound.retry import retry_at
from app.store import Store
from app.store import calls as call_rows
from app.store.campaigns import apply_result
from telephony import call_status, paths
from twiml.voice import say_and_hang_up

log = get_logger(__name__)


class DialRefused(Exception):
    """We will not place this call. ``reason`` holds no phone digits."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PlacedCall:
    call_sid: str
    to: str
    slot: float


def account_pacing_key(account_sid: str) -> str:
    return f"twilio:{account_sid}"


class OutboundService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        dialer: TwilioDialer | None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.out = settings.outbound
        self.store = store
        self.dialer = dialer
        self.clock: Clock = clock or SystemClock()
        self._waiters: set[asyncio.Event] = set()

    # ----------------------------------------------------------------- wake-ups

    def subscribe(self) -> asyncio.Event:
        """An event set whenever a campaign call finishes here (engines wait on it)."""
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        return waiter

    def unsubscribe(self, waiter: asyncio.Event) -> None:
        self._waiters.discard(waiter)

    def notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    # ----------------------------------------------------------------- placing

    def check_number(self, raw: str) -> str:
        """E.164 of ``raw`` if we may dial it; logs and raises DialRefused otherwise."""
        try:
            return normalise(raw, self.out.allowed_countries, self.out.default_region).e164
        except NumberRefused as exc:
            event(
                log, "dial_refused", level=30, reason=exc.reason, region=exc.region,
                number=mask_phone(raw),
            )
            raise DialRefused(exc.reason) from None

    def urls(self, attempt_id: int | None = None) -> tuple[str, str, str]:
        """Answer URL, status callback and AMD callback. A campaign attempt's id rides in the
        callback URLs (Twilio signs them whole), so a callback can find its contact even if
        the dialler stopped before it recorded the CallSid."""
        base = self.settings.server.public_url
        if not base:
            raise DialRefused("PUBLIC_URL is not set: Twilio could not reach our webhooks")
        query = f"?{urlencode({'attempt': attempt_id})}" if attempt_id is not None else ""
        return (
            f"{base}{paths.VOICE}",
            f"{base}{paths.STATUS}{query}",
            f"{base}{paths.AMD}{query}",
        )

    def account_key(self) -> str:
        """The pacing row of the Twilio account: its CPS limit spans all our instances."""
        return account_pacing_key(self._dialer().account_sid)

    async def reserve_slot(self, extra_limits: tuple[tuple[str, float], ...] = ()) -> float:
        """Reserve a global dialling slot (the caller waits for it)."""
        limits = ((self.account_key(), pacing_interval(self.out.account_cps)),)
        return await self.store.campaigns.reserve_slot(limits + extra_limits, self.clock.now())

    async def wait_until(self, slot: float) -> None:
        delay = slot - self.clock.now()
        if delay > 0:
            await self.clock.sleep(delay)

    async def wait_for_slot(self, extra_limits: tuple[tuple[str, float], ...] = ()) -> float:
        """Reserve and wait for a global dialling slot. A slot woken up for too late (a busy
        host) is given up and a new one reserved: a late request could crowd the next one."""
        for tries in range(1, 11):
            slot = await self.reserve_slot(extra_limits)
            await self.wait_until(slot)
            late = self.clock.now() - slot
            if late <= JITTER_ALLOWANCE_S / 2 or tries == 10:  # never stall for good
                return slot
            event(log, "dial_slot_missed", level=30, late_ms=round(late * 1000))
        return slot

    async def dial(
        self,
        raw_number: str,
        *,
        variables: Mapping[str, str] | None = None,
        prompt: str | None = None,
        from_number: str | None = None,
    ) -> PlacedCall:
        """One call from the command line or the API."""
        to = self.check_number(raw_number)
        if await self.store.campaigns.is_dnc(to):
            event(log, "dial_refused", level=30, reason="do-not-call", number=mask_phone(to))
            raise DialRefused("the number is on the do-not-call list")
        caller_id = self._caller_id(from_number)
        slot = await self.wait_for_slot()
        sid = await self.place(to, from_number=caller_id, variables=variables, prompt=prompt)
        return PlacedCall(call_sid=sid, to=to, slot=slot)

    async def place(
        self,
        to: str,
        *,
        from_number: str,
        variables: Mapping[str, str] | None,
        prompt: str | None,
        agent: str | None = None,
        campaign_id: str | None = None,
        contact_id: int | None = None,
        attempt: int | None = None,
        attempt_id: int | None = None,
    ) -> str:
        """``calls.create`` now (the caller has taken a pacing slot), then record the call."""
        answer, status_cb, amd_cb = self.urls(attempt_id)
        sid = await self._dialer().create(
            to=to,
            from_=from_number,
            url=answer,
            status_callback=status_cb,
            amd_callback=amd_cb,
            ring_timeout_s=self.out.ring_timeout_s,
            time_limit_s=int(self.settings.agent.max_call_s) + 60,
        )
        with bind_call(sid):
            async with self.store.db.tx() as conn:
                await call_rows.record_outbound(
                    conn,
                    self.store.db,
                    call_sid=sid,
                    now=self.clock.now(),
                    to_number=to,
                    from_number=from_number,
                    variables=variables,
                    prompt=prompt,
                    agent=agent,
                    campaign_id=campaign_id,
                    contact_id=contact_id,
                    attempt=attempt,
                )
            event(
                log, "call_placed", to=mask_phone(to), campaign_id=campaign_id, attempt=attempt,
                variables=len(variables or {}),
            )
        return sid

    def _caller_id(self, override: str | None) -> str:
        caller = override or self.out.from_number
        if not caller:
            raise DialRefused("no caller id: set OUTBOUND_FROM_NUMBER")
        return caller

    def _dialer(self) -> TwilioDialer:
        if self.dialer is None:
            raise DialRefused("Twilio is not configured: set TWILIO_ACCOUNT_SID/AUTH_TOKEN")
        return self.dialer

    # ----------------------------------------------------------------- callbacks

    async def on_status(
        self, form: Mapping[str, str], query: Mapping[str, str]
    ) -> call_rows.StatusUpdate:
        sid = form.get("CallSid", "")
        status = form.get("CallStatus", "")
        if not sid or status not in call_status.KNOWN_STATUSES:
            raise ValueError("status callback without a CallSid or with an unknown CallStatus")
        return await self.apply_status(
            sid,
            status,
            seq=_int(form.get("SequenceNumber")),
            duration_s=_float(form.get("CallDuration")),
            answered_by=form.get("AnsweredBy") or None,
            error_code=form.get("ErrorCode") or None,
            direction="outbound" if form.get("Direction", "").startswith("outbound") else None,
            attempt_id=_int(query.get("attempt")),
        )

    async def apply_status(
        self,
        sid: str,
        status: str,
        *,
        seq: int | None = None,
        duration_s: float | None = None,
        answered_by: str | None = None,
        error_code: str | None = None,
        direction: str | None = None,
        attempt_id: int | None = None,
    ) -> call_rows.StatusUpdate:
        now = self.clock.now()
        db = self.store.db
        with bind_call(sid):
            async with db.tx() as conn:
                links = await call_rows.attempt_links(conn, attempt_id, sid)
                update = await call_rows.apply_status(
                    conn, db, call_sid=sid, status=status, now=now, seq=seq,
                    duration_s=duration_s, answered_by=answered_by, error_code=error_code,
                    direction=direction, links=links,
                )
                row = update.row
                contact_done = False
                if update.final and row.get("contact_id") is not None and row.get("attempt"):
                    contact_done = await apply_result(
                        conn,
                        contact_id=row["contact_id"],
                        attempt=row["attempt"],
                        result=call_status.contact_result(row["status"], row["answered_by"]),
                        now=now,
                        call_sid=sid,
                        answered_by=row["answered_by"],
                        duration_s=row["duration_s"],
                        outcome=row["outcome"]
                        or ("voicemail" if row["amd_action"] == "voicemail" else None),
                        retry_rule=retry_at,
                    )
            event(
                log, "call_status", status=status, applied=update.applied, seq=seq,
                now_status=update.status, campaign_id=row.get("campaign_id"),
                contact_done=contact_done,
            )
        if contact_done:
            self.notify()
        return update

    async def on_amd(self, form: Mapping[str, str], query: Mapping[str, str]) -> str:
        """Asynchronous AMD result: returns the action taken (agent, voicemail, hangup, none)."""
        sid = form.get("CallSid", "")
        answered_by = form.get("AnsweredBy", "")
        if not sid or answered_by not in call_status.ANSWERED_BY:
            raise ValueError("AMD callback without a CallSid or with an unknown AnsweredBy")
        action = call_status.amd_action(
            answered_by, self.out.amd_fax_action, self.out.amd_unknown_action  # type: ignore[arg-type]
        )
        now = self.clock.now()
        # Only answered calls are analysed: the call is at least in progress.
        await self.apply_status(
            sid, "in-progress", answered_by=answered_by, attempt_id=_int(query.get("attempt"))
        )
        with bind_call(sid):
            async with self.store.db.tx() as conn:
                await call_rows.set_answered_by(
                    conn, call_sid=sid, answered_by=answered_by, now=now
                )
                first = await call_rows.claim_amd_action(
                    conn, call_sid=sid, action=action, now=now
                )
            event(log, "amd_result", answered_by=answered_by, action=action, first=first)
            if not first:
                return "none"
            try:
                if action == "voicemail":
                    await self._dialer().play_and_hang_up(sid, self.voicemail_twiml())
                elif action == "hangup":
                    await self._dialer().hang_up(sid)
            except (DialError, DialRefused) as exc:
                event(log, "amd_action_failed", level=40, action=action, error=str(exc))
        return action

    def voicemail_twiml(self) -> str:
        # With DetectMessageEnd the machine_end_* result comes after the greeting's beep or
        # silence, so the message is recorded whole.
        return say_and_hang_up(self.out.voicemail_message)

    async def reconcile(self, sid: str) -> call_rows.StatusUpdate:
        """Ask Twilio how a call we lost track of ended, and apply it like a callback."""
        state = await self._dialer().fetch(sid)
        return await self.apply_status(
            sid, state.status, duration_s=state.duration_s, answered_by=state.answered_by
        )


# Requests from different instances reach Twilio a little after their slots, each late by its
# own scheduling delay; the limit must hold at Twilio, not only in our bookkeeping. Spacing the
# slots of any one-second window over 1.2 s lets two requests differ in lateness by 200 ms.
JITTER_ALLOWANCE_S = 0.2


def pacing_interval(cps: float) -> float:
    """Seconds between slots for ``cps`` calls per second, with the jitter allowance."""
    return (1.0 + JITTER_ALLOWANCE_S) / cps


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
