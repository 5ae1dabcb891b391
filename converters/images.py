"""Image facts read from file headers, without decoding pixels (fast on 10k+ images)."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS: above it the loaders warn, at twice it they refuse
_TAIL = 4096
_FIRST = 1 << 12  # bytes read first: most headers fit, and small files whole
_HEAD = 1 << 16  # bytes read at most before a longer header is read as a stream
_PAST_HEAD = object()


class ImageProblem(Exception):
    """An image that cannot be used; `reason` is a key of dataset.REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """Stored size (before EXIF orientation), colour mode, format and EXIF Orientation (1..8)."""

    width: int
    height: int
    mode: str
    format: str
    orientation: int = 1

    @property
    def shown_size(self) -> tuple[int, int]:
        """(width, height) once the EXIF orientation is applied, as every odorch loader shows it."""
        return (self.height, self.width) if self.orientation >= 5 else (self.width, self.height)


def probe_image(path: Path | str) -> ImageInfo:
    """Size, colour mode, format and EXIF orientation from the header; a JPEG or PNG whose end
    marker is missing is reported as truncated (training would crash on it later), an image
    above MAX_PIXELS as too large.

    JPEG and PNG headers are read here directly (several times faster than PIL on 10k+
    images); anything else, or a header this reader does not follow, goes to PIL.
    """
    if "\0" in str(path):
        raise ImageProblem("image_unreadable", f"{str(path)!r}: a file name with a NUL byte")
    try:
        with open(path, "rb", buffering=0) as f:
            head = _read_up_to(f, _FIRST)
            complete = len(head) < _FIRST  # the whole file
            info = _head_info(head, complete=complete)
            if info is _PAST_HEAD:  # a longer header (an EXIF thumbnail, an ICC profile ...)
                head += _read_up_to(f, _HEAD - len(head))
                complete = len(head) < _HEAD
                info = _head_info(head, complete=complete)
            if info is _PAST_HEAD:  # longer still: read it from the file
                with open(path, "rb") as stream:
                    info = _header_info(stream, head)
            truncated = info is not None and _lacks_end_marker(f, head, complete=complete)
    except FileNotFoundError as e:
        raise ImageProblem("image_missing", f"{path}: not found") from e
    except IsADirectoryError as e:
        raise ImageProblem("image_unreadable", f"{path}: a folder, not an image file") from e
    except (OSError, struct.error):
        info = None
    if info is None:
        info = _probe_with_pil(path)
    elif truncated:
        raise ImageProblem("image_truncated", f"{path}: no end-of-image marker, the file is cut short")
    if info.width * info.height > MAX_PIXELS:
        raise ImageProblem(
            "image_too_large", f"{path}: {info.width}x{info.height} is over {MAX_PIXELS:,} pixels; downscale it"
        )
    return info


def _read_up_to(f: BinaryIO, n: int) -> bytes:
    """The next n bytes of the file, fewer only at its end."""
    data = chunk = f.read(n)
    while chunk and len(data) < n:
        chunk = f.read(n - len(data))
        data += chunk
    return data


def _head_info(head: bytes, *, complete: bool) -> ImageInfo | None | object:
    """_header_info on the first bytes of a file, parsed in memory. With all of them (`complete`)
    it is the file's own result; else _PAST_HEAD when it needed bytes beyond them."""
    buf = io.BytesIO(head)
    if complete:
        return _header_info(buf, head)  # a struct.error means what it means for the file
    try:
        info = _header_info(buf, head)
    except struct.error:
        return _PAST_HEAD
    return _PAST_HEAD if buf.tell() >= len(head) else info


def _header_info(f: BinaryIO, head: bytes) -> ImageInfo | None:
    return _png_info(f) if head.startswith(_PNG) else _jpeg_info(f) if head.startswith(b"\xff\xd8") else None


