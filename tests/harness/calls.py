"""Calls between test clients, with the frames each side must get checked on the way.

In the server's cluster tests as in its single-node ones, a call is rung, answered and
signalled the same way; the secrets are those the call tests' servers are started with.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.harness.client import Client, Connect
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
RENEGOTIATE = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
REANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
MEDIA = {"audio": True, "video": False}
TURN_SECRET = "s"
AUTH_SECRET = "call-tests-secret-of-at-least-32-bytes!"


def candidate(port: int) -> dict[str, Any]:
    return {
        "candidate": f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


def uid(client: Client) -> str:
    return str(client.connected["user_id"])


async def settle(*clients: Client) -> None:
    """Drop whatever each client has been sent so far (user_joined and the like)."""
    for client in clients:
        await client.send("ping")
        await client.recv_until("pong")


async def in_room(connect: Connect, room_id: int, *user_ids: str) -> list[Client]:
    """One connection per user id, all joined to ``room_id``, with nothing left to read."""
    clients = [await connect(user_id) for user_id in user_ids]
    for client in clients:
        await client.join(room_id)
    await settle(*clients)
    return clients


async def send_offer(caller: Client, callee_id: str, data: Any = OFFER, media: Any = None) -> None:
    payload: dict[str, Any] = {"type": "offer", "to_user_id": callee_id, "data": data}
    if media is not None:
        payload["media"] = media
    await caller.send("webrtc", payload)


async def ring(caller: Client, *callee_conns: Client, media: Any = None) -> str:
    """``caller`` calls the user of ``callee_conns``; all of them ring. Returns the call id."""
    caller_id, callee_id = uid(caller), uid(callee_conns[0])
    await send_offer(caller, callee_id, media=media)
    ringing = (await caller.recv("call_ringing"))["payload"]
    call_id = ringing["call_id"]
    assert isinstance(call_id, str) and call_id
    parties = {"call_id": call_id, "from_user_id": caller_id, "to_user_id": callee_id}
    assert ringing == {**parties, "media": media}
    for conn in callee_conns:
        assert (await conn.recv("incoming_call"))["payload"] == {**parties, "media": media}
        assert (await conn.recv("webrtc"))["payload"] == {"type": "offer", **parties, "data": OFFER}
    return call_id


async def answer(callee: Client, caller: Client, call_id: str) -> None:
    """``callee`` answers; the caller gets the answer, then both get call_active."""
    caller_id, callee_id = uid(caller), uid(callee)
    await callee.send(
        "webrtc", {"type": "answer", "call_id": call_id, "to_user_id": caller_id, "data": ANSWER}
    )
    relayed = (await caller.recv("webrtc"))["payload"]
    assert relayed == {
        "type": "answer",
        "call_id": call_id,
        "from_user_id": callee_id,
        "to_user_id": caller_id,
        "data": ANSWER,
    }
    active = {"call_id": call_id, "from_user_id": caller_id, "to_user_id": callee_id}
    assert (await caller.recv("call_active"))["payload"] == active
    assert (await callee.recv("call_active"))["payload"] == active


async def signal(
    sender: Client, kind: str, call_id: str, to_user_id: str, data: Any
) -> dict[str, Any]:
    """Send one in-call signal; returns the payload a receiver should get."""
    await sender.send(
        "webrtc", {"type": kind, "call_id": call_id, "to_user_id": to_user_id, "data": data}
    )
    return {
        "type": kind,
        "call_id": call_id,
        "from_user_id": uid(sender),
        "to_user_id": to_user_id,
        "data": data,
    }


async def recv_text(client: Client, timeout: float = 3.0) -> str:
    message = await asyncio.wait_for(client.ws.receive(), timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    text: str = message.data
    return text


async def sync_all(*clients: Client) -> None:
    for client in clients:
        await client.sync()


async def list_calls(server: ServerProcess, user_id: str) -> list[dict[str, Any]]:
    status, body = await http_json("GET", f"{server.http}/api/calls?user_id={user_id}")
    assert status == 200, body
    assert set(body) == {"calls", "next"} and body["next"] is None, body
    calls: list[dict[str, Any]] = body["calls"]
    return calls


async def offer_refused(caller: Client, callee_id: str, reason: str) -> str:
    await caller.send("webrtc", {"type": "offer", "to_user_id": callee_id, "data": OFFER})
    ended = (await caller.recv("call_ended"))["payload"]
    assert ended == {"call_id": ended["call_id"], "reason": reason}
    return str(ended["call_id"])
