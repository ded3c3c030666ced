"""The corked fan-out: one write per connection per loop turn, order kept."""

from __future__ import annotations

import asyncio

from roomcast.transport.fanout import FanOut


class FakeTransport:
    """Records writes; a stand-in for a socket, which this layer only writes to."""

    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.closing = True


async def test_room_frames_share_one_buffer_and_one_write_per_connection() -> None:
    fanout = FanOut(1 << 20, lambda conn: None)
    transports = {name: FakeTransport() for name in ("a", "b", "c")}
    for name, transport in transports.items():
        fanout.add(name, transport)
    for i in range(5):
        fanout.send_room(1, ["a", "b", "c"], f"m{i}".encode())
    await asyncio.sleep(0)
    writes = [t.writes for t in transports.values()]
    assert all(len(w) == 1 for w in writes)
    assert writes[0][0] == b"m0m1m2m3m4"
    assert writes[0][0] is writes[1][0] is writes[2][0]  # built once, shared


async def test_directed_frame_keeps_its_place_among_room_frames() -> None:
    fanout = FanOut(1 << 20, lambda conn: None)
    a, b = FakeTransport(), FakeTransport()
    fanout.add("a", a)
    fanout.add("b", b)
    fanout.send_room(1, ["a", "b"], b"r1,")
    fanout.send(["a"], b"direct,")
    fanout.send_room(1, ["a", "b"], b"r2,")
    await asyncio.sleep(0)
    assert a.writes == [b"r1,direct,r2,"]
    assert b.writes == [b"r1,r2,"]


async def test_membership_change_starts_a_new_batch() -> None:
    fanout = FanOut(1 << 20, lambda conn: None)
    a, b = FakeTransport(), FakeTransport()
    fanout.add("a", a)
    fanout.add("b", b)
    fanout.send_room(1, ["a"], b"before,")
    fanout.membership_changed(1)
    fanout.send_room(1, ["a", "b"], b"after,")
    await asyncio.sleep(0)
    assert a.writes == [b"before,after,"]
    assert b.writes == [b"after,"]


async def test_overflow_is_reported_and_removed_connections_get_nothing() -> None:
    overflowed: list[str] = []
    fanout = FanOut(100, overflowed.append)
    slow, gone = FakeTransport(buffered=101), FakeTransport()
    fanout.add("slow", slow)
    fanout.add("gone", gone)
    fanout.send(["slow", "gone"], b"x")
    fanout.remove("gone")
    await asyncio.sleep(0)
    assert overflowed == ["slow"]
    assert gone.writes == []


async def test_flushing_one_connection_does_not_cut_the_others_short() -> None:
    fanout = FanOut(1 << 20, lambda conn: None)
    a, b = FakeTransport(), FakeTransport()
    fanout.add("a", a)
    fanout.add("b", b)
    fanout.send_room(1, ["a", "b"], b"one,")
    fanout.flush_connection("a")  # e.g. a is being closed
    fanout.send_room(1, ["a", "b"], b"two,")
    await asyncio.sleep(0)
    assert b"".join(b.writes) == b"one,two,"
    assert b"".join(a.writes) == b"one,two,"


async def test_a_newer_pong_replaces_an_unsent_one_and_keeps_its_order() -> None:
    fanout = FanOut(1 << 20, lambda conn: None)
    a = FakeTransport()
    fanout.add("a", a)
    for i in range(1000):
        fanout.send_pong("a", b"pong%d," % i)
    await asyncio.sleep(0)
    assert a.writes == [b"pong999,"]
    fanout.send_room(1, ["a"], b"r1,")
    fanout.send_pong("a", b"p1,")
    fanout.send_room(1, ["a"], b"r2,")
    fanout.send_pong("a", b"p2,")  # answers a ping that came after r2 was queued
    fanout.send_room(1, ["a"], b"r3,")
    await asyncio.sleep(0)
    assert a.writes[1] == b"r1,r2,p2,r3,"


class CountingQueue(list[bytes | object]):
    """A connection's queue that counts how often its items are looked at."""

    looks = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        CountingQueue.looks += 1
        return super().__getitem__(index)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for item in super().__iter__():
            CountingQueue.looks += 1
            yield item


async def test_directed_frames_never_rescan_the_queue() -> None:
    """Each queued item is looked at once however many directed frames follow
    (a rescan per frame made a burst of pings cost quadratic time)."""
    fanout = FanOut(1 << 20, lambda conn: None)
    a = FakeTransport()
    fanout.add("a", a)
    fanout._outlets["a"].queue = CountingQueue()  # type: ignore[assignment]
    CountingQueue.looks = 0
    for i in range(2000):
        fanout.send_room(i % 7, ["a"], b"r")
        fanout.send(["a"], b"d")
    assert CountingQueue.looks <= 2 * 4000
    await asyncio.sleep(0)
    assert a.writes == [b"rd" * 2000]
