"""write_layout links the images in a forked child process while it makes the json when there are
many (coco.PLACE_IN_CHILD_MIN of them): the files written and the errors raised must be those of
linking them in the calling process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from odorch.converters import coco
from odorch.converters.dataset import Box, Dataset, DatasetError, ImageRecord, Problems
from odorch.converters.voc import read_voc
from tests.helpers import shared_path, write_image


def _in_child(monkeypatch, marker: Path) -> None:
    """Link in a child from the first image on; the child leaves its pid in `marker`."""
    place_all = coco._place_all

    def recording(images, images_out, send):
        marker.write_text(str(os.getpid()))
        place_all(images, images_out, send)

    monkeypatch.setattr(coco, "PLACE_IN_CHILD_MIN", 1)
    monkeypatch.setattr(coco, "_place_all", recording)


def _written(out: Path) -> dict[str, object]:
    """Every file written: json text, and for each image the file it is a link to (its inode)."""
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    return {name: p.stat().st_ino if name.startswith("images/") else p.read_bytes() for name, p in files.items()}


def test_child_writes_what_the_caller_writes(tmp_path, monkeypatch):
    dataset = read_voc(shared_path("datasets", "bccd", "BCCD"))
    splits = {"train": dataset.images[:300], "test": dataset.images[300:]}
    coco.write_layout(dataset, tmp_path / "here", splits, command="t")
    _in_child(monkeypatch, tmp_path / "pid")
    coco.write_layout(dataset, tmp_path / "child", splits, command="t")
    assert int((tmp_path / "pid").read_text()) != os.getpid()
    here, child = _written(tmp_path / "here"), _written(tmp_path / "child")
    assert here == child and len(here) == 364 + 3
    assert here["images/BloodImage_00000.jpg"] == (dataset.images[0].source.stat().st_ino)


def _dataset(tmp_path: Path, file_name: str, source: Path) -> Dataset:
    good = write_image(tmp_path / "src" / "good.jpg")
    images = [
        ImageRecord(source=good, file_name="good.jpg", width=64, height=48, mode="RGB", boxes=[Box(1, 1, 9, 9, "a")], origin="good.xml"),
        ImageRecord(source=source, file_name=file_name, width=64, height=48, mode="RGB", boxes=[], origin="bad.xml"),
    ]
    return Dataset(images=images, classes=["a"], problems=Problems(), source=str(tmp_path))


@pytest.mark.parametrize("case", ["missing source", "name leaving the folder"])
def test_child_errors_are_raised_by_the_caller(tmp_path, monkeypatch, case):
    missing = tmp_path / "src" / "missing.jpg"
    name = "bad.jpg" if case == "missing source" else "../bad.jpg"
    dataset = _dataset(tmp_path, name, missing if case == "missing source" else tmp_path / "src" / "good.jpg")
    expected = FileNotFoundError if case == "missing source" else DatasetError
    with pytest.raises(expected) as here:
        coco.write_layout(dataset, tmp_path / "here", {"all": dataset.images}, command="t")
    _in_child(monkeypatch, tmp_path / "pid")
    with pytest.raises(expected) as child:
        coco.write_layout(dataset, tmp_path / "child", {"all": dataset.images}, command="t")
    assert int((tmp_path / "pid").read_text()) != os.getpid()
    assert str(child.value) == str(here.value).replace("/here/", "/child/")
    assert not (tmp_path / "child" / "annotations").exists()  # no json points at images that are not there
