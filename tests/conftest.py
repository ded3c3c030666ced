from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.backends import CLUSTERS_USED, drop_cluster_state
from tests.harness.client import Client
from tests.harness.server import ServerProcess

_room_ids = itertools.count(1000)


@pytest.fixture(scope="session", autouse=True)
def drop_clusters_at_exit() -> Iterator[None]:
    """PostgreSQL schemas and Redis keys of the session's clusters go when it ends."""
    yield
    for name in CLUSTERS_USED:
        drop_cluster_state(name)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared open-mode server; tests isolate themselves by room id and user name."""
    database = tmp_path_factory.mktemp("shared") / "roomcast.db"
    # Tests send bursts no person would; rate limits are tested on their own servers.
    process = ServerProcess(database, "--typing-timeout", "0.5", "--rate-limits", "off").start()
    yield process
    process.stop()


@pytest.fixture
def room_id() -> int:
    """A room id no other test uses."""
    return next(_room_ids)


@pytest.fixture
def new_room() -> Callable[[], int]:
    return lambda: next(_room_ids)


@pytest.fixture
def user(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """User names unique to the test: user("alice") -> "alice-<test>"."""
    prefix = request.node.name[:30]
    return lambda name: f"{name}-{prefix}"


@pytest.fixture
async def connect(server: ServerProcess) -> AsyncIterator[Callable[..., object]]:
    clients: list[Client] = []

    async def open_client(user_id: str | None = None, **kwargs: object) -> Client:
        client = await Client.connect(server.ws_url, user_id, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


@pytest.fixture
def tmp_db(tmp_path: Path) -> Path:
    return tmp_path / "roomcast.db"
