"""The pure rules of shared files: names, dispositions, inline types, signed links."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from roomcast.core.files import (
    NAME_MAX,
    content_disposition,
    safe_filename,
    served_inline,
    sign,
    signature_valid,
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
