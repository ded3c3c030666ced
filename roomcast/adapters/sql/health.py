"""Whether the database answers, and whether writes commit (see ``/health``)."""

from __future__ import annotations

from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.steps import Steps
from roomcast.ports.store import Outcome, ProbeWrite, Result


class HealthSQL:
    def __init__(self, dialect: Dialect) -> None:
        # The lock every message insert takes, so that a messages table locked
        # elsewhere fails the probe as it fails the inserts.
        self._lock = dialect.insert_lock("messages")
        self._probe = dialect.sql(
            "INSERT INTO write_probe (id, written_at) VALUES (1, $1) "
            "ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at"
        )

    def ping(self) -> Steps[None]:
        yield ("SELECT 1", ())

    def probe(self, op: ProbeWrite) -> Steps[Result]:
        """Rewrite the one row of ``write_probe``."""
        if self._lock is not None:
            yield (self._lock, ())
        yield (self._probe, (op.written_at,))
        return Result(Outcome.DONE)
