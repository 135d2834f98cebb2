"""The tables: call records, campaigns and what global dialling needs.

SQLAlchemy Core, one definition for SQLite and PostgreSQL. Every time is a float of UTC epoch
seconds (``Double``): the same in both databases, trivially compared, and what an injected clock
produces. Transcript ``at`` values are the session clock's seconds, as the records carry them.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Schema version of these definitions; ``Database.create`` records it and refuses a newer one.
SCHEMA_VERSION = 1

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # Twilio CallSid, or a generated id
    sa.Column("transport", sa.String(16), nullable=False, server_default="twilio"),
    sa.Column("direction", sa.String(16), nullable=False, server_default="inbound"),
    sa.Column("from_number", sa.String(32)),
    sa.Column("to_number", sa.String(32)),
    sa.Column("agent", sa.String(64)),
    sa.Column("variables", sa.JSON),
    sa.Column("prompt", sa.Text),
    sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
    # Twilio's SequenceNumber of the status applied last: callbacks may arrive out of order.
    sa.Column("status_seq", sa.Integer, nullable=False, server_default="-1"),
    sa.Column("answered_by", sa.String(32)),
    sa.Column("amd_action", sa.String(16)),  # voicemail | hangup | agent, once per call
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("answered_at", sa.Double),
    sa.Column("ended_at", sa.Double),
    sa.Column("duration_s", sa.Double),
    sa.Column("end_reason", sa.String(200)),
    sa.Column("outcome", sa.String(64)),
    sa.Column("summary", sa.Text),
    sa.Column("usage", sa.JSON),
    sa.Column("cost", sa.Double),
    sa.Column("recording_url", sa.String(500)),
    sa.Column("error_code", sa.String(16)),
    sa.Column("campaign_id", sa.String(36)),
    sa.Column("contact_id", sa.Integer),
    sa.Column("attempt", sa.Integer),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Index("ix_calls_created", "created_at"),
    sa.Index("ix_calls_open", "end_reason", "updated_at"),  # the zombie sweep's query
    sa.Index("ix_calls_campaign", "campaign_id", "contact_id"),
)

call_transcript = sa.Table(
    "call_transcript",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("interrupted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("turn", sa.Integer, nullable=False, server_default="0"),
    sa.Column("at", sa.Double, nullable=False),
)

call_turns = sa.Table(
    "call_turns",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("turn", sa.Integer, primary_key=True),
    sa.Column("speech_end", sa.Double),
    sa.Column("stt_final", sa.Double),
    sa.Column("turn_committed", sa.Double),
    sa.Column("llm_first_token", sa.Double),
    sa.Column("tts_first_audio", sa.Double),
    sa.Column("first_audio_sent", sa.Double),
    sa.Column("filler", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("fallback", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("total_ms", sa.Double),
)

call_events = sa.Table(
    "call_events",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("detail", sa.JSON),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    # draft -> running <-> paused -> completed | cancelled
    sa.Column("status", sa.String(16), nullable=False, server_default="draft"),
    sa.Column("prompt", sa.Text),
    sa.Column("agent", sa.String(64)),
    sa.Column("from_number", sa.String(32)),
    sa.Column("cps", sa.Double, nullable=False),
    sa.Column("max_concurrent", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("retry_base_s", sa.Double, nullable=False),
    sa.Column("hours_start_min", sa.Integer, nullable=False),  # minutes after local midnight
    sa.Column("hours_end_min", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
)

campaign_contacts = sa.Table(
    "campaign_contacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.String(36), nullable=False),
    sa.Column("line", sa.Integer, nullable=False),  # CSV line it came from
    sa.Column("phone", sa.String(32), nullable=False),  # E.164
    sa.Column("timezones", sa.String(200), nullable=False),  # comma-separated IANA names
    sa.Column("variables", sa.JSON),
    # pending -> calling -> pending (retry) | completed | failed | dnc | cancelled
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Double, nullable=False),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_at", sa.Double),
    sa.Column("last_call_sid", sa.String(64)),
    sa.Column("last_result", sa.String(32)),
    sa.Column("last_error", sa.String(200)),
    sa.Column("answered_by", sa.String(32)),
    sa.Column("duration_s", sa.Double),
    sa.Column("outcome", sa.String(64)),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.UniqueConstraint("campaign_id", "phone", name="uq_contact_phone"),
    sa.Index("ix_contacts_due", "campaign_id", "status", "next_attempt_at"),
)

# One row per placed attempt. The unique key is the database's own guarantee that no contact is
# dialled twice for one attempt, whatever the number of dialler instances.
dial_attempts = sa.Table(
    "dial_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.String(36), nullable=False),
    sa.Column("contact_id", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("instance", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.Double, nullable=False),
    sa.Column("dialed_at", sa.Double),
    sa.Column("call_sid", sa.String(64)),
    sa.Column("result", sa.String(32)),
    sa.Column("error", sa.String(200)),
    sa.UniqueConstraint("contact_id", "attempt", name="uq_attempt_once"),
    sa.Index("ix_attempts_sid", "call_sid"),
)

do_not_call = sa.Table(
    "do_not_call",
    metadata,
    sa.Column("phone", sa.String(32), primary_key=True),  # E.164
    sa.Column("reason", sa.String(200)),
    sa.Column("added_at", sa.Double, nullable=False),
)

# Global pacing: one row per rate limit (the Twilio account, each campaign). ``next_at`` is the
# earliest time the next call may be placed; every instance reserves slots from the same row.
dial_pacing = sa.Table(
    "dial_pacing",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("next_at", sa.Double, nullable=False),
)

# Post-call webhook delivery state (app.store.deliveries): one row per call.
post_call_webhooks = sa.Table(
    "post_call_webhooks",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("payload", sa.JSON, nullable=False),
    # pending -> sending -> delivered | pending (retry) | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Double, nullable=False),
    sa.Column("claimed_at", sa.Double),
    sa.Column("delivered_at", sa.Double),
    sa.Column("last_error", sa.String(200)),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_post_call_due", "status", "next_attempt_at"),
)


# Continuity (app.store.continuity): a call the agent ended on purpose, written before its
# stream closes, so whichever instance Twilio's <Connect action> reaches does not revive it ...
call_ends = sa.Table(
    "call_ends",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
)
# ... and the resume tokens issued for a call's new streams: single use, counted per call.
stream_resumes = sa.Table(
    "stream_resumes",
    metadata,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("issued_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double),
    sa.Index("ix_stream_resumes_call", "call_id", "issued_at"),
)


# Shared by the workers of every instance (app.store.shared). Call slots: admission across
# processes. A slot is reserved by the answer webhook and held by whichever worker runs the
# call's stream, renewed by that worker's heartbeat; a slot whose holder died expires.
call_slots = sa.Table(
    "call_slots",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("instance", sa.String(64), nullable=False),  # the machine whose capacity it uses
    sa.Column("holder", sa.String(80)),  # the worker running the call; None while reserved
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Index("ix_call_slots_instance", "instance", "expires_at"),
)
# Leases: one owner at a time for a job all workers could run (the dialler, the sweep).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(80), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
)
# Single-use web-call session tokens, spent by whichever worker answers the offer.
spent_tokens = sa.Table(
    "spent_tokens",
    metadata,
    sa.Column("sid", sa.String(32), primary_key=True),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Index("ix_spent_tokens_expiry", "expires_at"),
)
