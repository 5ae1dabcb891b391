"""Property-based fuzzing of the YOLO, CVAT, LabelMe, Label Studio and Ground Truth readers through
the CLI: every generated dataset ends in exit 0 with kept + repaired + dropped = total (and, where
the generator knows it, total = the boxes it wrote), or exit 1 with a one-line error; never a
traceback. Fixed budget, derandomized, so CI runs the same examples every time."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.converters.fuzz_helpers import (
    CORNERS,
    FUZZ,
    GOOD_IMAGES,
    JUNK,
    LABEL,
    NAME,
    NAMES,
    NUMBERS,
    TEXT,
    mostly,
)
from tests.converters.fuzz_helpers import check_cli as _check
from tests.converters.fuzz_helpers import write_images as _images

YOLO_FIELD = st.one_of(NUMBERS.map(str), st.sampled_from(["0", "1", "2", "-1", "x", "1e9"]), TEXT.filter(lambda t: not set(t) & set("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")))
YOLO_LINE = mostly(
    st.tuples(st.sampled_from(["0", "1"]), *[st.floats(0.05, 0.95).map(str)] * 2, *[st.floats(0.02, 0.3).map(str)] * 2).map(list),
    st.lists(YOLO_FIELD, max_size=9),
)


@FUZZ
@given(
    names=mostly(st.sampled_from(["names: [a, b]", "names: {0: a, 1: b}"]), JUNK.map(lambda j: f"names: {json.dumps(j)}")),
    labels=st.lists(st.lists(YOLO_LINE, max_size=5), min_size=1, max_size=3),
)
def test_yolo_fuzz(names, labels):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "yolo"
        _images(root / "images")
        (root / "labels").mkdir()
        (root / "data.yaml").write_text(f"train: images\nval: images\n{names}\n")
        lines_written = 0
        for stem, lines in zip(["a", "b", "orphan"], labels):
            text = "".join(" ".join(fields) + "\n" for fields in lines)
            (root / "labels" / f"{stem}.txt").write_text(text)
            lines_written += sum(1 for line in text.splitlines() if line.split())
        # b.png is unreadable: its boxes are counted as dropped with it, as are the orphan's
        _check(["convert", "yolo2coco", str(root), "--out", str(Path(tmp) / "out")], lines_written)


SHAPE = st.tuples(
    mostly(st.just("box"), st.sampled_from(["polygon", "points", "tag", "mask"])),
    mostly(
        st.tuples(LABEL.map(str), CORNERS).map(lambda t: {"label": t[0], **dict(zip(("xtl", "ytl", "xbr", "ybr"), map(str, t[1])))}),
        st.dictionaries(st.sampled_from(["label", "xtl", "ytl", "xbr", "ybr", "rotation", "occluded"]), NUMBERS.map(str) | TEXT, max_size=7),
    ),
)


@FUZZ
@given(
    images=st.lists(
        st.tuples(NAME, st.dictionaries(st.sampled_from(["width", "height", "subset", "id"]), NUMBERS.map(str) | TEXT), st.lists(SHAPE, max_size=4)),
        max_size=3,
    ),
    broken=mostly(st.just(False), st.just(True)),
)
def test_cvat_fuzz(images, broken):
    from xml.sax.saxutils import quoteattr

    def attrs(d):
        return " ".join(f"{k}={quoteattr(''.join(c for c in str(v) if c >= ' '))}" for k, v in d.items())

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cvat"
        _images(root / "images")
        body, shapes = [], 0
        for name, meta, children in images:
            inner = "".join(f"<{tag} {attrs(a)}/>" for tag, a in children)
            shapes += sum(tag != "tag" for tag, _ in children)
            body.append(f"<image name={quoteattr(name.replace(chr(0), ''))} {attrs(meta)}>{inner}</image>")
        declaration = '<?xml version="1.0" encoding="x-none"?>' if broken and len(body) == 1 else ""  # an unknown encoding
        text = declaration + "<annotations><version>1.1</version>" + "".join(body) + "</annotations>"
        (root / "annotations.xml").write_text(text[: len(text) // 2] if broken else text)
        _check(["convert", "cvat2coco", str(root), "--out", str(Path(tmp) / "out")], None if broken else shapes)


@FUZZ
@given(
    files=st.lists(
        mostly(
            st.fixed_dictionaries(
                {"imagePath": mostly(NAME, JUNK), "shapes": st.lists(st.fixed_dictionaries({
                    "label": LABEL, "points": mostly(CORNERS.map(lambda b: [[b[2], b[3]], [b[0], b[1]]]),
                                                     st.lists(st.lists(NUMBERS, max_size=3), max_size=3) | JUNK),
                    "shape_type": mostly(st.just("rectangle"), st.sampled_from(["polygon", "circle"]) | JUNK),
                }), min_size=1, max_size=4)},
                optional={"imageWidth": mostly(st.just(40), NUMBERS | JUNK), "imageHeight": mostly(st.just(30), NUMBERS | JUNK)},
            ),
            JUNK,
        ),
        min_size=1,
        max_size=3,
    )
)  # fmt: skip
def test_labelme_fuzz(files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lm"
        _images(root)
        shapes = 0
        for n, data in enumerate(files):
            (root / f"f{n}.json").write_text(json.dumps(data))
            if isinstance(data, dict) and "shapes" in data:
                shapes += len(data["shapes"])
        _check(["convert", "labelme2coco", str(root), "--out", str(Path(tmp) / "out")], shapes)


PERCENT = mostly(st.floats(-5, 95, allow_nan=False), NUMBERS, odds=8)
SIDE = mostly(st.floats(0.5, 50), NUMBERS, odds=8)
RESULT = st.fixed_dictionaries(
    {"type": mostly(st.just("rectanglelabels"), st.sampled_from(["polygonlabels", "choices"]) | JUNK), "value": mostly(st.fixed_dictionaries(
        {"x": PERCENT, "y": PERCENT, "width": SIDE, "height": SIDE,
         "rectanglelabels": mostly(st.lists(LABEL, min_size=1, max_size=2), JUNK)},
        optional={"rotation": mostly(st.just(0), NUMBERS)}), JUNK, odds=8)},
    optional={"original_width": mostly(st.just(40), NUMBERS | JUNK), "original_height": mostly(st.just(30), NUMBERS | JUNK), "to_name": TEXT},
)  # fmt: skip
URLS = mostly(
    st.sampled_from(["/data/upload/1/0a1b2c3d-a.jpg", "/data/local-files/?d=c.jpg", "s3://b/d.jpg", "e.jpg"]),
    st.sampled_from(["/data/local-files/?d=../x", "http://h/sub/", "/data/upload/", "s3://"]),
)


@FUZZ
@given(
    tasks=st.lists(
        mostly(st.fixed_dictionaries({
            "data": mostly(st.fixed_dictionaries({"image": mostly(URLS, NAMES | JUNK)}), JUNK, odds=8),
            "annotations": mostly(st.lists(st.fixed_dictionaries(
                {"result": mostly(st.lists(RESULT, min_size=1, max_size=3), JUNK, odds=8)},
                optional={"was_cancelled": mostly(st.just(False), JUNK)}), min_size=1, max_size=2), JUNK, odds=8),
        }), JUNK),
        min_size=1,
        max_size=3,
    )
)  # fmt: skip
def test_labelstudio_fuzz(tasks):
    with tempfile.TemporaryDirectory() as tmp:
        _images(Path(tmp) / "img")
        (Path(tmp) / "export.json").write_text(json.dumps(tasks))
        _check(["convert", "labelstudio2coco", str(Path(tmp) / "export.json"), "--images", str(Path(tmp) / "img"),
                "--out", str(Path(tmp) / "out")])  # fmt: skip


ANN = mostly(
    st.tuples(mostly(st.sampled_from([0, 1]), NUMBERS | JUNK), CORNERS).map(
        lambda t: {"class_id": t[0], "left": t[1][0], "top": t[1][1], "width": t[1][2] - t[1][0], "height": t[1][3] - t[1][1]}
    ),
    JUNK,
    odds=8,
)


@FUZZ
@given(
    lines=st.lists(
        mostly(
            st.fixed_dictionaries({
                "source-ref": mostly(st.sampled_from(GOOD_IMAGES).map(lambda n: f"s3://b/k/{n}"), st.sampled_from(["s3://b/../../x", "s3://b/"]) | NAMES | JUNK),
                "job": mostly(st.fixed_dictionaries({"annotations": mostly(st.lists(ANN, min_size=1, max_size=3), JUNK, odds=8)},
                                                    optional={"image_size": JUNK}), JUNK, odds=8),
                "job-metadata": mostly(st.fixed_dictionaries({
                    "class-map": mostly(st.just({"0": "cat", "1": "dog"}), st.dictionaries(st.sampled_from(["0", "1", "x"]), TEXT | JUNK) | JUNK),
                    "type": st.just("groundtruth/object-detection")}), JUNK, odds=8),
            }),
            JUNK,
        ),
        min_size=1,
        max_size=3,
    ),
    raw=mostly(st.just(""), st.sampled_from(["{not json\n", "\n\n", "[1, 2]\n"])),
)  # fmt: skip
def test_groundtruth_fuzz(lines, raw):
    with tempfile.TemporaryDirectory() as tmp:
        _images(Path(tmp) / "img")
        (Path(tmp) / "o.manifest").write_text("".join(json.dumps(line) + "\n" for line in lines) + raw)
        _check(["convert", "groundtruth2coco", str(Path(tmp) / "o.manifest"), "--images", str(Path(tmp) / "img"),
                "--out", str(Path(tmp) / "out")])  # fmt: skip


@FUZZ
@given(
    suffix=st.sampled_from([".json", ".xml", ".manifest", ".yaml", ".txt", ".jsonl"]),
    body=st.one_of(
        JUNK.map(json.dumps),
        st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
        st.sampled_from(["<annotations>", "<annotation/>", '<?xml version="1.0" encoding="x-none"?><annotations/>',
                         '<?xml version="1.0" encoding="x-none"?><annotation/>', "<annotations><image name='a.jpg'/></annotations>", '{"source-ref": 1}',
                         '[{"data": {}, "annotations": 3}]', '{"images": [], "categories": {}}', "names: 3", '{"shapes": [], "imagePath": 1}']),
    ),
    in_folder=st.booleans(),
)  # fmt: skip
def test_auto_detection_fuzz(suffix, body, in_folder):
    """Whatever file `convert auto` (and `inspect`) is given, or a folder holding it: a format and its
    reader's outcome, or a one-line error naming what was looked for."""
    with tempfile.TemporaryDirectory() as tmp:
        _images(Path(tmp))
        path = Path(tmp) / f"data{suffix}"
        path.write_text(body, encoding="utf-8", errors="surrogateescape")
        target = str(Path(tmp) if in_folder else path)
        _check(["convert", "auto", target, "--out", str(Path(tmp) / "out")])
        _check(["inspect", target])
