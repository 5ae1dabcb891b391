"""Image facts read from file headers, without decoding pixels (fast on 10k+ images)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_TAIL = 4096


class ImageProblem(Exception):
    """An image that cannot be used; `reason` is a key of dataset.REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str
    format: str


def probe_image(path: Path) -> ImageInfo:
    """Size, colour mode and format from the header; a JPEG or PNG whose end marker is
    missing is reported as truncated (training would crash on it later)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            info = ImageInfo(im.width, im.height, im.mode, im.format or "")
    except FileNotFoundError as e:
        raise ImageProblem("image_missing", f"{path}: not found") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if _is_truncated(path):
            raise ImageProblem("image_truncated", f"{path}: the file is cut short ({e})") from e
        raise ImageProblem("image_unreadable", f"{path}: {e}") from e
    if _is_truncated(path):
        raise ImageProblem("image_truncated", f"{path}: no end-of-image marker, the file is cut short")
    return info


def _is_truncated(path: Path) -> bool:
    """A JPEG or PNG without its end marker (EOI / IEND) near the end of the file."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = f.seek(0, 2)
        f.seek(max(0, size - _TAIL))
        tail = f.read()
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in tail
    if head.startswith(b"\x89PNG"):
        return b"IEND" not in tail
    return False
