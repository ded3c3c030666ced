"""This node's replica of the cluster's live state: log entries in, in log order.

Each entry goes to whoever declared its type: the node's own entries
(connections opening and closing, time passing, snapshots, nodes gone) are
applied here, every other kind by its feature. A node's snapshot is
assembled from each feature's part, and applied part by part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from roomcast.node.feature import Applier, Feature, NodeParts
from roomcast.ports.broker import (
    NODE_ENTRIES,
    Closed,
    ConnectionState,
    Identified,
    LogCodec,
    LogEntry,
    NodeGone,
    Opened,
    Snapshot,
    SnapshotRequest,
    Tick,
)

log = logging.getLogger("roomcast.node")

_encode = msgspec.json.encode


class Replica:
    def __init__(self, parts: NodeParts, features: Sequence[Feature]) -> None:
        self.parts = parts
        self.node_id = parts.broker.node_id
        self._features = features
        own: dict[type[LogEntry], Applier] = {
            Opened: self._opened,
            Identified: self._identified,
            Closed: self._closed,
            Tick: self._tick,
            NodeGone: self._node_gone,
            SnapshotRequest: self._snapshot_requested,
            Snapshot: self._snapshot,
        }
        assert set(own) == set(NODE_ENTRIES)
        self._appliers = own
        for feature in features:
            for entry_type, applier in feature.appliers().items():
                if entry_type in self._appliers:
                    raise ValueError(f"two appliers for {entry_type.__name__}")
                self._appliers[entry_type] = applier
        self.codec = LogCodec(self._appliers)
        observers: dict[type[LogEntry], list[Applier]] = {}
        for feature in features:
            for entry_type, observer in feature.observers().items():
                if entry_type not in self._appliers:
                    raise ValueError(f"nothing applies {entry_type.__name__}")
                observers.setdefault(entry_type, []).append(observer)
        # An entry with observers gets one applier that calls them after its
        # own: entries without any cost nothing more.
        for entry_type, following in observers.items():
            self._appliers[entry_type] = _followed(self._appliers[entry_type], following)
        self._announce_due = False  # a snapshot waits for this node's entries in flight
        # Nodes whose snapshot this node waits for before it is ready (None: not asked yet).
        self._awaiting_snapshots: set[str] | None = None
        self._ready_by = float("inf")
        #: Called with the user whose last connection on this node left the replica.
        self.user_gone: Callable[[str], None] = lambda user_id: None

    def apply(self, entry: LogEntry, origin: str) -> None:
        """Apply one log entry to this node's replica and tell local connections."""
        here = origin == self.node_id
        try:
            self._appliers[type(entry)](entry, here)
        finally:
            if here and self._announce_due:
                self._announce()

    # -- connections ---------------------------------------------------------------

    def _opened(self, entry: Opened, here: bool) -> None:
        self._add_connection(entry.conn, entry.node, entry.user)

    def _add_connection(self, conn_id: str, node: str, user_id: str | None) -> None:
        if self.parts.registry.place(conn_id, node):
            self.parts.engine.open(conn_id, user_id)

    def _identified(self, entry: Identified, here: bool) -> None:
        engine = self.parts.engine
        if self.parts.registry.in_replica(entry.conn) and engine.user_of(entry.conn) is None:
            engine.identify(entry.conn, entry.user)

    def _closed(self, entry: Closed, here: bool) -> None:
        self._remove_connection(entry.conn, entry.at, entry.wall, here)

    def _remove_connection(self, conn_id: str, at: float, wall: int, here: bool) -> None:
        parts = self.parts
        if not parts.registry.forget(conn_id):
            return
        parts.waits.settle(conn_id)
        parts.outbox.membership_changed(parts.engine.rooms.rooms_of(conn_id))
        user_id = parts.engine.user_of(conn_id)
        for feature in self._features:
            feature.connection_leaving(conn_id, wall, here)
        parts.outbox.deliver(parts.engine.close(conn_id, at))
        if user_id is not None and not parts.registry.holds_user(user_id):
            self.user_gone(user_id)

    def _tick(self, entry: Tick, here: bool) -> None:
        for feature in self._features:
            feature.time_passed(entry.at, entry.wall, here)
        self.parts.arm_timer()

    # -- nodes -----------------------------------------------------------------------

    def _node_gone(self, entry: NodeGone, here: bool) -> None:
        if entry.node == self.node_id:
            # Declared dead while alive (a long pause): announce ourselves again.
            self._announce()
            return
        log.warning("node gone node=%s", entry.node)
        for conn_id in self.parts.registry.of_node(entry.node):
            self._remove_connection(conn_id, entry.at, entry.wall, here)

    def _snapshot_requested(self, entry: SnapshotRequest, here: bool) -> None:
        self._announce()
        if entry.recovering and not here:
            # That node stored its users' messages while cut off: re-read our rooms.
            self.parts.room_order.catch_up_rooms()

    def _snapshot(self, entry: Snapshot, here: bool) -> None:
        """Make this replica's picture of ``entry.node`` what that node says it holds."""
        if entry.node == self.node_id:
            return
        if self._awaiting_snapshots is not None:
            self._awaiting_snapshots.discard(entry.node)
        listed = {state.conn for state in entry.connections}
        for conn_id in self.parts.registry.of_node(entry.node):
            if conn_id not in listed:
                self._remove_connection(conn_id, entry.at, entry.wall, here)
        engine = self.parts.engine
        for state in entry.connections:
            self._add_connection(state.conn, entry.node, None)
            if state.user is not None and engine.user_of(state.conn) is None:
                engine.identify(state.conn, state.user)
        for feature in self._features:
            part = entry.parts.get(feature.name)
            if part is None:
                continue
            try:
                feature.restore_part(entry, bytes(part), here)
            except Exception:  # one odd part must not stop the rest
                log.exception("snapshot part skipped node=%s part=%s", entry.node, feature.name)
        self.parts.arm_timer()

    def _announce(self) -> None:
        """Append this node's snapshot once its own earlier entries are applied here.

        A snapshot taken while some of this node's entries are still on their
        way through the log would describe a state older than its position in
        the log: the replicas would apply those entries, then the snapshot,
        and undo them.
        """
        if self.parts.broker.pending():
            self._announce_due = True
            return
        self._announce_due = False
        self.parts.append(self.snapshot())

    def snapshot(self) -> Snapshot:
        """What this node holds, for the other replicas."""
        engine = self.parts.engine
        connections = tuple(
            ConnectionState(conn=conn_id, user=engine.user_of(conn_id))
            for conn_id in self.parts.registry.own_ids()
        )
        parts: dict[str, Any] = {}
        for feature in self._features:
            part = feature.snapshot_part()
            if part is not None:
                parts[feature.name] = msgspec.Raw(_encode(part))
        clock = self.parts.clock
        return Snapshot(self.node_id, connections, parts, clock.now(), clock.wall_ms())

    # -- the log's health and the cluster's nodes ---------------------------------------

    def log_interrupted(self, unreadable: int = 0) -> None:
        """Log entries may have been lost (or were unreadable): re-announce, ask the
        others, re-read rooms."""
        self.parts.metrics.log_unreadable_entries += unreadable
        log.warning(
            "log interrupted: resynchronising node=%s unreadable=%d", self.node_id, unreadable
        )
        self.parts.append(SnapshotRequest(self.node_id, recovering=True))
        self.parts.room_order.catch_up_rooms()

    @property
    def ready(self) -> bool:
        """Whether this node's replica knows the cluster (every live node has sent
        its snapshot, or ``node_ttl`` passed): until then it would decide, say,
        that a callee on another node is unavailable."""
        if self._awaiting_snapshots is None:
            return self.node_id == "local"
        return not self._awaiting_snapshots or self.parts.clock.now() >= self._ready_by

    def nodes_alive(self, live: set[str]) -> None:
        """The broker's list of live nodes: any other node not in it is gone.

        Missing from the list already means ``node_ttl`` without a refresh (the
        score expired), so it is declared gone at once: waiting here too would
        make that twice ``node_ttl``.
        """
        clock = self.parts.clock
        now = clock.now()
        if self._awaiting_snapshots is None:  # the first list: whom to hear from
            self._awaiting_snapshots = live - {self.node_id}
            self._ready_by = now + self.parts.settings.node_ttl
        for node in sorted(self.parts.registry.nodes() - live - {self.node_id}):
            self.parts.append(NodeGone(node, now, clock.wall_ms()))


def _followed(applier: Applier, observers: Sequence[Applier]) -> Applier:
    if len(observers) == 1:  # the usual case, without a loop
        (observer,) = observers

        def apply_one(entry: Any, here: bool) -> None:
            applier(entry, here)
            observer(entry, here)

        return apply_one

    def apply(entry: Any, here: bool) -> None:
        applier(entry, here)
        for each in observers:
            each(entry, here)

    return apply
