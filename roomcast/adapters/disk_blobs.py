"""Blobs in a directory on local disk (the default: ``./roomcast-files/``).

A blob is ``<root>/<k[:2]>/<k[2:4]>/<k>`` for its SHA-256 ``k``. An upload
is written to ``<root>/partial/`` (same file system), flushed to disk, and
then renamed into place: a rename is atomic, so a key names either nothing
or every byte. File I/O runs in a worker thread, a chunk at a time, so the
event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from roomcast.ports.blobs import SNIFF_BYTES, BlobTooLarge, StoredBlob

__all__ = ["DiskBlobs"]

#: Bytes read from a blob at a time.
READ_CHUNK = 256 * 1024


class DiskBlobs:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._partial = self.root / "partial"

    def path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    async def start(self) -> None:
        """Make the directories, and drop what uploads cut off by a crash left."""

        def prepare() -> None:
            self._partial.mkdir(parents=True, exist_ok=True)
            for leftover in self._partial.iterdir():
                leftover.unlink(missing_ok=True)

        await asyncio.to_thread(prepare)

    async def put(self, chunks: AsyncIterable[bytes], limit: int) -> StoredBlob:
        partial = self._partial / secrets.token_hex(16)
        digest = hashlib.sha256()
        head = bytearray()
        size = 0
        out: BinaryIO = await asyncio.to_thread(partial.open, "xb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise BlobTooLarge(f"more than {limit} bytes")
                digest.update(chunk)
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                await asyncio.to_thread(out.write, chunk)
            await asyncio.to_thread(_flush, out)
            key = digest.hexdigest()
            await asyncio.to_thread(self._place, partial, self.path(key))
        except BaseException:
            await asyncio.to_thread(out.close)
            await asyncio.to_thread(partial.unlink, True)
            raise
        return StoredBlob(key, size, bytes(head))

    @staticmethod
    def _place(partial: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        # The same bytes kept already: the rename replaces them with themselves.
        os.replace(partial, final)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        source: BinaryIO = await asyncio.to_thread(self.path(key).open, "rb")
        try:
            await asyncio.to_thread(source.seek, start)
            left = None if end is None else max(0, end - start)
            while left is None or left > 0:
                want = READ_CHUNK if left is None else min(READ_CHUNK, left)
                chunk = await asyncio.to_thread(source.read, want)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(source.close)

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(key).unlink)


def _flush(out: BinaryIO) -> None:
    """Flush and close: the bytes are on disk before the rename names them."""
    out.flush()
    os.fsync(out.fileno())
    out.close()
