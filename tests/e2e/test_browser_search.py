"""Search as people use it: typing words (with the from: and in: hints), the
results grouped by room with the matches marked, opening an old message in its
room's context, and a reply in its thread. Another user's private room never
shows."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser_support import create_room, login, message, send_message, shot, switch_room
from tests.harness.client import Client
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

T = TypeVar("T")


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("search") / "roomcast.db", "--rate-limits", "off"
    ).start()
    yield server
    server.stop()


async def chat(
    server: ServerProcess, user: str, room_id: int, texts: list[str], **extra: object
) -> int:
    """Send messages as ``user`` over a WebSocket of the test's own; the last one's id."""
    client = await Client.connect(server.ws_url, user)
    try:
        await client.join(room_id)
        last = 0
        for text in texts:
            await client.send("chat", {"room_id": room_id, "content": text, **extra})
            while True:
                payload = (await client.recv_until("chat"))["payload"]
                if payload["content"] == text:
                    last = int(payload["id"])
                    break
        return last
    finally:
        await client.close()


async def private_room(server: ServerProcess, owner: str, text: str) -> None:
    url = f"{server.http}/api/rooms?user_id={owner}"
    status, room = await http_json("POST", url, {"name": "secrets", "private": True, "members": []})
    assert status == 201
    await chat(server, owner, room["id"], [text])


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end beside Playwright's own event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def current_room(page: Page) -> int:
    return int(page.evaluate("window.roomcast.state.current"))


def search_for(page: Page, q: str) -> None:
    page.fill("#search-input", q)
    page.press("#search-input", "Enter")
    expect(page.locator("#search-panel")).to_be_visible()


def test_find_an_old_message_and_open_it_in_context(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-search")
    create_room(alice, "release")
    send_message(alice, "Café meeting about PLT-3699 deployment <b>notes</b>")
    expect(message(alice, "PLT-3699")).to_be_visible()
    room_id = current_room(alice)
    # Far more than a page of history after it, and a reply in a thread.
    root = run(chat(web_server, "alice-search", room_id, [f"filler {n}" for n in range(70)]))
    run(chat(web_server, "carol-search", room_id, ["鈴虫が鳴いている"], thread_id=root))
    run(private_room(web_server, "dave-search", "PLT-3699 is secret"))
    bob = login(browser, web_server, "bob-search")
    switch_room(bob, "release")
    expect(message(bob, "filler 69")).to_be_visible()
    # The hints: from: suggests the room's people.
    bob.click("#search-input")
    expect(bob.locator(".search-hint", has_text="from:someone")).to_be_visible()
    bob.locator("#search-input").press_sequentially("from:ali")
    hint = bob.locator(".search-hint", has_text="from:alice-search")
    expect(hint).to_be_visible()
    hint.dispatch_event("mousedown")
    expect(bob.locator("#search-input")).to_have_value("from:alice-search ")
    bob.locator("#search-input").press_sequentially("cafe 3699")
    bob.press("#search-input", "Enter")
    results = bob.locator("#search-results")
    expect(bob.locator("#search-summary")).to_have_text("1 result")
    group = results.locator(".search-group")
    expect(group).to_have_count(1)
    expect(group.locator(".search-room")).to_have_text("release")
    hit = group.locator(".search-hit")
    expect(hit.locator("mark")).to_have_text(["Café", "3699"])
    # The message's markup is text, not HTML.
    expect(hit.locator(".search-snippet")).to_contain_text("<b>notes</b>")
    expect(hit.locator("b")).to_have_count(0)
    shot(bob, "search-results")
    # Opening it shows the room around that old message, highlighted.
    hit.click()
    highlighted = bob.locator("#messages .message.highlighted")
    expect(highlighted).to_contain_text("PLT-3699 deployment")
    expect(highlighted).to_be_in_viewport()
    expect(message(bob, "filler 69")).to_have_count(0)  # the newest page is not loaded now
    jump = bob.locator("#jump-new")
    expect(jump).to_have_text("Jump to the newest ↓")
    shot(bob, "search-opened-in-context")
    # A message sent meanwhile waits for the reader; jumping shows it with the rest.
    run(chat(web_server, "alice-search", room_id, ["fresh news"]))
    jump.click()
    expect(message(bob, "fresh news")).to_be_visible()
    expect(message(bob, "filler 69")).to_be_visible()
    expect(jump).to_be_hidden()
    # A reply opens in its thread; the other user's private room never shows.
    search_for(bob, "鈴虫")
    expect(bob.locator("#search-summary")).to_have_text("1 result")
    reply = bob.locator(".search-hit", has_text="鳴いている")
    expect(reply).to_contain_text("in a thread")
    reply.click()
    expect(bob.locator("#thread-panel")).to_be_visible()
    expect(bob.locator("#thread-messages .message.highlighted")).to_contain_text("鈴虫が鳴いている")
    search_for(bob, "secret")
    expect(bob.locator("#search-summary")).to_have_text("0 results")
    expect(bob.locator("#search-results")).to_contain_text("No messages match.")
    # A query with nothing to find says so.
    search_for(bob, "***")
    expect(bob.locator("#search-summary")).to_have_text("q: give a word to search for")
