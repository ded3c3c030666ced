"""The disk blob adapter on a real directory: streamed puts, ranges, and that
nothing partial is ever kept."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomcast.adapters.disk_blobs import DiskBlobs
from roomcast.ports.blobs import SNIFF_BYTES, BlobTooLarge


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(blobs: DiskBlobs, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key, start, end)])


def kept_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_a_blob_is_kept_by_its_hash_and_read_back_in_ranges(tmp_path: Path) -> None:
    blobs = DiskBlobs(tmp_path / "files")
    await blobs.start()
    data = bytes(range(256)) * 5000  # 1.28 MB, several read chunks
    stored = await blobs.put(chunks_of(data[:1000], data[1000:700000], data[700000:]), 10**7)
    assert stored.key == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data) and stored.head == data[:SNIFF_BYTES]
    assert await blobs.size(stored.key) == len(data)
    assert await read_all(blobs, stored.key) == data
    assert await read_all(blobs, stored.key, 10, 20) == data[10:20]
    assert await read_all(blobs, stored.key, 300000) == data[300000:]
    assert await read_all(blobs, stored.key, len(data) - 1, len(data) + 50) == data[-1:]
    # The same bytes again: one blob.
    again = await blobs.put(chunks_of(data), 10**7)
    assert again == stored
    assert kept_files(tmp_path / "files") == [blobs.path(stored.key)]
    await blobs.delete(stored.key)
    assert await blobs.size(stored.key) is None
    await blobs.delete(stored.key)  # gone already: nothing happens


async def test_nothing_is_kept_of_an_upload_that_fails(tmp_path: Path) -> None:
    blobs = DiskBlobs(tmp_path)
    await blobs.start()
    with pytest.raises(BlobTooLarge):
        await blobs.put(chunks_of(b"x" * 600, b"y" * 600), 1000)

    async def broken() -> AsyncIterator[bytes]:
        yield b"half of it"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await blobs.put(broken(), 1000)
    assert kept_files(tmp_path) == []
    empty = await blobs.put(chunks_of(), 1000)  # a zero-byte file is a blob too
    assert empty.size == 0 and empty.key == hashlib.sha256(b"").hexdigest()
    assert await read_all(blobs, empty.key) == b""


async def test_leftovers_of_a_crash_are_dropped_at_start(tmp_path: Path) -> None:
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "cut-off").write_bytes(b"an upload the process died in")
    blobs = DiskBlobs(tmp_path)
    await blobs.start()
    assert kept_files(tmp_path) == []


async def test_keys_are_hashes_only(tmp_path: Path) -> None:
    blobs = DiskBlobs(tmp_path)
    for hostile in ["../../etc/passwd", "A" * 64, "0" * 63, ""]:
        with pytest.raises(ValueError, match="not a blob key"):
            blobs.path(hostile)
