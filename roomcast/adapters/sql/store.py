"""The store's operations, written once over the feature modules' SQL.

An engine (:mod:`~roomcast.adapters.sqlite_store`,
:mod:`~roomcast.adapters.postgres_store`) subclasses :class:`SQLStore` and
supplies only how :data:`~roomcast.adapters.sql.steps.Steps` reach its
database (:meth:`SQLStore._read`, :meth:`SQLStore._write`), how a
group-committed batch numbers its rooms and inserts its messages, and its
lifecycle.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from roomcast.adapters.sql.calls import CallSQL
from roomcast.adapters.sql.conversations import ConversationSQL
from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.files import FileSQL
from roomcast.adapters.sql.health import HealthSQL
from roomcast.adapters.sql.members import MemberSQL
from roomcast.adapters.sql.messages import MessageSQL
from roomcast.adapters.sql.rooms import RoomSQL
from roomcast.adapters.sql.rules import InsertPlan, InsertRun, creation_limit, runs
from roomcast.adapters.sql.search import SearchSQL
from roomcast.adapters.sql.steps import Steps
from roomcast.core.calls import CallRecord
from roomcast.core.search import Query, SearchFilters
from roomcast.ports.group_commit import Done, GroupCommitter
from roomcast.ports.store import (
    CallsAfter,
    DeleteMessage,
    EditMessage,
    FileRecord,
    InsertMessage,
    MarkRead,
    Member,
    MemberChange,
    MemberState,
    Operation,
    Outcome,
    ProbeWrite,
    ReadNotifications,
    Result,
    Room,
    RoomLimitReached,
    SequencedMessage,
    ToggleReaction,
)
from roomcast.protocol import HistoryMessage, NotificationInfo, RoomUnread, ThreadItem

T = TypeVar("T")


class SQLStore(ABC):
    def __init__(
        self,
        dialect: Dialect,
        max_batch: int,
        on_commit: Callable[[int, float, bool], None] | None,
        linger: float,
    ) -> None:
        self._conversations = ConversationSQL(dialect)
        self._search = SearchSQL(dialect)
        self._messages = MessageSQL(dialect, self._conversations, self._search)
        self._rooms = RoomSQL(dialect)
        self._members = MemberSQL(dialect)
        self._files = FileSQL(dialect)
        self._calls = CallSQL(dialect)
        self._health = HealthSQL(dialect)
        # The SQL of each kind of write but new messages (which come in runs):
        # a new operation is one entry here, not a branch in _batch.
        self._writes: dict[type[Operation], Callable[[InsertPlan, Any], Steps[Result]]] = {
            EditMessage: self._messages.change,
            DeleteMessage: self._messages.change,
            ToggleReaction: self._messages.change,
            MarkRead: lambda plan, op: self._conversations.mark_read(op),
            ReadNotifications: lambda plan, op: self._conversations.read_notifications(op),
            CallRecord: lambda plan, op: self._calls.record(op),
            ProbeWrite: lambda plan, op: self._health.probe(op),
        }
        self._committer: GroupCommitter[Operation, Result] = GroupCommitter(
            self._execute_batch, max_batch, on_commit, linger
        )

    # -- what an engine supplies ------------------------------------------------------

    @abstractmethod
    async def _read(self, steps: Callable[[], Steps[T]], plan_each_call: bool = False) -> T:
        """Run the steps ``steps()`` makes (again, if the engine retries) as a
        read; ``plan_each_call`` for statements whose best plan depends on their
        values (searches: a rare needle wants the index, a common one the
        newest messages), which no plan made once for any value serves."""

    @abstractmethod
    async def _write(self, steps: Callable[[], Steps[T]]) -> T:
        """Run the steps ``steps()`` makes in one committed transaction."""

    @abstractmethod
    async def _execute_batch(self, ops: Sequence[Operation]) -> list[Result]:
        """One group commit: read the client ids, number the rooms, then :meth:`_batch`."""

    @abstractmethod
    def _insert_run(self, run: InsertRun) -> Steps[list[Result]]:
        """Insert the rows of a run of consecutive new messages."""

    def _batch(self, plan: InsertPlan, ops: Sequence[Operation]) -> Steps[list[Result]]:
        """A batch's operations in order, once its rooms are numbered (``plan.begin``)."""
        results: list[Result] = []
        for item in runs(ops):
            if isinstance(item, list):
                run = plan.run(item)
                inserted = yield from self._insert_run(run)
                yield from self._search.index(
                    (result.message_id, op.content)
                    for op, result in zip(item, inserted, strict=True)
                    if result.outcome is Outcome.DONE and result.duplicate_of is None
                )
                if not run.plain:  # the common case has nothing more to write
                    inserted = yield from self._after_inserts(item, inserted)
                results += inserted
            else:
                results.append((yield from self._writes[type(item)](plan, item)))
        plan.finish()
        return results

    def _after_inserts(
        self, ops: Sequence[InsertMessage], results: list[Result]
    ) -> Steps[list[Result]]:
        """What new replies and messages with mentions do besides being stored."""
        for index, op in enumerate(ops):
            if op.thread_id is None and not op.mentions:
                continue  # the common case: nothing more to write
            result = results[index]
            if result.outcome is Outcome.DONE and result.duplicate_of is None:
                results[index] = yield from self._conversations.after_insert(op, result)
        return results

    # -- the store ----------------------------------------------------------------------

    def submit(self, op: Operation, done: Done[Result]) -> None:
        self._committer.submit(op, done)

    def run(self, op: Operation) -> asyncio.Future[Result]:
        return self._committer.run(op)

    async def ping(self) -> None:
        await self._read(self._health.ping)

    async def get_room(self, room_id: int) -> Room | None:
        return await self._read(lambda: self._rooms.get(room_id))

    async def ensure_room(
        self, room_id: int, created_by: str, now: int, max_rooms: int | None = None
    ) -> Room:
        room = await self._write(lambda: self._rooms.ensure(room_id, created_by, now, max_rooms))
        if room is None:
            raise RoomLimitReached(created_by, creation_limit(max_rooms))
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
        room = await self._write(
            lambda: self._rooms.create(name, private, members, created_by, now, max_rooms)
        )
        if room is None:
            assert created_by is not None
            raise RoomLimitReached(created_by, creation_limit(max_rooms))
        return room

    async def list_rooms(
        self,
        user_id: str | None,
        after: int = 0,
        limit: int = 100,
        name_contains: str | None = None,
        members_limit: int = 20,
        mine: bool = False,
    ) -> list[Room]:
        return await self._read(
            lambda: self._rooms.listing(user_id, after, limit, name_contains, members_limit, mine)
        )

    async def list_calls(
        self, user_id: str, limit: int, after: CallsAfter | None = None
    ) -> list[CallRecord]:
        return await self._read(lambda: self._calls.listing(user_id, limit, after))

    async def history(
        self,
        room_id: int,
        before: int | None,
        limit: int,
        thread_id: int | None = None,
        after: int | None = None,
    ) -> list[HistoryMessage]:
        return await self._read(
            lambda: self._messages.history(room_id, before, limit, thread_id, after)
        )

    # -- search -------------------------------------------------------------------------

    async def search(
        self,
        viewer: str,
        query: Query,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        limit: int,
    ) -> list[tuple[HistoryMessage, str]]:
        return await self._read(
            lambda: self._messages.search(viewer, query, filters, tier, below, limit),
            plan_each_call=True,
        )

    async def search_count(
        self, viewer: str, query: Query, filters: SearchFilters, cap: int
    ) -> int:
        return await self._read(
            lambda: self._search.count(viewer, query, filters, cap), plan_each_call=True
        )

    # -- conversations ------------------------------------------------------------------

    async def thread_root(self, room_id: int, message_id: int) -> int | None:
        return await self._read(lambda: self._conversations.thread_root(room_id, message_id))

    async def threads(self, room_id: int, before: int | None, limit: int) -> list[ThreadItem]:
        return await self._read(lambda: self._messages.threads(room_id, before, limit))

    async def unread(self, user_id: str, room_ids: Sequence[int] | None = None) -> list[RoomUnread]:
        return await self._read(lambda: self._conversations.unread(user_id, room_ids))

    async def notifications(
        self, user_id: str, unread_only: bool, before: int | None, limit: int
    ) -> list[NotificationInfo]:
        return await self._read(
            lambda: self._conversations.notifications(user_id, unread_only, before, limit)
        )

    async def messages_in_seq_range(
        self, room_id: int, after_seq: int, through_seq: int
    ) -> list[SequencedMessage]:
        return await self._read(
            lambda: self._messages.in_seq_range(room_id, after_seq, through_seq)
        )

    async def messages_since(
        self, room_id: int, since_id: int, through_seq: int | None, limit: int
    ) -> tuple[list[SequencedMessage], bool]:
        return await self._read(lambda: self._messages.since(room_id, since_id, through_seq, limit))

    # -- files ----------------------------------------------------------------------

    async def add_file(self, record: FileRecord) -> None:
        await self._write(lambda: self._files.add(record))

    async def file(self, file_id: str) -> FileRecord | None:
        return await self._read(lambda: self._files.get(file_id))

    async def uploads_since(self, user_id: str, since: int) -> tuple[int, int]:
        return await self._read(lambda: self._files.uploads_since(user_id, since))

    async def unattached_files(self, before: int, limit: int) -> list[str]:
        return await self._read(lambda: self._files.unattached(before, limit))

    async def unused_blobs(self, blobs: Sequence[str]) -> list[str]:
        return await self._read(lambda: self._files.unused(blobs))

    async def delete_files(self, file_ids: Sequence[str]) -> list[str]:
        return await self._write(lambda: self._files.delete(file_ids))

    # -- membership ---------------------------------------------------------------------

    async def member_state(self, room_id: int, user_id: str) -> MemberState:
        return await self._read(lambda: self._members.state(room_id, user_id))

    async def members_page(self, room_id: int, after: str | None, limit: int) -> list[Member]:
        return await self._read(lambda: self._members.page(room_id, after, limit))

    async def join_public(self, room_id: int, user_id: str, now: int) -> MemberState:
        # Read first: a member's (re-)join, the common case, writes nothing.
        state = await self.member_state(room_id, user_id)
        if state.member is not None or state.banned:
            return state
        return await self._write(lambda: self._members.join(room_id, user_id, now))

    async def add_member(self, room_id: int, user_id: str, role: str, now: int) -> MemberChange:
        return await self._write(lambda: self._members.add(room_id, user_id, role, now))

    async def remove_member(
        self, room_id: int, user_id: str, ban_by: str | None, now: int
    ) -> MemberChange:
        return await self._write(lambda: self._members.remove(room_id, user_id, ban_by, now))

    async def unban(self, room_id: int, user_id: str) -> bool:
        return await self._write(lambda: self._members.unban(room_id, user_id))

    async def set_role(self, room_id: int, user_id: str, role: str) -> MemberChange:
        return await self._write(lambda: self._members.set_role(room_id, user_id, role))

    async def update_room(
        self, room_id: int, name: str | None, topic: str | None, private: bool | None
    ) -> Room | None:
        return await self._write(lambda: self._rooms.update(room_id, name, topic, private))

    async def archive_room(self, room_id: int, now: int) -> Room | None:
        return await self._write(lambda: self._rooms.archive(room_id, now))

    async def direct_room(self, first: str, second: str, now: int) -> Room:
        return await self._write(lambda: self._rooms.direct(first, second, now))

    async def roles(self, user_id: str, room_ids: Sequence[int]) -> dict[int, str]:
        return await self._read(lambda: self._rooms.roles(user_id, room_ids))
