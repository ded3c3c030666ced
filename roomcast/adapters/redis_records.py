"""Applying the cluster log's records: every entry once, in its place.

Every entry carries its origin node and that node's counter, so an entry is
applied at most once even when it is both applied locally (while Redis is
away) and later read back from the stream. An entry that cannot be decoded is
skipped in its place, the rest of its record is applied, and the replica
resynchronises as after an outage (nothing a client sends can cause that: the
protocol bounds what it accepts; this is for bugs and foreign writers).

None of this does I/O, so it is kept apart from the Redis connections and
loops of :class:`~roomcast.adapters.redis_broker.RedisBroker`, which builds on it.
"""

from __future__ import annotations

import logging
import time

from roomcast.ports.broker import (
    MAX_RECORD_ENTRIES,
    RECORD_FORMAT,
    LogCodec,
    LogEntry,
    RecordUnreadable,
    Replica,
    Unreadable,
)

log = logging.getLogger("roomcast.broker")

#: Unreadable log entries resynchronise the replica at most this often (seconds):
#: a run of bad records must not become a storm of snapshots.
RESYNC_INTERVAL = 1.0


class LogApplier:
    """What a node has applied of each origin's entries, and the replica it applies them to.

    A base class, not a part the broker holds: the broker applies its own
    entries by the same counters when Redis is away, so both share one state.
    """

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._replica: Replica | None = None
        self._codec: LogCodec | None = None  # the replica's, once attached
        self._applied: dict[str, int] = {}  # origin node -> last counter applied
        # Written to the stream, not read back yet: applied here if Redis loses them.
        self._in_flight: dict[int, LogEntry] = {}
        self._unreadable = 0  # entries skipped since the last resynchronisation
        self._foreign_nodes: set[str] = set()  # nodes whose record format is not ours
        self._resync_after = 0.0  # monotonic time before which none is started

    def _receive(self, fields: dict[bytes, bytes]) -> None:
        try:
            origin = fields[b"o"].decode()
            version = int(fields.get(b"v", b"1"))
            if version != RECORD_FORMAT:
                self._foreign_format(origin, version)
                return
            first = int(fields[b"n"])
            count = int(fields[b"c"])
            if not 1 <= count <= MAX_RECORD_ENTRIES:
                raise ValueError(f"a record of {count} entries")
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            # Whose entries these were is unknown: only a resynchronisation helps.
            log.error("unreadable log record skipped error=%r", exc)
            self._unreadable += 1
            return
        entries: list[LogEntry | Unreadable]
        assert self._codec is not None, "records are read only once a replica is attached"
        try:
            entries = self._codec.decode_batch(fields[b"e"])
            if len(entries) != count:
                raise RecordUnreadable(f"{len(entries)} entries, not {count}")
        except (KeyError, RecordUnreadable) as exc:
            entries = [Unreadable(f"the record is unreadable: {exc!r}")] * count
        for offset, entry in enumerate(entries):
            if isinstance(entry, Unreadable):
                self._skip(origin, first + offset, entry)
            else:
                self._apply(origin, first + offset, entry)

    def _foreign_format(self, origin: str, version: int) -> None:
        """A record of another version of roomcast: said once per node, then skipped."""
        if origin not in self._foreign_nodes:
            self._foreign_nodes.add(origin)
            log.error(
                "node %s writes log records in format %d, this node reads format %d: "
                "every node of a cluster must run one version (stop them all to upgrade)",
                origin,
                version,
                RECORD_FORMAT,
            )
        self._unreadable += 1

    def _skip(self, origin: str, counter: int, entry: Unreadable) -> None:
        """An entry nobody could decode: its place is passed, its effect comes back
        with the snapshots of the resynchronisation that follows."""
        if counter <= self._applied.get(origin, 0):
            return  # applied already (locally while Redis was away)
        log.error(
            "unreadable log entry skipped origin=%s counter=%d error=%s",
            origin,
            counter,
            entry.error,
        )
        self._unreadable += 1
        original = self._in_flight.get(counter) if origin == self.node_id else None
        if original is None:
            self._applied[origin] = counter
        else:
            # This node's own entry is still here as it was appended: applied here,
            # this replica stays true to what this node did, and its snapshot then
            # tells the others.
            self._apply(origin, counter, original)

    def _resync_if_unreadable(self) -> None:
        """After unreadable entries: resynchronise, at most once per ``RESYNC_INTERVAL``.

        Called after every read (which blocks for at most a second), so a
        resynchronisation held back is started soon after the interval.
        """
        if not self._unreadable or self._replica is None:
            return
        now = time.monotonic()
        if now < self._resync_after:
            return
        self._resync_after = now + RESYNC_INTERVAL
        unreadable, self._unreadable = self._unreadable, 0
        self._replica.log_interrupted(unreadable)

    def _apply(self, origin: str, counter: int, entry: LogEntry) -> None:
        if counter <= self._applied.get(origin, 0):
            return  # applied already (locally while Redis was away)
        self._applied[origin] = counter
        if origin == self.node_id:
            self._in_flight.pop(counter, None)
        if self._replica is None:
            return
        try:
            self._replica.apply(entry, origin)
        except Exception:
            log.exception("log entry failed kind=%s origin=%s", type(entry).__name__, origin)

    def _apply_in_flight(self) -> None:
        """Apply here what was written but not read back: it may never come back.

        If it still does (Redis was only slow), the counter makes it a no-op.
        """
        in_flight, self._in_flight = self._in_flight, {}
        for counter in sorted(in_flight):
            self._apply(self.node_id, counter, in_flight[counter])
