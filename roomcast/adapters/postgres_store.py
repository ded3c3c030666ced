"""The shared store: PostgreSQL through an asyncpg pool, for several server processes.

Writes go through the same group committer as SQLite's: one transaction per
batch, results in submission order, the same outcome rules
(:mod:`roomcast.adapters.store_rules`). What differs is that other processes
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
from roomcast.adapters import store_rules as rules
from roomcast.core.calls import CallRecord
from roomcast.ports.group_commit import Done, GroupCommitter
from roomcast.ports.store import (
    CallsAfter,
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Operation,
    Outcome,
    ProbeWrite,
    Result,
    Room,
    RoomLimitReached,
    SequencedMessage,
    StoreUnavailable,
    ToggleReaction,
)
from roomcast.protocol import HistoryMessage

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

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


class PostgresStore:
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
        self._url = url
        self._clock_ms = clock_ms
        self._timeout = timeout
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._committer: GroupCommitter[Operation, Result] = GroupCommitter(
            self._execute_batch, max_batch, on_commit, linger
        )

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

    async def ping(self) -> None:
        # Retried like any read: a pooled connection that went stale while the
        # database restarted does not make the database unavailable.
        await self._attempt(lambda conn: conn.fetchval("SELECT 1"))

    # -- group-committed writes -----------------------------------------------------

    def submit(self, op: Operation, done: Done[Result]) -> None:
        self._committer.submit(op, done)

    def run(self, op: Operation) -> asyncio.Future[Result]:
        return self._committer.run(op)

    async def _execute_batch(self, ops: Sequence[Operation]) -> list[Result]:
        return await self._attempt(lambda conn: self._transaction(conn, ops), transaction=True)

    async def _transaction(self, conn: Connection, ops: Sequence[Operation]) -> list[Result]:
        stored: list[asyncpg.Record] = []
        if keys := rules.client_ids(ops):
            stored = await conn.fetch(
                f"SELECT {rules.MESSAGE_COLUMNS} FROM messages WHERE (user_id, client_msg_id) "
                "IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [user for user, _ in keys],
                [client_id for _, client_id in keys],
            )
        plan = rules.InsertPlan(ops, stored)
        plan.begin(await self._raise_last_seqs(conn, plan.counts))
        results: list[Result] = []
        for item in rules.runs(ops):
            if isinstance(item, list):
                results += await self._insert_run(conn, plan.run(item))
            else:
                results.append(await self._apply(conn, plan, item))
        plan.finish()
        return results

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

    @staticmethod
    async def _insert_run(conn: Connection, run: rules.InsertRun) -> list[Result]:
        """Insert a run of messages in one statement, ids drawn in row (and so seq) order."""
        rows = run.rows
        if not rows:
            return run.results([])
        inserted = await conn.fetch(
            f"INSERT INTO messages ({rules.INSERT_COLUMNS}) "
            "SELECT r, u, c, t, a, m, s FROM unnest($1::bigint[], $2::text[], $3::text[], "
            "$4::text[], $5::bigint[], $6::text[], $7::bigint[]) "
            "WITH ORDINALITY AS v (r, u, c, t, a, m, s, n) ORDER BY n "
            "RETURNING id, room_id, seq",
            *(list(column) for column in zip(*rows, strict=True)),
        )
        # Matched by (room, seq), which is unique, not by the order RETURNING happens to use.
        ids = {(row[1], row[2]): row[0] for row in inserted}
        return run.results([ids[(row[0], row[6])] for row in rows])

    @staticmethod
    async def _apply(conn: Connection, plan: rules.InsertPlan, op: Operation) -> Result:
        if isinstance(op, CallRecord):
            await conn.execute(
                f"INSERT INTO calls ({rules.CALL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (id) DO UPDATE SET answered_at = excluded.answered_at, "
                "ended_at = excluded.ended_at, end_reason = excluded.end_reason",
                *rules.call_values(op),
            )
            return Result(Outcome.DONE)
        if isinstance(op, ProbeWrite):
            # The lock every message insert takes, so that a messages table
            # locked elsewhere fails the probe as it fails the inserts.
            await conn.execute("LOCK TABLE messages IN ROW EXCLUSIVE MODE")
            await conn.execute(rules.PROBE_WRITE.format(placeholder="$1"), op.written_at)
            return Result(Outcome.DONE)
        if isinstance(op, InsertMessage):  # pragma: no cover - inserts come in runs
            raise TypeError("inserts are applied by _insert_run")
        found = await conn.fetchrow(
            "SELECT room_id, user_id FROM messages WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            op.message_id,
        )
        if (refused := rules.refuse_change(op, found)) is not None:
            return refused
        assert found is not None
        done = Result(Outcome.DONE, room_id=found[0], message_id=op.message_id)
        if isinstance(op, ToggleReaction):
            removed = await conn.fetchval(
                "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3 "
                "RETURNING 1",
                op.message_id,
                op.user_id,
                op.emoji,
            )
            if removed:
                return done
            # DO NOTHING: the same reaction added through another process at
            # the same moment is added all the same.
            await conn.execute(
                "INSERT INTO reactions (message_id, user_id, emoji, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                op.message_id,
                op.user_id,
                op.emoji,
                op.created_at,
            )
            return Result(Outcome.DONE, room_id=found[0], message_id=op.message_id, added=True)
        if isinstance(op, EditMessage):
            await conn.execute(
                "UPDATE messages SET content = $1, edited_at = $2 WHERE id = $3",
                op.content,
                op.edited_at,
                op.message_id,
            )
            plan.edited(op.message_id, op.content)
        elif isinstance(op, DeleteMessage):
            # The content is erased, not hidden: a deleted message keeps only its id.
            await conn.execute(
                "UPDATE messages SET content = NULL, deleted_at = $1 WHERE id = $2",
                op.deleted_at,
                op.message_id,
            )
            await conn.execute("DELETE FROM reactions WHERE message_id = $1", op.message_id)
            plan.deleted(op.message_id)
        return done

    # -- rooms ------------------------------------------------------------------------

    #: A room with its members (for private rooms) in one row: one round trip.
    #: Members in code point order (COLLATE "C"), as SQLite and Python sort them.
    _ROOMS = (
        f"SELECT {rules.ROOM_COLUMNS}, ARRAY(SELECT user_id FROM room_members "
        'WHERE room_members.room_id = rooms.id ORDER BY user_id COLLATE "C") FROM rooms'
    )

    @staticmethod
    def _rooms(rows: Sequence[asyncpg.Record]) -> list[Room]:
        return rules.rooms(rows, [(row[0], user) for row in rows for user in row[7]])

    async def _room(self, conn: Connection, room_id: int) -> Room | None:
        rows = await conn.fetch(f"{self._ROOMS} WHERE id = $1", room_id)
        return self._rooms(rows)[0] if rows else None

    async def get_room(self, room_id: int) -> Room | None:
        return await self._attempt(lambda conn: self._room(conn, room_id))

    @staticmethod
    async def _count_created(conn: Connection, user_id: str, max_rooms: int | None) -> bool:
        """Count a room the user creates in this transaction; False past ``max_rooms``."""
        counted = await conn.fetchval(
            rules.COUNT_CREATED_ROOM.format("$1", "$2"), user_id, rules.creation_limit(max_rooms)
        )
        return counted is not None

    async def ensure_room(
        self, room_id: int, created_by: str, now: int, max_rooms: int | None = None
    ) -> Room:
        async def ensure(conn: Connection) -> Room | None:
            created = await conn.fetchval(
                "INSERT INTO rooms (id, name, private, created_by, created_at) "
                "VALUES ($1, $2, 0, $3, $4) ON CONFLICT (id) DO NOTHING RETURNING id",
                room_id,
                f"Room {room_id}",
                created_by,
                now,
            )
            if created is not None and not await self._count_created(conn, created_by, max_rooms):
                # Not committed yet, so nobody saw it: the transaction ends as it began.
                await conn.execute("DELETE FROM rooms WHERE id = $1", room_id)
                return None
            return await self._room(conn, room_id)

        room = await self._attempt(ensure, transaction=True)
        if room is None:
            raise RoomLimitReached(created_by, rules.creation_limit(max_rooms))
        return room

    async def create_room(
        self,
        name: str,
        private: bool,
        members: tuple[str, ...],
        created_by: str | None,
        now: int,
        max_rooms: int | None = None,
    ) -> Room:
        async def create(conn: Connection) -> Room | None:
            if created_by is not None and not await self._count_created(
                conn, created_by, max_rooms
            ):
                return None
            room_id = rules.room_number(await conn.fetchval(rules.TAKE_ROOM_NUMBER))
            insert = (
                "INSERT INTO rooms (id, name, private, created_by, created_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING id"
            )
            values = (name, int(private), created_by, now)
            while await conn.fetchval(insert, room_id, *values) is None:
                # Taken by a room open mode created (maybe a moment ago, on
                # another node): step over the run of them.
                free = await conn.fetchval(rules.FREE_ROOM_ID_FROM.format("$1"), room_id)
                room_id = rules.room_number(free)
                await conn.execute(rules.SET_ROOM_NUMBER.format("$1"), room_id + 1)
            await conn.execute(
                "INSERT INTO room_members (room_id, user_id) SELECT $1, unnest($2::text[]) "
                "ON CONFLICT DO NOTHING",
                room_id,
                list(members),
            )
            return await self._room(conn, room_id)

        room = await self._attempt(create, transaction=True)
        if room is None:
            assert created_by is not None
            raise RoomLimitReached(created_by, rules.creation_limit(max_rooms))
        return room

    async def list_rooms(
        self,
        user_id: str | None,
        after: int = 0,
        limit: int = 100,
        name_contains: str | None = None,
        members_limit: int = 20,
    ) -> list[Room]:
        async def read(conn: Connection) -> list[Room]:
            params: list[object] = [user_id, after, limit, members_limit]
            match = ""
            if name_contains is not None:
                # The 26 ASCII letters only, as store_rules.name_key (and SQLite) fold them.
                match = f"AND strpos(translate(name, '{_UPPER}', '{_UPPER.lower()}'), $5) > 0 "
                params.append(rules.name_key(name_contains))
            rows = await conn.fetch(
                f"SELECT {rules.ROOM_COLUMNS}, ARRAY(SELECT user_id FROM room_members "
                'WHERE room_members.room_id = rooms.id ORDER BY user_id COLLATE "C" LIMIT $4) '
                "FROM rooms WHERE (private = 0 OR id IN "
                "(SELECT room_id FROM room_members WHERE user_id = $1)) AND id > $2 "
                f"{match}ORDER BY id LIMIT $3",
                *params,
            )
            return self._rooms(rows)

        return await self._attempt(read)

    async def list_calls(
        self, user_id: str, limit: int, after: CallsAfter | None = None
    ) -> list[CallRecord]:
        async def read(conn: Connection) -> list[CallRecord]:
            position = after or CallsAfter(rules.NO_BOUND, "")
            rows = await conn.fetch(
                f"SELECT {rules.CALL_COLUMNS} FROM calls "
                f"WHERE {rules.CALLS_AFTER.format('$1', '$2', '$3')} "
                "ORDER BY started_at DESC, id LIMIT $4",
                user_id,
                position.started_at,
                position.call_id,
                limit,
            )
            return [rules.call_record(row) for row in rows]

        return await self._attempt(read)

    # -- messages ---------------------------------------------------------------------

    async def history(self, room_id: int, before: int | None, limit: int) -> list[HistoryMessage]:
        async def read(conn: Connection) -> list[HistoryMessage]:
            rows = await conn.fetch(
                f"SELECT {rules.HISTORY_COLUMNS} FROM messages WHERE room_id = $1 AND id < $2 "
                "AND deleted_at IS NULL ORDER BY id DESC LIMIT $3",
                room_id,
                before if before is not None else rules.NO_BOUND,
                limit,
            )
            reactions: list[asyncpg.Record] = []
            if rows:
                reactions = await conn.fetch(
                    "SELECT message_id, emoji, user_id FROM reactions "
                    "WHERE message_id = ANY($1::bigint[]) ORDER BY created_at, user_id",
                    [row[0] for row in rows],
                )
            return rules.history(rows, reactions)

        return await self._attempt(read)

    async def messages_in_seq_range(
        self, room_id: int, after_seq: int, through_seq: int
    ) -> list[SequencedMessage]:
        async def read(conn: Connection) -> list[SequencedMessage]:
            rows = await conn.fetch(
                f"SELECT {rules.MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 "
                "AND seq > $2 AND seq <= $3 AND deleted_at IS NULL ORDER BY seq",
                room_id,
                after_seq,
                through_seq,
            )
            return [rules.sequenced_message(row) for row in rows]

        return await self._attempt(read)

    async def messages_since(
        self, room_id: int, since_id: int, through_seq: int | None, limit: int
    ) -> tuple[list[SequencedMessage], bool]:
        async def read(conn: Connection) -> tuple[list[SequencedMessage], bool]:
            rows = await conn.fetch(
                f"SELECT {rules.MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND id > $2 "
                "AND seq <= $3 AND deleted_at IS NULL ORDER BY id DESC LIMIT $4",
                room_id,
                since_id,
                through_seq if through_seq is not None else rules.NO_BOUND,
                limit + 1,
            )
            return rules.newest_page(rows, limit)

        return await self._attempt(read)
