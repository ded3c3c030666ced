"""Which store a database URL means, and bringing its schema up to date.

``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a bare path is the
embedded SQLite store (one server process); ``postgresql://...`` or
``postgres://...`` is the PostgreSQL store, which several server processes
can share. Query parameters of a PostgreSQL URL that asyncpg does not know are
server settings: ``?search_path=tenant1`` keeps a deployment in its own
schema, created when missing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg

from roomcast.adapters import migrations
from roomcast.adapters.postgres_store import PostgresStore, prepare_schema
from roomcast.adapters.sqlite_store import SQLiteStore
from roomcast.clock import wall_ms as _wall_ms
from roomcast.config import Settings, describe, is_postgres, sqlite_path
from roomcast.metrics import Metrics
from roomcast.ports.store import Store, StoreUnavailable


def open_store(url: str, settings: Settings, metrics: Metrics | None) -> Store:
    """The store for ``url``, set up from ``settings``; call ``start()`` before use."""
    on_commit = metrics.observe_commit if metrics is not None else None
    linger = settings.commit_linger_ms / 1000
    if is_postgres(url):
        return PostgresStore(
            url, _wall_ms, settings.commit_max_batch, on_commit, settings.db_timeout, linger
        )
    if "://" not in url or url.startswith("sqlite://"):
        return SQLiteStore(
            url,
            _wall_ms,
            settings.commit_max_batch,
            on_commit,
            settings.db_timeout,
            linger,
            max_wal_bytes=settings.max_wal_bytes,
        )
    raise ValueError(
        f"unsupported database URL {url.partition('://')[0]}://... "
        "(expected sqlite:///path or postgresql://user@host/database)"
    )


async def migrate(url: str, timeout: float = 10.0) -> str:
    """Bring the schema at ``url`` up to date; one line saying what was done.

    Safe while servers run on the same database: SQLite serialises the
    migration with their writes, PostgreSQL with other migrating processes.
    """
    if is_postgres(url):
        try:
            conn = await asyncpg.connect(url, timeout=timeout)
            try:
                applied = await prepare_schema(conn, _wall_ms())
                where = f"{await conn.fetchval('SELECT current_schema()')} at {describe(url)}"
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
    else:
        path = sqlite_path(url)
        Path(path).parent.mkdir(parents=True, exist_ok=True)

        def apply() -> list[int]:
            conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
            try:
                return migrations.apply_sqlite(conn, _wall_ms())
            finally:
                conn.close()

        applied = await asyncio.to_thread(apply)
        where = path
    done = f"applied {', '.join(f'{v:04d}' for v in applied)}" if applied else "nothing to apply"
    return f"schema of {where} is up to date ({done})"
