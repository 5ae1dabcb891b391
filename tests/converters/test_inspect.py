import json

from tests.helpers import invoke, make_voc, shared_path


def test_inspect_voc_reports_stats_and_problems(tmp_path, runner):
    root = make_voc(
        tmp_path / "voc",
        {
            "a": [{"name": "RBC", "box": (0, 0, 20, 20)}, {"name": "WBC", "box": (0, 0, 40, 40)}],
            "b": [{"name": "RBC", "box": (3, 3, 3, 9)}],
            "c": [],
        },
    )
    result = invoke(runner, "inspect", root, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["images"] == 3 and stats["boxes"] == 2
    assert stats["per_class"]["RBC"] == {"boxes": 1, "images": 1, "crowd": 0, "ignore": 0}
    assert stats["size_buckets"] == {"small": 1, "medium": 1, "large": 0}
    assert stats["images_without_boxes"] == 2
    assert stats["boxes_per_image"]["histogram"] == {"0": 2, "2": 1} or stats["boxes_per_image"]["histogram"] == {0: 2, 2: 1}
    assert stats["problems"]["box_zero_area"]["count"] == 1
    assert stats["box_counts"] == {"total": 3, "kept": 2, "repaired": 0, "dropped": 1}
    text = invoke(runner, "inspect", root)
    assert "1 × zero-area box: dropped (e.g. b.xml object 1)" in text.output
    assert "3 images, 2 boxes, 2 classes, 2 images without boxes" in text.output


def test_inspect_converted_folder_and_coco(tmp_path, runner):
    chess = shared_path("datasets", "chess-pieces-coco")
    stats = json.loads(invoke(runner, "inspect", chess / "test" / "_annotations.coco.json", "--json").output)
    assert stats["images"] == 29 and stats["boxes"] == 376 and stats["images_without_boxes"] == 1
    assert stats["problems"]["category_unused"]["count"] == 2  # 'pieces' and the stray 'bishop'
    out = tmp_path / "chess"
    files = [chess / s / "_annotations.coco.json" for s in ("train", "valid", "test")]
    assert invoke(runner, "convert", "coco2coco", *files, "--out", out).exit_code == 0
    stats = json.loads(invoke(runner, "inspect", out, "--json").output)
    assert stats["splits"] == {"test": 29, "train": 202, "val": 58}
    assert stats["boxes"] == 2870 and stats["problems"] == {}
