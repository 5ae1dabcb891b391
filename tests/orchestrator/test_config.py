"""odorch.yaml: defaults for any option of any command, flags win, `config show` says where from."""

from __future__ import annotations

import json
from pathlib import Path

from odorch.cli import main


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rows(output: str) -> dict[str, tuple[str, str]]:
    """`config show COMMAND` lines as {option: (value, source)} (columns split on 2+ spaces)."""
    import re

    rows = {}
    for line in output.splitlines()[1:]:
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) == 3:
            rows[parts[0]] = (parts[1], parts[2])
    return rows


def test_config_sets_defaults_of_a_real_command(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("ODORCH_CONFIG")  # this test is about finding ./odorch.yaml
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "odorch.yaml", "demo-data:\n  images: 5\n  classes: 1\n")
    result = runner.invoke(main, ["demo-data", "voc"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "voc" / "Annotations").glob("*.xml"))) == 5
    result = runner.invoke(main, ["demo-data", "voc2", "--images", "3"])  # the flag wins
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "voc2" / "Annotations").glob("*.xml"))) == 3


def test_config_show_names_the_source_of_every_value(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("ODORCH_CONFIG")  # this test is about finding ./odorch.yaml
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "odorch.yaml", "common:\n  runs-dir: myruns\ntrain:\n  epochs: 7\n  hp: {batch_size: 8, lr: 0.05}\n")
    result = runner.invoke(main, ["config", "show", "train", "--model", "fasterrcnn_mobilenet_v3_large_320_fpn",
                                  "--hp", "lr=0.1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "config file: odorch.yaml"
    rows = _rows(result.output)
    assert rows["--epochs"] == ("7", "odorch.yaml (train.epochs)")
    assert rows["--runs-dir"] == ("myruns", "odorch.yaml (common.runs-dir)")
    assert rows["--model"] == ("fasterrcnn_mobilenet_v3_large_320_fpn", "command line")
    assert rows["--hp"] == ("batch_size=8 lr=0.1", "command line + odorch.yaml (train.hp)")
    assert rows["--max-run"] == ("86400", "default")

    result = runner.invoke(main, ["config", "show"])
    assert "odorch train --epochs 7" in result.output
    assert "odorch tune --runs-dir myruns" in result.output  # common options reach every command that has them


def test_command_section_wins_over_common_and_nested_groups(runner, tmp_path):
    cfg = _write(tmp_path / "c.yaml", "common: {seed: 5}\nconvert:\n  voc2coco: {seed: 9, split: '0.5,0.25,0.25'}\n")
    result = runner.invoke(main, ["--config", str(cfg), "config", "show", "convert", "voc2coco"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["--seed"] == ("9", f"{cfg} (convert.voc2coco.seed)")
    assert rows["--split"][1] == f"{cfg} (convert.voc2coco.split)"
    result = runner.invoke(main, ["--config", str(cfg), "config", "show", "convert", "coco2coco"])
    assert _rows(result.output)["--seed"] == ("5", f"{cfg} (common.seed)")


def test_config_from_environment_variable(runner, tmp_path, monkeypatch):
    cfg = _write(tmp_path / "team.yaml", "demo-data: {images: 2, classes: 1}\n")
    monkeypatch.setenv("ODORCH_CONFIG", str(cfg))
    result = runner.invoke(main, ["demo-data", str(tmp_path / "voc")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "voc" / "Annotations").glob("*.xml"))) == 2
    monkeypatch.setenv("ODORCH_CONFIG", str(tmp_path / "missing.yaml"))
    result = runner.invoke(main, ["jobs", "list"])
    assert result.exit_code == 1
    assert "ODORCH_CONFIG" in result.output and "missing.yaml" in result.output


def test_bad_config_files_name_the_key_and_exit_non_zero(runner, tmp_path):
    cases = {
        "train: {epoch: 3}\n": "train.epoch: no such option of 'odorch train' (options: ",
        "trian: {epochs: 3}\n": "trian: no such command (commands: ",
        "convert: {voc2cocoo: {seed: 1}}\n": "convert.voc2cocoo: no such command",
        "demo-data: {images: many}\n": "demo-data.images: 'many' is not a valid integer",
        "common: {nope: 1}\n": "common.nope: no command has this option",
        "train: [1, 2]\n": "train: expected a mapping of options",
        "- a\n- b\n": "expected a mapping of command names to options",
        "train: {epochs: [1\n": "not valid YAML",
    }
    for text, message in cases.items():
        cfg = _write(tmp_path / "bad.yaml", text)
        result = runner.invoke(main, ["--config", str(cfg), "jobs", "list"])
        assert result.exit_code == 1, (text, result.output)
        assert str(cfg) in result.output and message in result.output, (text, result.output)


def test_options_are_named_by_their_flags_and_may_be_required_ones(runner, tmp_path, tiny_data):
    """`json: true` sets `--json` (Python name as_json); a required argument may come from the file."""
    cfg = _write(tmp_path / "c.yaml", f"inspect:\n  json: true\n  path: {tiny_data}\n")
    result = runner.invoke(main, ["--config", str(cfg), "inspect"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["images"] == 24, stats
    result = runner.invoke(main, ["--config", str(cfg), "config", "show", "inspect"])
    assert _rows(result.output)["--json"] == ("True", f"{cfg} (inspect.json)")


def test_alias_bombs_non_utf8_and_deep_files_are_one_line_errors(runner, tmp_path):
    """Issue 13: a 376-byte alias bomb cost 1.4 GB; a Latin-1 file was a traceback. Each is refused
    before anything is expanded (catch_exceptions=False: a traceback fails the test)."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    cases = {
        bomb.encode(): "bad.yaml:2:8: YAML aliases (*name) are not allowed",
        "train: {model: café}\n".encode("latin-1"): "not UTF-8 text",
        ("train: " + "[" * 5000 + "]" * 5000 + "\n").encode(): "bad.yaml",
    }
    for data, message in cases.items():
        cfg = tmp_path / "bad.yaml"
        cfg.write_bytes(data)
        result = runner.invoke(main, ["--config", str(cfg), "jobs", "list"], catch_exceptions=False)
        assert result.exit_code == 1, (data[:40], result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
