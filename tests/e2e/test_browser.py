"""The browser client in a real Chromium: two people chat and video-call each other.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright, with fake
camera and microphone devices (see ``browser_support.py``). Screenshots go to
``test-output/`` so a person can look at what the client shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.browser_support import (
    create_room,
    login,
    message,
    open_room,
    remote_video_plays,
    send_message,
    shot,
)
from tests.harness.server import ServerProcess


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("e2e") / "roomcast.db"
    # The history test types 70 messages in a second, which no person does.
    server = ServerProcess(database, "--ring-timeout", "20", "--rate-limits", "off").start()
    yield server
    server.stop()


def test_two_people_chat_and_video_call(browser: Browser, web_server: ServerProcess) -> None:
    alice = login(browser, web_server, "alice")
    create_room(alice, "general")
    bob = login(browser, web_server, "bob")
    open_room(bob, "general")
    expect(alice.locator(".member[data-user=bob]")).to_contain_text("online")
    expect(alice.locator(".notice", has_text="bob joined")).to_be_visible()

    # Chat both ways; text stays text.
    send_message(alice, "Hello Bob! <img src=x onerror=alert(1)>")
    expect(message(bob, "Hello Bob!")).to_be_visible()
    assert bob.locator(".messages img").count() == 0
    send_message(bob, "Hi Alice")
    expect(message(alice, "Hi Alice")).to_be_visible()

    # Typing indicator appears for the other person and goes away on send.
    alice.type("#message-input", "writing something")
    expect(bob.locator("#typing")).to_have_text("alice is typing…")
    alice.press("#message-input", "Enter")
    expect(bob.locator("#typing")).to_have_text("")
    expect(message(bob, "writing something")).to_be_visible()

    # Edit own message.
    own = message(alice, "writing something")
    own.hover()
    own.locator(".action.edit").click()
    alice.fill(".edit-input", "written and edited")
    alice.press(".edit-input", "Enter")
    edited = message(bob, "written and edited")
    expect(edited).to_be_visible()
    expect(edited.locator(".edited")).to_be_visible()

    # React to someone else's message.
    theirs = message(bob, "Hello Bob!")
    theirs.hover()
    theirs.locator(".action.react").click()
    bob.locator(".emoji-picker .emoji", has_text="🎉").click()
    expect(message(alice, "Hello Bob!").locator(".reaction")).to_have_text("🎉 1")

    # Delete own message.
    mine = message(bob, "Hi Alice")
    mine.hover()
    mine.locator(".action.delete").click()
    expect(message(alice, "Hi Alice")).to_have_count(0)

    # Status is seen by the other person.
    bob.select_option("#status-select", "away")
    expect(alice.locator(".member[data-user=bob] .member-status")).to_have_text("away")
    bob.select_option("#status-select", "online")
    shot(alice, "chat")

    # Bob calls Alice; Alice accepts; both see the other's video.
    bob.locator(".member[data-user=alice] .call-button").click()
    expect(alice.locator("#call-title")).to_have_text("bob is calling")
    alice.click("#accept-call")
    remote_video_plays(alice)
    remote_video_plays(bob)
    expect(bob.locator("#call-title")).to_have_text("In a call with alice")
    bob.click("#toggle-mute")
    expect(bob.locator("#toggle-mute")).to_have_text("Unmute")
    bob.click("#toggle-camera")
    expect(bob.locator("#toggle-camera")).to_have_text("Camera on")
    bob.click("#toggle-camera")
    shot(bob, "call")

    # Hanging up ends it on both sides.
    alice.click("#hang-up")
    expect(alice.locator("#call-panel")).to_be_hidden()
    expect(bob.locator("#call-panel")).to_be_hidden()
    expect(bob.locator("#toast")).to_have_text("alice hung up.")
    alice.context.close()
    bob.context.close()


def test_rejected_call_is_shown_to_the_caller(browser: Browser, web_server: ServerProcess) -> None:
    carol = login(browser, web_server, "carol")
    create_room(carol, "carol-and-dan")
    dan = login(browser, web_server, "dan")
    open_room(dan, "carol-and-dan")
    expect(carol.locator(".member[data-user=dan]")).to_be_visible()
    carol.locator(".member[data-user=dan] .call-button").click()
    expect(dan.locator("#call-title")).to_have_text("carol is calling")
    dan.click("#reject-call")
    expect(carol.locator("#toast")).to_have_text("dan declined the call.")
    expect(carol.locator("#call-panel")).to_be_hidden()
    carol.context.close()
    dan.context.close()


def test_history_loads_when_scrolling_up_and_phone_width_works(
    browser: Browser, web_server: ServerProcess
) -> None:
    erin = login(browser, web_server, "erin")
    create_room(erin, "long-history")
    for i in range(70):
        send_message(erin, f"line {i}")
    expect(message(erin, "line 69")).to_be_visible()
    phone = login(browser, web_server, "frank", width=390)
    open_room(phone, "long-history")
    expect(phone.locator(".message")).to_have_count(50)
    phone.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
    expect(phone.locator(".message")).to_have_count(70)
    expect(message(phone, "line 0")).to_be_attached()
    phone.locator("#messages").evaluate("box => { box.scrollTop = box.scrollHeight; }")
    phone.wait_for_timeout(300)  # let the sidebar's slide-out transition finish
    shot(phone, "phone")
    erin.context.close()
    phone.context.close()


def test_reconnects_and_rejoins_after_a_server_restart(browser: Browser, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "restart.db").start()
    try:
        gina = login(browser, server, "gina")
        create_room(gina, "sturdy")
        send_message(gina, "before the restart")
        expect(message(gina, "before the restart")).to_be_visible()
        assert server.stop() == 0
        expect(gina.locator("#conn-state")).to_have_attribute("data-state", "offline")
        server.start()
        expect(gina.locator("#conn-state")).to_have_attribute(
            "data-state", "connected", timeout=20000
        )
        send_message(gina, "after the restart")
        expect(message(gina, "after the restart")).to_be_visible()
        expect(gina.locator(".member[data-user=gina]")).to_be_visible()
        gina.context.close()
    finally:
        server.stop()
