"""Conversations over a real server: threads, mentions and notifications, read
markers, receipts and unread counts. Every refusal is checked for what did not
change. (On the cluster back end this file runs against PostgreSQL + Redis.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.harness.client import Client, Connect
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]


async def get(server: ServerProcess, path: str, user: str) -> Any:
    joiner = "&" if "?" in path else "?"
    status, body = await http_json("GET", f"{server.http}{path}{joiner}user_id={user}")
    assert status == 200, body
    return body


async def new_room(server: ServerProcess, owner: str, members: list[str]) -> int:
    url = f"{server.http}/api/rooms?user_id={owner}"
    status, room = await http_json(
        "POST", url, {"name": "talk", "private": True, "members": members}
    )
    assert status == 201, room
    return int(room["id"])


async def say(client: Client, room_id: int, content: str, **extra: Any) -> dict[str, Any]:
    """Send a message and return it as broadcast back to the sender (other
    messages the sender receives meanwhile are passed over)."""
    await client.send("chat", {"room_id": room_id, "content": content, **extra})
    while True:
        payload: dict[str, Any] = (await client.recv_until("chat"))["payload"]
        if payload["user_id"] == client.connected["user_id"] and payload["content"] == content:
            return payload


async def counts(client: Client, timeout: float = 3.0) -> dict[int, dict[str, Any]]:
    """The next ``unread`` frame, by room."""
    client.skip_unread = False
    try:
        frame = await client.recv_until("unread", timeout)
    finally:
        client.skip_unread = True
    return {room["room_id"]: room for room in frame["payload"]["rooms"]}


async def timeline(server: ServerProcess, room_id: int, user: str, **query: Any) -> list[Any]:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    page = await get(server, f"/api/rooms/{room_id}/messages?limit=100{extra}", user)
    return list(page["messages"])


# -- threads ------------------------------------------------------------------------


async def test_a_thread_collects_replies_under_its_root(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [bob])
    a, b = await connect(alice), await connect(bob)
    await a.join(room_id)
    await b.join(room_id)
    root = await say(a, room_id, "release on friday?")
    assert root["thread_id"] is None and root["mentions"] == []
    await b.recv("chat")
    reply = await say(b, room_id, "yes", thread_id=root["id"])
    assert reply["thread_id"] == root["id"]
    summary = (await b.recv("thread_updated"))["payload"]
    assert summary == {
        "room_id": room_id,
        "thread_id": root["id"],
        "reply_count": 1,
        "last_reply_at": reply["created_at"],
        "participants": [bob],
    }
    assert (await a.recv("chat"))["payload"] == reply
    assert (await a.recv("thread_updated"))["payload"] == summary
    # A reply to a reply belongs to the root: threads do not nest.
    nested = await say(a, room_id, "good", thread_id=reply["id"])
    assert nested["thread_id"] == root["id"]
    summary = (await a.recv("thread_updated"))["payload"]
    assert (summary["reply_count"], summary["participants"]) == (2, [alice, bob])
    # The timeline holds the root with its summary, not the replies; the
    # thread pages its replies.
    items = await timeline(server, room_id, alice)
    assert [m["id"] for m in items] == [root["id"]]
    assert items[0]["thread"] == {
        "reply_count": 2,
        "last_reply_at": nested["created_at"],
        "participants": [alice, bob],
        "last_reply_id": nested["id"],
    }
    replies = await timeline(server, room_id, bob, thread_id=root["id"])
    assert [(m["id"], m["thread_id"]) for m in replies] == [
        (reply["id"], root["id"]),
        (nested["id"], root["id"]),
    ]
    first = await get(server, f"/api/rooms/{room_id}/messages?thread_id={root['id']}&limit=1", bob)
    assert [m["id"] for m in first["messages"]] == [nested["id"]]
    assert first["next_before"] == nested["id"]


async def test_a_reply_to_a_message_elsewhere_or_gone_is_not_found_and_not_stored(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice = user("alice")
    room_id, other_room = await new_room(server, alice, []), await new_room(server, alice, [])
    a = await connect(alice)
    await a.join(room_id)
    await a.join(other_room)
    elsewhere = await say(a, other_room, "in the other room")
    gone = await say(a, room_id, "deleted soon")
    await a.send("message_delete", {"message_id": gone["id"]})
    await a.recv_until("message_delete")
    for thread_id in (elsewhere["id"], gone["id"], 987_654_321):
        payload = {"room_id": room_id, "content": "lost", "thread_id": thread_id}
        await a.send("chat", {**payload, "client_msg_id": f"c-{thread_id}"})
        error = await a.expect_error("not_found", "chat")
        assert error["client_msg_id"] == f"c-{thread_id}" and "thread_id" in error["message"]
    await a.expect_silence(0.2)
    assert await timeline(server, room_id, alice) == []
    assert (await get(server, f"/api/rooms/{room_id}/threads", alice))["threads"] == []


async def test_a_deleted_root_stays_while_its_thread_has_replies(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [bob])
    a, b = await connect(alice), await connect(bob)
    await a.join(room_id)
    await b.join(room_id)
    root = await say(a, room_id, "root")
    other = await say(a, room_id, "another root")
    reply = await say(b, room_id, "a reply", thread_id=root["id"])
    second = await say(b, room_id, "on the other", thread_id=other["id"])
    await a.send("message_delete", {"message_id": root["id"]})
    await a.recv_until("message_delete")
    # The root is a placeholder now; its reply is still there.
    items = await timeline(server, room_id, bob)
    assert [(m["id"], m["content"], m["deleted_at"] is not None) for m in items] == [
        (root["id"], "", True),
        (other["id"], "another root", False),
    ]
    assert items[0]["thread"]["reply_count"] == 1 and items[0]["reactions"] == {}
    assert [m["id"] for m in await timeline(server, room_id, bob, thread_id=root["id"])] == [
        reply["id"]
    ]
    threads = (await get(server, f"/api/rooms/{room_id}/threads", alice))["threads"]
    assert [t["root"]["id"] for t in threads] == [other["id"], root["id"]]  # newest activity first
    # Once its last reply is deleted, the thread is gone: from the list, and
    # the deleted root from the timeline.
    await b.send("message_delete", {"message_id": reply["id"]})
    summary = (await b.recv_until("thread_updated"))["payload"]
    while summary["thread_id"] != root["id"]:  # the other thread's, from before
        summary = (await b.recv_until("thread_updated"))["payload"]
    assert (summary["thread_id"], summary["reply_count"], summary["participants"]) == (
        root["id"],
        0,
        [],
    )
    assert [m["id"] for m in await timeline(server, room_id, bob)] == [other["id"]]
    threads = (await get(server, f"/api/rooms/{room_id}/threads", alice))["threads"]
    assert [(t["root"]["id"], t["thread"]["reply_count"]) for t in threads] == [(other["id"], 1)]
    assert second["thread_id"] == other["id"]


async def test_an_edited_reply_updates_its_thread(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice = user("alice")
    room_id = await new_room(server, alice, [])
    a = await connect(alice)
    await a.join(room_id)
    root = await say(a, room_id, "root")
    reply = await say(a, room_id, "typo", thread_id=root["id"])
    await a.recv("thread_updated")
    await a.send("message_edit", {"message_id": reply["id"], "content": "fixed"})
    edit = (await a.recv("message_edit"))["payload"]
    assert (edit["thread_id"], edit["content"]) == (root["id"], "fixed")
    assert (await a.recv("thread_updated"))["payload"]["reply_count"] == 1


async def test_the_thread_list_pages_by_last_activity(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice = user("alice")
    room_id = await new_room(server, alice, [])
    a = await connect(alice)
    await a.join(room_id)
    roots = [await say(a, room_id, f"root {i}") for i in range(3)]
    for root in (roots[1], roots[0], roots[2], roots[1]):
        await say(a, room_id, "reply", thread_id=root["id"])
    seen, before = [], ""
    while True:
        page = await get(server, f"/api/rooms/{room_id}/threads?limit=2{before}", alice)
        seen += [t["root"]["id"] for t in page["threads"]]
        if page["next"] is None:
            break
        before = f"&before={page['next']}"
    assert seen == [roots[1]["id"], roots[2]["id"], roots[0]["id"]]
    status, body = await http_json(
        "GET", f"{server.http}/api/rooms/{room_id}/threads?before=x1&user_id={alice}"
    )
    assert (status, body["error"]["code"]) == (400, "invalid_message")


# -- mentions and notifications -------------------------------------------------------


async def test_a_mention_notifies_every_connection_of_members_only(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, carol, mallory = user("alice"), user("bob"), user("carol"), user("mallory")
    room_id = await new_room(server, alice, [bob, carol])
    a = await connect(alice)
    await a.join(room_id)
    bob_joined, bob_elsewhere, outsider = (
        await connect(bob),
        await connect(bob),
        await connect(mallory),
    )
    await bob_joined.join(room_id)
    message = await say(a, room_id, "@bob @mallory look", mentions=[mallory, bob, alice, bob])
    # Only a member other than the author, once: mallory is no member.
    assert message["mentions"] == [bob]
    for client in (bob_joined, bob_elsewhere):
        notification = (await client.recv_until("notification"))["payload"]
        assert notification == {
            "id": notification["id"],
            "kind": "mention",
            "room_id": room_id,
            "message_id": message["id"],
            "thread_id": None,
            "from_user_id": alice,
            "excerpt": "@bob @mallory look",
            "created_at": message["created_at"],
            "quiet": False,
        }
    await outsider.expect_silence(0.2)
    listed = await get(server, "/api/notifications?unread=true", bob)
    assert [(n["id"], n["read_at"]) for n in listed["notifications"]] == [
        (notification["id"], None)
    ]
    assert (await get(server, "/api/notifications", mallory))["notifications"] == []
    # Text that merely names someone notifies nobody.
    await say(a, room_id, f"thanks {carol}")
    assert (await get(server, "/api/notifications", carol))["notifications"] == []


async def test_mentions_are_kept_to_twenty(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice = user("alice")
    others = [user(f"m{i}") for i in range(25)]
    room_id = await new_room(server, alice, others)
    a = await connect(alice)
    await a.join(room_id)
    message = await say(a, room_id, "everyone", mentions=others)
    assert message["mentions"] == others[:20]
    assert (await get(server, "/api/notifications", others[20]))["notifications"] == []
    await a.send("chat", {"room_id": room_id, "content": "x", "mentions": ["a\u200bb"]})
    assert "mentions[0]" in (await a.expect_error("invalid_message", "chat"))["message"]


async def test_a_thread_reply_notifies_the_root_author_and_earlier_participants(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    room_id = await new_room(server, alice, [bob, carol])
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    root = await say(a, room_id, "root") if await a.join(room_id) else None
    assert root is not None
    await b.join(room_id)
    first = await say(b, room_id, "bob replies", thread_id=root["id"])
    to_alice = (await a.recv_until("notification"))["payload"]
    assert (to_alice["kind"], to_alice["message_id"], to_alice["thread_id"]) == (
        "reply",
        first["id"],
        root["id"],
    )
    await c.expect_silence(0.2)  # carol took no part
    # Carol replies mentioning bob: bob gets one mention (not also a reply), alice a reply.
    await c.join(room_id)
    reply = await say(c, room_id, "carol too", thread_id=root["id"], mentions=[bob])
    assert (await b.recv_until("notification"))["payload"]["kind"] == "mention"
    to_alice = (await a.recv_until("notification"))["payload"]
    assert (to_alice["kind"], to_alice["message_id"]) == ("reply", reply["id"])
    listed = (await get(server, "/api/notifications", bob))["notifications"]
    assert [(n["kind"], n["message_id"]) for n in listed] == [("mention", reply["id"])]


async def test_an_edit_notifies_only_new_mentions_and_retracts_removed_ones(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    room_id = await new_room(server, alice, [bob, carol])
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    await a.join(room_id)
    message = await say(a, room_id, "@bob", mentions=[bob])
    first = (await b.recv_until("notification"))["payload"]
    edit = {"message_id": message["id"], "content": "@bob @carol"}
    await a.send("message_edit", {**edit, "mentions": [bob, carol]})
    assert (await a.recv("message_edit"))["payload"]["mentions"] == [bob, carol]
    to_carol = (await c.recv_until("notification"))["payload"]
    assert (to_carol["kind"], to_carol["excerpt"]) == ("mention", "@bob @carol")
    await b.expect_silence(0.2)  # already mentioned: not again
    # An edit without mentions keeps them; one that drops bob retracts his.
    await a.send("message_edit", {"message_id": message["id"], "content": "still both"})
    assert (await a.recv("message_edit"))["payload"]["mentions"] == [bob, carol]
    await a.send(
        "message_edit", {"message_id": message["id"], "content": "@carol", "mentions": [carol]}
    )
    assert (await b.recv_until("notification_retracted"))["payload"] == {"id": first["id"]}
    assert (await get(server, "/api/notifications", bob))["notifications"] == []
    # Deleting the message retracts carol's too.
    await a.send("message_delete", {"message_id": message["id"]})
    assert (await c.recv_until("notification_retracted"))["payload"] == {"id": to_carol["id"]}
    assert (await get(server, "/api/notifications", carol))["notifications"] == []


async def test_a_busy_user_gets_quiet_notifications(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [bob])
    a, b = await connect(alice), await connect(bob)
    await a.join(room_id)
    await b.send("presence", {"status": "busy"})
    await b.recv_until("presence")
    await say(a, room_id, "ping", mentions=[bob])
    assert (await b.recv_until("notification"))["payload"]["quiet"] is True


async def test_notification_read_marks_read_on_every_device(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [bob])
    a, phone, laptop = await connect(alice), await connect(bob), await connect(bob)
    await a.join(room_id)
    await say(a, room_id, "@bob", mentions=[bob])
    notification = (await phone.recv_until("notification"))["payload"]
    assert (await counts(laptop))[room_id]["mentions"] == 1
    await phone.send("notification_read", {"ids": [notification["id"], 987_654]})
    for client in (phone, laptop):
        assert (await client.recv_until("notification_read"))["payload"] == {
            "ids": [notification["id"]]
        }
    assert (await counts(laptop))[room_id]["mentions"] == 0
    listed = (await get(server, "/api/notifications", bob))["notifications"]
    assert listed[0]["read_at"] is not None
    assert (await get(server, "/api/notifications?unread=true", bob))["notifications"] == []
    # Again, or someone else's id: nothing changes, nothing is said.
    await phone.send("notification_read", {"ids": [notification["id"]]})
    await a.send("notification_read", {"ids": [notification["id"]]})
    await phone.expect_silence(0.2)
    await phone.send("notification_read", {"ids": []})
    await phone.expect_error("invalid_message", "notification_read")


# -- read markers and unread counts ------------------------------------------------------


async def test_counts_follow_connected_and_every_change(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [bob])
    a = await connect(alice)
    await a.join(room_id)
    fresh = await connect(bob)
    assert fresh.unread == {
        "rooms": [
            {
                "room_id": room_id,
                "unread": 0,
                "mentions": 0,
                "last_read_id": 0,
                "last_message_id": 0,
            }
        ]
    }
    one = await say(a, room_id, "one")
    assert (await counts(fresh))[room_id] == {
        "room_id": room_id,
        "unread": 1,
        "mentions": 0,
        "last_read_id": 0,
        "last_message_id": one["id"],
    }
    two = await say(a, room_id, "two", mentions=[bob])
    assert [(c["unread"], c["mentions"]) for c in (await counts(fresh)).values()] == [(2, 1)]
    # A reply in a thread is not a timeline message; its mention still counts.
    await say(a, room_id, "three", thread_id=one["id"], mentions=[bob])
    assert [(c["unread"], c["mentions"]) for c in (await counts(fresh)).values()] == [(2, 2)]
    # A new connection is told the same, from the store.
    again = await connect(bob)
    assert [(r["unread"], r["mentions"]) for r in again.unread["rooms"]] == [(2, 2)]
    # Deleting an unread mention takes it out of both counts.
    await a.send("message_delete", {"message_id": two["id"]})
    assert [
        (c["unread"], c["mentions"], c["last_message_id"]) for c in (await counts(fresh)).values()
    ] == [(1, 1, one["id"])]


async def test_reading_moves_forward_only_and_clears_every_device(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [bob])
    a = await connect(alice)
    await a.join(room_id)
    phone, laptop = await connect(bob), await connect(bob)
    await phone.join(room_id)
    messages = [await say(a, room_id, f"m{i}", mentions=[bob] if i == 1 else []) for i in range(3)]
    await phone.send("read", {"room_id": room_id, "message_id": messages[1]["id"]})
    receipt = (await a.recv_until("read_receipt"))["payload"]
    assert receipt == {
        "room_id": room_id,
        "user_id": bob,
        "message_id": messages[1]["id"],
        "thread_id": None,
    }
    # The other device's badge follows: one unread left, the mention read.
    assert (await laptop.recv_until("notification_read"))["payload"]["ids"]
    state = await counts(laptop)
    while state[room_id]["last_read_id"] != messages[1]["id"]:
        state = await counts(laptop)
    assert (state[room_id]["unread"], state[room_id]["mentions"]) == (1, 0)
    # Backwards or the same: ignored, nothing is broadcast.
    for message in (messages[0], messages[1]):
        await phone.send("read", {"room_id": room_id, "message_id": message["id"]})
    await a.expect_silence(0.3)
    again = await connect(bob)
    assert again.unread["rooms"][0]["last_read_id"] == messages[1]["id"]


async def test_receipts_are_paced_and_the_newest_wins(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [bob])
    a, b = await connect(alice), await connect(bob)
    await a.join(room_id)
    await b.join(room_id)
    messages = [await say(a, room_id, f"m{i}") for i in range(4)]
    for message in messages:
        await b.send("read", {"room_id": room_id, "message_id": message["id"]})
    first = (await a.recv_until("read_receipt"))["payload"]
    assert first["message_id"] == messages[0]["id"]
    await a.expect_silence(0.5)  # the rest wait for the second to pass
    last = (await a.recv_until("read_receipt", timeout=2))["payload"]
    assert last["message_id"] == messages[-1]["id"]
    await a.expect_silence(1.2)


async def test_read_refusals_change_nothing(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, mallory = user("alice"), user("bob"), user("mallory")
    room_id = await new_room(server, alice, [bob])
    other_room = await new_room(server, alice, [])
    a = await connect(alice)
    await a.join(room_id)
    await a.join(other_room)
    root = await say(a, room_id, "root")
    reply = await say(a, room_id, "reply", thread_id=root["id"])
    elsewhere = await say(a, other_room, "elsewhere")
    b, m = await connect(bob), await connect(mallory)
    cases = [
        (b, {"room_id": room_id, "message_id": elsewhere["id"]}, "not_found"),
        (b, {"room_id": room_id, "message_id": 987_654_321}, "not_found"),
        (b, {"room_id": room_id, "message_id": reply["id"]}, "not_found"),  # read in its thread
        (
            b,
            {"room_id": room_id, "message_id": root["id"], "thread_id": elsewhere["id"]},
            "not_found",
        ),
        (m, {"room_id": room_id, "message_id": root["id"]}, "forbidden"),
        (b, {"room_id": room_id}, "invalid_message"),
    ]
    for client, payload, code in cases:
        await client.send("read", payload)
        await client.expect_error(code, "read")
    await a.expect_silence(0.2)
    fresh = await connect(bob)
    assert fresh.unread["rooms"][0]["last_read_id"] == 0
    # The thread's own marker is accepted, and reads the thread's notifications.
    await b.send("read", {"room_id": room_id, "message_id": reply["id"], "thread_id": root["id"]})
    await b.sync()


async def test_a_new_member_starts_with_nothing_unread(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [])
    a = await connect(alice)
    await a.join(room_id)
    for i in range(3):
        await say(a, room_id, f"before bob {i}")
    b = await connect(bob)
    status, _ = await http_json(
        "POST", f"{server.http}/api/rooms/{room_id}/members?user_id={alice}", {"user_id": bob}
    )
    assert status == 201
    state = await counts(b)
    assert (state[room_id]["unread"], state[room_id]["mentions"]) == (0, 0)
    await say(a, room_id, "welcome")
    assert (await counts(b))[room_id]["unread"] == 1


async def test_opening_a_thread_clears_its_mention_on_every_device(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    room_id = await new_room(server, alice, [bob])
    a = await connect(alice)
    await a.join(room_id)
    tab1, tab2 = await connect(bob), await connect(bob)
    root = await say(a, room_id, "root")
    reply = await say(a, room_id, "@bob here", thread_id=root["id"], mentions=[bob])
    for tab in (tab1, tab2):
        await tab.recv_until("notification")
    state = await counts(tab2)
    while state[room_id]["mentions"] != 1:
        state = await counts(tab2)
    await tab1.join(room_id)
    await tab1.send(
        "read", {"room_id": room_id, "message_id": reply["id"], "thread_id": root["id"]}
    )
    for tab in (tab1, tab2):
        assert (await tab.recv_until("notification_read"))["payload"]["ids"]
    state = await counts(tab2)
    while state[room_id]["mentions"] != 0:
        state = await counts(tab2)
    receipt = (await a.recv_until("read_receipt"))["payload"]
    assert (receipt["thread_id"], receipt["message_id"]) == (root["id"], reply["id"])