def _tiff_orientation(data: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 1 when absent or invalid.
    Up to two leading "Exif\\0\\0" are skipped, as PIL does: JPEG's APP1 starts with one, some
    writers repeat it, and some put it at the start of a PNG's eXIf chunk."""
    data = data.removeprefix(b"Exif\0\0").removeprefix(b"Exif\0\0")
    try:
        order = {b"II": "<", b"MM": ">"}[data[:2]]
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
        for i in range(count):
            tag, _, _, value = struct.unpack_from(order + "HHIH", data, offset + 2 + 12 * i)
            if tag == 0x0112:
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1


_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png_info(f: BinaryIO) -> ImageInfo | None:
    f.seek(8)
    length, chunk, width, height, depth, color = struct.unpack(">I4sIIBB", f.read(18))
    if chunk != b"IHDR" or color not in _PNG_MODES:
        return None
    mode = "I;16" if (color == 0 and depth == 16) else _PNG_MODES[color]
    return ImageInfo(width, height, mode, "PNG", _png_orientation(f))


def _png_orientation(f: BinaryIO) -> int:
    """Orientation from an eXIf chunk before the image data (where PIL reads it at open)."""
    f.seek(33)  # signature 8 + IHDR 25
    while True:
        head = f.read(8)
        if len(head) < 8:
            return 1
        length, chunk = struct.unpack(">I4s", head)
        if chunk in (b"IDAT", b"IEND"):
            return 1
        if chunk == b"eXIf":
            return _tiff_orientation(f.read(length))
        f.seek(length + 4, 1)


def _jpeg_info(f: BinaryIO) -> ImageInfo | None:
    """Walk the JPEG markers to the frame header (SOFn): height, width, components."""
    f.seek(2)
    orientation = 1
    while True:
        byte = f.read(1)
        while byte == b"\xff":
            byte = f.read(1)
        if not byte:
            return None
        code = byte[0]
        if code == 0x01 or 0xD0 <= code <= 0xD8:
            continue  # markers without a length
        (length,) = struct.unpack(">H", f.read(2))
        if code in _JPEG_SOF:
            _, height, width, components = struct.unpack(">BHHB", f.read(6))
            if components not in _JPEG_MODES or not width or not height:
                return None
            return ImageInfo(width, height, _JPEG_MODES[components], "JPEG", orientation)
        if length < 2:
            return None
        if code == 0xE1 and orientation == 1:  # APP1: Exif (or XMP, which is skipped)
            segment = f.read(length - 2)
            if segment.startswith(b"Exif\0\0"):
                orientation = _tiff_orientation(segment)
        else:
            f.seek(length - 2, 1)
        if f.read(1) != b"\xff":
            return None
        f.seek(-1, 1)


def _probe_with_pil(path: Path) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            orientation = orientation if orientation in range(1, 9) else 1
            info = ImageInfo(im.width, im.height, im.mode, im.format or "", orientation)
    except FileNotFoundError as e:
        raise ImageProblem("image_missing", f"{path}: not found") from e
    except Image.DecompressionBombError as e:
        raise ImageProblem("image_too_large", f"{path}: {e}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        try:
            with open(path, "rb") as f:
                truncated = _lacks_end_marker(f, f.read(8))
        except OSError:
            truncated = False
        reason = "image_truncated" if truncated else "image_unreadable"
        raise ImageProblem(reason, f"{path}: {'the file is cut short: ' if truncated else ''}{e}") from e
    return info


def _lacks_end_marker(f: BinaryIO, head: bytes, *, complete: bool = False) -> bool:
    """A JPEG or PNG without its end marker (EOI / IEND) near the end of the file; `head` holds
    the file's first bytes, all of them when `complete`."""
    marker = b"\xff\xd9" if head.startswith(b"\xff\xd8") else b"IEND" if head.startswith(_PNG) else None
    if marker is None:
        return False
    if complete:
        return marker not in head[-_TAIL:]
    size = f.seek(0, 2)
    f.seek(max(0, size - _TAIL))
    return marker not in f.read(_TAIL)
