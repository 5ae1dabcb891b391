"""Installing odorch adds exactly one import package, `odorch`: it shadows nothing, not even the
PyPI package `entrypoints` (older Jupyter and lint tools depend on it) whose name odorch's
container code once had at the top level."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _pip(python, *args):
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_fresh_venv_with_pypi_entrypoints_gets_one_top_level_name(tmp_path):
    """A fresh venv that already holds `entrypoints` from PyPI; odorch installed with --no-deps
    (so no torch); afterwards both import, `entrypoints` is still PyPI's, and the installed
    distribution's top_level.txt and RECORD name no top-level package but `odorch`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    got = _pip(python, "install", "-q", "entrypoints")
    if got.returncode != 0:
        pytest.skip(f"PyPI not reachable, cannot install `entrypoints`: {got.stderr.strip().splitlines()[-1:]}")
    got = _pip(python, "install", "-q", "--no-deps", str(REPO))
    assert got.returncode == 0, got.stderr
    probe = (
        "import importlib.metadata as md, json, entrypoints, odorch, odorch.runtime.train, odorch.converters.coco\n"
        "dist = md.distribution('odorch')\n"
        "print(json.dumps({'entrypoints': entrypoints.__file__, 'has_entry_point_class': hasattr(entrypoints, 'EntryPoint'),\n"
        "    'odorch': odorch.__file__, 'top_level': dist.read_text('top_level.txt'),\n"
        "    'files': [str(f) for f in dist.files], 'site': str(md.distribution('entrypoints').locate_file(''))}))\n"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    site = Path(info["site"])
    assert Path(info["entrypoints"]) == site / "entrypoints.py" and info["has_entry_point_class"]
    assert Path(info["odorch"]) == site / "odorch" / "__init__.py"
    assert info["top_level"].split() == ["odorch"]
    tops = {Path(f).parts[0] for f in info["files"] if not Path(f).parts[0].endswith(".dist-info")
            and not f.startswith("..")}  # ../../../bin/odorch: the console script
    assert tops == {"odorch"}
    assert {"odorch/runtime/train.py", "odorch/converters/coco.py", "odorch/hpo/amt.py", "odorch/cli/train.py",
            "odorch/backends/sagemaker.py", "odorch/algorithms/builtin_od.py"} <= set(info["files"])
