"""The hostile corpus of issue 13 as tests: every case ends in a clean one-line error or a counted
problem, never a traceback (the CLI runs with catch_exceptions=False) and never a silent loss;
paths that leave the dataset or the output folder are refused."""

import json
import struct
import zlib
from pathlib import Path

import pytest

from odorch.converters.coco import place_image, read_coco
from odorch.converters.dataset import DatasetError, ImageRecord, parse_flag
from odorch.converters.fsutil import UnsafePath, inside
from odorch.converters.images import MAX_PIXELS, probe_image
from tests.helpers import invoke, read_json, voc_xml, write_image

RBC = {"name": "RBC", "box": (10, 10, 30, 30)}


def _coco_file(folder: Path, images, annotations=(), categories=({"id": 1, "name": "cell"},), name="data.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"images": list(images), "annotations": list(annotations), "categories": list(categories)}))
    return path


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr
    return last


# ---- paths that leave the dataset or --out ----


@pytest.mark.parametrize("command", ["coco2coco", "coco2jumpstart"])
def test_file_name_with_dotdot_neither_reads_outside_nor_overwrites_outside_out(tmp_path, runner, command):
    """The issue's case: file_name '../victim.jpg' read a file beside the dataset and replaced one beside --out."""
    data = tmp_path / "data"
    write_image(data / "a.jpg")
    write_image(tmp_path / "victim.jpg", size=(10, 10))  # beside the dataset, and beside OUT's images/
    before = (tmp_path / "victim.jpg").read_bytes()
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "../victim.jpg"}, {"id": 3, "file_name": "/etc/hostname"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}, {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    path = _coco_file(data, images, anns)
    out = tmp_path / "out"
    result = invoke(runner, "convert", command, path, "--out", out, "--images", data)
    assert result.exit_code == 0, result.output
    assert "2 × image path that leaves the dataset folder" in result.output
    assert "boxes: 2 total = 1 kept + 0 repaired + 1 dropped" in result.output
    assert (tmp_path / "victim.jpg").read_bytes() == before
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.jpg"]


def test_writer_refuses_an_output_name_leaving_out(tmp_path):
    """Defence in depth: a record whose name climbs out (from any reader) is refused by the writer."""
    src = write_image(tmp_path / "a.jpg")
    record = ImageRecord(source=src, file_name="../../escaped.jpg", width=64, height=48, mode="RGB", boxes=[], origin="x")
    with pytest.raises(DatasetError, match="leaves its folder"):
        place_image(record, tmp_path / "out" / "images")
    assert not (tmp_path / "escaped.jpg").exists()


@pytest.mark.parametrize("name", ["", "   ", "a\0.jpg", "../a.jpg", "/abs.jpg", "C:\\x.jpg", "a/../../b.jpg", "a\n.jpg", 7])
def test_inside_refuses_names_that_are_not_paths_inside(tmp_path, name):
    with pytest.raises(UnsafePath):
        inside(tmp_path, name)


def test_inside_keeps_ordinary_relative_names(tmp_path):
    assert inside(tmp_path, "sub\\a.jpg") == tmp_path / "sub" / "a.jpg"
    assert inside(tmp_path, "./b.jpg") == tmp_path / "b.jpg"


# ---- COCO tracebacks of the issue -> clean errors or counted problems ----


@pytest.mark.parametrize(
    ("images", "categories", "message"),
    [
        (["a.jpg"], [{"id": 1, "name": "cell"}], "image entry 'a.jpg' needs an 'id'"),
        ([{"id": [1], "file_name": "a.jpg"}], [{"id": 1, "name": "cell"}], "image entry {'id': [1]"),
        ([{"id": {"x": 1}, "file_name": "a.jpg"}], [{"id": 1, "name": "cell"}], "needs an 'id' (a number or string)"),
        ([{"id": 1, "file_name": "a.jpg"}], [{"id": [1], "name": "cell"}], "category {'id': [1]"),
        ([{"id": 1, "file_name": 5}], [{"id": 1, "name": "cell"}], "'file_name' (a string)"),
    ],
)
def test_malformed_coco_entries_are_one_line_errors(tmp_path, runner, images, categories, message):
    write_image(tmp_path / "a.jpg")
    path = _coco_file(tmp_path, images, categories=categories)
    assert message in _one_line_error(invoke(runner, "convert", "coco2coco", path, "--out", tmp_path / "out"))


def test_unhashable_annotation_ids_non_dict_attributes_and_string_flags(tmp_path, runner):
    write_image(tmp_path / "a.jpg")
    anns = [
        {"id": 1, "image_id": [1], "category_id": 1, "bbox": [1, 1, 5, 5]},  # unhashable image_id
        {"id": 2, "image_id": 1, "category_id": {"c": 1}, "bbox": [1, 1, 5, 5]},  # unhashable category_id
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "attributes": ["occluded"]},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5], "iscrowd": "0", "ignore": "false"},
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [3, 3, 5, 5], "iscrowd": "1"},
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [4, 4, 5, 5], "iscrowd": "maybe"},
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": "1234"},  # a string is not 4 numbers
    ]
    path = _coco_file(tmp_path, [{"id": 1, "file_name": "a.jpg"}], anns)
    result = invoke(runner, "convert", "coco2coco", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "boxes: 7 total = 3 kept + 0 repaired + 4 dropped" in result.output
    for what in ("1 × annotation whose image_id", "1 × annotation whose category_id", "1 × annotation whose 'attributes'",
                 "1 × box whose iscrowd/ignore/difficult is not a boolean", "1 × box with missing or non-numeric"):
        assert what in result.output
    written = {a["bbox"][0]: a for a in read_json(tmp_path / "out" / "annotations" / "all.json")["annotations"]}
    assert (written[2]["iscrowd"], written[2]["ignore"]) == (0, 0)  # "0" / "false" were truthy strings
    assert written[3]["iscrowd"] == 1
    assert "attributes" not in written[1]


@pytest.mark.parametrize("name", ["", "a\0b.jpg", "sub"])
def test_empty_nul_or_folder_file_names_are_counted(tmp_path, runner, name):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    path = _coco_file(tmp_path, [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": name}], [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}])
    result = invoke(runner, "convert", "coco2coco", path, "--out", tmp_path / "out", "--images", tmp_path)
    assert result.exit_code == 0, result.output
    reason = "image file unreadable" if name == "sub" else "image path that leaves the dataset folder"
    assert f"1 × {reason}" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (b'{"images": ["\xff\xfe"]}', "not UTF-8"),
        ('{"images": [', "invalid JSON"),
        ('{"images": {}}', "not a COCO file"),
    ],
)
def test_hostile_json_files_are_one_line_errors(tmp_path, runner, text, message):
    path = tmp_path / "x.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert message in _one_line_error(invoke(runner, "convert", "coco2coco", path, "--out", tmp_path / "out"))


def test_zero_classes_exits_non_zero(tmp_path, runner):
    write_image(tmp_path / "a.jpg")
    path = _coco_file(tmp_path, [{"id": 1, "file_name": "a.jpg"}])
    assert "no box of any class" in _one_line_error(invoke(runner, "convert", "coco2coco", path, "--out", tmp_path / "out"))
    assert not (tmp_path / "out" / "annotations").exists()


def test_zero_classes_after_drops_reports_the_problems_once(tmp_path, runner):
    """The drops that left no class are reported once (the error used to print them again)."""
    write_image(tmp_path / "a.jpg")
    path = _coco_file(tmp_path, [{"id": 1, "file_name": "a.jpg"}], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 0]}])
    result = invoke(runner, "convert", "coco2coco", path, "--out", tmp_path / "out")
    assert "no box of any class" in _one_line_error(result)
    assert result.output.count("zero-area box") == 1, result.output


