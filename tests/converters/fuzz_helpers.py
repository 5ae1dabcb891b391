"""Hypothesis strategies and the property every reader's fuzz test checks, shared by the VOC/COCO
fuzzers (test_fuzz_voc_coco.py) and the other formats' (test_formats_fuzz.py)."""

from __future__ import annotations

import io
import re
import traceback
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))

NAMES = st.sampled_from(["a.jpg", "b.png", "missing.jpg", "../a.jpg", "/etc/passwd", "", "sub/../a.jpg", "a.jpg\x00x", "sub"])
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10**6, 10**6),
    st.sampled_from([0, 1, 0.5, 1.000001, -0.000001, 1e308]),
)
TEXT = st.text(max_size=8)
JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy, odds: int = 4) -> st.SearchStrategy:
    """`good` but one time in `odds`, so that many examples get past the first check and reach
    the boxes (a plain one_of leans to its simplest branch)."""
    return st.integers(1, odds).flatmap(lambda i: bad if i == odds else good)


GOOD_IMAGES = ("a.jpg", "c.jpg", "d.jpg", "e.jpg")
NAME = mostly(st.sampled_from(GOOD_IMAGES), NAMES)
PIXEL = mostly(st.floats(-5, 45, allow_nan=False), NUMBERS, odds=8)  # the images are 40 x 30
# x0, y0, x1, y1 of a box that is mostly inside the image, now and then a coordinate of junk
CORNERS = st.tuples(st.floats(-2, 35), st.floats(-2, 25), st.floats(1, 12), st.floats(1, 12)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3])
)
LABEL = mostly(st.sampled_from(["cat", "dog"]), TEXT | JUNK)


def write_images(root: Path) -> None:
    """GOOD_IMAGES as 40 x 30 JPEGs, b.png cut short, and a folder `sub`."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 9, 9)).save(buf, format="JPEG")
    for name in GOOD_IMAGES:
        (root / name).write_bytes(buf.getvalue())
    (root / "b.png").write_bytes(buf.getvalue()[:50])  # cut short and misnamed
    (root / "sub").mkdir(exist_ok=True)


def check_cli(args: list[str], expected_total: int | None = None) -> None:
    """The property: exit 0 with kept + repaired + dropped = total (= `expected_total` when the
    generator knows it), or exit 1 with exactly one `error:` line; never a traceback."""
    from click.testing import CliRunner

    from odorch.cli import main

    result = CliRunner().invoke(main, args)
    if result.exit_code == 0:
        m = re.search(r"boxes: (\d+) total = (\d+) kept \+ (\d+) repaired \+ (\d+) dropped", result.output)
        total, kept, repaired, dropped = map(int, m.groups()) if m else (0, 0, 0, 0)
        assert total == kept + repaired + dropped, result.output
        if expected_total is not None:
            assert total == expected_total, result.output
        return
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), "".join(traceback.format_exception(*result.exc_info))
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
