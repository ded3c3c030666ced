"""Shared files' records: what was uploaded to which room by whom, their
thumbnails, the message that attached them, and which blobs they use.

A blob (the bytes, by their SHA-256) may be used by several files and
thumbnails: the same screenshot pasted twice is kept once. Deleting files
returns the blobs nothing names any more, read in the deleting transaction,
so the caller removes exactly those once it has committed (a blob that a
new upload names meanwhile is named by a row that transaction sees).
"""

from __future__ import annotations

from collections.abc import Sequence

from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.steps import Many, Row, Steps
from roomcast.ports.store import FileRecord, Thumbnail

_COLUMNS = (
    "id, room_id, uploader, name, size, content_type, blob, created_at, width, height, message_id"
)


class FileSQL:
    def __init__(self, dialect: Dialect) -> None:
        sql = dialect.sql
        self._dialect = dialect
        marks = ", ".join(f"${n}" for n in range(1, 12))
        self._insert = sql(f"INSERT INTO files ({_COLUMNS}) VALUES ({marks})")
        self._insert_thumbnail = sql(
            "INSERT INTO file_thumbnails (file_id, width, height, blob, size) "
            "VALUES ($1, $2, $3, $4, $5)"
        )
        self._get = sql(f"SELECT {_COLUMNS} FROM files WHERE id = $1")
        self._thumbnails = sql(
            "SELECT width, height, blob, size FROM file_thumbnails "
            "WHERE file_id = $1 ORDER BY width"
        )
        self._uploads = sql(
            "SELECT count(*) FILTER (WHERE created_at >= $2), coalesce(sum(size), 0) "
            "FROM files WHERE uploader = $1"
        )
        self._unattached = sql(
            "SELECT id FROM files WHERE message_id IS NULL AND created_at < $1 "
            "ORDER BY created_at, id LIMIT $2"
        )

    def add(self, record: FileRecord) -> Steps[None]:
        yield (
            self._insert,
            (
                record.id,
                record.room_id,
                record.uploader,
                record.name,
                record.size,
                record.content_type,
                record.blob,
                record.created_at,
                record.width,
                record.height,
                record.message_id,
            ),
        )
        if record.thumbnails:
            yield Many(
                self._insert_thumbnail,
                [(record.id, t.width, t.height, t.blob, t.size) for t in record.thumbnails],
            )

    def get(self, file_id: str) -> Steps[FileRecord | None]:
        rows = yield (self._get, (file_id,))
        if not rows:
            return None
        thumbnails = yield (self._thumbnails, (file_id,))
        return _record(rows[0], thumbnails)

    def uploads_since(self, user_id: str, since: int) -> Steps[tuple[int, int]]:
        row = (yield (self._uploads, (user_id, since)))[0]
        return int(row[0]), int(row[1])

    def unattached(self, before: int, limit: int) -> Steps[list[str]]:
        rows = yield (self._unattached, (before, limit))
        return [str(row[0]) for row in rows]

    def delete(self, file_ids: Sequence[str]) -> Steps[list[str]]:
        if not file_ids:
            return []
        dialect = self._dialect
        count = len(file_ids)
        files = dialect.in_list("id", 1, count, "text")
        thumbnails = dialect.in_list("file_id", 1, count, "text")
        args = dialect.list_args(file_ids)
        candidates = yield (
            f"SELECT blob FROM files WHERE {files} "
            f"UNION SELECT blob FROM file_thumbnails WHERE {thumbnails}",
            args,
        )
        yield (f"DELETE FROM files WHERE {files}", args)  # thumbnails go with them
        return (yield from self.unused(sorted({str(row[0]) for row in candidates})))

    def unused(self, blobs: Sequence[str]) -> Steps[list[str]]:
        """Those of ``blobs`` no file or thumbnail names."""
        if not blobs:
            return []
        dialect = self._dialect
        named = dialect.in_list("blob", 1, len(blobs), "text")
        still = yield (
            f"SELECT blob FROM files WHERE {named} "
            f"UNION SELECT blob FROM file_thumbnails WHERE {named}",
            dialect.list_args(blobs),
        )
        kept = {str(row[0]) for row in still}
        return [blob for blob in dict.fromkeys(blobs) if blob not in kept]


def _record(row: Row, thumbnails: Sequence[Row]) -> FileRecord:
    return FileRecord(
        id=str(row[0]),
        room_id=int(row[1]),
        uploader=str(row[2]),
        name=str(row[3]),
        size=int(row[4]),
        content_type=str(row[5]),
        blob=str(row[6]),
        created_at=int(row[7]),
        width=None if row[8] is None else int(row[8]),
        height=None if row[9] is None else int(row[9]),
        message_id=None if row[10] is None else int(row[10]),
        thumbnails=tuple(Thumbnail(int(t[0]), int(t[1]), str(t[2]), int(t[3])) for t in thumbnails),
    )
