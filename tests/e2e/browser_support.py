"""Helpers for driving the browser client in Debian's Chromium with Playwright.

Chromium gets fake camera and microphone devices. Screenshots go to
``test-output/`` (or ``$ROOMCAST_TEST_OUTPUT``) so a person can look at what
the client shows. The ``playwright`` and ``browser`` fixtures are in this
folder's ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

from playwright.sync_api import Browser, Locator, Page, expect

from tests.harness.server import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(os.environ.get("ROOMCAST_TEST_OUTPUT", "test-output"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def shot(page: Page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def login(
    browser: Browser,
    server: ServerProcess,
    name: str,
    width: int = 1200,
    console: list[str] | None = None,
) -> Page:
    """A new browser context signed in as ``name``; ``console`` collects its console output."""
    context = browser.new_context(viewport={"width": width, "height": 760})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    if console is not None:
        page.on("console", lambda msg: console.append(f"{name} {msg.type}: {msg.text}"))
        page.on("pageerror", lambda error: console.append(f"{name} pageerror: {error}"))
    page.goto(server.http + "/")
    page.fill("#login-name", name)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "connected")
    return page


def create_room(page: Page, name: str) -> None:
    page.fill("#new-room-name", name)
    page.click("#new-room-form button")
    expect(page.locator(".room-item.active")).to_contain_text(name)


def open_room(page: Page, name: str) -> None:
    page.reload()  # picks up rooms created since the page loaded
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "connected")
    if page.locator("#open-sidebar").is_visible():  # phone width: the menu is folded away
        page.click("#open-sidebar")
    page.fill("#room-filter", name)  # the list shows one page; the filter finds any room
    page.locator(".room-item", has_text=name).click()
    expect(page.locator("#room-name")).to_have_text(name)


def switch_room(page: Page, name: str) -> None:
    """Click a room in the list, as a person does (no reload)."""
    if page.locator("#open-sidebar").is_visible():
        page.click("#open-sidebar")
    page.locator(".room-item", has=page.locator(".room-label", has_text=name)).first.click()


def stored_contents(server: ServerProcess, room_id: int) -> list[str]:
    """The room's stored messages, oldest first, as the HTTP API gives them."""
    contents: list[str] = []
    before = ""
    while True:
        url = f"{server.http}/api/rooms/{room_id}/messages?limit=100&user_id=check{before}"
        with urllib.request.urlopen(url, timeout=5) as response:
            page = json.loads(response.read())
        contents[:0] = [m["content"] for m in page["messages"]]
        if page["next_before"] is None:
            return contents
        before = f"&before={page['next_before']}"


def send_message(page: Page, text: str) -> None:
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")


def message(page: Page, text: str) -> Locator:
    return page.locator(".message", has=page.locator(".content", has_text=text))


def remote_video_plays(page: Page) -> None:
    page.wait_for_function(
        "() => { const c = window.roomcast.state.call;"
        " return c && c.pc && c.pc.connectionState === 'connected'; }",
        timeout=20000,
    )
    page.wait_for_function(
        "() => document.getElementById('remote-video').videoWidth > 0", timeout=20000
    )
