"""Chat frames as the hardening tests send them, and the errors they expect back."""

from __future__ import annotations

import time
from typing import Any

from tests.harness.client import Client

CHAT_FIELDS = {
    "id", "room_id", "user_id", "content", "type", "created_at", "thread_id", "mentions"
}  # fmt: skip
UNKNOWN_MESSAGE_ID = 2**53 - 1  # the largest id there is


async def send_chat(client: Client, room_id: int, content: str, **extra: Any) -> None:
    await client.send("chat", {"room_id": room_id, "content": content, "type": "text", **extra})


def assert_rate_limited(
    payload: dict[str, Any], type: str | None, longest_ms: int, client_msg_id: str | None = None
) -> None:
    """A ``rate_limited`` error for ``type``, with a wait in (0, longest_ms]."""
    expected: dict[str, Any] = {
        "code": "rate_limited",
        "message": payload.get("message"),
        "retry_after_ms": payload.get("retry_after_ms"),
    }
    if type is not None:
        expected["type"] = type
    if client_msg_id is not None:
        expected["client_msg_id"] = client_msg_id
    assert payload == expected
    assert isinstance(payload["message"], str) and payload["message"]
    assert isinstance(payload["retry_after_ms"], int)
    assert 0 < payload["retry_after_ms"] <= longest_ms, payload


async def chats_until(
    client: Client, content: str, timeout: float = 5.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Chat payloads up to the one with ``content``, and every other frame on the way."""
    chats: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not chats or chats[-1]["content"] != content:
        frame = await client.next(max(0.01, deadline - time.monotonic()))
        (chats if frame["type"] == "chat" else others).append(
            frame["payload"] if frame["type"] == "chat" else frame
        )
    return chats, others
