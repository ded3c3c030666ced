"""Conversations as people use them: replying in a thread, mentioning someone
with "@", the badge and the notification it brings on every tab, clearing it
by opening the thread, unread rooms, the "new messages" divider and "seen by"."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser_support import create_room, login, message, send_message, shot, switch_room
from tests.harness.server import ServerProcess


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("conversations") / "roomcast.db").start()
    yield server
    server.stop()


def room_item(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(".room-item", has=page.locator(".room-label", has_text=name))


def test_a_mention_in_a_thread_badges_both_tabs_until_the_thread_is_opened(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-thread")
    create_room(alice, "planning")
    send_message(alice, "shall we ship on friday?")
    expect(message(alice, "shall we ship on friday?")).to_be_visible()
    tabs = [login(browser, web_server, "bob-thread") for _ in range(2)]
    for tab in tabs:
        switch_room(tab, "planning")  # bob joins: a member from now on
        expect(message(tab, "shall we ship on friday?")).to_be_visible()
    create_room(tabs[0], "elsewhere")
    switch_room(tabs[1], "elsewhere")
    expect(tabs[1].locator("#room-name")).to_have_text("elsewhere")
    # Alice replies in a thread and picks bob from the "@" list.
    root = message(alice, "shall we ship on friday?")
    root.hover()
    root.locator(".action.reply").click()
    expect(alice.locator("#thread-panel")).to_be_visible()
    alice.locator("#thread-input").press_sequentially("@bob-th")
    choice = alice.locator(".mention-choice", has_text="@bob-thread")
    expect(choice).to_be_visible()
    alice.locator("#thread-input").press("Enter")  # picks, does not send
    expect(alice.locator("#thread-input")).to_have_value("@bob-thread ")
    alice.locator("#thread-input").press_sequentially("can you check the release notes?")
    alice.locator("#thread-input").press("Enter")
    expect(alice.locator("#thread-messages .message", has_text="release notes")).to_be_visible()
    expect(root.locator(".thread-summary")).to_contain_text("1 reply")
    # Both of bob's tabs: a mention badge on the room, a notification, the title.
    for tab in tabs:
        expect(room_item(tab, "planning").locator(".badge.mention")).to_have_text("@1")
        expect(tab.locator("#notif-dot")).to_have_text("1")
        expect(tab).to_have_title("(1) roomcast")
    shot(tabs[1], "conversations-mention-badge")
    # Opening the notification on one tab opens the thread and clears both.
    tabs[0].click("#notif-button")
    tabs[0].locator(".notif.unread .notif-open", has_text="release notes").click()
    expect(tabs[0].locator("#thread-panel")).to_be_visible()
    expect(tabs[0].locator("#thread-messages .message", has_text="release notes")).to_be_visible()
    for tab in tabs:
        expect(room_item(tab, "planning").locator(".badge")).to_have_count(0)
        expect(tab.locator("#notif-dot")).to_be_hidden()
        expect(tab).to_have_title("roomcast")
    shot(tabs[0], "conversations-thread-open")


def test_unread_rooms_the_new_messages_divider_and_seen_by(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-unread")
    create_room(alice, "standup")
    send_message(alice, "good morning")
    bob = login(browser, web_server, "bob-unread")
    switch_room(bob, "standup")
    expect(message(bob, "good morning")).to_be_visible()
    create_room(bob, "side-project")
    for text in ("first update", "second update", "third update"):
        send_message(alice, text)
    item = room_item(bob, "standup")
    expect(item.locator(".badge")).to_have_text("3")
    expect(item).to_have_class(re.compile(r"\bunread\b"))
    switch_room(bob, "standup")
    divider = bob.locator(".new-divider")
    expect(divider).to_be_visible()
    # The divider sits right above the first message bob had not read.
    expect(bob.locator(".new-divider + .message")).to_contain_text("first update")
    expect(item.locator(".badge")).to_have_count(0)
    # Bob has read it all: alice sees it under her newest message.
    expect(message(alice, "third update").locator(".seen-by")).to_have_text("Seen by bob-unread")
    shot(alice, "conversations-seen-by")
