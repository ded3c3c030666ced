"""Servers and clusters that several integration test files start the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.harness.backends import drop_cluster_state
from tests.harness.calls import AUTH_SECRET, TURN_SECRET
from tests.harness.cluster import Cluster, cluster_name
from tests.harness.pool import Pool
from tests.harness.server import ServerProcess


@pytest.fixture(scope="module")
def tuned_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Short ringing, calls outside rooms allowed, STUN and TURN configured."""
    database = tmp_path_factory.mktemp("calls-tuned") / "roomcast.db"
    process = ServerProcess(
        database,
        "--ring-timeout", "0.5",
        "--allow-calls-outside-rooms",
        "--stun-urls", "stun:a,stun:b",
        "--turn-urls", "turn:t:3478",
        "--turn-secret", TURN_SECRET,
        "--turn-ttl", "600",
    ).start()  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("calls-auth") / "roomcast.db"
    process = ServerProcess(database, "--auth-secret", AUTH_SECRET).start()
    yield process
    process.stop()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A cluster of the test's own: its schema and keys are dropped before and after."""
    name = cluster_name()
    drop_cluster_state(name)
    state = Cluster(name, tmp_path)
    try:
        yield state
    finally:
        await state.close()
        state.dump_logs()
        drop_cluster_state(name)


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Pool]:
    """Servers and clients the test starts, stopped and closed when it ends."""
    pool = Pool(tmp_path)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with the default rate limits, shared by the tests that meet them."""
    server = ServerProcess(tmp_path_factory.mktemp("limited") / "roomcast.db")
    try:
        yield server.start()
    finally:
        if server.proc is not None:
            server.stop()
