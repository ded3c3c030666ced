"""A real WebRTC call between two aiortc peers, signaled through roomcast.

No browser: each peer is an aiortc ``RTCPeerConnection`` whose user is connected
to the running server over a real WebSocket. The offer and answer travel as
``webrtc`` messages; the SDP is sent without its candidates, which are trickled
as ``ice_candidate`` messages instead, so ICE only succeeds if roomcast relays
them. Everything stays on 127.0.0.1: no STUN or TURN, and aioice is told that
loopback is the only host address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import pytest
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from tests.harness.client import Client

Connect = Callable[..., Awaitable[Client]]
User = Callable[[str], str]

TIMEOUT = 20.0
END_OF_CANDIDATES = ""


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """The SDP without its candidates, and those candidates as RTCIceCandidateInit dicts."""
    kept: list[str] = []
    found: list[tuple[int, str]] = []  # (m-line index, "candidate:...")
    mids: dict[int, str] = {}
    mline = -1
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            mline += 1
        if line.startswith("a=mid:"):
            mids[mline] = line.removeprefix("a=mid:")
        if line.startswith("a=candidate:"):
            found.append((mline, line.removeprefix("a=")))
        elif line != "a=end-of-candidates":
            kept.append(line)
    candidates = [
        {"candidate": text, "sdpMid": mids[index], "sdpMLineIndex": index} for index, text in found
    ]
    return "\r\n".join(kept), candidates


async def add_candidate(pc: RTCPeerConnection, init: dict[str, Any]) -> None:
    if init["candidate"] == END_OF_CANDIDATES:
        await pc.addIceCandidate(None)
        return
    candidate = candidate_from_sdp(init["candidate"].removeprefix("candidate:"))
    candidate.sdpMid = init["sdpMid"]
    candidate.sdpMLineIndex = init["sdpMLineIndex"]
    await pc.addIceCandidate(candidate)


async def trickle(
    client: Client, call_id: str, to_user_id: str, candidates: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Send each candidate, then end-of-candidates; returns what was sent."""
    end = {"candidate": END_OF_CANDIDATES, "sdpMid": candidates[0]["sdpMid"], "sdpMLineIndex": 0}
    sent = [*candidates, end]
    for data in sent:
        await client.send(
            "webrtc",
            {"type": "ice_candidate", "call_id": call_id, "to_user_id": to_user_id, "data": data},
        )
    return sent


async def receive_trickle(
    client: Client, pc: RTCPeerConnection, call_id: str, sent: list[dict[str, Any]]
) -> None:
    """Receive the peer's relayed candidates, check them, and hand them to ``pc``."""
    for data in sent:
        payload = (await client.recv("webrtc"))["payload"]
        assert payload["type"] == "ice_candidate" and payload["call_id"] == call_id, payload
        assert payload["data"] == data
        await add_candidate(pc, payload["data"])


def state_reached(pc: RTCPeerConnection, state: str) -> asyncio.Event:
    reached = asyncio.Event()

    @pc.on("connectionstatechange")
    def changed() -> None:
        if pc.connectionState == state:
            reached.set()

    return reached


def next_message(channel: RTCDataChannel) -> asyncio.Future[str]:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @channel.on("message")
    def received(message: str) -> None:
        if not future.done():
            future.set_result(message)

    return future


async def test_two_aiortc_peers_connect_through_roomcast_signaling(
    connect: Connect, room_id: int, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    alice_id, bob_id = user("alice"), user("bob")
    alice: Client = await connect(alice_id)
    bob: Client = await connect(bob_id)
    await alice.join(room_id)
    await bob.join(room_id)
    await alice.recv("user_joined")

    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    callee = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    caller_connected = state_reached(caller, "connected")
    callee_connected = state_reached(callee, "connected")
    callee_channel: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()

    @callee.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        callee_channel.set_result(channel)

    try:
        async with asyncio.timeout(TIMEOUT):
            # Caller: a data channel, an offer, and the offer through roomcast.
            channel = caller.createDataChannel("roomcast")
            channel_open = asyncio.Event()
            channel.on("open", channel_open.set)
            caller_hears = next_message(channel)
            await caller.setLocalDescription(await caller.createOffer())
            offer_sdp, offer_candidates = split_candidates(caller.localDescription.sdp)
            assert offer_candidates, caller.localDescription.sdp
            assert all(" 127.0.0.1 " in c["candidate"] for c in offer_candidates)
            offer = {"type": "offer", "sdp": offer_sdp}
            media = {"audio": False, "video": False, "data": True}
            await alice.send(
                "webrtc", {"type": "offer", "to_user_id": bob_id, "data": offer, "media": media}
            )
            ringing = (await alice.recv("call_ringing"))["payload"]
            call_id = ringing["call_id"]
            parties = {"call_id": call_id, "from_user_id": alice_id, "to_user_id": bob_id}
            assert ringing == {**parties, "media": media}
            sent_by_caller = await trickle(alice, call_id, bob_id, offer_candidates)

            # Callee: it rings, takes the offer and the trickled candidates, answers.
            assert (await bob.recv("incoming_call"))["payload"] == {**parties, "media": media}
            relayed_offer = (await bob.recv("webrtc"))["payload"]
            assert relayed_offer == {"type": "offer", **parties, "data": offer}
            await callee.setRemoteDescription(RTCSessionDescription(**relayed_offer["data"]))
            await receive_trickle(bob, callee, call_id, sent_by_caller)
            await callee.setLocalDescription(await callee.createAnswer())
            answer_sdp, answer_candidates = split_candidates(callee.localDescription.sdp)
            assert answer_candidates, callee.localDescription.sdp
            answer = {"type": "answer", "sdp": answer_sdp}
            await bob.send(
                "webrtc",
                {"type": "answer", "call_id": call_id, "to_user_id": alice_id, "data": answer},
            )
            active = {"call_id": call_id, "from_user_id": alice_id, "to_user_id": bob_id}
            assert (await bob.recv("call_active"))["payload"] == active
            sent_by_callee = await trickle(bob, call_id, alice_id, answer_candidates)

            # Caller: the answer, the call is active, then the callee's candidates.
            relayed_answer = (await alice.recv("webrtc"))["payload"]
            assert relayed_answer == {
                "type": "answer",
                "call_id": call_id,
                "from_user_id": bob_id,
                "to_user_id": alice_id,
                "data": answer,
            }
            assert (await alice.recv("call_active"))["payload"] == active
            await caller.setRemoteDescription(RTCSessionDescription(**relayed_answer["data"]))
            await receive_trickle(alice, caller, call_id, sent_by_callee)

            # Media path up: DTLS over ICE over loopback, then SCTP for the data channel.
            await caller_connected.wait()
            await callee_connected.wait()
            assert (caller.connectionState, callee.connectionState) == ("connected", "connected")
            await channel_open.wait()
            remote_channel = await callee_channel
            assert remote_channel.label == "roomcast"
            callee_hears = next_message(remote_channel)
            channel.send("hello from the caller")
            assert await callee_hears == "hello from the caller"
            remote_channel.send("hello from the callee")
            assert await caller_hears == "hello from the callee"

            # Hanging up through roomcast.
            await alice.send("call_end", {"call_id": call_id})
            assert (await bob.recv("call_ended"))["payload"] == {
                "call_id": call_id,
                "reason": "ended",
                "by": alice_id,
            }
            await alice.sync()
            await bob.sync()
    finally:
        await caller.close()
        await callee.close()
    assert (caller.connectionState, callee.connectionState) == ("closed", "closed")
