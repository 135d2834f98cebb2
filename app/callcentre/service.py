"""The call-centre layer of one process: plans each call from its agent profile and carries
out the tools (transfer, keypad fields, keys out) through Twilio's REST API.

Put in ``ctx.callcentre`` by ``app.callcentre.start``; ``AppContext.new_runner`` (the one place
a call's runner is made) asks it for each call's plan.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from app.agents.build import script_for, with_voice
from app.agents.config import AgentBook
from app.callcentre.call import (
    CallFeatures,
    CentreSink,
    KeypadFields,
    TransferRequest,
    log_failure,
    tool_argument,
    until_quiet,
)
from app.callcentre.digits import FieldRequest
from app.callcentre.rest import CallControl, CallControlError
from app.campaigns.tools import SET_OUTCOME, apply_outcome
from app.core.providers import CallInfo, Message, ToolCall
from app.logs import event, get_logger, mask_phone
from app.runtime.hooks import CallHooks, CallPlan, Resumed
from telephony import paths
from telephony.security import StreamTokens, stream_parameters, stream_url
from twiml import voice as twiml

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

RECORDING_PATH, MEDIA_PATH, VOICE_PATH = paths.RECORDING, paths.MEDIA, paths.VOICE
SORRY = "Sorry, nobody could take your call right now. Please call again later. Goodbye."


class CallCentre:
    def __init__(
        self,
        ctx: AppContext,
        book: AgentBook | None,
        control: CallControl | None,
        postcall: Any = None,
    ) -> None:
        self.ctx = ctx
        self.book = book
        self.control = control
        self.postcall = postcall
        self.live: dict[str, CallFeatures] = {}
        # Conversations whose stream is being replaced (keys pressed on an IVR): the next
        # stream of the same call continues them.
        self.resume: dict[str, list[Message]] = {}

    # ------------------------------------------------------------ runners

    def agent_for(self, call: CallInfo) -> str:
        if self.book is None:
            return call.agent
        ours = call.to_number if call.direction == "inbound" else call.from_number
        parameter = call.agent if call.agent != "default" else None
        campaign = call.variables.get("campaign") or call.variables.get("campaign_id")
        return self.book.select(to_number=ours, campaign=campaign, parameter=parameter)

    def plan(self, call: CallInfo, sink: Any, resumed: Resumed | None = None) -> CallPlan:
        """How this call runs: its agent's script and voice (the process's providers, failover
        included, in that voice), the tools and keypad, recording, transfer and the post-call
        job as hooks, and the conversation so far when the call continues on a new stream."""
        settings = self.ctx.settings
        name = self.agent_for(call)
        agent = self.book.get(name) if self.book is not None else None
        providers = self.ctx.providers
        if agent is not None:
            variables = {**call.variables, "language": agent.language}
            call = dataclasses.replace(call, agent=name, variables=variables)
            script = script_for(agent, settings.agent)
            if agent.voice:  # the same providers (and STT failover), in the agent's voice
                providers = dataclasses.replace(
                    providers, tts=with_voice(providers.tts, agent.voice)
                )
        else:
            script = settings.agent.script()
            if call.direction == "outbound":  # campaigns want to know how each call went
                script = dataclasses.replace(script, tools=(*script.tools, SET_OUTCOME))
        history = self.resume.pop(call.call_id, None)
        if history is not None:
            script = dataclasses.replace(script, greeting="")  # same call: no second hello
        elif resumed:  # the stream dropped: say so, and go on from what was heard
            history, script = list(resumed.history), script.resumed()
        f = CallFeatures(call, name, agent)
        if resumed:  # the names only: the digits went to the model, never to the store
            f.fields = dict.fromkeys(resumed.keypad_fields, "")
        f.keypad = KeypadFields(f)

        def bind(runner: Any) -> None:
            f.runner = runner
            self.live[call.call_id] = f

        async def started() -> None:
            if f.agent is not None and f.agent.recording.enabled:
                await self.start_recording(f)

        def finished(runner: Any) -> None:
            if f.keypad is not None:
                f.keypad.close()
            if self.live.get(call.call_id) is f:
                del self.live[call.call_id]
            if not f.handed_over:
                self.call_finished(f, runner)

        hooks = CallHooks(
            tools=self.tools(), keypad=f.keypad.take, started=started, finished=finished
        )
        return CallPlan(
            call=call, sink=CentreSink(sink, self, f), script=script, providers=providers,
            hooks=hooks, history=tuple(history or ()), bind=bind,
        )

    def scripts(self) -> list[tuple[Any, Any]]:
        """(script, tts) of every agent, to pre-synthesise their fixed phrases."""
        if self.book is None:
            return []
        out = []
        for agent in self.book.agents.values():
            tts = with_voice(self.ctx.providers.tts, agent.voice)
            out.append((script_for(agent, self.ctx.settings.agent), tts))
        return out

    # ------------------------------------------------------------ tools

    def tools(self) -> dict[str, Any]:
        return {
            "transfer_call": self._tool_transfer,
            "collect_digits": self._tool_collect,
            "send_digits": self._tool_send_digits,
            "set_outcome": self._tool_outcome,
        }

    async def _tool_outcome(self, call: CallInfo, tool: ToolCall) -> None:
        store = self.ctx.store
        if store is None:
            event(log, "outcome_not_stored", reason="no store")
            return
        summary = tool_argument(tool, "summary", None)
        outcome = str(tool_argument(tool, "outcome", ""))
        summary = str(summary) if summary else None
        result = await apply_outcome(store, call.call_id, outcome, summary)
        features = self.live.get(call.call_id)
        if features is not None and result.startswith("Outcome recorded"):
            features.agent_outcome = (outcome.strip().lower(), summary)

    async def _tool_transfer(self, call: CallInfo, tool: ToolCall) -> None:
        f = self.live.get(call.call_id)
        if f is None:
            return
        # Carried out when the session hangs up, after the hand-off line has played.
        f.transfer = TransferRequest(
            reason=str(tool_argument(tool, "reason", ""))[:300],
            summary=str(tool_argument(tool, "summary", ""))[:500],
        )
        event(log, "transfer_requested", mode=f.agent.transfer.mode if _has_transfer(f) else "-")

    async def _tool_collect(self, call: CallInfo, tool: ToolCall) -> None:
        f = self.live.get(call.call_id)
        if f is None or f.keypad is None:
            return
        limits = f.agent.digits if f.agent is not None else None
        cap = limits.max_digits if limits is not None else 20
        try:
            wanted = int(tool_argument(tool, "max_digits", cap))
        except (TypeError, ValueError):
            wanted = cap
        terminator = str(tool_argument(tool, "terminator", "#"))
        f.keypad.collect(
            FieldRequest(
                name=str(tool_argument(tool, "field", "digits"))[:60],
                max_digits=max(1, min(wanted, cap)),
                terminator=terminator if terminator in ("#", "*") else "#",
                inter_digit_timeout_s=limits.inter_digit_timeout_s if limits else 5.0,
            )
        )

    async def _tool_send_digits(self, call: CallInfo, tool: ToolCall) -> None:
        f = self.live.get(call.call_id)
        digits = str(tool_argument(tool, "digits", ""))
        public = self.ctx.settings.server.public_url
        if f is None or f.runner is None:
            return
        if self.control is None or call.transport != "twilio" or not public:
            event(log, "send_digits_unavailable", transport=call.transport,
                  rest=self.control is not None, public_url=bool(public))  # fmt: skip
            return
        try:
            document = twiml.play_digits_then_stream(
                digits, stream_url(public + VOICE_PATH, MEDIA_PATH), self._stream_parameters(f),
                action=public + paths.STREAM_ENDED,
            )
        except ValueError:
            event(log, "send_digits_refused", reason="bad digits", length=len(digits))
            return
        await until_quiet(f.runner, within=15.0)  # let the agent finish what it was saying
        f.handed_over = True
        self.resume[call.call_id] = list(f.runner.session.history)
        try:
            await self.control.redirect(call.call_id, document)
        except CallControlError as exc:
            f.handed_over = False
            self.resume.pop(call.call_id, None)
            log_failure("send_digits_failed", exc)
            return
        event(log, "digits_sent", keys=len(digits))

    def _stream_parameters(self, f: CallFeatures) -> dict[str, str]:
        """What the Twilio transport's webhook would put on a new stream for this call."""
        t = self.ctx.settings.twilio
        tokens = StreamTokens.from_auth_token(t.auth_token, t.stream_token_ttl_s)
        c = f.call
        return stream_parameters(
            tokens, c.call_id, time.time(), direction=c.direction, from_number=c.from_number,
            to_number=c.to_number, agent=f.agent_name,
        )

    # ------------------------------------------------------------ transfer

    async def transfer(self, f: CallFeatures) -> bool:
        """Move the call to the agent's colleague. False: it could not be moved (hang up)."""
        call = f.call
        if self.control is None or call.transport != "twilio" or not _has_transfer(f):
            f.transfer_result = "transfer_failed"
            event(log, "transfer_unavailable", transport=call.transport,
                  rest=self.control is not None, configured=_has_transfer(f))  # fmt: skip
            return False
        assert f.agent is not None and f.agent.transfer is not None
        t = f.agent.transfer
        try:
            if t.mode == "cold":
                await self.control.redirect(
                    call.call_id, twiml.cold_transfer(t.number, ring_timeout_s=t.ring_timeout_s)
                )
            else:
                await self._warm(f, t)
        except CallControlError as exc:
            f.transfer_result = "transfer_failed"
            log_failure("transfer_failed", exc)
            return False
        f.transfer_result = "transferred"
        event(log, "call_transferred", mode=t.mode, to=mask_phone(t.number))
        return True

    async def _warm(self, f: CallFeatures, t: Any) -> None:
        """Caller to a conference on hold; colleague dialled with a spoken brief, joining
        starts the bridge. If the colleague's leg cannot be placed, the caller hears a
        short apology instead of waiting forever."""
        assert self.control is not None
        call = f.call
        room = f"transfer-{call.call_id}"
        await self.control.redirect(call.call_id, twiml.conference_hold(room, t.hold_music_url))
        request = f.transfer or TransferRequest()
        about = request.summary or request.reason or "no summary was given"
        brief = f"Transfer from the {f.agent_name} line. {about}. Connecting you now."
        ours = t.caller_id or (call.to_number if call.direction == "inbound" else call.from_number)
        try:
            if not ours:
                raise CallControlError("no caller id for the colleague's leg")
            await self.control.dial(t.number, ours, twiml.conference_brief(room, brief),
                                    t.ring_timeout_s)  # fmt: skip
        except CallControlError:
            await self.control.redirect(call.call_id, twiml.say_and_hang_up(SORRY))
            raise

    # ------------------------------------------------------------ recording

    async def start_recording(self, f: CallFeatures) -> None:
        call = f.call
        if self.control is None or call.transport != "twilio":
            event(log, "recording_unavailable", transport=call.transport)
            return
        public = self.ctx.settings.server.public_url
        callback = public + RECORDING_PATH if public else None
        if callback is None:
            event(log, "recording_callback_unset", detail="PUBLIC_URL is not set")
        channels = f.agent.recording.channels if f.agent is not None else "dual"
        try:
            f.recording_sid = await self.control.start_recording(call.call_id, callback, channels)
        except CallControlError as exc:
            log_failure("recording_failed", exc)
            return
        event(log, "recording_started", recording_sid=f.recording_sid)

    # ------------------------------------------------------------ end of call

    def call_finished(self, f: CallFeatures, runner: Any) -> None:
        if self.postcall is not None:
            self.postcall.submit(f, runner)


def _has_transfer(f: CallFeatures) -> bool:
    return f.agent is not None and f.agent.transfer is not None
