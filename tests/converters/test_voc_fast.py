"""The VOC reader's fast paths must give exactly what ElementTree gives on the whole file: the same
image, boxes, problems and errors, on every file they accept; any other file goes to ElementTree.
The first (`_labelimg_file`) reads a whole file in LabelImg's layout by regular expressions; the
second (`_labelimg_fields`) reads LabelImg-layout objects by one regular expression and the rest of
the file by ElementTree. Each case is read three times by the real reader: as it is, with the first
fast path switched off, and with both switched off."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odorch.converters import voc
from odorch.converters.dataset import Problems
from tests.converters.fuzz_helpers import FUZZ

BCCD = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "bccd" / "BCCD"


def _object(name="RBC", coords=("10", "5", "30", "25"), flags=("0", "0"), pose="Unspecified") -> str:
    xmin, ymin, xmax, ymax = coords
    return (
        f"\n\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>{pose}</pose>\n\t\t<truncated>{flags[0]}</truncated>\n"
        f"\t\t<difficult>{flags[1]}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
        f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>"
    )


def _doc(*objects: str, head: str = "", root: str = "annotation", size: str = "40</width><height>30") -> str:
    return (
        f"{head}<{root}>\n\t<folder>JPEGImages</folder>\n\t<filename>a.jpg</filename>\n"
        f"\t<source><database>Unknown</database></source>\n\t<size><width>{size}</height><depth>3</depth></size>"
        f"\n\t<segmented>0</segmented>{''.join(objects)}\n</{root.split()[0]}>\n"
    )


CANONICAL = _doc(_object(), _object("WBC", ("0", "0", "40", "30"), ("1", "1")))
ACCEPTED = {  # files the fast path reads itself
    "labelimg": CANONICAL,
    "declaration": _doc(_object(), head='<?xml version="1.0" encoding="UTF-8"?>\n'),
    "bom": "\ufeff" + CANONICAL,
    "no objects": _doc(),
    "roboflow occluded": CANONICAL.replace("</difficult>", "</difficult>\n\t\t<occluded>1</occluded>"),
    "no pose or flags": _doc("<object><name>RBC</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>"),
    "bad coordinates": _doc(_object(coords=("", " 12 ", "1e400", "abc")), _object(coords=("nan", "1_0", "-5", "50"))),
    "non-ascii and spaced names": _doc(_object(" Bücher "), _object("\x7f"), _object("")),
    "inverted and outside": _doc(_object(coords=("30", "25", "10", "5")), _object(coords=("50", "40", "60", "45"))),
    "size mismatch": _doc(_object(), size="64</width><height>48"),
    "entities in the header": CANONICAL.replace("Unknown", "R&amp;D"),
    "header in another order": CANONICAL.replace("<folder>JPEGImages</folder>", "").replace(
        "\t<source>", "\t<folder>JPEGImages</folder><source>"
    ),
    "other header element": CANONICAL.replace("<segmented>", "<owner>me</owner><segmented>"),
    "text between objects": _doc(_object(), "x", _object()),
    "verified": CANONICAL.replace("<annotation>", '<annotation verified="yes">'),
}
# the accepted files whose header the whole-file path leaves to ElementTree (with the objects by regex)
HEADER_BY_TREE = {"entities in the header", "header in another order", "other header element", "text between objects"}
REFUSED = {  # files left to ElementTree, with what makes them so
    "voc2012 order": CANONICAL.replace("<difficult>0</difficult>\n\t\t<bndbox>", "<bndbox>").replace(
        "</bndbox>", "</bndbox><difficult>0</difficult>", 1
    ),
    "crlf": CANONICAL.replace("\n", "\r\n"),
    "comment in the header": CANONICAL.replace("<segmented>", "<!-- x --><segmented>"),
    "object in a comment": _doc(_object(), "<!--" + _object() + "-->"),
    "cdata name": _doc(_object("<![CDATA[RBC]]>")),
    "entity in the name": _doc(_object("R&amp;B")),
    "flag words": _doc(_object(flags=("true", "no"))),
    "empty flag": _doc(_object(flags=("", "0"))),
    "wrapped": _doc("<objects>" + _object() + _object() + "</objects>", _object()),
    "wrapped deeper": _doc(_object(), "<source>" + _object() + "</source>"),
    "nested": _doc("<object><name>A</name>" + _object() + "</object>"),
    "object attribute": _doc(_object().replace("<object>", '<object id="1">')),
    "namespace": _doc(_object(), root='annotation xmlns="urn:x"'),
    "prefixed": _doc(_object(), root='v:annotation xmlns:v="urn:v"'),
    "object as root": _object().strip() + "\n",
    "other root": _doc(_object(), root="annotations"),
    # an entity holding a LabelImg object: without the "<!" check, the one real object below (not in
    # LabelImg's layout) would count as the marker and the entity's object would be read instead
    "doctype entity": f'<!DOCTYPE annotation [<!ENTITY e "{_object()}">]>' + _doc(_object().replace("<object>", "<object >")),
    "pi with an object": _doc(_object(), "<?odorch " + _object() + "?>"),
    "control character": _doc(_object("R\x01C")),
    "noncharacter": _doc(_object("R\uffffC")),
    "greater-than in a coordinate": _doc(_object(coords=("1>", "2", "3", "4"))),
    "unclosed root": CANONICAL.replace("</annotation>", ""),
    "broken header": CANONICAL.replace("<folder>", "<folder"),
    "second root": CANONICAL + _doc(),
}
ENCODED = {  # (text, encoding) for files whose bytes are not UTF-8
    "latin-1 declared": ('<?xml version="1.0" encoding="ISO-8859-1"?>\n' + _doc(_object("Café")), "latin-1"),
    "latin-1 undeclared, in the header": (CANONICAL.replace("JPEGImages", "JPÉG"), "latin-1"),
    "latin-1 undeclared, in the file name": (CANONICAL.replace("a.jpg", "é.jpg"), "latin-1"),
    "utf-16": (_doc(_object()), "utf-16"),
    "unknown encoding": ('<?xml version="1.0" encoding="x-none"?>\n' + _doc(_object()), "utf-8"),
}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("fast")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 9, 9)).save(buf, format="JPEG")
    (folder / "a.jpg").write_bytes(buf.getvalue())
    return folder


def _read(xml: Path, folder: Path) -> tuple:
    problems = Problems()
    packed = voc._read_xml(xml, [folder], problems, None, "train", xml.name)
    return packed, problems.as_dict()


def _both(data: bytes, folder: Path) -> tuple:
    """(fast path result or None, reader result, reader result with ElementTree only)."""
    xml = folder / "x.xml"
    xml.write_bytes(data)
    fast = voc._labelimg_file(data) or voc._labelimg_fields(data)
    with_fast = _read(xml, folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(voc, "_labelimg_file", lambda data: None)
        objects_only = _read(xml, folder)
        mp.setattr(voc, "_labelimg_fields", lambda data: None)
        tree_only = _read(xml, folder)
    assert objects_only == tree_only
    return fast, with_fast, tree_only


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_fast_path_equals_elementtree(case, image_dir):
    fast, with_fast, tree_only = _both(ACCEPTED[case].encode(), image_dir)
    assert fast is not None, "the fast path should read this file"
    assert with_fast == tree_only


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_whole_file_path_takes_labelimg_headers(case):
    assert (voc._labelimg_file(ACCEPTED[case].encode()) is None) == (case in HEADER_BY_TREE)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_other_files_go_to_elementtree(case, image_dir):
    fast, with_fast, tree_only = _both(REFUSED[case].encode(), image_dir)
    assert fast is None
    assert with_fast == tree_only


@pytest.mark.parametrize("case", sorted(ENCODED))
def test_other_encodings_go_to_elementtree(case, image_dir):
    text, encoding = ENCODED[case]
    fast, with_fast, tree_only = _both(text.encode(encoding), image_dir)
    assert fast is None
    assert with_fast == tree_only


def test_cases_cover_boxes_problems_and_errors(image_dir):
    """The cases above reach kept, repaired and dropped boxes, problems, and malformed-XML errors."""
    _, (packed, report), _ = _both(ACCEPTED["inverted and outside"].encode(), image_dir)
    assert report["box_counts"] == {"total": 2, "kept": 0, "repaired": 1, "dropped": 1}
    assert packed[7][0][:4] == (10.0, 5.0, 30.0, 25.0)
    _, (packed, report), _ = _both(REFUSED["unclosed root"].encode(), image_dir)
    assert packed is None and "malformed XML" in report["errors"][0]
    _, (packed, report), _ = _both(ACCEPTED["non-ascii and spaced names"].encode(), image_dir)
    assert [box[4] for box in packed[7]] == ["Bücher", "\x7f"] and "box_no_label" in report["problems"]


def test_bccd_files_take_the_fast_path():
    """Every BCCD annotation (written by LabelImg) is read by the fast path, with the same result."""
    if not BCCD.is_dir():
        pytest.skip(f"{BCCD} not found: the shared BCCD dataset is needed for this test")
    xmls = sorted((BCCD / "Annotations").glob("*.xml"))
    for xml in xmls:
        assert voc._labelimg_file(xml.read_bytes()) is not None, xml.name
        fast = _read(xml, BCCD / "JPEGImages")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(voc, "_labelimg_file", lambda data: None)
            assert _read(xml, BCCD / "JPEGImages") == fast, xml.name
            mp.setattr(voc, "_labelimg_fields", lambda data: None)
            assert _read(xml, BCCD / "JPEGImages") == fast, xml.name
    assert len(xmls) == 364


# Fuzz: LabelImg-like files with one part swapped for text that may break the layout or the XML.
TRICKY = st.lists(st.sampled_from(list("01 .\t\n\r<>&;/ab-éẞ\x00\x01\x7f\uffff]") + ["<!--", "-->", "&amp;", "]]>", "<object>", "</object>"]), max_size=6).map("".join)
PART = st.sampled_from(["name", "pose", "flag", "coord", "header", "filename", "between", "tag"])


@FUZZ
@given(edits=st.lists(st.tuples(PART, st.integers(0, 3), TRICKY), max_size=3), objects=st.integers(0, 3))
def test_fuzz_fast_path_equals_elementtree(image_dir, edits, objects):
    names, coords, flags, poses = ["RBC"] * 4, [["10", "5", "30", "25"] for _ in range(4)], [["0", "1"] for _ in range(4)], ["P"] * 4
    header, filename, between, tag = "", "", [""] * 4, None
    for part, i, text in edits:
        if part == "name":
            names[i] = text
        elif part == "pose":
            poses[i] = text
        elif part == "flag":
            flags[i][i % 2] = text
        elif part == "coord":
            coords[i][i] = text
        elif part == "header":
            header = text
        elif part == "filename":
            filename = text
        elif part == "between":
            between[i] = text
        else:
            tag = ("name", "bndbox", "xmin", "object")[i]
    body = [between[i] + _object(names[i], tuple(coords[i]), tuple(flags[i]), poses[i]) for i in range(objects)]
    doc = _doc(*body).replace("<folder>", f"<folder>{header}").replace("<filename>", f"<filename>{filename}")
    if tag is not None:
        doc = doc.replace(f"<{tag}>", f"<{tag} >", 1)
    _, with_fast, tree_only = _both(doc.encode("utf-8", "surrogatepass"), image_dir)
    assert with_fast == tree_only
