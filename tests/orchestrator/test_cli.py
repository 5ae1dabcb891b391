import subprocess
import sys
from pathlib import Path

from odorch import __version__
from tests.helpers import invoke, load_coco


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from odorch.cli import main\n"
        "for args in (['--help'], ['convert', '--help'], ['convert', 'voc2coco', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'numpy', 'PIL') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_runs():
    odorch = Path(sys.executable).parent / "odorch"
    result = subprocess.run([str(odorch), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"odorch, version {__version__}"


def test_demo_data_converts_with_nothing_dropped(tmp_path, runner):
    demo = tmp_path / "demo"
    result = invoke(runner, "demo-data", demo, "--images", 40, "--classes", 3)
    assert result.exit_code == 0, result.output
    out = tmp_path / "data"
    result = invoke(runner, "convert", "voc2coco", demo, "--out", out, "--imagesets")
    assert result.exit_code == 0, result.output
    assert " + 0 repaired + 0 dropped" in result.output
    ids = 0
    for split in ("train", "val", "test"):
        coco = load_coco(out / "annotations" / f"{split}.json")
        assert [c["name"] for c in coco.dataset["categories"]] == ["circle", "square", "triangle"]
        ids += len(coco.getImgIds())
    assert ids == 40


def test_split_and_imagesets_are_exclusive(tmp_path, runner):
    (tmp_path / "voc").mkdir()
    result = invoke(runner, "convert", "voc2coco", tmp_path / "voc", "--out", tmp_path / "o", "--imagesets", "--split", "0.8,0.2")
    assert result.exit_code == 2 and "not both" in result.stderr


def test_bad_options_fail_before_reading(tmp_path, runner):
    (tmp_path / "voc").mkdir()
    for option, bad, message in (
        ("--split", "0.5,0.2", "add up to 1"),
        ("--split", "a,b", "2 or 3 numbers"),
        ("--split", "1", "2 or 3"),
        ("--classes", "RBC,RBC", "RBC more than once"),
        ("--classes", ",", "--classes is empty"),
    ):
        result = invoke(runner, "convert", "voc2coco", tmp_path / "voc", "--out", tmp_path / "o", option, bad)
        assert result.exit_code == 2, bad
        assert f"Invalid value for '{option}'" in result.stderr and message in result.stderr, bad


def test_train_and_tune_take_a_weights_file_relative_to_here(tmp_path, runner, tiny_data, trained_runs, monkeypatch):
    """Jobs run in their own folder; a relative --weights must still mean the file the user named."""
    import json
    import os

    from odorch.cli import main

    model = trained_runs["small-a"] / "model" / "model.pth"
    monkeypatch.chdir(model.parent.parent)
    relative = os.path.relpath(model)
    common = ["--data", str(tiny_data), "--weights", relative, "--epochs", "1", "--runs-dir", str(tmp_path / "runs"),
              "--hp", "image_size=128", "--hp", "batch_size=4"]
    result = runner.invoke(main, ["train", "--job-name", "from-file", *common])
    assert result.exit_code == 0, result.output
    hps = json.loads((tmp_path / "runs/from-file/input/config/hyperparameters.json").read_text())
    assert hps["weights"] == str(model.resolve())
    result = runner.invoke(main, ["tune", "--study", "rel", "--max-jobs", "1", "--pruner", "none", *common])
    assert result.exit_code == 0, result.output
    assert "COMPLETE" in result.output
