"""What an upload goes through (roomcast.features.files) on both stores and
real files on disk: who may upload, every limit, the type from the bytes,
images' sizes, thumbnails and location, and that a refusal keeps nothing."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from roomcast.adapters.disk_blobs import DiskBlobs
from roomcast.features.files import FileLimits, FileUploads
from roomcast.protocol import ErrorCode, ProtocolError
from tests.integration.test_stores import Store, db, pg, store
from tests.unit.test_images import photo, png_declaring

__all__ = ["db", "pg", "store"]  # fixtures, used by name


async def body(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def never_read() -> AsyncIterator[bytes]:
    raise AssertionError("the body was read")
    yield b""  # pragma: no cover (makes this a generator)


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name != "partial")


async def uploads_for(store: Store, root: Path, **limits: int) -> tuple[FileUploads, int]:
    blobs = DiskBlobs(root)  # tmp_path / "files": the SQLite fixture's files are beside it
    await blobs.start()
    room = await store.create_room("r", True, ("bo",), "al", 0)
    return FileUploads(store, blobs, FileLimits(**limits), lambda: 1_000_000), room.id


async def refused(code: ErrorCode, upload: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        await upload  # type: ignore[misc]
    assert caught.value.code is code, caught.value.message
    return caught.value


async def test_members_only_and_every_limit(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "files"
    files, room = await uploads_for(store, root, max_bytes=100, quota_bytes=150, per_minute=3)
    await refused(ErrorCode.FORBIDDEN, files.upload(room, "eve", "x.txt", never_read()))
    await refused(ErrorCode.TOO_LARGE, files.upload(room, "bo", "x.txt", never_read(), 101))
    # No Content-Length: refused as soon as the stream passes the limit.
    await refused(
        ErrorCode.TOO_LARGE, files.upload(room, "bo", "x.txt", body(b"a" * 60, b"b" * 60))
    )
    assert blob_files(root) == []
    first = await files.upload(room, "bo", "notes.txt", body(b"a" * 90), 90)
    assert (first.size, first.content_type, first.uploader) == (90, "text/plain", "bo")
    # The quota counts what is kept: 90 + 90 > 150.
    await refused(ErrorCode.TOO_LARGE, files.upload(room, "bo", "more.txt", never_read(), 90))
    await files.upload(room, "bo", "small.txt", body(b"c" * 10))
    await files.upload(room, "bo", "small.txt", body(b"d" * 10))
    error = await refused(ErrorCode.RATE_LIMITED, files.upload(room, "bo", "y", never_read(), 1))
    assert error.retry_after_ms == 60_000
    assert await store.file(first.id) == first


async def test_the_type_is_what_the_bytes_say(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "files"
    files, room = await uploads_for(store, root)
    page = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"
    disguised = await files.upload(room, "al", "photo.png", body(page))
    assert (disguised.content_type, disguised.name, disguised.width) == (
        "text/html",
        "photo.png",
        None,
    )
    empty = await files.upload(room, "al", "../../empty\n\u202e.bin", body())
    assert (empty.size, empty.content_type, empty.name) == (
        0,
        "application/octet-stream",
        "empty_.bin",
    )
    assert disguised.id != empty.id and len(disguised.id) >= 24


async def test_images_get_sizes_thumbnails_and_lose_their_location(
    store: Store, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    files, room = await uploads_for(store, root)
    original = photo(1200, 900, location=True)
    shot = await files.upload(room, "al", "IMG_0001.jpg", body(original[:5000], original[5000:]))
    assert (shot.content_type, shot.width, shot.height) == ("image/jpeg", 1200, 900)
    assert [(t.width, t.height) for t in shot.thumbnails] == [(320, 240), (800, 600)]
    kept = (root / shot.blob[:2] / shot.blob[2:4] / shot.blob).read_bytes()
    assert shot.blob != hashlib.sha256(original).hexdigest() and shot.size == len(kept)
    as_sent = hashlib.sha256(original).hexdigest()
    assert not (root / as_sent[:2] / as_sent[2:4] / as_sent).exists()  # location gone for good
    with Image.open(io.BytesIO(kept)) as image:
        assert 0x8825 not in image.getexif()
    for thumbnail in shot.thumbnails:
        path = root / thumbnail.blob[:2] / thumbnail.blob[2:4] / thumbnail.blob
        with Image.open(path) as image:
            assert image.size == (thumbnail.width, thumbnail.height)
    small = await files.upload(room, "al", "icon.png", body(photo(500, 50, location=False)))
    assert [t.width for t in small.thumbnails] == [320]  # never wider than the image
    assert await store.file(shot.id) == shot


async def test_refused_images_keep_nothing(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "files"
    files, room = await uploads_for(store, root)
    await refused(
        ErrorCode.INVALID_MESSAGE,
        files.upload(room, "al", "bomb.png", body(png_declaring(100_000, 100_000))),
    )
    await refused(
        ErrorCode.INVALID_MESSAGE, files.upload(room, "al", "cut.jpg", body(photo()[:3000]))
    )
    assert blob_files(root) == []
    # A refused upload of bytes another file has leaves that file's blob alone
    # (refused after storing them: a lower pixel limit).
    picture = photo(400, 300, location=False)
    kept = await files.upload(room, "al", "a.jpg", body(picture))
    strict = FileUploads(store, files._blobs, FileLimits(max_pixels=1000), lambda: 1_000_000)
    await refused(ErrorCode.INVALID_MESSAGE, strict.upload(room, "al", "b.jpg", body(picture)))
    assert {p.name for p in blob_files(root)} == {kept.blob, *(t.blob for t in kept.thumbnails)}
    assert kept.blob == hashlib.sha256(picture).hexdigest()
