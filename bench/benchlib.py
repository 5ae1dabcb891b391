"""The demo dataset the benchmarks train and time on, made with odorch's own API (imported by the
bench scripts, which run with bench/ first on sys.path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def make_data(work: Path, images: int, seed: int, *, size: int = 256, classes: int = 3, name: str = "data",
              command: str = "bench") -> Path:
    """WORK/NAME: `make_demo_voc` -> `read_voc(imagesets=True)` -> `write_layout`; reused when a
    dataset with the same settings is already there."""
    from converters.coco import write_layout
    from converters.demo import make_demo_voc
    from converters.split import source_splits
    from converters.voc import read_voc

    data = work / name
    stamp = work / f"{name}.key"
    key = json.dumps({"images": images, "seed": seed, "classes": classes, "size": size})
    if stamp.is_file() and stamp.read_text() == key and (data / "annotations" / "test.json").is_file():
        return data
    for old in (work / f"{name}-voc", data):
        shutil.rmtree(old, ignore_errors=True)
    make_demo_voc(work / f"{name}-voc", images=images, classes=classes, seed=seed, image_size=size)
    dataset = read_voc(work / f"{name}-voc", imagesets=True)
    write_layout(dataset, data, source_splits(dataset.images), command=command)
    stamp.write_text(key)
    return data
