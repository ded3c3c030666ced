"""The pure rules of shared files: names, dispositions, inline types, signed links."""

from __future__ import annotations

import io
from urllib.parse import unquote

import pytest
from PIL import Image

from roomcast.core.files import (
    NAME_MAX,
    UNKNOWN,
    RangeNotSatisfiable,
    byte_range,
    content_disposition,
    safe_filename,
    served_inline,
    sign,
    signature_valid,
    sniff,
)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ('say "hi".txt', "say _hi_.txt"),
        ("two\nlines\r.txt", "two_lines_.txt"),
        ("photo\u202egnp.exe", "photognp.exe"),  # no right-to-left override
        ("\u05e9\u05dc\u05d5\u05dd.pdf", "\u05e9\u05dc\u05d5\u05dd.pdf"),  # Hebrew stays
        ("Cafe\u0301.txt", "Café.txt"),  # composed
        ("", "file"),
        ("..", "file"),
        ("/", "file"),
        ("  . ", "file"),
        ("nul\x00byte.bin", "nul_byte.bin"),
    ],
)
def test_names_are_made_safe(given: str, kept: str) -> None:
    assert safe_filename(given) == kept


def test_long_names_keep_their_extension() -> None:
    name = safe_filename("a" * 500 + ".jpeg")
    assert len(name) <= NAME_MAX and name.endswith(".jpeg") and name.startswith("aaa")
    assert len(safe_filename("b" * 500)) == NAME_MAX


def test_dispositions_quote_the_name_both_ways() -> None:
    header = content_disposition('résumé "final".pdf', inline=False)
    kind, plain, exact = header.split("; ")
    assert kind == "attachment"
    assert plain == 'filename="r_sum_ _final_.pdf"'
    assert exact.startswith("filename*=UTF-8''")
    assert unquote(exact.removeprefix("filename*=UTF-8''")) == "résumé _final_.pdf"
    assert content_disposition("cat.png", inline=True).startswith("inline; ")
    # Nothing the client could read as another parameter or header.
    for hostile in ['a"; filename="evil.html', "x\r\nSet-Cookie: a=b", "100%.txt"]:
        header = content_disposition(hostile, inline=False)
        assert "\r" not in header and "\n" not in header
        assert header.count('"') == 2 and "%.txt" not in header.split("; ")[1]


def test_only_passive_types_are_inline() -> None:
    for kind in ("image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4"):
        assert served_inline(kind)
    for kind in ("text/html", "image/svg+xml", "application/xml", "text/plain", ""):
        assert not served_inline(kind)
    assert served_inline("application/pdf")


def test_signed_links_are_bound_to_their_file_and_time() -> None:
    secret = b"k" * 32
    signature = sign(secret, "f1", 1000)
    assert signature_valid(secret, "f1", 1000, signature, now=999)
    assert signature_valid(secret, "f1", 1000, signature, now=1000)
    assert not signature_valid(secret, "f1", 1000, signature, now=1001)  # expired
    assert not signature_valid(secret, "f2", 1000, signature, now=0)  # another file
    assert not signature_valid(secret, "f1", 2000, signature, now=0)  # another expiry
    assert not signature_valid(b"other" * 8, "f1", 1000, signature, now=0)
    assert not signature_valid(secret, "f1", 1000, "", now=0)


def image(kind: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), "red").save(out, kind)
    return out.getvalue()


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (image("PNG"), "image/png"),
        (image("JPEG"), "image/jpeg"),
        (image("GIF"), "image/gif"),
        (image("WEBP"), "image/webp"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "application/pdf"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64), "video/mp4"),
        (b"ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90" + bytes(40), "audio/mpeg"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(30), "audio/wav"),
        (b"<!DOCTYPE html><html><script>alert(1)</script>", "text/html"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml"),
        ("plain words, \u00e9t\u00e9 \u9234\u866b".encode(), "text/plain"),
        ("cut at the end \u9234".encode()[:-1], "text/plain"),
        (b"\x00\x01\x02\x03 binary", UNKNOWN),
        (b"", UNKNOWN),  # a zero-byte file
    ],
)
def test_the_type_is_what_the_bytes_say(head: bytes, kind: str) -> None:
    assert sniff(head) == kind


def test_markup_is_never_inline_whatever_it_is_named() -> None:
    page = b"<!DOCTYPE html><html><body><script>document.cookie</script>"
    assert not served_inline(sniff(page))  # uploaded as photo.png: still a page
    assert not served_inline(sniff(b'<?xml version="1.0"?><svg><script/></svg>'))
    assert served_inline(sniff(image("PNG")))


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=90-1000", 100, (90, 100)),
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-1000", 100, (0, 100)),
        ("bytes=0-0", 1, (0, 1)),
        ("bytes=0-9,20-29", 100, None),  # several: the whole file
        ("items=0-9", 100, None),
        ("bytes=-", 100, None),
        ("bytes=x-y", 100, None),
    ],
)
def test_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=5-2", 100), ("bytes=-0", 100), ("bytes=0-", 0)],
)
def test_ranges_past_the_end(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, size)
