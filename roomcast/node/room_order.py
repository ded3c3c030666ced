"""Chat messages to this node's members in each room's sequence order, gaps filled.

Messages reach the log in commit order per node, which across nodes may not
be the room's order; the core's :class:`~roomcast.core.ordering.RoomSequencer`
holds a message back until those before it arrived, and what does not arrive
in time is read from the database. After the log was interrupted (or another
node recovered from being cut off) the node's rooms are re-read from the
database too: a message stored meanwhile would otherwise wait for the room's
next one.
"""

from __future__ import annotations

import asyncio
import logging

from roomcast.clock import Clock
from roomcast.core.engine import ChatEngine
from roomcast.core.ordering import RoomSequencer
from roomcast.metrics import Metrics
from roomcast.node.connections import ConnectionRegistry
from roomcast.node.outbox import Outbox
from roomcast.node.tasks import BackgroundTasks
from roomcast.ports.store import Store

log = logging.getLogger("roomcast.node")

#: Rooms whose missed messages are read from the database at once.
_CATCH_UP_AT_ONCE = 8


class RoomOrder:
    def __init__(
        self,
        gap_wait: float,
        store: Store,
        outbox: Outbox,
        engine: ChatEngine,
        registry: ConnectionRegistry,
        metrics: Metrics,
        tasks: BackgroundTasks,
        clock: Clock,
    ) -> None:
        self.sequencer: RoomSequencer[bytes] = RoomSequencer(gap_wait, clock.now)
        self._store = store
        self._outbox = outbox
        self._engine = engine
        self._registry = registry
        self._metrics = metrics
        self._tasks = tasks
        self._clock = clock
        self._gap_timer: asyncio.TimerHandle | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self._catch_up_again = False

    def offer(self, room_id: int, seq: int, payload: bytes) -> None:
        """A stored message of the room: sent when those before it have been."""
        released = self.sequencer.offer(room_id, seq, payload)
        if released:
            self._outbox.chat(room_id, released)
        else:
            self._arm_gap_timer()

    def start(self, room_id: int, floor: int) -> None:
        self.sequencer.start(room_id, floor)

    def delivered(self, room_id: int) -> int:
        return self.sequencer.delivered(room_id)

    def pause(self, room_id: int) -> None:
        """Hold the room's live messages back (its joiner's backlog goes first)."""
        self.sequencer.pause(room_id)

    def resume(self, room_id: int) -> None:
        self._outbox.chat(room_id, self.sequencer.resume(room_id))

    # -- gaps ---------------------------------------------------------------------------

    async def _fill(self, room_id: int, after: int, through: int) -> None:
        """Read a gap from the database; what arrives meanwhile waits (the room is paused)."""
        self.sequencer.pause(room_id)
        released: list[bytes] = []
        try:
            found: list[tuple[int, bytes]] = []
            if self._has_local_members(room_id):
                rows = await self._store.messages_in_seq_range(room_id, after, through)
                found = [(item.seq, self._outbox.encode(item.message)) for item in rows]
                self._metrics.gap_fills += 1
            released = self.sequencer.fill(room_id, found, through)
        except Exception as exc:
            log.error("gap fill failed room=%s error=%r", room_id, exc)
        finally:
            self._outbox.chat(room_id, released + self.sequencer.resume(room_id))
            self._arm_gap_timer()

    def _has_local_members(self, room_id: int) -> bool:
        return any(self._registry.is_own(c) for c in self._engine.rooms.connections(room_id))

    def _arm_gap_timer(self) -> None:
        deadline = self.sequencer.next_deadline()
        if deadline is None or self._gap_timer is not None:
            return
        delay = max(0.0, deadline - self._clock.now())
        self._gap_timer = asyncio.get_running_loop().call_later(delay, self._gaps_due)

    def _gaps_due(self) -> None:
        self._gap_timer = None
        for gap in self.sequencer.overdue():
            self._tasks.spawn(self._fill(gap.room, gap.after, gap.through))
        self._arm_gap_timer()

    def stop(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    # -- catching up after an interruption -------------------------------------------

    def catch_up_rooms(self) -> None:
        """Read what this node's rooms may have missed from the database.

        One pass at a time, a few rooms at once (every node does this at the
        same moment, against one database); a request during a pass makes one
        more pass follow.
        """
        if self._catching_up is not None:
            self._catch_up_again = True
            return
        self._catching_up = self._tasks.spawn(self._catch_up_passes())

    async def _catch_up_passes(self) -> None:
        try:
            while True:
                self._catch_up_again = False
                rooms = sorted(
                    {r for c in self._registry.own_ids() for r in self._engine.rooms.rooms_of(c)}
                )
                for start in range(0, len(rooms), _CATCH_UP_AT_ONCE):
                    batch = rooms[start : start + _CATCH_UP_AT_ONCE]
                    await asyncio.gather(*(self._catch_up(room_id) for room_id in batch))
                if not self._catch_up_again:
                    return
        finally:
            self._catching_up = None

    async def _catch_up(self, room_id: int) -> None:
        try:
            room = await self._store.get_room(room_id)
        except Exception as exc:
            log.error("catch-up failed room=%s error=%r", room_id, exc)
            return
        if room is not None and room.last_seq > self.sequencer.delivered(room_id):
            await self._fill(room_id, self.sequencer.delivered(room_id), room.last_seq)
