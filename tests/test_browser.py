"""The demo chat page in a real browser (Debian's chromium through playwright), against the whole
local system: two pages on two nodes chat and list who is in the room; when the system goes away
the pages say so, and they reconnect when it is back. Screenshots go to test-artifacts/ (not
committed)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.processes import ROOT, LocalPorts, start_local_system, stop_local_system

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="LOUD SKIP: Debian's chromium is not installed and `make test` could not install it "
    "(it needs root and apt); the browser tests did not run",
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


async def open_chat(browser: Browser, page_url: str, node: int, room: str, name: str) -> Page:
    page = await browser.new_page()
    await page.goto(f"{page_url}?node={node}&room={room}&name={name}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=15_000)
    return page


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.click("#send")


async def test_two_pages_on_two_nodes_chat_and_survive_an_outage(browser: Browser) -> None:
    ports = LocalPorts.free()
    process, urls = await start_local_system(ports)
    try:
        page_url = urls["page"][0]
        first = await open_chat(browser, page_url, 1, "browser", "Ada")
        await expect(first.locator("#members")).to_have_text("Ada (me)", timeout=15_000)
        second = await open_chat(browser, page_url, 2, "browser", "Bob")
        assert str(ports.nodes[0]) in (await first.locator("#node").text_content() or "")
        assert str(ports.nodes[1]) in (await second.locator("#node").text_content() or "")
        # Each page lists who joined since it came (and, with presence, who was there before).
        await expect(first.locator("#members")).to_contain_text("Bob", timeout=15_000)
        await expect(second.locator("#members")).to_contain_text("Bob (me)", timeout=15_000)
        await expect(first.locator("#log")).to_contain_text("Bob joined")

        await say(first, "hello from the first page")
        await expect(second.locator("#log")).to_contain_text(
            "hello from the first page", timeout=15_000
        )
        await say(second, "and back from the second")
        await expect(first.locator("#log")).to_contain_text(
            "and back from the second", timeout=15_000
        )
        await expect(first.locator("#log .mine")).to_contain_text("hello from the first page")
        await expect(first.locator("#log")).to_contain_text("Bob: and back from the second")

        # A third page comes and goes: the others list it, then no longer.
        third = await open_chat(browser, page_url, 2, "browser", "Cy")
        await expect(first.locator("#members")).to_contain_text("Cy", timeout=15_000)
        await expect(second.locator("#members")).to_contain_text("Cy", timeout=15_000)
        await third.close()
        for page in (first, second):
            await expect(page.locator("#members")).not_to_contain_text("Cy", timeout=15_000)
        await expect(first.locator("#log")).to_contain_text("Cy left")
        await expect(first.locator("#count")).to_have_text("2")
        ARTIFACTS.mkdir(exist_ok=True)
        await first.screenshot(path=str(ARTIFACTS / "chat-first-page.png"))
        await second.screenshot(path=str(ARTIFACTS / "chat-second-page.png"))

        # The nodes go away: each page says it is reconnecting.
        assert await stop_local_system(process) == 0
        for page in (first, second):
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "reconnecting", timeout=10_000
            )
            await expect(page.locator("#status")).to_have_text("reconnecting")
        await first.screenshot(path=str(ARTIFACTS / "chat-reconnecting.png"))

        # They come back on the same ports: the pages reconnect by themselves and chat again.
        process, urls = await start_local_system(ports)
        for page in (first, second):
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "open", timeout=20_000
            )
        await expect(first.locator("#members")).to_contain_text("Ada (me)", timeout=15_000)
        await expect(second.locator("#members")).to_contain_text("Bob (me)", timeout=15_000)
        await say(first, "after the outage")
        await expect(second.locator("#log")).to_contain_text("after the outage", timeout=15_000)
    finally:
        await stop_local_system(process)


async def test_a_newcomer_lists_who_was_there_before_it(browser: Browser) -> None:
    ports = LocalPorts.free()
    process, urls = await start_local_system(ports)
    try:
        page_url = urls["page"][0]
        first = await open_chat(browser, page_url, 1, "before", "Ada")
        await expect(first.locator("#members")).to_have_text("Ada (me)", timeout=15_000)
        second = await open_chat(browser, page_url, 2, "before", "Bob")
        await expect(first.locator("#members")).to_contain_text("Bob", timeout=15_000)
        # Bob's JOIN was handled, and with it the list of who was there: it holds Ada.
        await expect(second.locator("#members")).to_contain_text("Ada", timeout=5_000)
        await second.close()
        await expect(first.locator("#members")).not_to_contain_text("Bob", timeout=15_000)
    finally:
        await stop_local_system(process)
