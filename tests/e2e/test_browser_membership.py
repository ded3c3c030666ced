"""Running rooms from the browser: inviting, roles, removing and banning,
settings and leaving, and direct messages between two people."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.browser_support import create_room, login, message, send_message, shot, switch_room
from tests.harness.server import ServerProcess


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("members") / "roomcast.db").start()
    yield server
    server.stop()


def test_an_owner_invites_promotes_and_removes_from_a_private_room(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-owner")
    bob = login(browser, web_server, "bob-invited")
    carol = login(browser, web_server, "carol-removed")
    alice.check("#new-room-private")
    create_room(alice, "secret-club")
    for name in ("bob-invited", "carol-removed"):
        alice.fill("#invite-name", name)
        alice.click("#invite-form button")
    # The invitees see the room appear, without a reload.
    expect(bob.locator(".room-item", has_text="secret-club")).to_be_visible()
    expect(carol.locator(".room-item", has_text="secret-club")).to_be_visible()
    switch_room(bob, "secret-club")
    switch_room(carol, "secret-club")
    send_message(alice, "welcome, both")
    expect(message(bob, "welcome, both")).to_be_visible()
    expect(alice.locator(".member[data-user=alice-owner] .role-badge")).to_have_text("owner")
    # Promote bob: everyone sees it.
    alice.locator(".member[data-user=bob-invited] .promote").click()
    expect(bob.locator(".member[data-user=bob-invited] .role-badge")).to_have_text("moderator")
    expect(bob.locator(".notice", has_text="made you a moderator")).to_be_visible()
    # Remove carol: she is told, the room leaves her list, and she hears no more.
    alice.locator(".member[data-user=carol-removed] .remove").click()
    expect(carol.locator(".notice", has_text="You were removed by alice-owner")).to_be_visible()
    expect(carol.locator(".room-item", has_text="secret-club")).to_have_count(0)
    expect(carol.locator("#message-input")).to_be_disabled()
    send_message(alice, "carol is gone")
    expect(message(bob, "carol is gone")).to_be_visible()
    expect(message(carol, "carol is gone")).to_have_count(0)
    shot(alice, "members")
    # Settings: a topic the others see.
    alice.click("#room-settings")
    alice.fill("#settings-topic", "plans for the launch")
    alice.click("#settings-save")
    expect(bob.locator("#room-sub")).to_contain_text("plans for the launch")
    for page in (alice, bob, carol):
        page.context.close()


def test_a_moderator_bans_from_a_public_room_and_the_banned_cannot_come_back(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-mod")
    create_room(alice, "town-square")
    troll = login(browser, web_server, "troll")
    switch_room(troll, "town-square")
    expect(alice.locator(".member[data-user=troll]")).to_be_visible()
    alice.locator(".member[data-user=troll] .ban").click()
    expect(troll.locator(".notice", has_text="You were banned by alice-mod")).to_be_visible()
    expect(alice.locator(".member[data-user=troll]")).to_have_count(0)
    troll.reload()
    switch_room(troll, "town-square")
    expect(troll.locator("#toast")).to_contain_text("banned")
    alice.context.close()
    troll.context.close()


def test_two_people_talk_in_a_direct_message(browser: Browser, web_server: ServerProcess) -> None:
    alice = login(browser, web_server, "alice-dm")
    create_room(alice, "meeting-point")
    bob = login(browser, web_server, "bob-dm")
    switch_room(bob, "meeting-point")
    alice.locator(".member[data-user=bob-dm] .dm").click()
    expect(alice.locator("#room-name")).to_have_text("bob-dm")
    expect(alice.locator("#dm-list .room-item.active")).to_have_text(re.compile("bob-dm"))
    send_message(alice, "a word in private")
    # Bob's list shows the conversation at once, named for alice.
    dm = bob.locator("#dm-list .room-item", has_text="alice-dm")
    expect(dm).to_be_visible()
    dm.click()
    expect(message(bob, "a word in private")).to_be_visible()
    send_message(bob, "private reply")
    expect(message(alice, "private reply")).to_be_visible()
    expect(alice.locator("#room-settings")).to_be_hidden()  # nothing to run in a direct room
    shot(bob, "direct-message")
    alice.context.close()
    bob.context.close()
