"""Property-based fuzzing of the VOC and COCO readers through the CLI (voc2coco, coco2coco, inspect):
malformed XML and JSON, junk values in every field, paths that leave the folder. Every run ends in
exit 0 with kept + repaired + dropped = total (= every box written, when the generator knows it), or
exit 1 with one `error:` line; never a traceback. Fixed budget, derandomized (fuzz_helpers.FUZZ)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

from hypothesis import given
from hypothesis import strategies as st

from tests.converters.fuzz_helpers import (
    CORNERS,
    FUZZ,
    JUNK,
    LABEL,
    NAME,
    NUMBERS,
    PIXEL,
    TEXT,
    check_cli,
    mostly,
    write_images,
)

XML_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)  # may hold NUL: malformed XML
FLAG = mostly(st.sampled_from(["0", "1"]), st.sampled_from(["false", "true", "2", "maybe", ""]) | XML_TEXT)
OBJECT = st.fixed_dictionaries(
    {"name": mostly(LABEL.map(str), st.sampled_from(["", " ", "CAT", "Cat"])), "corners": mostly(CORNERS.map(lambda b: [str(v) for v in b]), st.lists(PIXEL.map(str) | XML_TEXT, min_size=0, max_size=4)), "difficult": FLAG},
)


def _voc_xml(filename: str | None, size: tuple[str, str] | None, objects: list[dict], wrapped: int, root_tag: str) -> str:
    def obj(o: dict) -> str:
        coords = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), o["corners"]))
        return f"<object><name>{escape(o['name'])}</name><difficult>{escape(o['difficult'])}</difficult><bndbox>{coords}</bndbox></object>"

    parts = [f"<{root_tag}>"]
    if filename is not None:
        parts.append(f"<filename>{escape(filename)}</filename>")
    if size is not None:
        parts.append(f"<size><width>{escape(size[0])}</width><height>{escape(size[1])}</height></size>")
    parts += [obj(o) for o in objects[wrapped:]]
    if wrapped:
        parts.append("<objects>" + "".join(obj(o) for o in objects[:wrapped]) + "</objects>")
    parts.append(f"</{root_tag}>")
    return "".join(parts)


XML_FILE = st.fixed_dictionaries(
    {
        "filename": mostly(NAME, st.none() | XML_TEXT),
        "size": mostly(st.just(("40", "30")), st.none() | st.tuples(NUMBERS.map(str), NUMBERS.map(str)) | st.just(("30", "40"))),
        "objects": st.lists(OBJECT, max_size=4),
        "wrapped": st.integers(0, 2),
        "root_tag": mostly(st.just("annotation"), st.sampled_from(["annotations", "labels"])),
        "raw": mostly(st.none(), st.binary(max_size=40) | st.sampled_from([b"<annotation>", b'<?xml version="1.0" encoding="x-none"?><annotation/>'])),
    }
)


@FUZZ
@given(files=st.lists(XML_FILE, min_size=1, max_size=4), layout=st.sampled_from(["voc", "flat", "pairs"]))
def test_voc_fuzz(files, layout):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "voc"
        written, known = 0, True
        for i, f in enumerate(files):
            folder = {"voc": root / "Annotations", "flat": root, "pairs": root / ("train" if i % 2 else "validation") / "xml"}[layout]
            write_images({"voc": root / "JPEGImages", "flat": root, "pairs": folder.parent / "images"}[layout])
            folder.mkdir(parents=True, exist_ok=True)
            if f["raw"] is not None:
                (folder / f"x{i}.xml").write_bytes(f["raw"])
                known = False
                continue
            objects = f["objects"]
            (folder / f"x{i}.xml").write_text(_voc_xml(f["filename"], f["size"], objects, min(f["wrapped"], len(objects)), f["root_tag"]))
            written += len(objects) if f["root_tag"] == "annotation" else 0
        out = str(Path(tmp) / "out")
        check_cli(["convert", "voc2coco", str(root), "--out", out], written if known else None)
        check_cli(["inspect", str(root)], written if known else None)


ID = mostly(st.integers(1, 4), JUNK)
COCO_IMAGE = mostly(
    st.fixed_dictionaries({"id": ID, "file_name": NAME}, optional={"width": mostly(st.just(40), NUMBERS | JUNK), "height": mostly(st.just(30), NUMBERS | JUNK)}),
    JUNK,
    odds=10,
)
COCO_ANN = mostly(
    st.fixed_dictionaries(
        {"image_id": ID, "category_id": mostly(st.sampled_from([1, 2]), JUNK), "bbox": mostly(CORNERS.map(lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]), JUNK)},
        optional={"iscrowd": mostly(st.sampled_from([0, 1, "0", "false"]), JUNK), "ignore": mostly(st.just(0), JUNK),
                  "attributes": mostly(st.just({"occluded": False}), JUNK), "area": NUMBERS | JUNK, "id": ID},
    ),
    JUNK,
)
COCO_CAT = mostly(st.fixed_dictionaries({"id": st.sampled_from([1, 2]), "name": mostly(st.sampled_from(["cat", "Cat", "dog"]), TEXT | JUNK)}), JUNK, odds=10)


@FUZZ
@given(
    data=mostly(
        st.fixed_dictionaries({"images": st.lists(COCO_IMAGE, max_size=4), "annotations": st.lists(COCO_ANN, max_size=6), "categories": st.lists(COCO_CAT, max_size=3)}),
        JUNK,
        odds=10,
    ),
    raw=mostly(st.none(), st.sampled_from(["", "{", "[" * 50000, '{"images": [], "annotations": {}}']) | st.binary(max_size=20).map(lambda b: b.decode("latin-1"))),
)
def test_coco_fuzz(data, raw):
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp) / "data")
        path = Path(tmp) / "data" / "coco.json"
        path.write_text(raw if raw is not None else json.dumps(data, allow_nan=True), encoding="utf-8", errors="surrogatepass")
        # JUNK may draw a dict too ({} among them): only the fixed_dictionaries branch knows its total
        expected = len(data["annotations"]) if raw is None and isinstance(data, dict) and "annotations" in data else None
        check_cli(["convert", "coco2coco", str(path), "--out", str(Path(tmp) / "out")], expected)
        check_cli(["inspect", str(path)], expected)
