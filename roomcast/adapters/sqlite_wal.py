"""Keeping a SQLite store's write-ahead log small, off the event loop's thread.

Checkpoints do ``fsync``, so they run on a thread and connection of their
own; automatic checkpoints are off on the writer. :class:`WalCheckpointer`
keeps the WAL under ``max_wal_bytes`` (see :meth:`WalCheckpointer._every`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from roomcast.ports.store import StoreUnavailable

T = TypeVar("T")

log = logging.getLogger("roomcast.store")

#: Seconds between two checkpoints when nothing asks for one sooner.
_CHECKPOINT_PERIOD = 1.0

#: The checkpoint connection's busy timeout (milliseconds). A TRUNCATE checkpoint
#: waits this long for the write lock (held by another process's writer) and
#: then, holding it, for readers still on an older snapshot; this process's
#: writes wait meanwhile, so the wait is short and a checkpoint that cannot
#: finish is tried again later instead.
_CHECKPOINT_BUSY_MS = 100

#: Retry delays (seconds) for a TRUNCATE checkpoint that could not finish.
#: Each try pauses this process's writes for up to ``_CHECKPOINT_BUSY_MS``,
#: so while a reader keeps it from finishing, tries become rare (at most 2 %
#: of the time paused).
_RETRY_FIRST, _RETRY_MAX = 0.02, 5.0


async def run_on(thread: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
    """``fn()`` on ``thread``; a SQLite error there is the store's unavailability."""
    try:
        return await asyncio.get_running_loop().run_in_executor(thread, fn)
    except sqlite3.Error as exc:
        raise StoreUnavailable(str(exc)) from exc


class WalCheckpointer:
    """Folds the WAL of ``path`` into the database; the writer tells it of each write."""

    def __init__(
        self,
        path: str,
        max_wal_bytes: int,
        connect: Callable[[int], sqlite3.Connection],
    ) -> None:
        # The WAL is kept under max_wal_bytes: past half of it, it is folded
        # into the database and truncated, and the other half is room for
        # what is written while that runs.
        self._wal_path = path + "-wal"
        self._max_wal_bytes = max_wal_bytes
        #: The WAL size that wakes a checkpoint (also the writer's ``journal_size_limit``).
        self.threshold = max(1, max_wal_bytes // 2)
        self._connect = connect
        self._wal_full = asyncio.Event()
        #: Cleared while a TRUNCATE checkpoint needs the write lock (see _every):
        #: the writer waits for it before each write.
        self.writes_open = asyncio.Event()
        self.writes_open.set()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await run_on(self._thread, self._open)
        self._task = asyncio.create_task(self._every(_CHECKPOINT_PERIOD), name="sqlite-checkpoint")

    def _open(self) -> sqlite3.Connection:
        conn = self._connect(_CHECKPOINT_BUSY_MS)
        conn.execute(f"PRAGMA journal_size_limit = {self.threshold}")
        return conn

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Queued behind a checkpoint still running there, so the writer's last
        # one does not find the checkpoint lock taken.
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=True)
        self._conn = None

    def watch(self) -> None:
        """After a write: wake the checkpointer once the WAL has passed its threshold.

        One ``stat`` per transaction, on the loop's thread (no I/O wait: the
        size is the file's metadata). The file never shrinks below what the
        log holds, so its size is an upper bound of the log's; a file cut back
        to exactly the threshold by ``journal_size_limit`` does not count.
        """
        if self._wal_full.is_set():
            return
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return
        if size > self.threshold:
            self._wal_full.set()

    async def _every(self, seconds: float) -> None:
        """Fold the WAL into the database, off the event loop's thread.

        Every ``seconds`` a PASSIVE checkpoint copies what it can without
        waiting for anyone. That alone never lets the WAL start over while
        writes keep coming (each checkpoint finds new frames behind the ones
        it copied), so once the file passes half of ``max_wal_bytes`` the
        writer wakes this task at once: a PASSIVE checkpoint copies the bulk
        while writes go on, then this process's writes pause (under load the
        writer would otherwise hold the write lock most of the time) and a
        TRUNCATE checkpoint copies the few frames left and empties the file.
        A reader in another process that holds an old snapshot keeps it from
        finishing; it gives up after ``_CHECKPOINT_BUSY_MS``, writes resume,
        and it is tried again, sooner at first, so the WAL shrinks as soon as
        that reader lets go.
        """
        retry = _RETRY_FIRST
        blocked = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._wal_full.wait()
            try:
                await run_on(self._thread, self._passive)
                if not self._wal_full.is_set():
                    continue
                finished = await self._truncate_wal()
            except StoreUnavailable as exc:
                log.warning("checkpoint failed error=%s", exc)
                if not self._wal_full.is_set():
                    continue
                finished = False
            if finished:
                if blocked:
                    log.info("checkpoint truncated the WAL after retries")
                self._wal_full.clear()
                blocked, retry = False, _RETRY_FIRST
                continue
            if not blocked:
                log.warning(
                    "checkpoint blocked wal_bytes=%d max_wal_bytes=%d "
                    "(another connection holds a read transaction or the lock); retrying",
                    self._wal_size(),
                    self._max_wal_bytes,
                )
                blocked = True
            await asyncio.sleep(retry)
            retry = min(retry * 2, _RETRY_MAX)

    async def _truncate_wal(self) -> bool:
        """A TRUNCATE checkpoint while this process's writes wait: whether it finished."""
        size, started = self._wal_size(), time.perf_counter()
        self.writes_open.clear()
        try:
            finished = await run_on(self._thread, self._truncate)
        finally:
            self.writes_open.set()
        log.debug(
            "checkpoint truncate wal_bytes=%d seconds=%.4f finished=%s",
            size,
            time.perf_counter() - started,
            finished,
        )
        return finished

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the store is closed")
        return self._conn

    def _passive(self) -> None:
        self._c().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _truncate(self) -> bool:
        """Whether the checkpoint finished: every frame copied, the WAL file emptied."""
        busy, _, _ = self._c().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    def _wal_size(self) -> int:
        try:
            return os.stat(self._wal_path).st_size
        except OSError:
            return 0
