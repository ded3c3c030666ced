"""The cluster's log on Redis: one stream that every node appends to and reads.

Redis runs commands one at a time, so ``XADD`` gives every entry one place in
one order that all readers see alike; that is all the replicas need (see
:mod:`roomcast.ports.broker`). Each node reads the stream with a blocking
``XREAD`` on its own connection and writes through another; what it appended
during one loop turn becomes one stream record (its entries as one JSON
array, after their lengths: see :func:`~roomcast.ports.broker.encode_batch`),
so Redis work grows with loop turns, not with messages.

Each entry is applied once, in its place, even when it cannot be decoded (see
:mod:`roomcast.adapters.redis_records`).

Liveness: each node refreshes its score (an expiry time, ``node_ttl`` ahead of
Redis's clock) in a sorted set every ``node_ttl / 3`` seconds and reads who else is live,
so a node that stops refreshing is missing from that list, and declared gone
by the node, between ``node_ttl`` and ``node_ttl`` plus one refresh period
after its last refresh. Right after Redis restarted or this node reached it
again, the list is withheld for ``node_ttl``: the others may not have
re-added themselves yet.

When Redis cannot be reached, the node keeps serving its own users: what it
appends is applied locally at once. When Redis answers again (or the node
sees that Redis restarted and lost the stream), the replica is told the log
was interrupted, and the nodes exchange snapshots and read missed messages
from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from roomcast.adapters.redis_records import LogApplier
from roomcast.config import describe
from roomcast.ports.broker import (
    MAX_RECORD_ENTRIES,
    RECORD_FORMAT,
    BrokerState,
    BrokerUnavailable,
    LogCodec,
    LogEntry,
    Replica,
    SnapshotRequest,
    encode_batch,
)

log = logging.getLogger("roomcast.broker")

#: Failures that mean "Redis is not reachable right now".
_UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)


class RedisBroker(LogApplier):
    def __init__(
        self,
        url: str,
        prefix: str = "roomcast",
        node_ttl: float = 10.0,
        node_id: str | None = None,
        max_log_records: int = 20_000,
    ) -> None:
        super().__init__(node_id or uuid.uuid4().hex[:12])
        self.url = url
        self.node_ttl = node_ttl
        self._log_key = f"{prefix}:log"
        self._nodes_key = f"{prefix}:nodes"
        self._max_log = max_log_records
        self._state = BrokerState.CONNECTED
        self._counter = 0
        self._outbox: list[tuple[int, bytes, LogEntry]] = []
        self._wake = asyncio.Event()
        self._last_id = b"0-0"
        self._run_id: str | None = None
        # While the live list may lack nodes that are alive (Redis restarted, or
        # this node was away), it is not passed on before this monotonic time.
        self._live_list_from = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Separate connections: the reader spends its time blocked in XREAD.
        self._writer: redis.Redis = redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._reader: redis.Redis = redis.from_url(url, socket_connect_timeout=2.0)

    def attach(self, replica: Replica) -> None:
        self._replica = replica
        self._codec = replica.codec

    def state(self) -> BrokerState:
        return self._state

    def pending(self) -> int:
        return self._counter - self._applied.get(self.node_id, 0)

    async def ping(self) -> None:
        await asyncio.wait_for(self._writer.ping(), timeout=2.0)

    async def start(self) -> None:
        """Join the cluster: read from the log's current end, then ask for everyone's state."""
        try:
            info = await self._writer.info("server")
            self._run_id = str(info["run_id"])
            newest: Any = await self._writer.xrevrange(self._log_key, count=1)
            if newest:
                self._last_id = bytes(newest[0][0])
            await self._refresh_liveness()
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"Redis at {describe(self.url)}: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_forever(), name="broker-reader"),
            loop.create_task(self._write_forever(), name="broker-writer"),
            loop.create_task(self._watch_forever(), name="broker-liveness"),
        ]
        log.info("broker connected node=%s url=%s", self.node_id, self.url)
        self.append(SnapshotRequest(self.node_id))

    async def close(self) -> None:
        """Write what is still queued, leave the live list, disconnect."""
        self._closing = True
        with contextlib.suppress(*_UNREACHABLE):
            await asyncio.wait_for(self._flush(), timeout=2.0)
        with contextlib.suppress(*_UNREACHABLE):
            await asyncio.wait_for(self._writer.zrem(self._nodes_key, self.node_id), 2.0)
        for task in self._tasks:
            task.cancel()
        # Bounded: redis-py may turn a cancelled read into a connection error,
        # which the loops would otherwise treat as an outage and retry.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._replica = None
        for client in (self._writer, self._reader):
            with contextlib.suppress(*_UNREACHABLE):
                await asyncio.wait_for(client.aclose(), 2.0)

    # -- appending ---------------------------------------------------------------------

    def append(self, entry: LogEntry) -> None:
        self._counter += 1
        if self._state is BrokerState.DEGRADED:
            self._apply(self.node_id, self._counter, entry)
            return
        self._outbox.append((self._counter, LogCodec.encode(entry), entry))
        self._wake.set()

    async def _write_forever(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except RedisTimeout:
                # Slow, not gone: keep the entries queued and try again; the
                # liveness check decides whether Redis is unreachable.
                await asyncio.sleep(0.05)
                self._wake.set()
            except _UNREACHABLE as exc:
                self._degrade(exc)

    async def _flush(self) -> None:
        while self._outbox:
            # One stream record per batch: what was appended during a loop turn
            # costs one XADD and one record to read, not one per entry.
            batch = self._outbox[:MAX_RECORD_ENTRIES]
            await self._writer.xadd(
                self._log_key,
                {
                    "v": RECORD_FORMAT,
                    "o": self.node_id,
                    "n": batch[0][0],  # the first entry's counter; the rest follow on
                    "c": len(batch),
                    "e": encode_batch([data for _, data, _ in batch]),
                },
                maxlen=self._max_log,
                approximate=True,
            )
            # Only what was sent leaves the outbox (a degrade meanwhile emptied it).
            done = batch[-1][0]
            self._outbox = [item for item in self._outbox if item[0] > done]
            for counter, _, entry in batch:
                if counter > self._applied.get(self.node_id, 0):
                    self._in_flight[counter] = entry

    def _degrade(self, exc: BaseException) -> None:
        """Redis is away: apply what was queued here, and everything from now on."""
        if self._state is not BrokerState.DEGRADED:
            log.error("broker unreachable, serving local users only error=%r", exc)
        self._state = BrokerState.DEGRADED
        self._apply_in_flight()
        queued, self._outbox = self._outbox, []
        for counter, _, entry in queued:
            self._apply(self.node_id, counter, entry)

    # -- reading -----------------------------------------------------------------------

    async def _read_forever(self) -> None:
        pause = 0.05
        interrupted = False
        while not self._closing:
            try:
                if interrupted and await self._entries_trimmed():
                    log.warning("log entries were trimmed while away node=%s", self.node_id)
                    if self._replica is not None:
                        self._replica.log_interrupted()
                interrupted = False
                response: Any = await self._reader.xread(
                    # A few records at a time: a node catching up still serves its users.
                    {self._log_key: self._last_id},
                    count=50,
                    block=1000,
                )
            except _UNREACHABLE:
                interrupted = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            pause = 0.05
            for _stream, entries in response or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    self._receive(fields)
            self._resync_if_unreadable()

    async def _entries_trimmed(self) -> bool:
        """Whether entries after the last one read are gone (the stream is capped)."""
        oldest: Any = await self._writer.xrange(self._log_key, count=1)
        if not oldest or self._last_id == b"0-0":
            return False
        # While the last entry read is still there, the oldest one is not after it.
        return _stream_id(bytes(oldest[0][0])) > _stream_id(self._last_id)

    # -- liveness and recovery -----------------------------------------------------------

    async def _watch_forever(self) -> None:
        period = max(self.node_ttl / 3, 0.05)
        while not self._closing:
            await asyncio.sleep(period)
            try:
                await self._refresh_liveness()
            except _UNREACHABLE as exc:
                self._degrade(exc)

    async def _refresh_liveness(self) -> None:
        info: dict[str, Any] = await self._writer.info("server")
        run_id = str(info["run_id"])
        restarted = self._run_id is not None and run_id != self._run_id
        self._run_id = run_id
        # Redis's clock, not this machine's: every node's score is then set and
        # expired by one clock, so a node whose clock runs ahead or behind
        # neither drops the others early nor lingers itself.
        now_ms = int(info.get("server_time_usec", time.time() * 1_000_000)) // 1000
        ttl_ms = int(self.node_ttl * 1000)
        async with self._writer.pipeline(transaction=False) as pipe:
            pipe.zadd(self._nodes_key, {self.node_id: now_ms + ttl_ms})
            pipe.zremrangebyscore(self._nodes_key, "-inf", now_ms)
            pipe.zrangebyscore(self._nodes_key, now_ms, "+inf")
            *_, live = await pipe.execute()
        if restarted:
            log.warning("broker restarted node=%s", self.node_id)
            await self._after_restart()
        if self._state is BrokerState.DEGRADED or restarted:
            self._state = BrokerState.CONNECTED
            log.info("broker reachable again node=%s", self.node_id)
            # The others' scores may have expired meanwhile (or gone with Redis)
            # while they are alive: they re-add themselves within a refresh period.
            self._live_list_from = time.monotonic() + self.node_ttl
            if self._replica is not None:
                self._replica.log_interrupted()
        elif self._state is BrokerState.CONNECTED and await self._entries_trimmed():
            # This node fell further behind than the stream keeps.
            log.warning("log entries were trimmed before this node read them node=%s", self.node_id)
            self._apply_in_flight()
            if self._replica is not None:
                self._replica.log_interrupted()
        if self._replica is not None and time.monotonic() >= self._live_list_from:
            self._replica.nodes_alive({node.decode() for node in live})

    async def _after_restart(self) -> None:
        """Redis restarted: what it lost of ours is applied here, and reading goes on.

        Reading continues after the last entry read: a stream Redis kept on
        disk still holds it, and a new stream's ids (times) are later. Only a
        new stream whose ids are all earlier (the clock went back) is read
        from its start.
        """
        self._apply_in_flight()
        newest: Any = await self._writer.xrevrange(self._log_key, count=1)
        if not newest or _stream_id(bytes(newest[0][0])) < _stream_id(self._last_id):
            self._last_id = b"0-0"


def _stream_id(raw: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = raw.partition(b"-")
    return int(milliseconds), int(sequence or 0)
