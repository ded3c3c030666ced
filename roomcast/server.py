"""Wiring: settings in, a running server out.

Everything is constructed explicitly here, in one place: store, broker,
fan-out, node and its features, endpoints and the aiohttp application. :func:`run` owns the
process: it serves until SIGTERM or SIGINT, then shuts down in order —
stop accepting, close every WebSocket with 1001 after its queued frames,
commit every pending write, exit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
from dataclasses import dataclass

from aiohttp import web

from roomcast.adapters.disk_blobs import DiskBlobs
from roomcast.adapters.local_broker import LocalBroker
from roomcast.adapters.redis_broker import RedisBroker
from roomcast.adapters.stores import open_store
from roomcast.auth import Authenticator
from roomcast.clock import wall_ms
from roomcast.config import Settings, describe
from roomcast.features import default_features
from roomcast.features.files import FileLimits, FileUploads
from roomcast.metrics import Metrics
from roomcast.node.node import Node
from roomcast.ports.broker import Broker
from roomcast.ports.store import Store
from roomcast.transport.admission import Admission
from roomcast.transport.fanout import FanOut
from roomcast.transport.file_routes import FileRoutes
from roomcast.transport.front_door import Gate, request_deadlines
from roomcast.transport.http import HttpApi, protocol_errors
from roomcast.transport.websocket import WebSocketEndpoint

log = logging.getLogger("roomcast.server")


class CannotListen(Exception):
    """The address or port cannot be listened on (taken, not this host's, not allowed)."""


def make_broker(settings: Settings) -> Broker:
    if not settings.broker:
        return LocalBroker()
    return RedisBroker(settings.broker, settings.broker_prefix, settings.node_ttl)


@dataclass
class Server:
    settings: Settings
    app: web.Application
    node: Node
    endpoint: WebSocketEndpoint
    gate: Gate
    store: Store
    broker: Broker

    idle_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.start()
        await self.broker.start()
        self.idle_watch = asyncio.create_task(self.endpoint.watch_idle(), name="idle-watch")

    async def stop(self) -> None:
        if self.idle_watch is not None:
            self.idle_watch.cancel()
        self.gate.close()
        await self.endpoint.close_all()
        await self.node.stop()
        await self.store.close()  # announces what it commits on the way: broker last
        await self.broker.close()


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector from pausing the server for long.

    Every message allocates short-lived objects, so with the default
    thresholds the collector runs all the time, and its full collections,
    which walk every object the process holds (every connection's), paused
    the event loop for tens to hundreds of milliseconds under load
    (``bench/`` sparse traffic: p99 343 ms with the defaults, 18-22 ms
    tuned). Objects alive after start-up are frozen out of the collector's
    view; young collections run a hundred times less often; full
    collections become rare. Reference cycles are still collected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def build(settings: Settings) -> Server:
    settings.check()
    metrics = Metrics()
    store = open_store(settings.database, settings, metrics)
    broker = make_broker(settings)
    auth = Authenticator(settings.auth_secret)
    fanout = FanOut(settings.max_send_buffer)
    node = Node(store, broker, fanout, settings, default_features, metrics)
    fanout.on_overflow = node.slow_consumer
    admission = Admission.for_process(
        settings.max_connections, settings.max_connections_per_ip, settings.reserved_descriptors
    )
    endpoint = WebSocketEndpoint(node, fanout, auth, settings, admission)
    gate = Gate(admission, endpoint, settings.head_timeout, settings.idle_timeout, metrics)
    metrics.gauge(
        "roomcast_tcp_connections",
        "Accepted TCP connections (HTTP, WebSocket and undecided) within the limits.",
        lambda: admission.open,
    )
    api = HttpApi(node, store, auth, settings)
    blobs = DiskBlobs(settings.files)
    limits = FileLimits(
        settings.file_max_bytes, settings.file_quota_bytes, settings.uploads_per_minute
    )
    secret = (settings.file_link_secret or "").encode() or secrets.token_bytes(32)
    uploads = FileUploads(store, blobs, limits, wall_ms)
    files = FileRoutes(
        api, store, blobs, uploads, secret, settings.file_link_ttl, settings.body_timeout
    )
    app = web.Application(
        middlewares=[protocol_errors, request_deadlines(settings.body_timeout)],
        client_max_size=settings.max_message_bytes,
    )
    app.add_routes([web.get("/ws", endpoint.late_upgrade), *api.routes(), *files.routes()])

    async def prepare_files(app: web.Application) -> None:
        await blobs.start()

    app.on_startup.append(prepare_files)
    return Server(settings, app, node, endpoint, gate, store, broker)


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation), then shut down gracefully."""
    server = build(settings)
    await server.start()
    runner = web.AppRunner(server.app, handle_signals=False, access_log=None)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    # One listening socket: roomcast's front door answers WebSocket upgrades
    # itself and hands every other connection to aiohttp (see transport.front_door).
    try:
        listener = await loop.create_server(
            server.gate.factory(runner.server),
            settings.host,
            settings.port,
            reuse_address=True,
            reuse_port=settings.reuse_port,
            backlog=1024,
        )
    except OSError as exc:
        await server.stop()
        await runner.cleanup()
        # uvloop's message repeats the address; a name lookup's errno is negative.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or exc
        raise CannotListen(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None
    log.info(
        "listening host=%s port=%d database=%s broker=%s node=%s mode=%s connections=%d",
        settings.host,
        settings.port,
        describe(settings.database),
        describe(settings.broker) if settings.broker else "local",
        server.broker.node_id,
        "open" if settings.open_mode else "token",
        server.gate.admission.capacity,
    )
    stop = asyncio.Event()
    # The handlers stay installed through shutdown: a second Ctrl-C or SIGTERM
    # must not kill the process before pending writes are committed.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tune_garbage_collector()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
        log.info("shutdown signal received")
    finally:
        listener.close()  # no new connections
        await server.stop()
        await runner.cleanup()
        log.info("stopped")
