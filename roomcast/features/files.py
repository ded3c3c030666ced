"""Shared files: what an upload goes through before it is kept.

The bytes are streamed to the blob store (never held whole: only the first
:data:`~roomcast.ports.blobs.SNIFF_BYTES` are kept, to tell the type), then
the type is what they say (:func:`roomcast.core.files.sniff`). An image is
decoded off the event loop: its upright size, its thumbnails, and a copy
without its location when it has one (that copy is what is kept). Only then
is the record written; a refusal on the way removes what was stored.

Who may upload: a member of the room, within the limits (:class:`FileLimits`:
size, the bytes a user keeps in all, uploads per minute), counted in the
store so that every node counts the same.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, replace

from roomcast.core import images
from roomcast.core.files import safe_filename, sniff
from roomcast.ports.blobs import BlobStore, BlobTooLarge, StoredBlob
from roomcast.ports.store import FileRecord, Store, Thumbnail
from roomcast.protocol import ErrorCode, ProtocolError

__all__ = ["FileLimits", "FileUploads"]

#: Types decoded as images (what :mod:`roomcast.core.images` reads).
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


@dataclass(frozen=True, slots=True)
class FileLimits:
    max_bytes: int = 25 * 2**20
    quota_bytes: int = 2**30  # what one user's kept files may take in all
    per_minute: int = 30
    max_pixels: int = images.DEFAULT_MAX_PIXELS


class FileUploads:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        limits: FileLimits,
        clock_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._blobs = blobs
        self.limits = limits
        self._clock_ms = clock_ms

    async def admit(self, room_id: int, user_id: str, declared_size: int | None) -> None:
        """Refuse an upload before its body is read: not a member, too large
        by its ``Content-Length``, over the rate or the quota."""
        state = await self._store.member_state(room_id, user_id)
        if state.member is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the room's members may upload to it")
        limits = self.limits
        if declared_size is not None and declared_size > limits.max_bytes:
            raise _too_large(limits.max_bytes)
        recent, kept = await self._store.uploads_since(user_id, self._clock_ms() - 60_000)
        if recent >= limits.per_minute:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"at most {limits.per_minute} uploads a minute",
                retry_after_ms=60_000,
            )
        if kept + (declared_size or 0) > limits.quota_bytes:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"your files would take over {limits.quota_bytes} bytes"
            )

    async def upload(
        self,
        room_id: int,
        user_id: str,
        name: str,
        chunks: AsyncIterable[bytes],
        declared_size: int | None = None,
    ) -> FileRecord:
        """Keep an upload; see the module's docstring for what it goes through."""
        await self.admit(room_id, user_id, declared_size)
        try:
            stored = await self._blobs.put(chunks, self.limits.max_bytes)
        except BlobTooLarge:
            raise _too_large(self.limits.max_bytes) from None
        made: list[str] = [stored.key]
        try:
            record = await self._record(room_id, user_id, name, stored, made)
            await self._store.add_file(record)
        except BaseException:
            # A blob is shared by files with the same bytes: only the ones no
            # file names go. (An upload of the same bytes that commits between
            # that read and the delete loses them: a sweep of unnamed blobs
            # after a grace time is the way to close that.)
            await self._forget(made)
            raise
        if record.blob != stored.key:
            # The upload as sent (with its location) is not what is kept.
            await self._forget([stored.key])
        return record

    async def _record(
        self, room_id: int, user_id: str, name: str, stored: StoredBlob, made: list[str]
    ) -> FileRecord:
        kind = sniff(stored.head)
        record = FileRecord(
            id=secrets.token_urlsafe(18),
            room_id=room_id,
            uploader=user_id,
            name=safe_filename(name),
            size=stored.size,
            content_type=kind,
            blob=stored.key,
            created_at=self._clock_ms(),
        )
        if kind not in IMAGE_TYPES:
            return record
        data = b"".join([chunk async for chunk in self._blobs.read(stored.key)])
        pixels = self.limits.max_pixels
        try:
            facts = await asyncio.to_thread(images.inspect, data, pixels)
        except images.ImageRefused as exc:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"image: {exc}") from None
        if facts.has_location:
            plain = await asyncio.to_thread(images.without_location, data, pixels)
            if plain is not None:
                data = plain
                kept = await self._blobs.put(_once(plain), len(plain))
                made.append(kept.key)
                record = replace(record, blob=kept.key, size=kept.size)
        thumbnails = []
        made_small = await asyncio.to_thread(
            images.thumbnails, data, images.THUMBNAIL_WIDTHS, pixels
        )
        for width, height, small in made_small:
            blob = await self._blobs.put(_once(small), len(small))
            made.append(blob.key)
            thumbnails.append(Thumbnail(width, height, blob.key, blob.size))
        return replace(record, width=facts.width, height=facts.height, thumbnails=tuple(thumbnails))

    async def _forget(self, keys: list[str]) -> None:
        for key in await self._store.unused_blobs(keys):
            await self._blobs.delete(key)


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(ErrorCode.TOO_LARGE, f"a file may be at most {limit} bytes")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
