"""What the server does with an uploaded image: its size, its thumbnails,
and its copy without location data. Pure computation on bytes (Pillow), run
off the event loop by the caller.

An image's declared size is checked before a pixel is decoded: a small
file may declare a huge canvas (a decompression bomb), and decoding it
would take gigabytes. Thumbnails are made only narrower than the image,
never wider, and as WebP (small, with transparency, shown by every current
browser). Location (EXIF GPS) is taken out of what is served, since a phone
photo carries where it was taken.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "THUMBNAIL_WIDTHS",
    "ImageFacts",
    "ImageRefused",
    "inspect",
    "thumbnail",
    "thumbnails",
    "without_location",
]

#: Widths of the thumbnails made for an image wider than each.
THUMBNAIL_WIDTHS = (320, 800)
#: The largest canvas decoded: 50 megapixels (a 8,660 x 5,773 photo).
DEFAULT_MAX_PIXELS = 50_000_000
#: The EXIF tag of the GPS block.
_GPS_IFD = 0x8825
#: Formats kept by Pillow's name: the ones :func:`roomcast.core.files.sniff` lets in.
_FORMATS = {"JPEG", "PNG", "GIF", "WEBP"}


class ImageRefused(ValueError):
    """Not an image that is decoded here; the message says why, for the uploader."""


@dataclass(frozen=True, slots=True)
class ImageFacts:
    width: int
    height: int
    has_location: bool


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageRefused("the image declares too many pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageRefused("not a readable image") from exc
    if image.format not in _FORMATS:
        raise ImageRefused(f"{image.format} images are not shown")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRefused(f"{width}x{height} is over {max_pixels} pixels")
    return image


def inspect(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """The image's size as shown (EXIF orientation applied) and whether it
    carries a location; decodes it all, so a truncated file is refused."""
    image = _open(data, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRefused("the image is damaged or cut short") from exc
    exif = image.getexif()
    width, height = image.size
    if exif.get(0x0112) in (5, 6, 7, 8):  # rotated a quarter turn
        width, height = height, width
    return ImageFacts(width, height, bool(exif.get_ifd(_GPS_IFD)) or _GPS_IFD in exif)


def thumbnails(
    data: bytes, widths: Sequence[int] = THUMBNAIL_WIDTHS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[tuple[int, int, bytes]]:
    """``(width, height, WebP)`` of the image upright (first frame) at each of
    ``widths`` narrower than it, from one decoding."""
    image = ImageOps.exif_transpose(_open(data, max_pixels))
    wanted = [width for width in widths if width < image.width]
    if not wanted:
        return []
    upright = image.convert("RGBA" if _has_alpha(image) else "RGB")
    made = []
    for width in wanted:
        height = max(1, round(upright.height * width / upright.width))
        out = io.BytesIO()
        upright.resize((width, height), Image.Resampling.LANCZOS).save(out, "WEBP", quality=80)
        made.append((width, height, out.getvalue()))
    return made


def thumbnail(data: bytes, width: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | None:
    """A WebP ``width`` pixels wide (upright, first frame), or None when the
    image is not wider than that."""
    made = thumbnails(data, (width,), max_pixels)
    return made[0][2] if made else None


def without_location(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | None:
    """The image with its EXIF GPS block taken out, or None when it has none.
    JPEG keeps its quantization tables (``quality="keep"``), so the pixels
    change as little as a re-encoding allows; the other formats are lossless."""
    image = _open(data, max_pixels)
    exif = image.getexif()
    if _GPS_IFD not in exif:
        return None
    del exif[_GPS_IFD]
    out = io.BytesIO()
    options: dict[str, object] = {"exif": exif.tobytes()}
    if image.format == "JPEG":
        options["quality"] = "keep"
    elif image.format == "WEBP":
        options["lossless"] = True
    image.save(out, image.format, **options)
    return out.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
