"""Per-room delivery in sequence order, whatever order messages arrive in.

Every stored message gets the next number of its room's sequence in the same
transaction as its insert, so within a room sequence order is commit order
(and id order). When several nodes commit into one room at the same moment,
their announcements can reach a node in a different order, and one can be
lost while the broker is away. :class:`RoomSequencer` restores the order: a
message whose predecessor has not arrived is held back; if the predecessor is
still missing after ``gap_wait`` seconds the caller reads the gap from the
database and hands it in with :meth:`RoomSequencer.fill`.

A room can also be *paused* while a joining connection's backlog is read, so
that the backlog goes out before anything newer. The sequencer is a plain
state machine: the clock is passed in (tests control it) and nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _RoomOrder(Generic[T]):
    delivered: int  # every sequence number up to this one has been handed out
    held: dict[int, T] = field(default_factory=dict)
    paused: int = 0
    waiting_since: float | None = None  # when the current gap was first seen
    # The database has been read through this number: what is not held up to
    # here does not exist any more (deleted) and is skipped, not waited for.
    settled: int = 0


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers ``after < seq <= through`` of ``room`` must be read (some never
    arrived; the ones that did are kept as they are)."""

    room: int
    after: int
    through: int


class RoomSequencer(Generic[T]):
    def __init__(self, gap_wait: float, clock: Callable[[], float]) -> None:
        self.gap_wait = gap_wait
        self._clock = clock  # read only when a gap starts or is checked
        self._rooms: dict[int, _RoomOrder[T]] = {}

    def start(self, room: int, floor: int) -> None:
        """Count from ``floor`` in a room this node has seen nothing of yet."""
        if room not in self._rooms:
            self._rooms[room] = _RoomOrder(delivered=floor)

    def delivered(self, room: int) -> int:
        order = self._rooms.get(room)
        return 0 if order is None else order.delivered

    def offer(self, room: int, seq: int, item: T) -> list[T]:
        """An arrival; returns what can be delivered now, in order."""
        order = self._rooms.get(room)
        if order is None:
            # The first message of a room seen since this node started: nothing
            # before it was meant for this node's connections.
            order = self._rooms[room] = _RoomOrder(delivered=seq - 1)
        if seq == order.delivered + 1 and not order.held and not order.paused:
            order.delivered = seq  # the usual case: next in line, nothing waiting
            return [item]
        if seq <= order.delivered or seq in order.held:
            return []  # already delivered (a gap fill and the log both had it)
        order.held[seq] = item
        return self._release(order)

    def pause(self, room: int) -> None:
        order = self._rooms.get(room)
        if order is None:
            order = self._rooms[room] = _RoomOrder(delivered=0)
        order.paused += 1

    def resume(self, room: int) -> list[T]:
        order = self._rooms[room]
        order.paused -= 1
        return self._release(order)

    def fill(self, room: int, found: list[tuple[int, T]], through: int) -> list[T]:
        """The database's view of ``(after, through]``: what it has joins what is held,
        numbers it lacks (deleted messages) are skipped. Returns what can be
        delivered now; nothing while the room is paused (a backlog read still
        has to go first), in which case the resume releases it."""
        order = self._rooms[room]
        for seq, item in found:
            if order.delivered < seq <= through:
                order.held.setdefault(seq, item)
        order.settled = max(order.settled, through)
        order.waiting_since = None
        return self._release(order)

    def overdue(self) -> list[Gap]:
        """Gaps that have waited ``gap_wait`` and must be read from the database."""
        gaps = []
        now = self._clock()
        for room, order in self._rooms.items():
            if (
                order.held
                and not order.paused
                and order.waiting_since is not None
                and now - order.waiting_since >= self.gap_wait
            ):
                # Through the newest message held: one read settles every gap
                # before it (while the log is down, each message is behind one).
                gaps.append(Gap(room, order.delivered, max(order.held)))
        return gaps

    def next_deadline(self) -> float | None:
        waits = [
            order.waiting_since
            for order in self._rooms.values()
            if order.waiting_since is not None and order.held and not order.paused
        ]
        return min(waits) + self.gap_wait if waits else None

    def _release(self, order: _RoomOrder[T]) -> list[T]:
        if order.paused:
            return []
        out: list[T] = []
        held = order.held
        while True:
            following = order.delivered + 1
            if following in held:
                out.append(held.pop(following))
            elif following > order.settled:
                break
            order.delivered = following
        if not held:
            order.waiting_since = None
        elif order.waiting_since is None:
            order.waiting_since = self._clock()
        return out
