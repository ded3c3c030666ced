"""The browser client's room list on a server with more rooms than one page: it shows
the first page, loads more on request, and finds any room by name."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.browser_support import create_room, login, shot
from tests.harness.server import ServerProcess

ROOMS = 60  # more than the client's page of 50


@pytest.fixture(scope="module")
def crowded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("e2e-rooms") / "roomcast.db"
    server = ServerProcess(database, "--rate-limits", "off").start()

    # (Plain urllib: Playwright's own event loop runs in this thread.)
    for i in range(1, ROOMS + 1):
        request = urllib.request.Request(
            f"{server.http}/api/rooms?user_id=owner",
            data=json.dumps({"name": f"room {i:02d}"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
    yield server
    server.stop()


def test_the_room_list_pages_and_filters(browser: Browser, crowded_server: ServerProcess) -> None:
    page = login(browser, crowded_server, "visitor")
    items = page.locator(".room-item")
    expect(items).to_have_count(50)
    expect(items.first).to_contain_text("room 01")
    page.click("#more-rooms")
    expect(items).to_have_count(ROOMS)
    expect(items.last).to_contain_text(f"room {ROOMS}")
    expect(page.locator("#more-rooms")).to_be_hidden()

    page.fill("#room-filter", "ROOM 5")
    expect(items).to_have_count(10)  # room 50 to room 59
    expect(items.first).to_contain_text("room 50")
    page.fill("#room-filter", "no such room")
    expect(items).to_have_count(0)
    expect(page.locator("#room-list")).to_contain_text("No room has that name.")
    page.fill("#room-filter", "")
    expect(items).to_have_count(50)

    # A new room has the largest id, beyond the first page: it is shown and opened.
    create_room(page, "brand new")
    expect(page.locator("#room-name")).to_have_text("brand new")
    shot(page, "room-list")
