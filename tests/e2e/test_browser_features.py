"""What people reach for every minute: formatted text and links (and every
trick to turn them into script), dates, the composer's keys and emoji, calls
beside the chat with screen sharing, and dark mode."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser_support import (
    create_room,
    login,
    message,
    open_room,
    remote_video_plays,
    send_message,
    shot,
    stored_contents,
)
from tests.harness.server import ServerProcess


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("features") / "roomcast.db"
    server = ServerProcess(database, "--ring-timeout", "20").start()
    yield server
    server.stop()


def watch_dialogs(page: Page) -> list[str]:
    """Every alert, confirm or prompt the page opens (script run by a message would)."""
    seen: list[str] = []
    page.on("dialog", lambda dialog: seen.append(dialog.message))
    return seen


ATTACKS = [
    "javascript:alert(1)",
    "[click me](javascript:alert(2))",
    "<img src=x onerror=alert(3)>",
    "[safe-looking](https://example.org) ![x](javascript:alert(4))",
    "**<script>alert(5)</script>**",
    "`<b onmouseover=alert(6)>code</b>`",
    'https://example.org/"onmouseover="alert(7)',
    "data:text/html,<script>alert(8)</script>",
    "```\n<svg onload=alert(9)>\n```",
]


def test_links_and_formatting_render_as_elements_and_attacks_stay_text(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-format")
    create_room(alice, "formatting")
    bob = login(browser, web_server, "bob-format")
    dialogs = watch_dialogs(bob)
    open_room(bob, "formatting")
    send_message(alice, "**bold** and *italic* and _also_ and ~~gone~~ and `x = 1`")
    send_message(alice, "see https://example.com/a_b?q=1. or mailto:team@example.com")
    alice.fill("#message-input", "```\nfor x in y:\n    print(x)\n```")
    alice.press("#message-input", "Enter")
    alice.fill("#message-input", "> quoted words\nmy answer")
    alice.press("#message-input", "Enter")
    send_message(alice, "🎉🎉")
    for attack in ATTACKS:
        alice.fill("#message-input", attack)
        alice.press("#message-input", "Enter")
    expect(bob.locator(".message")).to_have_count(5 + len(ATTACKS))

    first = message(bob, "bold")
    expect(first.locator("strong")).to_have_text("bold")
    expect(first.locator("em")).to_have_text(["italic", "also"])
    expect(first.locator("del")).to_have_text("gone")
    expect(first.locator("code")).to_have_text("x = 1")
    links = message(bob, "see ").locator("a")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_have_attribute("href", "https://example.com/a_b?q=1")
    expect(links.nth(0)).to_have_text("https://example.com/a_b?q=1")  # the full stop stays out
    expect(links.nth(0)).to_have_attribute("rel", "noopener noreferrer")
    expect(links.nth(1)).to_have_attribute("href", "mailto:team@example.com")
    expect(bob.locator(".code-block")).to_have_count(2)
    expect(bob.locator(".code-block").first).to_have_text("for x in y:\n    print(x)")
    expect(bob.locator("blockquote")).to_have_text("quoted words")
    expect(bob.locator(".message.emoji-only")).to_have_count(1)

    # The attacks: shown as the text that was typed, nothing else.
    messages = bob.locator("#messages")
    for tag in ("img", "script", "svg", "iframe", "b"):
        expect(messages.locator(tag)).to_have_count(0)
    hrefs = messages.locator("a").evaluate_all("links => links.map((a) => a.href)")
    assert all(re.match(r"^(https?|mailto):", href) for href in hrefs), hrefs
    assert "https://example.org/" in hrefs  # the real address, never an attribute breakout
    assert not messages.locator("[onerror], [onload], [onmouseover]").count()
    shown = bob.locator(".message .content").all_inner_texts()
    for attack in ATTACKS[:4]:
        assert attack in shown, (attack, shown)
    messages.locator("a", has_text="https://example.org/").first.hover()
    bob.wait_for_timeout(200)
    assert dialogs == []
    shot(bob, "formatting")
    alice.context.close()
    bob.context.close()


def test_times_dates_and_edits_show_when_they_happened(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-dates")
    create_room(alice, "dates")
    send_message(alice, "a message from today")
    row = message(alice, "a message from today")
    expect(alice.locator(".day-separator")).to_have_text("Today")
    time = row.locator("time")
    expect(time).to_have_text(re.compile(r"\d{1,2}:\d{2}"))
    expect(time).to_have_attribute("title", re.compile(r"\d{4}"))  # the full date on hover
    # Up on the empty composer edits the last own message.
    alice.focus("#message-input")
    alice.keyboard.press("ArrowUp")
    expect(alice.locator(".edit-input")).to_have_value("a message from today")
    alice.fill(".edit-input", "a message from today, edited")
    alice.press(".edit-input", "Enter")
    edited = message(alice, "edited").locator(".edited")
    expect(edited).to_have_attribute("title", re.compile(r"^edited .*\d{4}"))
    # Messages of earlier days get a separator each (history put in the page's own model).
    alice.evaluate(
        """async () => {
            const { state, view } = await import('/static/js/state.js');
            const timeline = await import('/static/js/timeline.js');
            const v = view(state.current);
            const day = 86400000;
            // Ids below any stored one (0.1 .. 0.3): older, and never one that exists.
            for (const [id, ago] of [[0.1, 3 * day], [0.2, 3 * day - 60000], [0.3, day]]) {
                timeline.addMessage(v, { id, room_id: v.id, user_id: 'old', content: `old ${id}`,
                                         type: 'text', created_at: Date.now() - ago });
            }
            timeline.render();
        }"""
    )
    labels = alice.locator(".day-separator").all_inner_texts()
    assert labels[-2:] == ["Yesterday", "Today"], labels
    assert len(labels) == 3, labels
    # A notice between two messages of one day does not start the day again.
    alice.evaluate(
        """async () => {
            const { state, view } = await import('/static/js/state.js');
            const timeline = await import('/static/js/timeline.js');
            timeline.addNotice(view(state.current), 'a notice between messages');
            timeline.addMessage(view(state.current), { id: 10 ** 9, room_id: state.current,
                user_id: 'old', content: 'after the notice', type: 'text', created_at: Date.now() });
            timeline.render();
        }"""
    )
    expect(message(alice, "after the notice")).to_be_visible()
    assert alice.locator(".day-separator").all_inner_texts() == labels
    # ... and "Today" stays above the first message of today.
    above = alice.locator("#messages").evaluate(
        """box => { const kids = [...box.children];
            const today = kids.findIndex((k) => k.textContent === 'Today');
            const first = kids.findIndex((k) => k.textContent.includes('from today'));
            return today !== -1 && today < first; }"""
    )
    assert above
    alice.context.close()


def test_the_composer_sends_lines_and_emoji_and_keeps_a_draft_per_room(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-compose")
    create_room(alice, "compose-one")
    room_one = int(alice.locator(".room-item.active").get_attribute("data-room-id") or 0)
    alice.type("#message-input", "first line")
    alice.keyboard.press("Shift+Enter")
    alice.type("#message-input", "second line")
    alice.click("#emoji-button")
    expect(alice.locator("#emoji-panel")).to_be_visible()
    alice.locator("#emoji-panel .emoji", has_text="🚀").click()
    expect(alice.locator("#emoji-panel")).to_be_hidden()
    expect(alice.locator("#message-input")).to_have_value("first line\nsecond line🚀")
    alice.keyboard.press("Enter")
    expect(message(alice, "second line🚀")).to_be_visible()
    assert alice.locator(".message .content").last.inner_text() == "first line\nsecond line🚀"
    # A draft stays with its room.
    alice.type("#message-input", "half-written thought")
    create_room(alice, "compose-two")
    expect(alice.locator("#message-input")).to_have_value("")
    alice.locator(".room-item", has_text="compose-one").click()
    expect(alice.locator("#message-input")).to_have_value("half-written thought")
    # Keyboard: Alt+Down goes to the next room.
    alice.keyboard.press("Alt+ArrowDown")
    expect(alice.locator("#room-name")).to_have_text("compose-two")
    assert stored_contents(web_server, room_one) == ["first line\nsecond line🚀"]
    alice.context.close()


def test_icon_buttons_have_names_for_screen_readers(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-a11y")
    create_room(alice, "labels")
    send_message(alice, "label me")
    expect(message(alice, "label me")).to_be_visible()
    unnamed = alice.evaluate(
        """() => [...document.querySelectorAll('button')]
            .filter((b) => !/[A-Za-z]/.test(b.textContent) && !b.getAttribute('aria-label'))
            .map((b) => b.outerHTML)"""
    )
    assert unnamed == []
    alice.context.close()


def test_a_call_sits_beside_the_chat_with_screen_sharing_and_leaves_a_trace(
    browser: Browser, web_server: ServerProcess
) -> None:
    alice = login(browser, web_server, "alice-call")
    create_room(alice, "standup")
    bob = login(browser, web_server, "bob-call")
    open_room(bob, "standup")
    expect(alice.locator(".member[data-user=bob-call]")).to_be_visible()
    alice.locator(".member[data-user=bob-call] .call-button").click()
    expect(bob.locator("#call-title")).to_have_text("alice-call is calling")
    expect(bob.locator("#call-panel")).to_have_attribute("data-ringing", "true")
    bob.click("#accept-call")
    remote_video_plays(alice)
    remote_video_plays(bob)
    expect(bob.locator("#call-panel")).not_to_have_attribute("data-ringing", "true")
    expect(alice.locator("#call-timer")).to_have_text(re.compile(r"^\d+:\d\d$"))

    # The chat stays usable beside the call.
    send_message(bob, "typing during the call")
    expect(message(alice, "typing during the call")).to_be_in_viewport()
    panel = alice.locator("#call-panel").bounding_box()
    chat = alice.locator("#messages").bounding_box()
    assert panel and chat and chat["x"] + chat["width"] <= panel["x"] + 1, (chat, panel)

    # The panel can be made wider with its handle.
    handle = alice.locator("#call-resize").bounding_box()
    assert handle
    width = panel["width"]
    alice.mouse.move(handle["x"] + 2, handle["y"] + 50)
    alice.mouse.down()
    alice.mouse.move(handle["x"] - 98, handle["y"] + 50)
    alice.mouse.up()
    wider = alice.locator("#call-panel").bounding_box()
    assert wider and wider["width"] > width + 50, (width, wider)

    # A device can be chosen.
    alice.click("#toggle-devices")
    expect(alice.locator("#camera-select option")).not_to_have_count(0)

    # Screen sharing reaches the other side, and stops.
    alice.click("#share-screen")
    expect(alice.locator("#share-screen")).to_have_text("Stop sharing")
    bob.wait_for_function(
        "() => { const v = document.getElementById('screen-video');"
        " return !v.hidden && v.videoWidth > 0; }",
        timeout=20000,
    )
    shot(bob, "screen-share")
    shot(alice, "call-beside-chat")
    alice.click("#share-screen")
    expect(bob.locator("#screen-video")).to_be_hidden(timeout=20000)
    remote_video_plays(bob)  # the camera is still there

    alice.click("#hang-up")
    for page, peer in ((alice, "bob-call"), (bob, "alice-call")):
        expect(page.locator("#call-panel")).to_be_hidden()
        expect(page.locator(".notice.call-event")).to_have_text(
            re.compile(rf"^📞 Call with {peer} · \d+:\d\d$")
        )

    # A call nobody answers is a missed call on the callee's side.
    bob.select_option("#status-select", "busy")
    alice.locator(".member[data-user=bob-call] .call-button").click()
    expect(bob.locator("#call-title")).to_have_text("alice-call is calling")
    expect(bob.locator("#call-status")).to_contain_text("silent")
    expect(bob.locator("#call-panel")).not_to_have_attribute("data-ringing", "true")
    alice.click("#hang-up")
    expect(bob.locator(".notice.call-event").last).to_have_text("📞 Missed call from alice-call")
    expect(alice.locator(".notice.call-event").last).to_have_text(
        "📞 You cancelled a call to bob-call"
    )
    alice.context.close()
    bob.context.close()


def test_a_call_on_a_phone_fills_the_screen(browser: Browser, web_server: ServerProcess) -> None:
    alice = login(browser, web_server, "alice-phone")
    create_room(alice, "pocket")
    bob = login(browser, web_server, "bob-phone", width=390)
    open_room(bob, "pocket")
    alice.locator(".member[data-user=bob-phone] .call-button").click()
    bob.click("#accept-call")
    remote_video_plays(bob)
    box = bob.locator("#call-panel").bounding_box()
    assert box and box["width"] >= 389 and box["x"] <= 1, box
    shot(bob, "phone-call")
    bob.click("#hang-up")
    expect(alice.locator("#call-panel")).to_be_hidden()
    alice.context.close()
    bob.context.close()


def test_dark_mode_follows_the_system_and_can_be_chosen(
    browser: Browser, web_server: ServerProcess
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 760}, color_scheme="dark")
    page = context.new_page()
    page.goto(web_server.http + "/")
    page.fill("#login-name", "night-owl")
    page.click("#login-form button[type=submit]")
    create_room(page, "after-dark")
    send_message(page, "**still** readable at night")
    panel = "() => getComputedStyle(document.querySelector('.room-head')).backgroundColor"
    assert _luminance(page.evaluate(panel)) < 0.2
    shot(page, "dark")
    page.click("#theme-toggle")  # auto -> dark (chosen)
    expect(page.locator("#theme-toggle")).to_have_text("Theme: dark")
    page.click("#theme-toggle")  # dark -> light, against the system
    expect(page.locator("#theme-toggle")).to_have_text("Theme: light")
    assert _luminance(page.evaluate(panel)) > 0.8
    page.reload()  # the choice is kept
    expect(page.locator("#theme-toggle")).to_have_text("Theme: light")
    assert _luminance(page.evaluate(panel)) > 0.8
    context.close()


def _luminance(css_color: str) -> float:
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_color)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255
