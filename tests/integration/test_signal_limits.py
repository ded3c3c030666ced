"""A ``webrtc`` message over a size limit is refused with an error that names the
field that is too large and its own limit: ``data`` (``--max-signal-bytes``)
and ``media`` (1 KiB)."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness.client import Connect

LIMIT = 32 * 1024  # the shared server's --max-signal-bytes (the default)


async def test_media_over_1_kib_is_too_large_and_says_so(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    for client in (alice, bob):
        await client.join(room_id)
    await alice.recv("user_joined")

    offer = {"type": "offer", "to_user_id": user("bob"), "data": {"sdp": "v=0"}}
    await alice.send("webrtc", {**offer, "media": "m" * 1023})  # 1,025 bytes of JSON
    error = await alice.expect_error("too_large", "webrtc")
    assert error["message"] == "payload.media: larger than 1024 bytes", error
    # Nothing rang.
    await bob.sync()
    await alice.sync()

    await alice.send("webrtc", {**offer, "data": "d" * LIMIT})
    error = await alice.expect_error("too_large", "webrtc")
    assert error["message"] == f"payload.data: larger than {LIMIT} bytes", error
    await bob.sync()

    await alice.send("webrtc", {**offer, "media": "m" * 1022})  # exactly 1 KiB: rings
    assert (await alice.recv("call_ringing"))["payload"]["media"] == "m" * 1022
    assert (await bob.recv("incoming_call"))["payload"]["media"] == "m" * 1022
