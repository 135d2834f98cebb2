"""The call page in headless Chromium: a fake microphone speaks a WAV file, the agent answers.

Debian's ``chromium`` (``scripts/test-services.sh`` installs it) driven by Playwright, never a
downloaded browser. ``--allow-loopback-in-peer-connection`` lets Chromium offer 127.0.0.1 and
the ``loopback_ice`` fixture makes the server do the same, so the media stays on loopback.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path

import pytest

from app.core.audio import CANONICAL
from app.providers.local_tts import render
from tests.webrtc.conftest import local_context, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def chromium_present() -> None:
    assert Path(CHROMIUM).exists(), "Debian chromium is missing: run scripts/test-services.sh"


def caller_wav(path: Path, text: str, lead_s: float, tail_s: float) -> Path:
    """Silence while the greeting plays, the caller's line, then silence."""
    pcm = (
        bytes(CANONICAL.bytes_for_ms(lead_s * 1000))
        + render(text, CANONICAL)
        + bytes(CANONICAL.bytes_for_ms(tail_s * 1000))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(CANONICAL.sample_rate)
        out.writeframes(pcm)
    return path


def chromium_args(wav: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]


async def test_call_button_reaches_the_agent_and_shows_its_reply(loopback_ice, tmp_path) -> None:
    from playwright.async_api import async_playwright, expect

    # A line the local recogniser hears reliably through Opus (the clinic's hours question as
    # "What are your opening hours?" sometimes came back too garbled to be understood).
    wav = caller_wav(tmp_path / "caller.wav", "When are you open?", 7.0, 12.0)
    ctx = await local_context()
    async with serve(ctx) as srv, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(wav)
        )
        try:
            page = await browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            await page.goto(srv.url + "/")
            await page.click("#call")
            await expect(page.locator("#status")).to_have_text(
                "Connected. Speak whenever you like.", timeout=15_000
            )
            captions = page.locator("#captions li")
            await expect(captions.filter(has_text="How can I help")).to_have_count(
                1, timeout=20_000
            )
            reply = captions.filter(has_text="Monday to Friday")
            try:
                await expect(reply).to_have_count(1, timeout=40_000)
            except AssertionError as exc:
                raise AssertionError(await captions.all_text_contents()) from exc
            assert await reply.get_attribute("data-role") == "agent"
            heard = page.locator("#captions li.caller")
            assert "open" in (await heard.first.text_content() or "").lower()
            assert await page.locator("#error").is_hidden(), console

            await page.click("#hangup")
            await expect(page.locator("#status")).to_have_text("Call ended.")
            manager = srv.ctx.webrtc
            await expect(page.locator("#call")).to_be_enabled()
            async with asyncio.timeout(10):
                while manager.calls or len(ctx.calls):  # noqa: ASYNC110 - server state, no event
                    await asyncio.sleep(0.05)
        finally:
            await browser.close()


async def test_refused_microphone_shows_a_clear_message(tmp_path) -> None:
    from playwright.async_api import async_playwright, expect

    args = [a for a in chromium_args(tmp_path / "none.wav") if "fake-ui" not in a]
    async with serve(await _bare_context()) as srv, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            context = await browser.new_context()  # no permission granted: getUserMedia fails
            page = await context.new_page()
            await page.goto(srv.url + "/")
            await page.click("#call")
            error = page.locator("#error")
            await expect(error).to_be_visible(timeout=10_000)
            await expect(error).to_contain_text("Microphone access was refused")
            await expect(page.locator("#call")).to_be_enabled()
        finally:
            await browser.close()


async def _bare_context():  # type: ignore[no-untyped-def]
    from app.runtime.context import AppContext
    from tests.webrtc.conftest import make_settings

    return AppContext(make_settings(), None, None)
