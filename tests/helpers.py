"""Test helpers: the read-only real datasets in ../shared, small VOC builders, the CLI runner."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip that says why (a fresh clone has no ../shared)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: real-data tests need the shared datasets beside the repo (../shared)")
    return path


def write_image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB", fmt: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color: Any = {"RGB": (200, 30, 30), "L": 128, "CMYK": (0, 200, 200, 0)}[mode]
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def voc_xml(filename: str | None, size: tuple[int, int] | None, objects: list[dict[str, Any]]) -> str:
    parts = ["<annotation>", "<folder>JPEGImages</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        parts.append(
            f"<object><name>{obj['name']}</name><truncated>{obj.get('truncated', 0)}</truncated>"
            f"<difficult>{obj.get('difficult', 0)}</difficult>"
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts)


def make_voc(root: Path, items: dict[str, list[dict[str, Any]]], *, size: tuple[int, int] = (64, 48)) -> Path:
    """A VOC root with one 64x48 JPEG per item and its XML."""
    for stem, objects in items.items():
        write_image(root / "JPEGImages" / f"{stem}.jpg", size)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", size, objects))
    return root


def load_coco(path: Path):
    """Load with pycocotools, the reference reader: anything it rejects is a bug."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def invoke(runner: CliRunner, *args: Any) -> Any:
    from odorch.cli import main

    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def with_unknown_class(data: Path, out: Path) -> Path:
    """`out`: the converted folder `data` (images linked) whose test split names one more class,
    hexagon, that no model trained on `data` knows."""
    (out / "annotations").mkdir(parents=True)
    (out / "images").symlink_to(data / "images")
    test = json.loads((data / "annotations" / "test.json").read_text())
    test["categories"].append({"id": len(test["categories"]) + 1, "name": "hexagon", "supercategory": ""})
    (out / "annotations" / "test.json").write_text(json.dumps(test))
    return out


def default_sigint() -> None:
    """preexec_fn for a child that must stop on SIGINT even where this process ignores it (an
    ignored signal stays ignored across exec, as in a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


FAKE_ENTRYPOINT = Path(__file__).resolve().parent / "orchestrator" / "fake_entrypoint.py"


def run_fake_job(runs_dir: Path, channels: dict[str, Path], *, name: str = "job1",
                 model: str = "fasterrcnn_mobilenet_v3_large_fpn", tracking: Any = None, **hyperparameters: Any) -> Any:
    """FAKE_ENTRYPOINT, the stdlib stand-in for the training script, as a silent local job
    (hyperparameters steer it: epochs, maps, sleep, fail_with, ...); the final JobRecord."""
    from odorch.backends.local import run_local_job

    return run_local_job(job_name=name, runs_dir=runs_dir, entrypoint=FAKE_ENTRYPOINT, channels=channels,
                         hyperparameters=hyperparameters, model=model, echo=False, tracking=tracking)
