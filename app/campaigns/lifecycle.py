"""Start-up and shutdown of outbound calling in the server.

``start(ctx)`` (after ``app.store.start``) puts the ``OutboundService`` in
``ctx.outbound`` and, with ``CAMPAIGN_DIALER`` on and Twilio configured, a campaign
supervisor in ``ctx.campaigns`` that dials every running campaign. ``stop(ctx)``
stops dialling first: calls already placed finish on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.campaigns.engine import CampaignSupervisor
from app.logs import event, get_logger
from app.outbound.dialer import TwilioDialer
from app.outbound.service import OutboundService

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)


async def start(ctx: AppContext) -> OutboundService | None:
    store = ctx.store
    if store is None:
        event(log, "outbound_disabled", level=30, reason="no store")
        return None
    settings = ctx.settings
    tw = settings.twilio
    dialer = None
    if tw.account_sid and tw.auth_token:
        dialer = TwilioDialer(tw.account_sid, tw.auth_token, api_base_url=tw.api_base_url)
    service = OutboundService(settings, store, dialer)
    ctx.outbound = service
    if dialer is not None and settings.outbound.campaign_dialer:
        supervisor = CampaignSupervisor(service)
        supervisor.start()
        ctx.campaigns = supervisor
    event(
        log, "outbound_ready", dialer=dialer is not None,
        campaign_dialer=ctx.campaigns is not None,
    )
    return service


async def stop(ctx: AppContext) -> None:
    supervisor, ctx.campaigns = ctx.campaigns, None
    if supervisor is not None:
        await supervisor.stop()
    ctx.outbound = None
