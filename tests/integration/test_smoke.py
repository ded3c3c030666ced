from __future__ import annotations

from tests.harness.client import Client, users


async def test_two_users_chat_in_a_room(connect, room_id, user) -> None:
    alice: Client = await connect(user("alice"))
    bob: Client = await connect(user("bob"))
    assert users(await alice.join(room_id)) == [user("alice")]
    assert users(await bob.join(room_id)) == sorted([user("alice"), user("bob")])
    joined = await alice.recv("user_joined")
    assert joined["payload"] == {"room_id": room_id, "user_id": user("bob")}
    sent = await alice.chat(room_id, "hello")
    received = (await bob.recv("chat"))["payload"]
    assert received == sent
    assert set(sent) == {
        "id", "room_id", "user_id", "content", "type", "created_at", "thread_id", "mentions"
    }  # fmt: skip
