"""The blob port: where the bytes of shared files live.

Files are kept by the SHA-256 of their bytes (content-addressed): the same
bytes uploaded twice are kept once, a stored blob never changes, and a
partial upload is never visible under a key. Which files use a blob is the
store's business (a blob is deleted when the last file that names it is).

Adapters: a directory on local disk (:mod:`roomcast.adapters.disk_blobs`),
and S3-compatible object storage for scale-out.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SNIFF_BYTES", "BlobStore", "BlobTooLarge", "StoredBlob"]

#: How much of a blob's start :class:`StoredBlob` carries, for telling its
#: type from its bytes.
SNIFF_BYTES = 4096


class BlobTooLarge(Exception):
    """The bytes ran past the limit given to :meth:`BlobStore.put`; nothing was kept."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str  # the SHA-256 of the bytes, hex
    size: int
    head: bytes  # the first SNIFF_BYTES


class BlobStore(Protocol):
    async def put(self, chunks: AsyncIterable[bytes], limit: int) -> StoredBlob:
        """Keep the bytes ``chunks`` yield, streamed (never held whole).

        More than ``limit`` bytes raise :class:`BlobTooLarge` as soon as the
        stream passes it; that or any failure of ``chunks`` keeps nothing.
        """

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The blob's bytes from ``start`` up to ``end`` (exclusive; None: its end)."""

    async def size(self, key: str) -> int | None:
        """The blob's size, or None when there is no such blob."""

    async def delete(self, key: str) -> None:
        """Remove the blob; nothing happens when there is none."""
