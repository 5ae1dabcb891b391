"""odorch quickstart: the tour's steps, resuming after a failure, and one real --fast run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odorch.quickstart import Plan, QuickstartError, make_plan, run_quickstart
from tests.helpers import load_coco


def _fake(out: Path, calls: list[list[str]], fail_at: str | None = None):
    """An invoke that records the commands, writes the report the export step reads, and fails on
    the first command starting with `fail_at`."""

    def invoke(args: list[str]) -> None:
        if fail_at and args[0] == fail_at:
            raise QuickstartError("boom")
        calls.append(args)
        if args[0] == "compare":
            (out / "report").mkdir(parents=True, exist_ok=True)
            (out / "report" / "report.json").write_text(json.dumps({"winner": "tuned", "summary": "tuned wins."}))

    return invoke


def test_steps_are_the_commands_a_user_types(tmp_path):
    out = tmp_path / "qs"
    calls: list[list[str]] = []
    state = run_quickstart(out=out, plan=make_plan(fast=True, weights="none"), invoke=_fake(out, calls), echo=lambda s: None)
    assert [c[0] for c in calls] == ["demo-data", "inspect", "convert", "train", "train", "tune", "compare", "export"]
    assert [c[c.index("--model") + 1] for c in calls if c[0] == "train"] == [
        "ssdlite320_mobilenet_v3_large", "fcos_mobilenet_v3_large_fpn"]
    tune = calls[5]
    assert tune[tune.index("--weights") + 1] == str(out / "runs" / "ssdlite" / "model" / "model.pth")
    assert tune[tune.index("--space") + 1] == str(out / "tune-space.yaml") and "warmup=0" in tune
    assert tune[tune.index("--pruner") + 1] == "none"  # as _tune runs it: 3 trials are too few to prune
    compare = calls[6]
    assert compare[1:4] == [f"ssdlite={out / 'runs' / 'ssdlite'}", f"fcos={out / 'runs' / 'fcos'}",
                            f"tuned={out / 'runs' / 'tune-quickstart'}"]
    export = calls[7]
    assert export[1] == str(out / "runs" / "tune-quickstart" / "best")  # the winner's job
    assert "--int8" in export
    assert list(state["done"]) == ["data", "inspect", "convert", "train-ssdlite", "train-fcos", "tune", "compare", "export"]
    assert json.loads((out / "quickstart.json").read_text()) == state


def test_a_failed_step_is_retried_and_finished_ones_are_skipped(tmp_path):
    out, plan = tmp_path / "qs", make_plan(fast=True, weights="none")
    calls: list[list[str]] = []
    with pytest.raises(QuickstartError, match=r"step 6 \(tune\) failed: boom; fix it and run the same command"):
        run_quickstart(out=out, plan=plan, invoke=_fake(out, calls, fail_at="tune"), echo=lambda s: None)
    assert [c[0] for c in calls] == ["demo-data", "inspect", "convert", "train", "train"]
    calls.clear()
    lines: list[str] = []
    run_quickstart(out=out, plan=plan, invoke=_fake(out, calls), echo=lines.append)
    assert [c[0] for c in calls] == ["tune", "compare", "export"]
    assert sum("done in an earlier run" in line for line in lines) == 5


def test_a_finished_training_job_is_not_trained_again(tmp_path):
    """Killed after the job completed but before the step was recorded: the job is not re-run."""
    out, plan = tmp_path / "qs", make_plan(fast=True, weights="none")
    calls: list[list[str]] = []
    with pytest.raises(QuickstartError):
        run_quickstart(out=out, plan=plan, invoke=_fake(out, calls, fail_at="train"), echo=lambda s: None)
    (out / "runs" / "ssdlite").mkdir(parents=True)
    (out / "runs" / "ssdlite" / "job.json").write_text(json.dumps({"status": "Completed"}))
    calls.clear()
    run_quickstart(out=out, plan=plan, invoke=_fake(out, calls), echo=lambda s: None)
    assert [c[c.index("--model") + 1] for c in calls if c[0] == "train"] == ["fcos_mobilenet_v3_large_fpn"]


def test_other_settings_or_a_foreign_folder_are_refused(tmp_path):
    out = tmp_path / "qs"
    run_quickstart(out=out, plan=make_plan(fast=True, weights="none"), invoke=_fake(out, []), echo=lambda s: None)
    with pytest.raises(QuickstartError, match="holds a quickstart with other settings"):
        run_quickstart(out=out, plan=make_plan(fast=False, weights="none"), invoke=_fake(out, []), echo=lambda s: None)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(QuickstartError, match="is not a quickstart folder"):
        run_quickstart(out=foreign, plan=make_plan(fast=True, weights="none"), invoke=_fake(foreign, []), echo=lambda s: None)


def test_steps_call_the_library_and_a_refused_job_fails_its_step(tmp_path, monkeypatch):
    """The data steps run for real without entering the CLI; a job the backend's preflight refuses
    (epochs=0) fails its step before any job folder exists, and the finished steps are recorded."""
    import odorch.cli

    monkeypatch.setattr(odorch.cli.main, "main", lambda *a, **k: pytest.fail("quickstart re-entered the CLI"))
    out, lines = tmp_path / "qs", []
    plan = Plan(images=12, image_size=64, ssd_epochs=0, fcos_epochs=1, trials=1, trial_epochs=1, calibration=2,
                weights="none")
    with pytest.raises(QuickstartError, match=r"step 4 \(train-ssdlite\) failed: not starting job ssdlite \(local\): "
                                              r"hyperparameters: hyperparameter epochs=0: must be at least 1"):
        run_quickstart(out=out, plan=plan, echo=lines.append)
    assert f"\n[3/8] odorch convert voc2coco {out / 'voc'} --out {out / 'data'} --split 0.7,0.15,0.15" in lines
    assert lines[-1].startswith("\n[4/8] odorch train --model ssdlite320_mobilenet_v3_large --job-name ssdlite --epochs 0")
    images = {split: load_coco(out / "data" / "annotations" / f"{split}.json").getImgIds() for split in ("train", "val", "test")}
    assert sum(map(len, images.values())) == 12 and all(images.values())
    assert list(json.loads((out / "quickstart.json").read_text())["done"]) == ["data", "inspect", "convert"]
    assert not (out / "runs").exists()


@pytest.mark.slow
def test_fast_quickstart_runs_end_to_end_and_resumes(tmp_path):
    """The real thing, as CI runs it: every step's product is there; killed during the tuning
    and run again, it finishes without redoing the finished steps."""
    out = tmp_path / "qs"
    exe = Path(sys.executable).parent / "odorch"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    cmd = [str(exe), "quickstart", "--fast", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = []
    assert proc.stdout is not None
    for line in proc.stdout:
        first.append(line)
        if line.startswith("[6/8] odorch tune"):
            time.sleep(3)
            proc.kill()
            break
    proc.wait()
    assert proc.returncode != 0, "".join(first)
    state = json.loads((out / "quickstart.json").read_text())
    assert list(state["done"]) == ["data", "inspect", "convert", "train-ssdlite", "train-fcos"]

    second = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert second.returncode == 0, second.stdout
    assert second.stdout.count("done in an earlier run") == 5
    report = json.loads((out / "report" / "report.json").read_text())
    assert {c["name"] for c in report["candidates"]} == {"ssdlite", "fcos", "tuned"}
    trials = json.loads((out / "runs" / "tune-quickstart" / "summary.json").read_text())["trials"]
    assert trials and all(0.0025 <= t["params"]["lr"] <= 0.025 for t in trials)  # continued training: lower LRs
    assert all(json.loads((Path(t["job_dir"]) / "input/config/hyperparameters.json").read_text())["warmup"] == "0"
               for t in trials)
    assert report["summary"] in second.stdout
    metrics = json.loads((out / "export" / "metrics.json").read_text())
    assert metrics  # the export step checked and timed the winner
    assert f"report:  {out / 'report' / 'report.html'}" in second.stdout
