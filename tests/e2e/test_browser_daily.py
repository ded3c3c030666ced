"""The browser client in ordinary daily use: switching rooms, typing fast,
reading back while others post, two windows, rooms appearing live.

Each test is a defect a person met (switching rooms broke the page, fast
typing lost order and messages, readers were pulled to the bottom, two
windows were one user, new rooms needed a reload), reproduced the way they
met it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.e2e.browser_support import (
    create_room,
    login,
    message,
    open_room,
    send_message,
    shot,
    stored_contents,
    switch_room,
)
from tests.harness.server import ServerProcess


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default rate limits: what a person's browser meets in a deployment."""
    server = ServerProcess(tmp_path_factory.mktemp("daily") / "roomcast.db").start()
    yield server
    server.stop()


def no_page_errors(console: list[str]) -> None:
    errors = [line for line in console if "pageerror" in line or " error: " in line]
    assert errors == [], errors


def test_switching_rooms_back_and_forth_keeps_what_the_user_sees_in_step(
    browser: Browser, web_server: ServerProcess
) -> None:
    console: list[str] = []
    alice = login(browser, web_server, "alice-rooms", console=console)
    rooms = ["north", "south", "east"]
    ids = {}
    for name in rooms:
        create_room(alice, name)
        ids[name] = int(alice.locator(".room-item.active").get_attribute("data-room-id") or 0)
    sequence = ["north", "south", "north", "east", "south", "east", "north"]
    for step, name in enumerate(sequence):
        switch_room(alice, name)
        expect(alice.locator("#room-name")).to_have_text(name)
        expect(alice.locator(".room-item.active")).to_have_text(re.compile(name))
        text = f"step {step} in {name}"
        send_message(alice, text)
        expect(message(alice, text)).to_be_visible()
        # Only this room's messages are on screen.
        for shown in alice.locator(".message .content").all_inner_texts():
            assert shown.endswith(f"in {name}"), (name, shown)
    for name in rooms:
        expected = [f"step {i} in {name}" for i, n in enumerate(sequence) if n == name]
        assert stored_contents(web_server, ids[name]) == expected
    shot(alice, "rooms-switched")
    no_page_errors(console)
    alice.context.close()


def test_a_hundred_messages_typed_quickly_all_arrive_in_order(
    browser: Browser, web_server: ServerProcess
) -> None:
    """Past the chat rate (30 at once, then 5 a second) the outbox paces itself:
    nothing is refused into disorder, nothing is lost, the link is never cut."""
    console: list[str] = []
    typist = login(browser, web_server, "typist", console=console)
    create_room(typist, "fast-typing")
    room_id = int(typist.locator(".room-item.active").get_attribute("data-room-id") or 0)
    reader = login(browser, web_server, "reader")
    open_room(reader, "fast-typing")
    texts = [f"quick {i:03d}" for i in range(100)]
    for text in texts:
        send_message(typist, text)
    # Every one is shown at once, the unsent ones as sending.
    expect(typist.locator(".message")).to_have_count(100)
    expect(typist.locator(".message.pending")).to_have_count(0, timeout=60000)
    assert stored_contents(web_server, room_id) == texts
    expect(reader.locator(".message")).to_have_count(100)
    assert reader.locator(".message .content").all_inner_texts() == texts
    assert typist.evaluate("window.roomcast.state.connections") == 1  # never cut off
    expect(typist.locator("#conn-state")).to_have_attribute("data-state", "connected")
    no_page_errors(console)
    typist.context.close()
    reader.context.close()


