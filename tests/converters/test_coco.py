import json
from pathlib import Path

import pytest

from odorch.converters.coco import read_coco
from odorch.converters.dataset import DatasetError
from tests.helpers import invoke, load_coco, read_json, shared_path, write_image


def _coco(tmp_path: Path, *, images=None, annotations=None, categories=None, name="data.json") -> Path:
    images = images if images is not None else [{"id": 10, "file_name": "a.jpg", "width": 64, "height": 48}]
    for im in images:
        if not (tmp_path / im["file_name"]).exists():
            write_image(tmp_path / im["file_name"])
    path = tmp_path / name
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations if annotations is not None else [],
                "categories": categories if categories is not None else [{"id": 7, "name": "cell"}],
            }
        )
    )
    return path


def _ann(id, bbox, category_id=7, image_id=10, **extra):
    return {"id": id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def test_sparse_ids_unused_category_crowd_and_empty_images(tmp_path, runner):
    path = _coco(
        tmp_path,
        images=[
            {"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 3, "file_name": "empty.jpg", "width": 64, "height": 48},
        ],
        categories=[{"id": 0, "name": "things"}, {"id": 7, "name": "cell"}, {"id": 42, "name": "blob"}],
        annotations=[
            _ann(1, [1, 2, 10, 10], area=55.5),
            _ann(2, [20, 20, 10, 10], category_id=42, iscrowd=1),
            _ann(3, [30, 30, -10, 5]),  # negative width: inverted, repaired
        ],
    )
    out = tmp_path / "out"
    result = invoke(runner, "convert", "coco2coco", path, "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 × category without any box: dropped from the class map (e.g. things)" in result.output
    assert "boxes: 3 total = 2 kept + 1 repaired + 0 dropped" in result.output
    coco = load_coco(out / "annotations" / "all.json")
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [(1, "cell"), (2, "blob")]
    anns = coco.dataset["annotations"]
    assert [(a["category_id"], a["bbox"], a["iscrowd"]) for a in anns] == [
        (1, [1, 2, 10, 10], 0),
        (2, [20, 20, 10, 10], 1),
        (1, [20, 30, 10, 5], 0),
    ]
    assert anns[0]["area"] == 55.5  # the source (mask) area survives an unchanged box
    assert anns[2]["area"] == 50  # a repaired box gets its box area
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == ["a.jpg", "empty.jpg"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]}, "duplicate image ids [1]"),
        ({"categories": [{"id": 1, "name": "x"}, {"id": 1, "name": "y"}]}, "category id 1 is both 'x' and 'y'"),
        ({"images": {"id": 1}}, "not a COCO file"),
    ],
)
def test_unusable_coco_is_an_error(tmp_path, runner, bad, message):
    write_image(tmp_path / "b.jpg")
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data.update(bad)
    path.write_text(json.dumps(data))
    result = invoke(runner, "convert", "coco2coco", path, "--out", tmp_path / "out", "--images", tmp_path)
    assert result.exit_code == 1
    assert message in result.stderr and str(path) in result.stderr


