"""The browser client on a two-node cluster: alice on one node, bob on the other.

Everything between them (presence, chat, typing and the call's signaling)
crosses from node to node through Redis, with the rooms and messages in
PostgreSQL, so this is the single-node chat-and-call test with the people
split over two servers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from tests.harness.backends import drop_cluster_state
from tests.harness.server import ServerProcess


@pytest.fixture
def console() -> Iterator[list[str]]:
    """The pages' console output, printed when the test ends (shown if it failed)."""
    lines: list[str] = []
    yield lines
    print("\n".join(["-- browser console --", *lines]))


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two nodes of a cluster of the test's own; their logs are printed when it ends."""
    name = "t_" + uuid.uuid4().hex[:12]
    args = ("--ring-timeout", "20", "--rate-limits", "off")
    started = [ServerProcess(tmp_path / "node.db", *args, cluster=name) for _ in range(2)]
    try:
        with ThreadPoolExecutor() as pool:  # both boot at once: a second saved
            list(pool.map(ServerProcess.start, started))
        yield started[0], started[1]
    finally:
        for node in started:
            if node.proc is not None:
                node.stop()
            print(f"-- node on port {node.port} --\n{node.log()}")
        drop_cluster_state(name)


def test_chat_and_video_call_across_two_nodes(
    browser: Browser, nodes: tuple[ServerProcess, ServerProcess], console: list[str]
) -> None:
    node_a, node_b = nodes
    alice = login(browser, node_a, "alice", console=console)
    create_room(alice, "across")
    bob = login(browser, node_b, "bob", console=console)
    open_room(bob, "across")
    expect(alice.locator(".member[data-user=bob]")).to_contain_text("online")
    expect(alice.locator(".notice", has_text="bob joined")).to_be_visible()
    expect(bob.locator(".member[data-user=alice]")).to_contain_text("online")

    # Chat both ways.
    send_message(alice, "Hello Bob, from node A")
    expect(message(bob, "Hello Bob, from node A")).to_be_visible()
    send_message(bob, "Hi Alice, from node B")
    expect(message(alice, "Hi Alice, from node B")).to_be_visible()

    # Typing shows on the other node and goes away on send, both ways.
    alice.type("#message-input", "alice writes")
    expect(bob.locator("#typing")).to_have_text("alice is typing…")
    alice.press("#message-input", "Enter")
    expect(bob.locator("#typing")).to_have_text("")
    expect(message(bob, "alice writes")).to_be_visible()
    bob.type("#message-input", "bob writes")
    expect(alice.locator("#typing")).to_have_text("bob is typing…")
    bob.press("#message-input", "Enter")
    expect(alice.locator("#typing")).to_have_text("")
    expect(message(alice, "bob writes")).to_be_visible()

    # Alice calls Bob; Bob accepts; both see the other's video.
    alice.locator(".member[data-user=bob] .call-button").click()
    expect(bob.locator("#call-title")).to_have_text("alice is calling")
    bob.click("#accept-call")
    remote_video_plays(alice)
    remote_video_plays(bob)
    expect(alice.locator("#call-title")).to_have_text("In a call with bob")
    expect(bob.locator("#call-title")).to_have_text("In a call with alice")
    shot(alice, "cluster-call")

    # Hanging up ends it on both sides.
    alice.click("#hang-up")
    expect(alice.locator("#call-panel")).to_be_hidden()
    expect(bob.locator("#call-panel")).to_be_hidden()
    expect(bob.locator("#toast")).to_have_text("alice hung up.")
    alice.context.close()
    bob.context.close()
