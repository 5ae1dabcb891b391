"""probe_image reads a file's first 4 KiB and parses the header from memory, then up to 64 KiB
when the header goes on (a large ICC profile or text chunk before the frame or the EXIF block),
then reads the file as a stream. Either way it must say what PIL says about the real file: size,
mode, EXIF orientation, and a cut-short file must be reported as truncated."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odorch.converters.images import ImageProblem, probe_image


def _pixels(width: int = 48, height: int = 32, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (height, width, 3), np.uint8)
    return Image.fromarray(array).convert(mode)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _jpeg(path: Path, *, orientation: int = 1, icc: int = 0, mode: str = "RGB", exif_prefix: bytes = b"") -> Path:
    """A JPEG by PIL; `icc` bytes of ICC profile (APP2 segments) put the frame header that far in;
    `exif_prefix` goes before the APP1 segment's own "Exif\\0\\0" (some writers repeat it)."""
    extra = {"icc_profile": bytes(range(256)) * (icc // 256)} if icc else {}
    _pixels(mode=mode).save(path, format="JPEG", exif=exif_prefix + _exif(orientation), **extra)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(path: Path, *, orientation: int = 1, text: int = 0, exif_prefix: bytes = b"") -> Path:
    """A PNG by PIL with an eXIf chunk placed after `text` bytes of tEXt chunk (PIL reads both);
    `exif_prefix` starts the chunk (some writers put JPEG's "Exif\\0\\0" there; PIL skips it)."""
    buf = io.BytesIO()
    _pixels().save(buf, format="PNG")
    data = buf.getvalue()
    ihdr_end = 8 + 25
    extra = _chunk(b"tEXt", b"note\0" + b"x" * text) if text else b""
    exif = _exif(orientation).removeprefix(b"Exif\0\0")  # the chunk holds the TIFF block alone, as PIL writes it
    path.write_bytes(data[:ihdr_end] + extra + _chunk(b"eXIf", exif_prefix + exif) + data[ihdr_end:])
    return path


def _pil(path: Path) -> tuple[int, int, str, int]:
    with Image.open(path) as im:
        im.load()  # PIL reads a PNG's eXIf chunk only once it reaches it
        return im.width, im.height, im.mode, im.getexif().get(0x0112, 1)


CASES = {
    "small jpeg": lambda p: _jpeg(p / "a.jpg", orientation=6),
    "jpeg, frame past 4 KiB": lambda p: _jpeg(p / "a.jpg", orientation=2, icc=20_000),
    "jpeg, frame past 64 KiB": lambda p: _jpeg(p / "a.jpg", orientation=8, icc=100_000),
    "greyscale jpeg, frame past 64 KiB": lambda p: _jpeg(p / "a.jpg", orientation=3, icc=70_000, mode="L"),
    "small png": lambda p: _png(p / "a.png", orientation=5),
    "png, eXIf past 4 KiB": lambda p: _png(p / "a.png", orientation=4, text=20_000),
    "png, eXIf past 64 KiB": lambda p: _png(p / "a.png", orientation=7, text=100_000),
    "png, eXIf starting with Exif header": lambda p: _png(p / "a.png", orientation=6, exif_prefix=b"Exif\0\0"),
    "jpeg, Exif header twice": lambda p: _jpeg(p / "a.jpg", orientation=5, exif_prefix=b"Exif\0\0"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_probe_says_what_pil_says(tmp_path, case):
    path = CASES[case](tmp_path)
    info = probe_image(path)
    assert (info.width, info.height, info.mode, info.orientation) == _pil(path)
    assert info.orientation != 1
    if "KiB" in case:
        assert path.stat().st_size > int(case.split()[-2]) * 1024


@pytest.mark.parametrize("case", sorted(CASES))
def test_cut_short_files_are_truncated(tmp_path, case):
    path = CASES[case](tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])  # the end marker and some pixels gone; the header stays
    with pytest.raises(ImageProblem) as caught:
        probe_image(path)
    assert caught.value.reason == "image_truncated"
