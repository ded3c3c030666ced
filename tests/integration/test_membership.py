"""Membership: roles, adding and removing, bans, room settings, archiving and
direct rooms, over HTTP with their WebSocket events. Every refusal is checked
for what did not change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.client import Client, Connect
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]


async def call(
    server: ServerProcess, method: str, path: str, user: str, body: Any = None
) -> tuple[int, Any]:
    joiner = "&" if "?" in path else "?"
    return await http_json(method, f"{server.http}{path}{joiner}user_id={user}", body)


async def new_room(server: ServerProcess, owner: str, private: bool = True, **extra: Any) -> int:
    status, room = await call(
        server, "POST", "/api/rooms", owner, {"name": "team", "private": private, **extra}
    )
    assert status == 201, room
    return int(room["id"])


async def members(server: ServerProcess, room_id: int, viewer: str) -> dict[str, str]:
    status, body = await call(server, "GET", f"/api/rooms/{room_id}/members", viewer)
    assert status == 200, body
    return {m["user_id"]: m["role"] for m in body["members"]}


def refused(answer: tuple[int, Any], status: int, code: str, words: str = "") -> None:
    got_status, body = answer
    assert (got_status, body["error"]["code"]) == (status, code), answer
    assert words in body["error"]["message"], body


async def test_an_added_member_is_told_and_listed_with_a_role(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    room_id = await new_room(server, alice)
    owner = await connect(alice)
    await owner.join(room_id)
    invitee = await connect(bob)  # connected, in no room
    status, added = await call(
        server, "POST", f"/api/rooms/{room_id}/members", alice, {"user_id": bob}
    )
    assert status == 201 and (added["user_id"], added["role"]) == (bob, "member"), added
    event = {"room_id": room_id, "user_id": bob, "role": "member", "by": alice}
    assert (await invitee.recv("member_added"))["payload"] == event
    assert (await owner.recv("member_added"))["payload"] == event
    assert await members(server, room_id, bob) == {alice: "owner", bob: "member"}
    status, seen = await call(server, "GET", f"/api/rooms/{room_id}", bob)  # what bob is shown
    assert (status, seen["id"], seen["role"], seen["private"]) == (200, room_id, "member", True)
    refused(await call(server, "GET", f"/api/rooms/{room_id}", carol), 403, "forbidden")
    refused(await call(server, "GET", "/api/rooms/987653", carol), 404, "not_found")
    assert (await invitee.join(room_id))["room_id"] == room_id  # the room admits bob now
    # A member may not add anyone; a stranger may not even look.
    answer = await call(server, "POST", f"/api/rooms/{room_id}/members", bob, {"user_id": carol})
    refused(answer, 403, "forbidden", "owners and moderators")
    refused(await call(server, "GET", f"/api/rooms/{room_id}/members", carol), 403, "forbidden")
    assert await members(server, room_id, alice) == {alice: "owner", bob: "member"}


async def test_a_removed_member_is_cut_off_at_once(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, members=[bob])
    owner, gone, gone_tab = await connect(alice), await connect(bob), await connect(bob)
    for client in (owner, gone, gone_tab):
        await client.join(room_id)
    await owner.recv("user_joined")
    status, _ = await call(server, "DELETE", f"/api/rooms/{room_id}/members/{bob}", alice)
    assert status == 204
    removed = {"room_id": room_id, "user_id": bob, "by": alice, "reason": "removed"}
    for client in (gone, gone_tab):
        assert (await client.recv("member_removed"))["payload"] == removed
    assert (await owner.recv("member_removed"))["payload"] == removed
    assert (await owner.recv("user_left"))["payload"] == {"room_id": room_id, "user_id": bob}
    # What the room says from now on never reaches bob's connections.
    await owner.chat(room_id, "not for bob")
    await owner.send("typing", {"room_id": room_id, "is_typing": True})
    await owner.sync()
    for client in (gone, gone_tab):
        await client.sync()
    await gone.send("chat", {"room_id": room_id, "content": "still here?", "type": "text"})
    await gone.expect_error("forbidden", "chat")
    await gone.send("join_room", {"room_id": room_id})
    await gone.expect_error("forbidden", "join_room")
    refused(await call(server, "GET", f"/api/rooms/{room_id}/messages", bob), 403, "forbidden")
    assert await members(server, room_id, alice) == {alice: "owner"}


async def test_a_banned_user_cannot_rejoin_a_public_room_until_unbanned(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, private=False)
    owner, troll = await connect(alice), await connect(bob)
    await owner.join(room_id)
    await troll.join(room_id)  # a public room's joiner is a member from now on
    assert await members(server, room_id, alice) == {alice: "owner", bob: "member"}
    await owner.recv("user_joined")
    path = f"/api/rooms/{room_id}/members/{bob}?ban=true"
    assert (await call(server, "DELETE", path, alice))[0] == 204
    banned = {"room_id": room_id, "user_id": bob, "by": alice, "reason": "banned"}
    assert (await troll.recv("member_removed"))["payload"] == banned
    await troll.send("join_room", {"room_id": room_id})
    error = await troll.expect_error("forbidden", "join_room")
    assert "banned" in error["message"]
    refused(await call(server, "GET", f"/api/rooms/{room_id}/messages", bob), 403, "forbidden")
    assert (await call(server, "DELETE", f"/api/rooms/{room_id}/bans/{bob}", alice))[0] == 204
    refused(
        await call(server, "DELETE", f"/api/rooms/{room_id}/bans/{bob}", alice), 404, "not_found"
    )
    assert (await troll.join(room_id))["room_id"] == room_id


async def test_a_room_always_keeps_an_owner(server: ServerProcess, user: UserName) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, members=[bob])
    keeps = "at least one owner"
    refused(
        await call(server, "DELETE", f"/api/rooms/{room_id}/members/{alice}", alice),
        403,
        "forbidden",
        keeps,
    )
    role = f"/api/rooms/{room_id}/members/{alice}/role"
    refused(await call(server, "PUT", role, alice, {"role": "member"}), 403, "forbidden", keeps)
    assert await members(server, room_id, alice) == {alice: "owner", bob: "member"}
    # Only an owner changes roles; bad role names change nothing.
    bob_role = f"/api/rooms/{room_id}/members/{bob}/role"
    refused(await call(server, "PUT", bob_role, bob, {"role": "owner"}), 403, "forbidden")
    refused(await call(server, "PUT", bob_role, alice, {"role": "admin"}), 400, "invalid_message")
    status, body = await call(server, "PUT", bob_role, alice, {"role": "owner"})
    assert (status, body["role"]) == (200, "owner")
    assert (await call(server, "PUT", role, alice, {"role": "member"}))[0] == 200
    assert await members(server, room_id, bob) == {alice: "member", bob: "owner"}
    # Leaving for good is removing oneself.
    assert (await call(server, "DELETE", f"/api/rooms/{room_id}/members/{alice}", alice))[0] == 204
    assert await members(server, room_id, bob) == {bob: "owner"}


async def test_moderators_delete_others_messages_and_members_do_not(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    room_id = await new_room(server, alice, members=[bob, carol])
    bob_role = f"/api/rooms/{room_id}/members/{bob}/role"
    assert (await call(server, "PUT", bob_role, alice, {"role": "moderator"}))[0] == 200
    mod, member = await connect(bob), await connect(carol)
    await mod.join(room_id)
    await member.join(room_id)
    await mod.recv("user_joined")
    rude = await member.chat(room_id, "something rude")
    await mod.recv("chat")
    await member.send("message_delete", {"message_id": (await mod.chat(room_id, "mine"))["id"]})
    await member.recv("chat")
    await member.expect_error("forbidden", "message_delete")
    await mod.send("message_delete", {"message_id": rude["id"]})
    deleted = {"message_id": rude["id"], "room_id": room_id, "by": bob}
    assert (await member.recv("message_delete"))["payload"] == deleted
    assert (await mod.recv("message_delete"))["payload"] == deleted


async def test_room_settings_and_archiving(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, members=[bob])
    owner = await connect(alice)
    await owner.join(room_id)
    path = f"/api/rooms/{room_id}"
    status, room = await call(server, "PATCH", path, alice, {"name": "renamed", "topic": "plans"})
    assert status == 200 and (room["name"], room["topic"]) == ("renamed", "plans"), room
    assert (await owner.recv("room_updated"))["payload"] == {"room": room}
    # Bad settings change nothing.
    refused(
        await call(server, "PATCH", path, alice, {"topic": "x" * 251}),
        400,
        "invalid_message",
        "topic",
    )
    refused(await call(server, "PATCH", path, alice, {"name": " "}), 400, "invalid_message", "name")
    refused(await call(server, "PATCH", path, alice, {"colour": "red"}), 400, "invalid_message")
    refused(await call(server, "PATCH", path, bob, {"topic": "mine now"}), 403, "forbidden")
    refused(await call(server, "DELETE", path, bob), 403, "forbidden", "owners")
    refused(
        await call(server, "PATCH", "/api/rooms/987654", alice, {"topic": "?"}), 404, "not_found"
    )
    await owner.chat(room_id, "before the archive")
    status, archived = await call(server, "DELETE", path, alice)
    assert status == 200 and archived["archived_at"] is not None
    assert (await owner.recv("room_updated"))["payload"]["room"]["archived_at"] is not None
    await owner.send("chat", {"room_id": room_id, "content": "after", "type": "text"})
    error = await owner.expect_error("forbidden", "chat")
    assert "archived" in error["message"]
    status, history = await call(server, "GET", f"{path}/messages", bob)
    assert status == 200 and [m["content"] for m in history["messages"]] == ["before the archive"]
    refused(
        await call(server, "PATCH", path, alice, {"topic": "again"}), 403, "forbidden", "archived"
    )


async def test_two_people_have_one_direct_room(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    status, mine = await call(server, "POST", "/api/direct", alice, {"user_id": bob})
    assert status == 200 and (mine["kind"], mine["name"], mine["private"]) == ("direct", bob, True)
    status, theirs = await call(server, "POST", "/api/direct", bob, {"user_id": alice})
    assert (theirs["id"], theirs["name"]) == (mine["id"], alice)  # named by the other person
    room_id = mine["id"]
    answer = await call(server, "POST", f"/api/rooms/{room_id}/members", alice, {"user_id": carol})
    refused(answer, 403, "forbidden", "direct room")
    refused(
        await call(server, "POST", "/api/direct", alice, {"user_id": alice}), 400, "invalid_message"
    )
    refused(
        await call(server, "POST", "/api/direct", alice, {"user_id": ""}), 400, "invalid_message"
    )
    assert await members(server, room_id, alice) == {alice: "member", bob: "member"}
    status, listed = await call(server, "GET", "/api/rooms?mine=true", alice)
    [direct] = [r for r in listed["rooms"] if r["id"] == room_id]
    assert (direct["kind"], direct["name"], direct["role"]) == ("direct", bob, "member")
    one, other = await connect(alice), await connect(bob)
    await one.join(room_id)
    await other.join(room_id)
    sent = await one.chat(room_id, "just between us")
    assert (await other.recv_until("chat"))["payload"] == sent
    stranger = await connect(carol)
    await stranger.send("join_room", {"room_id": room_id})
    await stranger.expect_error("forbidden", "join_room")


async def test_my_rooms_list_with_my_role(server: ServerProcess, user: UserName) -> None:
    alice, bob = user("alice"), user("bob")
    owned = await new_room(server, alice)
    joined = await new_room(server, bob, private=True, members=[alice])
    other = await new_room(server, bob, private=False)
    status, body = await call(server, "GET", "/api/rooms?mine=true&limit=500", alice)
    assert status == 200
    roles = {r["id"]: r["role"] for r in body["rooms"]}
    assert roles[owned] == "owner" and roles[joined] == "member" and other not in roles
    refused(await call(server, "GET", "/api/rooms?mine=maybe", alice), 400, "invalid_message")


async def test_unknown_rooms_and_members_are_not_found(
    server: ServerProcess, user: UserName
) -> None:
    alice = user("alice")
    room_id = await new_room(server, alice)
    refused(
        await call(server, "DELETE", f"/api/rooms/{room_id}/members/nobody", alice),
        404,
        "not_found",
    )
    refused(
        await call(
            server, "PUT", f"/api/rooms/{room_id}/members/nobody/role", alice, {"role": "member"}
        ),
        404,
        "not_found",
    )
    refused(
        await call(server, "POST", "/api/rooms/987655/members", alice, {"user_id": "x"}),
        404,
        "not_found",
    )
    refused(
        await call(server, "POST", f"/api/rooms/{room_id}/members", alice, {"user_id": "a\u202eb"}),
        400,
        "invalid_message",
        "user_id",
    )
    assert await members(server, room_id, alice) == {alice: "owner"}


async def test_membership_survives_a_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "members.db").start()
    try:
        room_id = await new_room(server, "owner-r", members=["member-r"])
        role = f"/api/rooms/{room_id}/members/member-r/role"
        assert (await call(server, "PUT", role, "owner-r", {"role": "moderator"}))[0] == 200
        assert server.stop() == 0
        server.start()
        assert await members(server, room_id, "owner-r") == {
            "member-r": "moderator",
            "owner-r": "owner",
        }
        client = await Client.connect(server.ws_url, "member-r")
        try:
            assert (await client.join(room_id))["room_id"] == room_id
        finally:
            await client.close()
    finally:
        server.stop()


async def test_an_archived_public_room_is_read_by_its_members_only(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, mallory = user("alice"), user("bob"), user("mallory")
    room_id = await new_room(server, alice, private=False)
    writer, reader = await connect(alice), await connect(bob)
    await writer.join(room_id)
    await reader.join(room_id)  # a public room's joiner is a member
    await writer.chat(room_id, "kept for the members")
    assert (await call(server, "DELETE", f"/api/rooms/{room_id}", alice))[0] == 200
    path = f"/api/rooms/{room_id}/messages"
    status, history = await call(server, "GET", path, bob)
    assert status == 200 and [m["content"] for m in history["messages"]] == ["kept for the members"]
    refused(await call(server, "GET", path, mallory), 403, "forbidden", "archived")
    refused(await call(server, "GET", f"/api/rooms/{room_id}/threads", mallory), 403, "forbidden")
