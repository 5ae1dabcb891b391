"""What the bench scripts share (they run with bench/ first on sys.path): the demo dataset they
train and time on, made with odorch's own API, and the odorch CLI as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A setup step or a run failed; the message says which and why."""


def odorch_executable() -> Path:
    exe = Path(sys.executable).parent / "odorch"
    if not exe.is_file():
        raise BenchError(f"{exe} not found: run this script with the project's venv python (pip install -e . in it)")
    return exe


def run_odorch(args: list[str], log: Path) -> None:
    """The CLI as a subprocess in the repository root, output to `log`; a failure is a
    BenchError naming the log."""
    print(f"[{args[0]}] odorch {' '.join(args)}", flush=True)
    with open(log, "w") as out:
        code = subprocess.run([str(odorch_executable()), *args], stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
                              cwd=ROOT).returncode
    if code != 0:
        raise BenchError(f"odorch {args[0]} exited with {code}; see {log}")


def make_data(work: Path, images: int, seed: int, *, size: int = 256, classes: int = 3, name: str = "data",
              command: str = "bench") -> Path:
    """WORK/NAME: `make_demo_voc` -> `read_voc(imagesets=True)` -> `write_layout`; reused when a
    dataset with the same settings is already there."""
    from odorch.converters.coco import write_layout
    from odorch.converters.demo import make_demo_voc
    from odorch.converters.split import source_splits
    from odorch.converters.voc import read_voc

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
