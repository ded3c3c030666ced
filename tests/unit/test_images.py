"""Images: sizes, thumbnails that never upscale, location taken out, bombs refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from roomcast.core.images import ImageRefused, inspect, thumbnail, without_location

GPS = 0x8825


def encoded(image: Image.Image, kind: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def photo(width: int = 1200, height: int = 900, location: bool = True) -> bytes:
    image = Image.new("RGB", (width, height), (200, 40, 40))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make: kept
    if location:
        exif[GPS] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=90)


def test_sizes_and_location() -> None:
    facts = inspect(photo())
    assert (facts.width, facts.height, facts.has_location) == (1200, 900, True)
    assert not inspect(photo(location=False)).has_location
    png = encoded(Image.new("RGBA", (30, 20)), "PNG")
    assert (inspect(png).width, inspect(png).height) == (30, 20)


def test_rotated_photos_report_their_upright_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°
    data = encoded(Image.new("RGB", (400, 100)), "JPEG", exif=exif.tobytes())
    facts = inspect(data)
    assert (facts.width, facts.height) == (100, 400)
    small = thumbnail(data, 50)
    assert small is not None and Image.open(io.BytesIO(small)).size == (50, 200)


def test_thumbnails_are_narrower_never_wider() -> None:
    data = photo(1200, 900)
    small = thumbnail(data, 320)
    assert small is not None
    with Image.open(io.BytesIO(small)) as made:
        assert made.format == "WEBP" and made.size == (320, 240)
    assert thumbnail(data, 1200) is None and thumbnail(data, 2000) is None
    clear = encoded(Image.new("RGBA", (900, 10), (0, 0, 0, 0)), "PNG")
    kept = thumbnail(clear, 800)
    assert kept is not None and Image.open(io.BytesIO(kept)).mode == "RGBA"


def test_location_is_taken_out_of_what_is_served() -> None:
    data = photo()
    served = without_location(data)
    assert served is not None
    with Image.open(io.BytesIO(served)) as image:
        exif = image.getexif()
        assert GPS not in exif and exif[0x010F] == "PhoneMaker"
        assert image.size == (1200, 900)
    assert not inspect(served).has_location
    assert without_location(photo(location=False)) is None


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (png_declaring(100_000, 100_000), "pixels"),  # a bomb: 10 gigapixels declared
        (png_declaring(10_000, 6_000), "over 50000000 pixels"),
        (b"\x89PNG\r\n\x1a\n not really", "not a readable image"),
        (b"", "not a readable image"),
        (photo()[:2000], "damaged or cut short"),
        (encoded(Image.new("RGB", (4, 4)), "BMP"), "BMP images are not shown"),
    ],
)
def test_images_that_are_not_decoded(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRefused, match=reason):
        inspect(data)
