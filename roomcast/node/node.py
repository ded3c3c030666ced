"""The node: its parts wired together, and the surface the transport uses.

Explicit wiring, no registry magic: the node builds its shared parts, hands
them to each feature, builds the session's routes and the replica's
appliers from what the features declare, and attaches the replica to the
log. The transport (WebSocket and HTTP) talks to the node through the
methods below, never to its parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from roomcast.clock import Clock
from roomcast.config import Settings
from roomcast.core.engine import ChatEngine
from roomcast.core.limits import RateLimiter, parse_rates
from roomcast.metrics import Metrics
from roomcast.node.connections import ConnectionRegistry, LocalConnection
from roomcast.node.feature import Feature, NodeParts
from roomcast.node.outbox import Outbox
from roomcast.node.replica import Replica
from roomcast.node.room_order import RoomOrder
from roomcast.node.session import Session
from roomcast.node.tasks import BackgroundTasks
from roomcast.node.timer import DeadlineTimer
from roomcast.node.waits import AppliedWaits
from roomcast.ports.broker import Broker, BrokerState
from roomcast.ports.outlet import Outlet, Writable
from roomcast.ports.store import ProbeWrite, Result, Store, StoreUnavailable
from roomcast.protocol import RoomUser


def rate_limiter(settings: Settings) -> RateLimiter | None:
    if settings.rate_limits == "off":
        return None
    rates = parse_rates("" if settings.rate_limits == "default" else settings.rate_limits)
    return RateLimiter(rates, flood_strikes=settings.flood_strikes)


class Node:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        outlet: Outlet,
        settings: Settings,
        features: Callable[[NodeParts], Sequence[Feature]],
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        clock = clock or Clock()
        metrics = metrics or Metrics()
        engine = ChatEngine(settings.typing_timeout, settings.away_after)
        registry = ConnectionRegistry()
        tasks = BackgroundTasks()
        outbox = Outbox(outlet, engine, registry, metrics, clock)
        room_order = RoomOrder(
            settings.gap_wait, store, outbox, engine, registry, metrics, tasks, clock
        )
        self.parts = parts = NodeParts(
            settings=settings,
            clock=clock,
            store=store,
            broker=broker,
            metrics=metrics,
            engine=engine,
            registry=registry,
            outbox=outbox,
            room_order=room_order,
            waits=AppliedWaits(settings.log_timeout),
            tasks=tasks,
            limiter=rate_limiter(settings),
            arm_timer=lambda: self.timer.arm(),
        )
        self.features = list(features(parts))
        self.timer = DeadlineTimer([f.next_deadline for f in self.features], broker.append, clock)
        self.session = Session(parts, [r for f in self.features for r in f.routes()], self.features)
        self.replica = Replica(parts, self.features)
        self.replica.user_gone = self._user_gone
        self._write_probe: asyncio.Future[bool] | None = None
        broker.attach(self.replica)
        metrics.gauge("roomcast_connections", "Open WebSocket connections.", registry.own_count)
        metrics.gauge(
            "roomcast_users", "Users with at least one connection.", engine.presence.user_count
        )
        metrics.gauge(
            "roomcast_rooms", "Rooms with at least one connection.", engine.rooms.room_count
        )

    def feature(self, cls: type[Feature]) -> Any:
        """The node's instance of a feature class (for the HTTP handlers that need one)."""
        for feature in self.features:
            if isinstance(feature, cls):
                return feature
        raise LookupError(cls.__name__)

    def _user_gone(self, user_id: str) -> None:
        # The user's shared rate bucket lives as long as they have a connection here.
        if self.parts.limiter is not None:
            self.parts.limiter.forget_user(user_id)

    # -- the WebSocket side -----------------------------------------------------------

    def open(
        self,
        remote: str,
        close: Callable[[int, str], Coroutine[Any, Any, None]],
        transport: Writable,
        user_id: str | None,
    ) -> LocalConnection:
        return self.session.open(remote, close, transport, user_id)

    def closed(self, conn: LocalConnection, reason: str) -> None:
        self.session.closed(conn, reason)

    def receive_now(
        self, conn: LocalConnection, data: bytes | str
    ) -> Coroutine[Any, Any, None] | None:
        return self.session.receive_now(conn, data)

    async def receive(self, conn: LocalConnection, data: bytes | str) -> None:
        """Handle one client frame; every failure becomes an ``error`` frame."""
        pending = self.session.receive_now(conn, data)
        if pending is not None:
            await pending

    def receive_binary(self, conn: LocalConnection) -> None:
        self.session.receive_binary(conn)

    def control_frame(self, conn: LocalConnection) -> bool:
        return self.session.control_frame(conn)

    def stop_sending(self, conn: LocalConnection) -> None:
        self.session.stop_sending(conn)

    def slow_consumer(self, conn_id: str) -> None:
        self.session.slow_consumer(conn_id)

    def connections(self) -> list[LocalConnection]:
        return self.parts.registry.own()

    def connection_count(self, user_id: str) -> int:
        return self.session.connection_count(user_id)

    # -- the HTTP side -------------------------------------------------------------------

    @property
    def metrics(self) -> Metrics:
        return self.parts.metrics

    @property
    def node_id(self) -> str:
        return self.parts.broker.node_id

    def broker_state(self) -> BrokerState:
        return self.parts.broker.state()

    @property
    def ready(self) -> bool:
        return self.replica.ready

    def room_users_page(
        self, room_id: int, after: str | None, limit: int
    ) -> tuple[list[RoomUser], bool]:
        return self.parts.engine.room_users_page(room_id, after, limit)

    async def writes_work(self) -> bool:
        """Commit a :class:`ProbeWrite`: whether write transactions succeed now.

        For ``/health`` after commits failed, so that it can tell a recovered
        database without waiting for a user to write. One probe at a time;
        callers meanwhile share its answer.
        """
        probe = self._write_probe
        if probe is None or probe.done():
            probe = self._write_probe = asyncio.get_running_loop().create_future()

            def settle(result: Result | None, error: BaseException | None) -> None:
                if not probe.done():
                    probe.set_result(error is None)

            try:
                self.parts.store.submit(ProbeWrite(self.parts.clock.wall_ms()), settle)
            except (RuntimeError, StoreUnavailable):
                probe.set_result(False)
        try:
            timeout = self.parts.settings.db_timeout + 1
            return await asyncio.wait_for(asyncio.shield(probe), timeout)
        except TimeoutError:
            return False

    async def stop(self) -> None:
        """Stop the timers and background tasks (after the connections are closed)."""
        self.timer.stop()
        self.parts.room_order.stop()
        await self.parts.tasks.cancel_all()
