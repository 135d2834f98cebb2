"""Call-centre features: agent profiles per number and campaign, transfer to a human, keypad
fields and keys out, recording with consent, and the post-call outcome webhook.

``routes(ctx)`` adds ``POST /twilio/recording``; ``start(ctx)``/``stop(ctx)`` run with the
server (the agent file itself is validated earlier, with the settings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

from app.callcentre.postcall import PostCall
from app.callcentre.recording import RecordingCallback
from app.callcentre.rest import CallControl
from app.callcentre.service import RECORDING_PATH, CallCentre
from app.config import CallCentreSettings
from app.core.audio import CANONICAL, MULAW_8K
from app.logs import event, get_logger

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

__all__ = ["CallCentre", "install", "routes", "start", "stop"]


def install(ctx: AppContext) -> CallCentre:
    """Create the call-centre layer on ``ctx`` (idempotent); ``new_runner`` then uses it."""
    centre = ctx.callcentre
    if centre is None:
        cc = getattr(ctx.settings, "callcentre", None) or CallCentreSettings()
        postcall = PostCall(
            ctx,
            cc.post_call_webhook_url,
            cc.post_call_webhook_secret,
            max_attempts=cc.post_call_max_attempts,
            retry_base_s=cc.post_call_retry_base_s,
        )
        centre = CallCentre(ctx, cc.agents, CallControl.from_settings(ctx.settings), postcall)
        ctx.callcentre = centre
    return centre


def routes(ctx: AppContext) -> list[BaseRoute]:
    install(ctx)
    return [Route(RECORDING_PATH, RecordingCallback(ctx).handle, methods=["POST"])]


async def start(ctx: AppContext) -> None:
    centre = install(ctx)
    # Every agent's greeting and fixed phrases, in its own voice, before the first call.
    for script, tts in centre.scripts():
        await ctx.phrases.warm(tts, script.cached_phrases(), formats=(MULAW_8K, CANONICAL))
    centre.postcall.start()
    book = centre.book
    event(log, "callcentre_ready", agents=len(book.agents) if book else 0,
          rest=centre.control is not None,
          webhook=bool(centre.postcall.url))  # fmt: skip


async def stop(ctx: AppContext) -> None:
    centre = ctx.callcentre
    if centre is not None:
        await centre.postcall.aclose()