def test_a_message_the_server_refuses_stays_marked_failed_with_retry_and_discard(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-fails")
    create_room(alice, "refusals")
    # Only control characters: the server strips them and refuses the empty rest.
    send_message(alice, "\u0007\u0007")
    failed = alice.locator(".message.pending.failed")
    expect(failed).to_contain_text("Not sent: payload.content: must not be empty")
    failed.locator(".retry").click()  # refused again: still there, still failed
    expect(alice.locator(".message.pending.failed")).to_have_count(1)
    send_message(alice, "a good one")  # the failed one does not hold up the next
    expect(message(alice, "a good one")).not_to_have_class(re.compile("pending"))
    alice.locator(".message.pending.failed .discard").click()
    expect(alice.locator(".message.pending")).to_have_count(0)
    alice.context.close()


def test_a_reader_scrolled_up_stays_put_and_is_offered_the_new_messages(
    browser: Browser, web_server: ServerProcess
) -> None:
    writer = login(browser, web_server, "writer")
    create_room(writer, "long-read")
    for i in range(25):
        send_message(writer, f"history line {i}\nwith a second line")
    expect(writer.locator(".message.pending")).to_have_count(0, timeout=20000)
    reader = login(browser, web_server, "scroller")
    open_room(reader, "long-read")
    expect(reader.locator(".message")).to_have_count(25)
    box = reader.locator("#messages")
    box.evaluate("box => { box.scrollTop = 300; }")
    reader.wait_for_timeout(100)
    before = box.evaluate("box => box.scrollTop")
    send_message(writer, "posted while you read")
    expect(message(reader, "posted while you read")).to_be_attached()
    expect(reader.locator("#jump-new")).to_have_text("1 new message ↓")
    assert box.evaluate("box => box.scrollTop") == before
    shot(reader, "new-messages-button")
    reader.click("#jump-new")
    expect(message(reader, "posted while you read")).to_be_in_viewport()
    expect(reader.locator("#jump-new")).to_be_hidden()
    # At the bottom, the newest stays in view as it arrives.
    send_message(writer, "and one more")
    expect(message(reader, "and one more")).to_be_in_viewport()
    expect(reader.locator("#jump-new")).to_be_hidden()
    writer.context.close()
    reader.context.close()


def test_two_windows_of_one_browser_are_two_people(
    browser: Browser, web_server: ServerProcess
) -> None:
    first = login(browser, web_server, "window-one")
    create_room(first, "two-windows")
    second: Page = first.context.new_page()  # same browser profile: shared localStorage
    second.goto(web_server.http + "/")
    expect(second.locator("#login")).to_be_visible()
    expect(second.locator("#login-name")).to_have_value("window-one")  # the last name, offered
    second.fill("#login-name", "window-two")
    second.click("#login-form button[type=submit]")
    expect(second.locator("#conn-state")).to_have_attribute("data-state", "connected")
    open_room(second, "two-windows")
    send_message(second, "from the second window")
    first.reload()  # each window keeps its own identity across reloads
    expect(first.locator("#me-name")).to_have_text("window-one")
    second.reload()
    expect(second.locator("#me-name")).to_have_text("window-two")
    open_room(first, "two-windows")
    row = message(first, "from the second window")
    expect(row.locator(".author")).to_have_text("window-two")
    first.context.close()


def test_a_new_room_appears_for_others_without_a_reload(
    browser: Browser, web_server: ServerProcess
) -> None:
    bob = login(browser, web_server, "bob-live")
    alice = login(browser, web_server, "alice-live")
    create_room(alice, "brand-new-room")
    expect(bob.locator(".room-item", has_text="brand-new-room")).to_be_visible()
    alice.check("#new-room-private")
    create_room(alice, "alice-only")
    expect(alice.locator(".room-item", has_text="alice-only")).to_be_visible()
    bob.locator(".room-item", has_text="brand-new-room").click()
    expect(bob.locator("#room-name")).to_have_text("brand-new-room")
    # Bob was told of the public room only (the private one came later in the log).
    bob.evaluate("() => new Promise((r) => setTimeout(r, 300))")
    expect(bob.locator(".room-item", has_text="alice-only")).to_have_count(0)
    alice.context.close()
    bob.context.close()


def test_a_message_typed_while_the_link_is_down_is_sent_after_a_reload(
    browser: Browser, web_server: ServerProcess
) -> None:
    """The outbox lives in the tab's sessionStorage: what waited is sent by the
    next page, once, in order."""
    alice = login(browser, web_server, "alice-outage")
    create_room(alice, "outage")
    room_id = int(alice.locator(".room-item.active").get_attribute("data-room-id") or 0)
    send_message(alice, "before the outage")
    expect(message(alice, "before the outage")).not_to_have_class(re.compile("pending"))
    link = {"up": False}

    def route(ws: WebSocketRoute) -> None:
        if link["up"]:
            ws.connect_to_server()  # else: a socket that opens and never answers

    alice.route_web_socket(re.compile(r"/ws\?"), route)
    alice.reload()
    switch_room(alice, "outage")
    send_message(alice, "typed with no link")
    send_message(alice, "and a second one")
    expect(alice.locator(".message.pending")).to_have_count(2)
    expect(alice.locator("#conn-state")).not_to_have_attribute("data-state", "connected")
    link["up"] = True
    alice.reload()
    expect(alice.locator("#conn-state")).to_have_attribute("data-state", "connected")
    switch_room(alice, "outage")
    expect(message(alice, "and a second one")).not_to_have_class(re.compile("pending"))
    expect(alice.locator(".message.pending")).to_have_count(0)
    expected = ["before the outage", "typed with no link", "and a second one"]
    assert stored_contents(web_server, room_id) == expected
    alice.context.close()