def test_invalid_json_names_line(tmp_path, runner):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    result = invoke(runner, "convert", "coco2coco", path, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"{path}:2:" in result.stderr and "invalid JSON" in result.stderr



def test_written_layout_carries_the_installed_version_and_converters_stay_below_the_app(tmp_path, runner):
    # The version comes from the distribution's metadata: converters import nothing of the
    # application layer, not even the root package for __version__.
    import ast
    from importlib.metadata import version

    import odorch
    import odorch.converters

    out = tmp_path / "out"
    assert invoke(runner, "convert", "coco2coco", _coco(tmp_path, annotations=[_ann(1, [1, 1, 5, 5])]), "--out", out).exit_code == 0
    assert version("odorch") == odorch.__version__
    assert read_json(out / "annotations" / "all.json")["info"]["version"] == odorch.__version__
    assert read_json(out / "odorch.json")["created_by"].startswith(f"odorch {odorch.__version__} ")
    for source in Path(odorch.converters.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "odorch", f"{source.name}:{node.lineno} imports the odorch root package"
            elif isinstance(node, ast.Import):
                assert "odorch" not in [alias.name for alias in node.names], f"{source.name}:{node.lineno}"

def test_dangling_annotations_are_dropped_and_counted(tmp_path):
    path = _coco(tmp_path, annotations=[_ann(1, [1, 1, 5, 5]), _ann(2, [1, 1, 5, 5], image_id=99), _ann(3, [1, 1, 5, 5], category_id=8)])
    dataset = read_coco([path])
    assert dataset.num_boxes == 1
    assert dataset.problems.counts["box_unknown_image"] == 1
    assert dataset.problems.counts["box_unknown_category"] == 1
    assert dict(dataset.problems.boxes) == {"total": 3, "kept": 1, "dropped": 2}


def test_images_dir_is_found_or_asked_for(tmp_path):
    (tmp_path / "images").mkdir()
    write_image(tmp_path / "images" / "a.jpg")
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "train.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []}))
    assert read_coco([path]).images[0].source == tmp_path / "images" / "a.jpg"
    (tmp_path / "images" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="pass --images DIR"):
        read_coco([path])


def test_same_names_from_two_folders_stay_apart(tmp_path, runner):
    paths = []
    for split in ("train", "test"):
        folder = tmp_path / split
        folder.mkdir()
        paths.append(_coco(folder, name="_annotations.coco.json", annotations=[_ann(1, [1, 1, 5, 5])]))
    out = tmp_path / "out"
    result = invoke(runner, "convert", "coco2coco", *paths, "--out", out)
    assert result.exit_code == 0, result.output
    assert read_json(out / "annotations" / "train.json")["images"][0]["file_name"] == "train/a.jpg"
    assert read_json(out / "annotations" / "test.json")["images"][0]["file_name"] == "test/a.jpg"
    assert (out / "images" / "train" / "a.jpg").exists() and (out / "images" / "test" / "a.jpg").exists()


# ---- real data ----


def _source_count(path: Path) -> int:
    return len(json.loads(path.read_text())["annotations"])


def test_chess_roboflow_export_keeps_splits_and_drops_category_zero(tmp_path, runner):
    chess = shared_path("datasets", "chess-pieces-coco")
    files = [chess / s / "_annotations.coco.json" for s in ("train", "valid", "test")]
    out = tmp_path / "chess"
    result = invoke(runner, "convert", "coco2coco", *files, "--out", out)
    assert result.exit_code == 0, result.output
    assert "category without any box: dropped from the class map (e.g. pieces)" in result.output
    for split, source in zip(("train", "val", "test"), files):
        coco = load_coco(out / "annotations" / f"{split}.json")
        src = json.loads(source.read_text())
        assert len(coco.getImgIds()) == len(src["images"])
        assert len(coco.getAnnIds()) == len(src["annotations"])
        names = [c["name"] for c in coco.dataset["categories"]]
        assert "pieces" not in names and len(names) == 13
        assert [c["id"] for c in coco.dataset["categories"]] == list(range(1, 14))
        # each box keeps its class by name and its coordinates
        src_names = {c["id"]: c["name"] for c in src["categories"]}
        by_file = {im["file_name"]: im["id"] for im in src["images"]}
        src_boxes = sorted((by_file_name, src_names[a["category_id"]], a["bbox"]) for a in src["annotations"] for by_file_name in [next(k for k, v in by_file.items() if v == a["image_id"])])
        cat = {c["id"]: c["name"] for c in coco.dataset["categories"]}
        files_of = {im["id"]: im["file_name"] for im in coco.dataset["images"]}
        got = sorted((files_of[a["image_id"]], cat[a["category_id"]], [int(v) for v in a["bbox"]]) for a in coco.dataset["annotations"])
        assert got == src_boxes
    test = load_coco(out / "annotations" / "test.json")
    assert sum(not test.imgToAnns[i] for i in test.getImgIds()) == 1  # the image without boxes is kept


def test_chess_resplit_keeps_every_box(tmp_path, runner):
    chess = shared_path("datasets", "chess-pieces-coco")
    files = [chess / s / "_annotations.coco.json" for s in ("train", "valid", "test")]
    out = tmp_path / "chess"
    result = invoke(runner, "convert", "coco2coco", *files, "--out", out, "--split", "0.7,0.15,0.15", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "class in fewer images than splits" in result.output  # 'bishop' has one box
    total = sum(len(load_coco(out / "annotations" / f"{s}.json").getAnnIds()) for s in ("train", "val", "test"))
    assert total == sum(_source_count(f) for f in files)


def test_tiny_coco_sparse_ids_and_crowd(tmp_path, runner):
    tiny = shared_path("datasets", "tiny-coco", "tiny_coco")
    files = [tiny / "annotations" / f"instances_{s}2017.json" for s in ("train", "val")]
    out = tmp_path / "tiny"
    result = invoke(runner, "convert", "coco2coco", *files, "--out", out)
    assert result.exit_code == 0, result.output
    for split, source in zip(("train", "val"), files):
        src = json.loads(source.read_text())
        coco = load_coco(out / "annotations" / f"{split}.json")
        assert len(coco.getImgIds()) == len(src["images"])  # images without boxes included
        assert len(coco.getAnnIds()) == len(src["annotations"])
        assert sum(a["iscrowd"] for a in coco.dataset["annotations"]) == sum(a["iscrowd"] for a in src["annotations"])
        assert sorted(round(a["area"], 2) for a in coco.dataset["annotations"]) == sorted(
            round(a["area"], 2) for a in src["annotations"]
        )
    train = load_coco(out / "annotations" / "train.json")
    ids = [c["id"] for c in train.dataset["categories"]]
    assert ids == list(range(1, len(ids) + 1))
    assert train.dataset["categories"][0]["name"] == "person"
