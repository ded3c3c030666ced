"""Calls: a call's snapshot stored as the core reports it, and a user's call list."""

from __future__ import annotations

from dataclasses import astuple

from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.rules import NO_BOUND
from roomcast.adapters.sql.steps import Row, Steps
from roomcast.core.calls import CallRecord
from roomcast.ports.store import CallsAfter, Outcome, Result

CALL_COLUMNS = "id, caller, callee, started_at, answered_at, ended_at, end_reason"


class CallSQL:
    def __init__(self, dialect: Dialect) -> None:
        sql = dialect.sql
        # Inserted when the call starts, updated as it is answered and ends.
        self._record = sql(
            f"INSERT INTO calls ({CALL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (id) DO UPDATE SET answered_at = excluded.answered_at, "
            "ended_at = excluded.ended_at, end_reason = excluded.end_reason"
        )
        # The calls of user $1 after a position ($2: started_at, $3: call id),
        # in the order they are listed: newest first, then by id.
        self._listing = sql(
            f"SELECT {CALL_COLUMNS} FROM calls WHERE (caller = $1 OR callee = $1) "
            "AND (started_at < $2 OR (started_at = $2 AND id > $3)) "
            "ORDER BY started_at DESC, id LIMIT $4"
        )

    def record(self, call: CallRecord) -> Steps[Result]:
        yield (self._record, astuple(call))  # its fields are in the order of CALL_COLUMNS
        return Result(Outcome.DONE)

    def listing(
        self, user_id: str, limit: int, after: CallsAfter | None
    ) -> Steps[list[CallRecord]]:
        """The user's calls (as caller or callee), newest first, from after ``after``."""
        position = after or CallsAfter(NO_BOUND, "")
        rows = yield (self._listing, (user_id, position.started_at, position.call_id, limit))
        return [call_record(row) for row in rows]


def call_record(row: Row) -> CallRecord:
    """A call from a row of :data:`CALL_COLUMNS`."""
    return CallRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6])
