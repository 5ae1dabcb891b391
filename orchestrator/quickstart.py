"""`odorch quickstart`: the whole product on synthetic data, step by step.

Each step prints the `odorch` command line that does the same, then makes the library call
that command makes, so the output teaches the commands to repeat on one's own data. Finished
steps are recorded in OUT/quickstart.json (atomically); running the same command again after a
crash or Ctrl-C skips them and continues (an interrupted training job resumes from its checkpoint).
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
from odorch.runs import JobError, read_job, tune_dir

Echo = Callable[[str], None]

SSD = "ssdlite320_mobilenet_v3_large"
# Faster R-CNN learned nothing from scratch in minutes on a CPU (AP 0.000 at 2 epochs: 4 s/iteration);
# FCOS, anchor-free on the same MobileNetV3-FPN, learns the shapes in a few epochs
FCOS = "fcos_mobilenet_v3_large_fpn"
STUDY = "quickstart"
STATE_FILE = "quickstart.json"
SPACE_FILE = "tune-space.yaml"
SPLIT = "0.7,0.15,0.15"


class QuickstartError(OdorchError):
    """A step failed or OUT holds another quickstart; the message says which and what to do."""


@dataclass(frozen=True)
class Plan:
    """How much work each step does: the full tour (≈15 min on 2 CPU cores) or a smoke run."""

    images: int
    image_size: int
    ssd_epochs: int
    fcos_epochs: int
    trials: int
    trial_epochs: int
    calibration: int
    weights: str


def make_plan(*, fast: bool, weights: str) -> Plan:
    if fast:
        return Plan(images=40, image_size=128, ssd_epochs=2, fcos_epochs=1, trials=2, trial_epochs=1,
                    calibration=8, weights=weights)
    return Plan(images=300, image_size=256, ssd_epochs=12, fcos_epochs=6, trials=3, trial_epochs=3,
                calibration=64, weights=weights)


@dataclass(frozen=True)
class Step:
    """One step: the odorch command line that does the same, and the library call it makes."""

    args: list[str]
    call: Callable[[], None]


def steps(out: Path, plan: Plan, *, echo: Echo, tracking: Any = None) -> list[tuple[str, Callable[[], Step]]]:
    """(name, a function making the step); the export step reads the comparison's winner, so a
    step is made only when it runs."""
    voc, data, runs, report = out / "voc", out / "data", out / "runs", out / "report"
    common = ["--data", str(data), "--runs-dir", str(runs), "--hp", f"image_size={plan.image_size}"]
    tuned_from = runs / "ssdlite" / "model" / "model.pth"  # tune the fine-tuning of the first run

    def train(name: str, model: str, epochs: int) -> Step:
        return Step(["train", "--model", model, "--job-name", name, "--epochs", str(epochs), "--weights", plan.weights,
                     *common],
                    lambda: _train(name=name, model=model, data=data, runs=runs, tracking=tracking, echo=echo,
                                   hp={"image_size": str(plan.image_size), "epochs": str(epochs), "weights": plan.weights}))

    def export() -> Step:
        winner = winner_run(report, runs)
        return Step(["export", str(winner), "--data", str(data), "--format", "openvino", "--int8", "--calibration-size",
                     str(plan.calibration), "--out", str(out / "export")],
                    lambda: _export(winner, data=data, out=out / "export", calibration=plan.calibration, echo=echo))

    candidates = [f"ssdlite={runs / 'ssdlite'}", f"fcos={runs / 'fcos'}", f"tuned={tune_dir(runs, STUDY)}"]
    return [
        ("data", lambda: Step(["demo-data", str(voc), "--images", str(plan.images), "--image-size", str(plan.image_size)],
                              lambda: _demo_data(voc, images=plan.images, image_size=plan.image_size, echo=echo))),
        ("inspect", lambda: Step(["inspect", str(voc)], lambda: _inspect(voc, echo=echo))),
        ("convert", lambda: Step(["convert", "voc2coco", str(voc), "--out", str(data), "--split", SPLIT],
                                 lambda: _convert(voc, out=data, echo=echo))),
        ("train-ssdlite", lambda: train("ssdlite", SSD, plan.ssd_epochs)),
        ("train-fcos", lambda: train("fcos", FCOS, plan.fcos_epochs)),
        ("tune", lambda: Step(["tune", "--model", SSD, "--study", STUDY, "--max-jobs", str(plan.trials),
                               "--max-parallel-jobs", "1", "--epochs", str(plan.trial_epochs), "--seed", "0", "--pruner", "none",
                               "--weights", str(tuned_from), "--space", str(out / SPACE_FILE), "--hp", "warmup=0",
                               *common],
                              lambda: _tune(data=data, runs=runs, plan=plan, weights=tuned_from,
                                            space_file=out / SPACE_FILE, tracking=tracking, echo=echo))),
        ("compare", lambda: Step(["compare", *candidates, "--data", str(data), "--split", "test", "--out", str(report)],
                                 lambda: _compare(candidates, data=data, runs=runs, out=report, echo=echo))),
        ("export", export),
    ]  # fmt: skip


def _demo_data(voc: Path, *, images: int, image_size: int, echo: Echo) -> None:
    from odorch.converters.demo import describe_demo, make_demo_voc

    echo(describe_demo(make_demo_voc(voc, images=images, image_size=image_size)))


def _inspect(voc: Path, *, echo: Echo) -> None:
    from odorch.converters.inspect import inspect_lines, read_any

    for line in inspect_lines(read_any(voc)):
        echo(line)


def _convert(voc: Path, *, out: Path, echo: Echo) -> None:
    from odorch.converters.coco import convert_dataset
    from odorch.converters.split import parse_ratios
    from odorch.converters.voc import read_voc

    convert_dataset(read_voc(voc), out, what=f"{voc} (Pascal VOC)", split=parse_ratios(SPLIT), seed=0, strict=False,
                    command="convert voc2coco", echo=echo)


def _train(*, name: str, model: str, data: Path, runs: Path, hp: dict[str, str], tracking: Any, echo: Echo) -> None:
    from odorch.algorithms import get_algorithm
    from odorch.backends import JobInterrupted, JobSpec, job_outcome, run_job
    from odorch.backends.local import LocalBackend

    algorithm = get_algorithm("pytorch")
    spec = JobSpec(name=name, runs_dir=runs, data=data, model=model, algorithm=algorithm,
                   hyperparameters=algorithm.job_hyperparameters(model=model, hp=hp))
    record = run_job(spec, LocalBackend(options={"tracking": tracking}), echo=echo)
    try:
        lines = job_outcome(spec, record)
    except JobInterrupted as e:  # Ctrl-C reached the job first: stop the tour as Ctrl-C does
        raise KeyboardInterrupt from e
    for line in lines:
        echo(line)


def write_tune_space(path: Path) -> None:
    """The search space for tuning the continued training of a trained SSDlite: the default space
    with learning rates 20 to 2 times lower than its from-scratch one, so that no trial starts by
    undoing what the model learned (at the default space's 3× the tuned candidate lost to the one
    it started from)."""
    from odorch.converters.fsutil import atomic_write_bytes
    from odorch.runtime.models import spec_of

    lr = spec_of(SSD).lr
    atomic_write_bytes(path, (
        "# continued training of a trained model: lower learning rates than from scratch, no warm-up (--hp warmup=0)\n"
        f"lr: {{type: float, low: {lr / 20:g}, high: {lr / 2:g}, log: true}}\n"
        "momentum: {type: float, low: 0.8, high: 0.95}\n"
        "photometric: {type: categorical, choices: ['false', 'true']}\n"
    ).encode())


def _tune(*, data: Path, runs: Path, plan: Plan, weights: Path, space_file: Path, tracking: Any, echo: Echo) -> None:
    from odorch.algorithms import get_algorithm
    from odorch.hpo.local import run_local_tuning
    from odorch.hpo.space import study_space
    from odorch.hpo.summary import format_summary

    fixed = {"image_size": str(plan.image_size), "epochs": str(plan.trial_epochs), "weights": str(weights.resolve()),
             "warmup": "0"}
    write_tune_space(space_file)
    space = study_space(model=SSD, algorithm=get_algorithm("pytorch"), fixed=fixed, space_file=space_file)
    # pruner none: with 3 trials of 3 epochs there is nothing to save (halving would judge trial 2
    # on its first epoch against trial 1's, and median pruning waits for 3 finished trials)
    summary = run_local_tuning(data=data, model=SSD, space=space or {}, fixed=fixed, study=STUDY, max_jobs=plan.trials,
                               pruner="none", runs_dir=runs, seed=0, echo=echo, tracking=tracking)
    for line in format_summary(summary):
        echo(line)
    echo(f"summary: {tune_dir(runs, STUDY) / 'summary.json'}")


def _compare(candidates: list[str], *, data: Path, runs: Path, out: Path, echo: Echo) -> None:
    from odorch.report import compare_and_report
    from odorch.runtime.devices import resolve_device

    compare_and_report(candidates, data=data, split="test", out=out, runs_dir=runs, region=None,
                       device=str(resolve_device("auto")), echo=echo)


def _export(run: Path, *, data: Path, out: Path, calibration: int, echo: Echo) -> None:
    from odorch.export import export_run
    from odorch.runtime.devices import resolve_device

    _, lines = export_run(run, data=data, out=out, int8=True, calibration_size=calibration, echo=echo,
                          device=resolve_device("auto"))
    for line in lines:
        echo(line)


def winner_run(report: Path, runs: Path) -> Path:
    """The job folder of the comparison's winner (report.json's `winner`, a candidate name)."""
    name = json.loads((report / "report.json").read_text())["winner"]
    return {"ssdlite": runs / "ssdlite", "fcos": runs / "fcos", "tuned": tune_dir(runs, STUDY) / "best"}[name]


def _job_completed(out: Path, name: str) -> bool:
    """A training step whose job finished but whose step was not yet recorded (killed in between)."""
    job = {"train-ssdlite": "ssdlite", "train-fcos": "fcos"}.get(name)
    if job is None:
        return False
    try:
        return read_job(out / "runs" / job).status == "Completed"
    except JobError:
        return False


def run_quickstart(*, out: Path, plan: Plan, echo: Echo = print, tracking: Any = None,
                   invoke: Callable[[list[str]], None] | None = None) -> dict[str, Any]:
    """Run (or continue) the tour; returns the state: the plan and the seconds of each finished step.
    `tracking` (odorch.tracking.TrackingOptions) goes to every job; `invoke`, given a step's
    command line, replaces the step's call (the tests' stand-in for the slow steps)."""
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
    todo = steps(out, plan, echo=echo, tracking=tracking)
    for i, (name, make_step) in enumerate(todo, 1):
        if name in state["done"]:
            echo(f"[{i}/{len(todo)}] {name}: done in an earlier run ({state['done'][name]:.0f} s), skipped")
            continue
        if not _job_completed(out, name):
            step = make_step()
            echo(f"\n[{i}/{len(todo)}] odorch {' '.join(step.args)}")
            start = time.perf_counter()
            try:
                if invoke is None:
                    step.call()
                else:
                    invoke(step.args)
            except OdorchError as e:
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
