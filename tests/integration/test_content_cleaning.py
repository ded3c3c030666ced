"""Content cleaning: control characters stripped from chat and edits, reaction emoji NFC.

Refusals are checked for what did not happen too, as :mod:`tests.harness.pool` says.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import pytest

from tests.harness.chat import (
    send_chat,
)
from tests.harness.http import history, stored
from tests.harness.pool import Pool, members
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


@pytest.mark.parametrize(
    ("content", "clean"),
    [
        ("a\u0000b\u0007c\nd\te", "abc\nd\te"),
        ("one\r\ntwo\rthree", "one\ntwothree"),
        ("\u001b[31mred\u001b[0m", "[31mred[0m"),
        ("x\u007fy\u0085z\u009f!", "xyz!"),
        ("  spaced  ", "  spaced  "),
    ],
    ids=["nul-bel", "carriage-return", "escape", "del-c1", "spaces-kept"],
)
async def test_control_characters_are_stripped_from_chat_and_edits(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, content: str, clean: str
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    message = await alice.chat(room_id, content)
    assert message["content"] == clean
    assert (await bob.recv("chat"))["payload"] == message
    await alice.send("message_edit", {"message_id": message["id"], "content": "v2 " + content})
    edit = (await alice.recv("message_edit"))["payload"]
    assert edit["content"] == "v2 " + clean
    assert (await bob.recv("message_edit"))["payload"] == edit
    assert await history(server, room_id) == [
        stored(message, content="v2 " + clean, edited_at=edit["edited_at"])
    ]


@pytest.mark.parametrize(
    "content", ["\u0000", "\u0000\u0007\u001b\u007f\u009b", "\u0000 \r\n\t\u0007"]
)
async def test_content_of_only_control_characters_is_invalid(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, content: str
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    original = await alice.chat(room_id, "original")
    await bob.recv("chat")
    await send_chat(alice, room_id, content)
    error = await alice.expect_error("invalid_message", "chat")
    assert "payload.content" in error["message"]
    await alice.send("message_edit", {"message_id": original["id"], "content": content})
    await alice.expect_error("invalid_message", "message_edit")
    await alice.sync()
    await bob.sync()
    assert await history(server, room_id) == [stored(original)]


async def test_reaction_emoji_is_normalised_to_nfc(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    message = await alice.chat(room_id, "react")
    await bob.recv("chat")
    for decomposed, composed in [("e\u0301", "\u00e9"), ("\u212b", "\u00c5")]:
        assert unicodedata.normalize("NFC", decomposed) == composed != decomposed
        await bob.send("message_reaction", {"message_id": message["id"], "emoji": decomposed})
        added = {
            "message_id": message["id"],
            "room_id": room_id,
            "user_id": user("bob"),
            "emoji": composed,
            "action": "added",
        }
        for member in (alice, bob):
            assert (await member.recv("message_reaction"))["payload"] == added
    [item] = await history(server, room_id)
    assert item["reactions"] == {"\u00e9": [user("bob")], "\u00c5": [user("bob")]}
    # The composed form is the same reaction: sending it toggles the stored one off.
    await bob.send("message_reaction", {"message_id": message["id"], "emoji": "\u00e9"})
    for member in (alice, bob):
        assert (await member.recv("message_reaction"))["payload"]["action"] == "removed"
    assert (await history(server, room_id))[0]["reactions"] == {"\u00c5": [user("bob")]}


@pytest.mark.parametrize(
    "emoji",
    ["👍 👍", " 👍", "👍\u00a0", "x" * 33, "👍" * 33, "a\tb", "\u0007"],
    ids=["space", "leading-space", "nbsp", "33-ascii", "33-emoji", "tab", "bel"],
)
async def test_bad_reaction_emoji_is_invalid(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, emoji: str
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    message = await alice.chat(room_id, "react")
    await bob.recv("chat")
    await bob.send("message_reaction", {"message_id": message["id"], "emoji": emoji})
    error = await bob.expect_error("invalid_message", "message_reaction")
    assert "payload.emoji" in error["message"]
    # 32 characters are fine.
    await bob.send("message_reaction", {"message_id": message["id"], "emoji": "x" * 32})
    for member in (alice, bob):
        assert (await member.recv("message_reaction"))["payload"]["emoji"] == "x" * 32
    await alice.sync()
    assert (await history(server, room_id))[0]["reactions"] == {"x" * 32: [user("bob")]}


@pytest.mark.parametrize("emoji", ["\u009b31m", "\u0080", "x\u009f"], ids=["csi", "pad", "apc"])
async def test_reaction_emoji_with_a_c1_control_character_is_invalid(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, emoji: str
) -> None:
    """C1 controls (U+0080-U+009F) are control characters too (they are removed from chat
    content); a reaction made of them is refused, not stored."""
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    message = await alice.chat(room_id, "react")
    await bob.recv("chat")
    await alice.send("message_reaction", {"message_id": message["id"], "emoji": emoji})
    error = await alice.expect_error("invalid_message", "message_reaction")
    assert "payload.emoji" in error["message"]
    await alice.sync()
    await bob.sync()
    assert (await history(server, room_id))[0]["reactions"] == {}
