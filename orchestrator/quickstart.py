"""`odorch quickstart`: the whole product on synthetic data, as the very commands a user types.

Each step is an `odorch` command line, printed and then run in this process, so the output
teaches the commands to repeat on one's own data. Finished steps are recorded in
OUT/quickstart.json (atomically); running the same command again after a crash or Ctrl-C skips
them and continues (an interrupted training job resumes from its checkpoint).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from odorch.converters.fsutil import atomic_write_json
from odorch.errors import OdorchError
from odorch.runs import JOB_FILE, tune_dir

SSD = "ssdlite320_mobilenet_v3_large"
FRCNN = "fasterrcnn_mobilenet_v3_large_320_fpn"
STUDY = "quickstart"
STATE_FILE = "quickstart.json"


class QuickstartError(OdorchError):
    """A step failed or OUT holds another quickstart; the message says which and what to do."""


@dataclass(frozen=True)
class Plan:
    """How much work each step does: the full tour (≈15 min on 2 CPU cores) or a smoke run."""

    images: int
    image_size: int
    ssd_epochs: int
    frcnn_epochs: int
    trials: int
    trial_epochs: int
    calibration: int
    weights: str


def make_plan(*, fast: bool, weights: str) -> Plan:
    if fast:
        return Plan(images=40, image_size=128, ssd_epochs=2, frcnn_epochs=1, trials=2, trial_epochs=1,
                    calibration=8, weights=weights)
    return Plan(images=300, image_size=256, ssd_epochs=12, frcnn_epochs=2, trials=3, trial_epochs=3,
                calibration=64, weights=weights)


def steps(out: Path, plan: Plan) -> list[tuple[str, Callable[[], list[str]]]]:
    """(name, a function giving the step's odorch arguments); the export step reads the
    comparison's winner, so arguments are made only when the step runs."""
    voc, data, runs, report = out / "voc", out / "data", out / "runs", out / "report"
    common = ["--data", str(data), "--runs-dir", str(runs), "--hp", f"image_size={plan.image_size}"]
    start = ["--weights", plan.weights]
    tuned_from = ["--weights", str(runs / "ssdlite" / "model" / "model.pth")]  # tune the fine-tuning of the first run
    return [
        ("data", lambda: ["demo-data", str(voc), "--images", str(plan.images), "--image-size", str(plan.image_size)]),
        ("inspect", lambda: ["inspect", str(voc)]),
        ("convert", lambda: ["convert", "voc2coco", str(voc), "--out", str(data), "--split", "0.7,0.15,0.15"]),
        ("train-ssdlite", lambda: ["train", "--model", SSD, "--job-name", "ssdlite", "--epochs", str(plan.ssd_epochs),
                                   *start, *common]),
        ("train-frcnn", lambda: ["train", "--model", FRCNN, "--job-name", "frcnn", "--epochs", str(plan.frcnn_epochs),
                                 *start, *common]),
        ("tune", lambda: ["tune", "--model", SSD, "--study", STUDY, "--max-jobs", str(plan.trials), "--max-parallel-jobs",
                          "1", "--epochs", str(plan.trial_epochs), "--seed", "0", *tuned_from, *common]),
        ("compare", lambda: ["compare", f"ssdlite={runs / 'ssdlite'}", f"frcnn={runs / 'frcnn'}",
                             f"tuned={tune_dir(runs, STUDY)}", "--data", str(data), "--split", "test", "--out", str(report)]),
        ("export", lambda: ["export", str(winner_run(report, runs)), "--data", str(data), "--format", "openvino",
                            "--int8", "--calibration-size", str(plan.calibration), "--out", str(out / "export")]),
    ]  # fmt: skip


def winner_run(report: Path, runs: Path) -> Path:
    """The job folder of the comparison's winner (report.json's `winner`, a candidate name)."""
    name = json.loads((report / "report.json").read_text())["winner"]
    return {"ssdlite": runs / "ssdlite", "frcnn": runs / "frcnn", "tuned": tune_dir(runs, STUDY) / "best"}[name]


def _job_completed(out: Path, name: str) -> bool:
    """A training step whose job finished but whose step was not yet recorded (killed in between)."""
    job = {"train-ssdlite": "ssdlite", "train-frcnn": "frcnn"}.get(name)
    if job is None:
        return False
    try:
        return json.loads((out / "runs" / job / JOB_FILE).read_text()).get("status") == "Completed"
    except (OSError, ValueError):
        return False


def run_quickstart(*, out: Path, plan: Plan, invoke: Callable[[list[str]], None],
                   echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the tour; returns the state: the plan and the seconds of each finished step."""
    state_file = out / STATE_FILE
    state: dict[str, Any] = {"plan": asdict(plan), "done": {}}
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        if state.get("plan") != asdict(plan):
            raise QuickstartError(f"{out} holds a quickstart with other settings ({state_file}); "
                                  "run it with the same options, pick another --out, or delete the folder")
    elif out.exists() and any(out.iterdir()):
        raise QuickstartError(f"{out} exists and is not a quickstart folder; pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    todo = steps(out, plan)
    for i, (name, make_args) in enumerate(todo, 1):
        if name in state["done"]:
            echo(f"[{i}/{len(todo)}] {name}: done in an earlier run ({state['done'][name]:.0f} s), skipped")
            continue
        if not _job_completed(out, name):
            args = make_args()
            echo(f"\n[{i}/{len(todo)}] odorch {' '.join(args)}")
            start = time.perf_counter()
            try:
                invoke(args)
            except QuickstartError as e:
                raise QuickstartError(f"step {i} ({name}) failed: {e}; fix it and run the same command to continue "
                                      "from this step") from e
            state["done"][name] = round(time.perf_counter() - start, 1)
        else:
            state["done"][name] = 0.0
        atomic_write_json(state_file, state, indent=2)
    return state


def closing_lines(out: Path, state: dict[str, Any]) -> list[str]:
    """What the tour found and where everything is, for the last screen."""
    report = json.loads((out / "report" / "report.json").read_text())
    lines = ["", report["summary"], ""]
    lines += [f"  {name:<14} {seconds:>6.0f} s" for name, seconds in state["done"].items()]
    lines += [f"  {'total':<14} {sum(state['done'].values()):>6.0f} s", ""]
    lines += [
        f"report:  {out / 'report' / 'report.html'} (also report.md, report.json)",
        f"export:  {out / 'export'} (OpenVINO FP32 and INT8; metrics.json)",
        f"runs:    {out / 'runs'} (odorch jobs list --runs-dir {out / 'runs'})",
        "",
        "Your own data: odorch convert voc2coco YOUR_VOC --out data (or coco2coco YOUR.json), then the same",
        "commands as above with --data data (see README.md).",
    ]
    return lines
