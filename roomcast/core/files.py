"""The rules of shared files: what a file is served as, under what name, and
how a link to it is signed. No I/O.

A file's type is what its bytes say (:func:`sniff`, on the upload's first
bytes), never what its name or the uploader's
``Content-Type`` claims: a page named ``photo.png`` is a page. Only types a
browser shows without running anything of the file's own are served inline
(images other than SVG, audio, video, PDF); everything else is a download,
so no uploaded file can run script in the app's origin.

Links for ``<img src>`` and ``<video src>``, which cannot send a login
token, carry an expiry and an HMAC over the file id and that expiry
(:func:`sign`, :func:`signature_valid`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from urllib.parse import quote

import puremagic

__all__ = [
    "INLINE_TYPES",
    "RangeNotSatisfiable",
    "byte_range",
    "content_disposition",
    "safe_filename",
    "served_inline",
    "sign",
    "signature_valid",
    "sniff",
]

#: Sniffed types a browser shows without running the file's own code.
INLINE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "application/ogg",
        "audio/webm",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "application/pdf",
    }
)

#: The longest name kept, in characters (file systems allow 255 bytes).
NAME_MAX = 200
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/]')


#: Other names the sniffer gives the same types.
_ALIASES = {"audio/wave": "audio/wav", "audio/x-wav": "audio/wav", "audio/vnd.wave": "audio/wav"}
#: Bytes of unknown kind.
UNKNOWN = "application/octet-stream"


def sniff(head: bytes) -> str:
    """The type a file's first bytes say it is (``puremagic``'s signatures,
    the likeliest match that names a type); ``text/plain`` for UTF-8 text
    with no signature, :data:`UNKNOWN` otherwise. Markup (HTML, SVG, XML)
    is found by its signature and is never inline."""
    try:
        candidates = puremagic.magic_string(head) if head else []
    except puremagic.PureError:
        candidates = []
    for candidate in candidates:
        kind = str(candidate.mime_type)
        if kind:
            return _ALIASES.get(kind, kind)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as cut:
        # A character cut off at the end of the head is still text.
        if cut.start < len(head) - 3:
            return UNKNOWN
        text = head[: cut.start].decode("utf-8")
    return "text/plain" if head and "\x00" not in text else UNKNOWN


def served_inline(content_type: str) -> bool:
    """Whether a file of this sniffed type may be shown in the page."""
    return content_type in INLINE_TYPES


def safe_filename(name: str) -> str:
    """The name a file is kept and offered under: its last path part, without
    control characters, quotes, slashes or bidirectional overrides (which
    make ``photo\u202egnp.exe`` read as ``photoexe.png``), at most
    :data:`NAME_MAX` characters; ``file`` when nothing is left."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) != "Cf")
    name = _UNSAFE.sub("_", unicodedata.normalize("NFC", name)).strip(" .")
    if len(name) > NAME_MAX:
        _, dot, ext = name.rpartition(".")
        suffix = f".{ext}" if dot and len(ext) <= 16 else ""
        name = name[: NAME_MAX - len(suffix)].rstrip(" .") + suffix
    return name or "file"


def content_disposition(name: str, inline: bool) -> str:
    """The ``Content-Disposition`` header (RFC 6266) for a file named ``name``:
    an ASCII ``filename`` for old clients and the exact name as RFC 5987's
    ``filename*``."""
    name = safe_filename(name)
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\%' else "_" for c in name)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def sign(secret: bytes, file_id: str, expires: int) -> str:
    """The signature of a link to ``file_id`` valid until ``expires`` (unix seconds)."""
    message = f"{file_id}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, file_id: str, expires: int, signature: str, now: int) -> bool:
    """Whether a link's signature is this file's and it has not expired."""
    if expires < now:
        return False
    return hmac.compare_digest(sign(secret, file_id, expires), signature)


class RangeNotSatisfiable(ValueError):
    """A ``Range`` wholly past the file's end (HTTP 416)."""


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The bytes (start, end exclusive) a single ``Range: bytes=`` asks for;
    None for the whole file (no header, several ranges, or one that cannot
    be read: RFC 9110 lets a server ignore those)."""
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None or found.group(1) == found.group(2) == "":
        return None
    first, last = found.group(1), found.group(2)
    if first == "":  # the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable("an empty suffix")
        return max(0, size - length), size
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise RangeNotSatisfiable(f"bytes {start}- of {size}")
    return start, end
