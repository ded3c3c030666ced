"""The shared store: PostgreSQL through an asyncpg pool, for several server processes.

Writes go through the same group committer as SQLite's: one transaction per
batch, results in submission order, the same outcome rules
(:mod:`roomcast.adapters.sql`). What differs is that other processes
write to the same tables at the same time:

* Room sequence numbers: a batch raises each of its rooms' ``last_seq`` once,
  before inserting, and that row lock is what orders two processes writing
  to one room: the second waits for the first to commit, then numbers after
  it. Ids are drawn while the lock is held, so within a room seq order, id
  order and commit order agree. A batch locks its rooms in ascending id
  order, so two batches never wait for each other in a circle.
* A changed message is locked (``FOR UPDATE``) before it is changed, so an
  edit cannot bring back the text of a message deleted at the same moment.
* What another process may cause, a deadlock between message locks or a
  client retry of the same message arriving at two processes at once, rolls
  the whole batch back; it is then run again from scratch, which is safe
  because nothing of it was committed.

Failures: every operation has ``timeout`` seconds, acquiring a connection
included. Within that an operation is retried when it surely did not commit
(the connection broke before ``COMMIT`` was sent, the server is restarting);
once ``COMMIT`` has been sent, a failure is reported as such, since the
transaction may or may not have committed, and nothing is ever reported
committed that is not. A connection that saw any error is closed rather than
reused, and the pool opens new ones as the database comes back, so the store
recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import asyncpg

from roomcast.adapters import migrations
from roomcast.adapters.sql.dialect import POSTGRES
from roomcast.adapters.sql.messages import INSERT_COLUMNS, MESSAGE_COLUMNS, PLAIN_INSERT_COLUMNS
from roomcast.adapters.sql.rules import InsertPlan, InsertRun, client_ids
from roomcast.adapters.sql.steps import Steps, drive_postgres
from roomcast.adapters.sql.store import SQLStore
from roomcast.ports.store import Operation, Result, StoreUnavailable

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")

log = logging.getLogger("roomcast.store")

#: Errors after which the same work may succeed on another try: the connection
#: broke (class 08, or asyncpg noticed it closed), the server is shutting down
#: or starting (57P0x) or has no connection slot left (53300), or the
#: transaction lost a race with another process (40001, 40P01).
_TRANSIENT_STATES = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03"})


#: What the driver raises when the database fails or the connection breaks.
#: ``InternalClientError``: a connection broken in the middle of asyncpg's own
#: type lookups is left in a state it reports this way.
_FAILURES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        return True
    if isinstance(exc, asyncpg.UniqueViolationError):
        # The same client message reached two processes at once: the loser's
        # next try finds the winner's row and reports it as the duplicate.
        return exc.constraint_name == "messages_by_client_id"
    return isinstance(exc, asyncpg.PostgresError) and (
        exc.sqlstate.startswith("08") or exc.sqlstate in _TRANSIENT_STATES
    )


async def _keep_session(_conn: object) -> None:
    """Released connections keep their session: this store sets no session state.

    asyncpg's default reset (``RESET ALL``, unlisten, unlock) is a round trip
    on every release, that is on every group commit; an open transaction is
    still rolled back by the pool, and a connection that saw an error is
    closed, not released.
    """


async def prepare_schema(conn: asyncpg.Connection[asyncpg.Record], now_ms: int) -> list[int]:
    """Create the ``search_path``'s schema if it is missing, then apply the migrations.

    A URL such as ``postgresql://host/db?search_path=tenant1`` (asyncpg hands
    parameters it does not know to the server as settings) then just works.
    The name is read back from the server, which parses ``search_path`` by
    its own rules (quoting, case). Returns the migration versions applied.
    """
    search_path: str = await conn.fetchval("SELECT current_setting('search_path')")
    first = search_path.split(",")[0].strip()
    if first and first not in ("$user", '"$user"'):
        name = await conn.fetchval("SELECT (parse_ident($1))[1]", first)
        # Looked up first: CREATE SCHEMA IF NOT EXISTS needs the right to
        # create schemas even when there is nothing to create.
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", name):
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('roomcast.create_schema:' || $1))",
                    name,
                )
                create = await conn.fetchval(
                    "SELECT format('CREATE SCHEMA IF NOT EXISTS %I', $1::text)", name
                )
                await conn.execute(create)
    return await migrations.apply_postgres(conn, now_ms)


#: The messages already stored under a batch's client ids (one statement for all).
_STORED = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE (user_id, client_msg_id) "
    "IN (SELECT * FROM unnest($1::text[], $2::text[]))"
)

#: A run of new messages in one statement, ids drawn in row (and so seq) order.
_INSERT = (
    f"INSERT INTO messages ({INSERT_COLUMNS}) "
    "SELECT r, u, c, t, a, m, s, h, x FROM unnest($1::bigint[], $2::text[], $3::text[], "
    "$4::text[], $5::bigint[], $6::text[], $7::bigint[], $8::bigint[], $9::text[]) "
    "WITH ORDINALITY AS v (r, u, c, t, a, m, s, h, x, n) ORDER BY n "
    "RETURNING id, room_id, seq"
)
#: The same for a run of plain messages (no thread, no mentions).
_INSERT_PLAIN = (
    f"INSERT INTO messages ({PLAIN_INSERT_COLUMNS}) "
    "SELECT r, u, c, t, a, m, s FROM unnest($1::bigint[], $2::text[], $3::text[], "
    "$4::text[], $5::bigint[], $6::text[], $7::bigint[]) "
    "WITH ORDINALITY AS v (r, u, c, t, a, m, s, n) ORDER BY n "
    "RETURNING id, room_id, seq"
)


class PostgresStore(SQLStore):
    def __init__(
        self,
        url: str,
        clock_ms: Callable[[], int],
        max_batch: int = 1024,
        on_commit: Callable[[int, float, bool], None] | None = None,
        timeout: float = 5.0,
        linger: float = 0.0,
        pool_size: int = 10,
    ) -> None:
        super().__init__(POSTGRES, max_batch, on_commit, linger)
        self._url = url
        self._clock_ms = clock_ms
        self._timeout = timeout
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            conn = await asyncpg.connect(self._url, timeout=self._timeout)
            try:
                await prepare_schema(conn, self._clock_ms())
            finally:
                await conn.close()
            # min_size=0: connections are opened when needed, not kept open by
            # a background task that logs a traceback per retry while the
            # database is down.
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=0,
                max_size=self._pool_size,
                timeout=self._timeout,
                reset=_keep_session,
                # Short indexed statements: JIT compiling them costs far more than
                # it saves, and the planner's estimates for a parameter grow with
                # the table (measured: unread counts 120 ms with it, 4 ms without).
                server_settings={"jit": "off"},
            )
        except (*_FAILURES, TimeoutError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        self._committer.start()

    async def close(self) -> None:
        await self._committer.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except TimeoutError:
                pool.terminate()

    def _p(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        return self._pool

    async def _attempt(
        self,
        work: Callable[[Connection], Awaitable[T]],
        *,
        transaction: bool = False,
    ) -> T:
        """Run ``work`` on a pooled connection, in a transaction if asked, within the timeout.

        Retried while it surely did not commit and time is left; any failure
        ends as :class:`StoreUnavailable`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        delay = 0.005
        while True:
            pool = self._p()
            conn: PoolConnectionProxy[asyncpg.Record] | None = None
            committing = False
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await pool.acquire()
                    if not transaction:
                        return await work(conn)
                    tx = conn.transaction()
                    await tx.start()
                    result = await work(conn)
                    committing = True
                    await tx.commit()
                    return result
            except BaseException as exc:
                if conn is not None:
                    # Mid-transaction, mid-query or cancelled: closing it is the
                    # one sure way to have the server roll back, and the pool
                    # replaces it. (A connection that broke was released already.)
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                if isinstance(exc, TimeoutError):
                    raise StoreUnavailable(
                        f"PostgreSQL did not answer within {self._timeout:g}s"
                    ) from exc
                if not isinstance(exc, _FAILURES):
                    raise
                if committing or not _transient(exc) or loop.time() >= deadline:
                    raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
                log.debug("postgres retry error=%r", exc)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await pool.release(conn, timeout=self._timeout)
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.25)

    async def _read(self, steps: Callable[[], Steps[T]], plan_each_call: bool = False) -> T:
        # Retried like any read: a pooled connection that went stale while the
        # database restarted does not make the database unavailable.
        if not plan_each_call:
            return await self._attempt(lambda conn: drive_postgres(conn, steps()))

        async def planned(conn: Connection) -> T:
            # After five runs of a prepared statement PostgreSQL may keep a
            # generic plan, made for no value in particular: for a search that
            # walked the newest messages for a needle the index answers at
            # once (measured on 1 M messages: 270 ms instead of 1).
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            return await drive_postgres(conn, steps())

        return await self._attempt(planned, transaction=True)

    async def _write(self, steps: Callable[[], Steps[T]]) -> T:
        return await self._attempt(lambda conn: drive_postgres(conn, steps()), transaction=True)

    # -- group-committed writes -----------------------------------------------------

    async def _execute_batch(self, ops: Sequence[Operation]) -> list[Result]:
        return await self._attempt(lambda conn: self._transaction(conn, ops), transaction=True)

    async def _transaction(self, conn: Connection, ops: Sequence[Operation]) -> list[Result]:
        stored: list[asyncpg.Record] = []
        if keys := client_ids(ops):
            stored = await conn.fetch(
                _STORED, [user for user, _ in keys], [client_id for _, client_id in keys]
            )
        plan = InsertPlan(ops, stored)
        plan.begin(await self._raise_last_seqs(conn, plan.counts))
        return await drive_postgres(conn, self._batch(plan, ops))

    @staticmethod
    async def _raise_last_seqs(conn: Connection, counts: Mapping[int, int]) -> dict[int, int]:
        """Raise each room's ``last_seq`` by its count; the new values, by room.

        The row locks taken here are held to the commit. Several rooms are
        locked first in ascending id order (a ``SELECT ... ORDER BY ... FOR
        UPDATE`` locks rows in the order it returns them), since an ``UPDATE``
        of several rows promises no order; one room needs only the update.
        """
        if not counts:
            return {}
        room_ids = sorted(counts)
        if len(room_ids) > 1:
            await conn.execute(
                "SELECT id FROM rooms WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                room_ids,
            )
        rows = await conn.fetch(
            "UPDATE rooms SET last_seq = rooms.last_seq + d.n "
            "FROM unnest($1::bigint[], $2::bigint[]) AS d (id, n) WHERE rooms.id = d.id "
            "RETURNING rooms.id, rooms.last_seq",
            room_ids,
            [counts[room_id] for room_id in room_ids],
        )
        return {row[0]: row[1] for row in rows}

    def _insert_run(self, run: InsertRun) -> Steps[list[Result]]:
        rows = run.rows
        if not rows:
            return run.results([])
        statement = _INSERT_PLAIN if run.plain else _INSERT
        inserted = yield (statement, [list(column) for column in zip(*rows, strict=True)])
        # Matched by (room, seq), which is unique, not by the order RETURNING happens to use.
        ids = {(row[1], row[2]): row[0] for row in inserted}
        return run.results([ids[(row[0], row[6])] for row in rows])