def test_class_names_differing_only_by_case_are_reported(tmp_path):
    write_image(tmp_path / "a.jpg")
    anns = [{"id": i, "image_id": 1, "category_id": i, "bbox": [i, 1, 5, 5]} for i in (1, 2)]
    path = _coco_file(tmp_path, [{"id": 1, "file_name": "a.jpg"}], anns, [{"id": 1, "name": "RBC"}, {"id": 2, "name": "rbc"}])
    dataset = read_coco([path])
    assert dataset.problems.counts["class_case_variants"] == 1
    assert dataset.problems.examples["class_case_variants"] == ["'RBC' / 'rbc'"]


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("false", False), ("FALSE", False), (0, False),
                         ("1", True), ("True", True), (1.0, True), ("yes", True), ("2", None), ("maybe", None), ([], None)])
def test_parse_flag(value, expected):
    assert parse_flag(value) is expected


# ---- VOC ----


def _voc(root: Path, xml: str | bytes, name: str = "a") -> Path:
    write_image(root / "JPEGImages" / f"{name}.jpg")
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{name}.xml").write_bytes(xml if isinstance(xml, bytes) else xml.encode())
    return root


def test_objects_inside_a_wrapper_are_read_and_counted(tmp_path, runner):
    xml = voc_xml("a.jpg", (64, 48), [RBC])
    inner = xml[xml.index("<object>") : xml.index("</annotation>")]
    xml = xml.replace("</annotation>", f"<objects>{inner}{inner}</objects></annotation>")
    result = invoke(runner, "convert", "voc2coco", _voc(tmp_path / "voc", xml), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "2 × <object> inside a wrapper element" in result.output
    assert "boxes: 3 total = 3 kept" in result.output


def test_empty_name_is_refused_with_a_clear_message(tmp_path, runner):
    xml = voc_xml("a.jpg", (64, 48), [RBC, {"name": " ", "box": (1, 1, 9, 9)}])
    result = invoke(runner, "convert", "voc2coco", _voc(tmp_path / "voc", xml), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "1 × box with an empty class name: dropped (e.g. a.xml object 2)" in result.output
    assert read_json(tmp_path / "out" / "odorch.json")["classes"] == ["RBC"]


def test_unknown_xml_encoding_is_a_one_line_error(tmp_path, runner):
    xml = b'<?xml version="1.0" encoding="x-klingon"?>' + voc_xml("a.jpg", (64, 48), [RBC]).encode()
    result = invoke(runner, "convert", "voc2coco", _voc(tmp_path / "voc", xml), "--out", tmp_path / "out")
    assert "unknown encoding: x-klingon; save the file as UTF-8" in _one_line_error(result)


def test_voc_difficult_false_string_is_not_ignored(tmp_path, runner):
    xml = voc_xml("a.jpg", (64, 48), [RBC]).replace("<difficult>0</difficult>", "<difficult>false</difficult>")
    result = invoke(runner, "convert", "voc2coco", _voc(tmp_path / "voc", xml), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert read_json(tmp_path / "out" / "annotations" / "all.json")["annotations"][0]["ignore"] == 0


# ---- images: pixel cap, folders, NUL ----


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header claims width x height (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def test_pixel_cap_is_checked_at_inspect_and_convert(tmp_path, runner):
    root = _voc(tmp_path / "voc", voc_xml("a.jpg", (64, 48), [RBC]))
    _png_header_only(root / "JPEGImages" / "bomb.png", 60000, 60000)
    (root / "Annotations" / "bomb.xml").write_text(voc_xml("bomb.png", (60000, 60000), [RBC]))
    for args in (["inspect", root], ["convert", "voc2coco", root, "--out", tmp_path / "out"]):
        result = invoke(runner, *args)
        assert result.exit_code == 0, result.output
        assert "1 × image above the pixel cap" in result.output
        assert f"60000x60000 is over {MAX_PIXELS:,} pixels" in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["a.jpg"]


def test_probe_refuses_bombs_folders_and_nul_names_without_traceback(tmp_path):
    from odorch.converters.images import ImageProblem

    cases = {
        _png_header_only(tmp_path / "big.png", 10000, 10000): "image_too_large",
        _png_header_only(tmp_path / "big.tif.png", 9500, 9500): "image_too_large",
        tmp_path / "folder.jpg": "image_unreadable",
        tmp_path / "nul\0.jpg": "image_unreadable",
    }
    (tmp_path / "folder.jpg").mkdir()
    for path, reason in cases.items():
        with pytest.raises(ImageProblem) as caught:
            probe_image(path)
        assert caught.value.reason == reason
