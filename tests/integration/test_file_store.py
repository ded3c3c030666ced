"""Shared files' records in both stores (the fixtures of ``test_stores.py``):
kept and read back, uploads counted for quotas, unattached ones found, and
deletes that name exactly the blobs nothing uses any more."""

from __future__ import annotations

from dataclasses import replace

from roomcast.ports.store import FileRecord, InsertMessage, Outcome, Thumbnail
from tests.integration.test_stores import Store, db, pg, store

__all__ = ["db", "pg", "store"]  # fixtures, used by name

A, B, C = "a" * 64, "b" * 64, "c" * 64


def upload(file_id: str, room_id: int, blob: str, at: int, **more: object) -> FileRecord:
    return FileRecord(
        id=file_id,
        room_id=room_id,
        uploader=str(more.pop("uploader", "al")),
        name=str(more.pop("name", f"{file_id}.png")),
        size=int(str(more.pop("size", 100))),
        content_type="image/png",
        blob=blob,
        created_at=at,
        **more,  # type: ignore[arg-type]
    )


async def test_files_are_kept_and_read_back(store: Store) -> None:
    room = await store.create_room("r", True, (), "al", 0)
    message = await store.run(InsertMessage(room.id, "al", "look", "text", 5))
    assert message.outcome is Outcome.DONE
    shot = upload(
        "f1",
        room.id,
        A,
        10,
        width=1200,
        height=900,
        thumbnails=(Thumbnail(800, 600, B, 40), Thumbnail(320, 240, C, 9)),
        message_id=message.message_id,
    )
    await store.add_file(shot)
    kept = await store.file("f1")
    assert kept == replace(shot, thumbnails=tuple(sorted(shot.thumbnails, key=lambda t: t.width)))
    plain = upload("f2", room.id, A, 11, name="notes 'ü\"\\n.txt")
    await store.add_file(plain)
    assert await store.file("f2") == plain
    assert await store.file("nothing") is None


async def test_uploads_are_counted_for_quotas_and_unattached_ones_found(store: Store) -> None:
    room = await store.create_room("r", True, (), "al", 0)
    for n, at in enumerate((10, 20, 30)):
        await store.add_file(upload(f"f{n}", room.id, A, at, size=1000))
    await store.add_file(upload("theirs", room.id, B, 25, uploader="bo", size=7))
    assert await store.uploads_since("al", 20) == (2, 3000)
    assert await store.uploads_since("al", 0) == (3, 3000)
    assert await store.uploads_since("bo", 26) == (0, 7)
    assert await store.uploads_since("nobody", 0) == (0, 0)
    assert await store.unattached_files(30, 10) == ["f0", "f1", "theirs"]
    assert await store.unattached_files(30, 2) == ["f0", "f1"]


async def test_deletes_name_the_blobs_nothing_uses_any_more(store: Store) -> None:
    room = await store.create_room("r", True, (), "al", 0)
    # f1 and f2 share their bytes (A); f2's thumbnail is f3's bytes (C).
    await store.add_file(upload("f1", room.id, A, 1, thumbnails=(Thumbnail(320, 10, B, 5),)))
    await store.add_file(upload("f2", room.id, A, 2, thumbnails=(Thumbnail(320, 10, C, 5),)))
    await store.add_file(upload("f3", room.id, C, 3))
    assert await store.delete_files(["f1"]) == [B]  # A is still f2's
    assert await store.file("f1") is None
    assert await store.delete_files(["f2", "missing"]) == [A]  # C is still f3's
    assert await store.delete_files(["f3"]) == [C]
    assert await store.delete_files([]) == []
    assert await store.delete_files(["f3"]) == []  # gone already
