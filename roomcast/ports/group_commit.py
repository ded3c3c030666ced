"""Group commit: many submitted operations, one transaction.

Submitters queue an operation and await its future. A single drain task takes
everything queued so far (up to ``max_batch``), hands it to the adapter's
``execute`` as one transaction, and resolves the futures in submission order.
While a transaction runs, new operations queue up for the next one, so the
batch size grows with the load by itself and the commit rate is never the
throughput limit. Resolution order equals queue order, which is what keeps
delivery order equal to id order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

OpT = TypeVar("OpT")
ResultT = TypeVar("ResultT")

log = logging.getLogger("roomcast.store")


#: Called once per operation, in submission order, right after its transaction:
#: with the result, or with the exception that failed the whole transaction.
Done = Callable[[ResultT | None, BaseException | None], None]


class GroupCommitter(Generic[OpT, ResultT]):
    def __init__(
        self,
        execute: Callable[[Sequence[OpT]], Awaitable[Sequence[ResultT]]],
        max_batch: int = 1024,
        on_commit: Callable[[int, float, bool], None] | None = None,
        linger: float = 0.0,
    ) -> None:
        self._execute = execute
        # The longest the first operation of a batch waits for company while
        # more keep arriving (see _gather_company). A commit has a fixed cost
        # (locks, log writes) that a lone message pays in full.
        self._linger = linger
        # Told (batch size, seconds, succeeded) after every transaction.
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._queue: list[tuple[OpT, Done[ResultT]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Commits failed since the last one that succeeded.
        self._failed_in_a_row = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="group-commit")

    def submit(self, op: OpT, done: Done[ResultT]) -> None:
        """Queue ``op``; ``done`` runs synchronously, in queue order, once it is committed.

        Running the callbacks directly (not through futures and ``call_soon``)
        is what keeps their effects in commit order, and costs nothing extra
        per message.
        """
        if self._closing or self._task is None:
            raise RuntimeError("the store is not accepting writes")
        self._queue.append((op, done))
        self._wakeup.set()

    def run(self, op: OpT) -> asyncio.Future[ResultT]:
        """``submit`` for callers that want to await one result."""
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()

        def resolve(result: ResultT | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        self.submit(op, resolve)
        return future

    def pending(self) -> int:
        return len(self._queue)

    async def close(self) -> None:
        """Stop accepting operations and commit everything already queued."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _drain(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._linger and not self._closing:
                await self._gather_company()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit(batch)
            if self._closing:
                return

    async def _gather_company(self) -> None:
        """Wait while writes keep arriving, at most ``linger`` seconds.

        Each pass lets the event loop run once (reading every socket that is
        ready). A pass that brought no new write ends the wait: a burst is
        committed together as soon as it has been read, and a lone message
        costs one loop turn, not the whole linger.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        seen = -1
        while len(self._queue) != seen and not self._closing and loop.time() < deadline:
            seen = len(self._queue)
            await asyncio.sleep(0)

    async def _commit(self, batch: list[tuple[OpT, Done[ResultT]]]) -> None:
        started = time.perf_counter()
        try:
            results: Sequence[ResultT | None] = await self._execute([op for op, _ in batch])
            error: BaseException | None = None
        except Exception as exc:
            self._failed_in_a_row += 1
            log.error(
                "commit failed batch=%d error=%r failed_in_a_row=%d",
                len(batch),
                exc,
                self._failed_in_a_row,
            )
            results, error = [None] * len(batch), exc
        else:
            if self._failed_in_a_row:
                log.info("commits succeed again after failed=%d", self._failed_in_a_row)
                self._failed_in_a_row = 0
        if self._on_commit is not None:
            self._on_commit(len(batch), time.perf_counter() - started, error is None)
        for (_, done), result in zip(batch, results, strict=True):
            try:
                done(result, error)
            except Exception:  # one bad callback must not lose the others' results
                log.exception("commit callback failed")
