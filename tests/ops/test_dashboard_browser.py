"""The operator dashboard in headless Chromium, against a real server after simulated calls.

Saves a screenshot to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from app.simulator import CallOptions, simulate_call
from app.store import Store
from tests.ops.records import add_campaign
from tests.ops.serverproc import ROOT, start_server

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "dashboard-token-for-tests"
CALLS = [
    ["Hi, I'd like to book a cleaning appointment.", "No, that's everything. Thank you, goodbye."],
    ["What are your opening hours on Saturday?", "Thank you, goodbye."],
    ["Can I move my appointment to Friday?", "That's all, goodbye."],
]
FROM = "+14155550123"


async def test_dashboard_shows_calls_with_their_latency_chart(tmp_path: Path) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("chromium is missing: scripts/test-services.sh installs it")
    from playwright.async_api import async_playwright

    server = await start_server(tmp_path, API_TOKEN=TOKEN)
    chatty = None
    try:
        options = CallOptions(call_timeout=120, from_number=FROM)
        results = await asyncio.gather(*(simulate_call(server.url, lines, options)
                                         for lines in CALLS))
        assert all(r.error is None for r in results), [r.error for r in results]
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
        try:
            await add_campaign(store, now=1_800_000_000.0)
        finally:
            await store.close()
        # one call still in progress while we look
        chatty = asyncio.create_task(simulate_call(
            server.url, ["Tell me about your opening hours please."] * 20, options))
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(300):
                if (await http.get("/health")).json()["calls"] == 1:
                    break
                await asyncio.sleep(0.05)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{server.url}/dashboard#token={TOKEN}")
                await page.wait_for_selector("body[data-loaded='1']", timeout=15_000)

                recent = page.locator("#recent tr.clickable")
                await page.wait_for_function(
                    "document.querySelectorAll('#recent tr.clickable').length >= 4")
                assert await recent.count() == 4  # three finished and the live one
                live = page.locator("#live tr.clickable")
                assert await live.count() == 1
                assert await page.locator("#campaigns tr").first.inner_text() != ""
                assert "Spring recall" in await page.locator("#campaigns").inner_text()

                # open a finished call: transcript and latency chart
                # each finished call has an end and a length, callbacks or not
                finished = page.locator("#recent tr.clickable", has_text="completed")
                assert await finished.count() == 3
                await finished.first.click()
                await page.wait_for_selector("#detail:not([hidden]) #chart svg rect")
                lines = page.locator("#transcript li")
                assert await lines.count() >= 3  # greeting, caller, reply ...
                caller_lines = await page.locator("#transcript li.caller").all_inner_texts()
                assert caller_lines, "no caller line in the transcript"
                bars = page.locator("#chart svg rect[data-stage]")
                assert await bars.count() >= 2
                stages = {await bars.nth(i).get_attribute("data-stage")
                          for i in range(await bars.count())}
                assert "llm_first_token" in stages or "endpoint_to_stt_final" in stages
                assert "ms" in await page.locator("#chart").inner_text()
                assert (await page.locator("#detail-outcome").inner_text()).startswith("Outcome:")
                assert await page.locator("#events li").count() >= 1

                # filters and search narrow the list (polled from here: the page's CSP
                # forbids the eval behind a string predicate)
                async def rows_become(check) -> None:
                    for _ in range(100):
                        if check(await recent.count()):
                            return
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"recent calls stayed at {await recent.count()}")

                await page.select_option("#filter-direction", "outbound")
                await rows_become(lambda n: n == 0)
                await page.select_option("#filter-direction", "")
                await page.fill("#filter-q", "zz-no-such-call")
                await page.dispatch_event("#filter-q", "change")
                await rows_become(lambda n: n == 0)
                await page.fill("#filter-q", "")
                await page.dispatch_event("#filter-q", "change")
                await rows_become(lambda n: n >= 4)

                text = await page.locator("body").inner_text()
                assert FROM not in text and "+1********23" in text  # masked
                assert errors == []
                artifacts = ROOT / "test-artifacts"
                artifacts.mkdir(exist_ok=True)
                await page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await server.stop()
        if chatty is not None:
            chatty.cancel()
            await asyncio.gather(chatty, return_exceptions=True)
    shot = await asyncio.to_thread((ROOT / "test-artifacts" / "dashboard.png").read_bytes)
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
