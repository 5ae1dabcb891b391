#!/usr/bin/env python3
"""Tuning efficiency: TPE with each of Optuna's pruners against random search without pruning.

What is measured
    For each seed S and each pruner P (--pruners), local studies with the same number of trials
    on the same synthetic demo data (WORK/data-S), each run through the real CLI as a subprocess
    of this script (no shell), one after the other:

        odorch tune --data WORK/data-S --weights W --hp image_size=PX --hp batch_size=B
               --hp seed=S --seed S --epochs E --max-jobs N --max-parallel-jobs 1
               --sampler tpe --pruner P        --study hpo-tpe-P-S   --runs-dir WORK/runs
        ...    --sampler random --pruner none  --study hpo-random-S  --runs-dir WORK/runs

    From each study's summary.json: best validation:mAP (summary["best"], the best COMPLETE
    trial) and epochs trained = sum over trials of the `epochs` field (the job's last finished
    epoch, so a pruned trial counts only the epochs it ran; cross-checked against the epoch lines
    of each trial's metrics.jsonl). Wall seconds cover the whole CLI process.
    A study measured before with the same settings (WORK/hpo-...-S.done) is read again, not re-run.
    Per seed and as the mean over seeds, for each pruner: best-mAP ratio and epochs ratio
    against random search of the same seed.
    Goal: mean TPE best >= 0.99 x random best with mean TPE epochs <= 0.50 x random epochs.

Seeds
    --hp seed=S seeds every training job and --seed S the sampler, so a run repeats its trials.
    The starting weights are pretrained once, with the first seed. odorch's TPE samples at random
    for its first max(4, min(10, N // 4)) trials: with few trials this compares pruning more than
    it compares samplers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchlib import BenchError, make_data, odorch_executable, run_odorch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = ROOT / "bench" / ".work" / "hpo"
MAP_GOAL = 0.99
EPOCH_GOAL = 0.50
PRUNERS = ("median", "percentile", "halving", "hyperband")
BASELINE = "random"


@dataclass
class Result:
    engine: str
    trials: int
    states: dict[str, int]
    best_map: float | None
    epochs: int
    metrics_epochs: int
    seconds: float


def pretrain(work: Path, args: argparse.Namespace) -> Path:
    """The starting weights of every trial: SSDlite trained from scratch on another demo dataset
    (300 images, 3 classes, another seed), as COCO weights would be where they can be downloaded.
    Trials then fine-tune, as users do; from scratch, short trials all end near mAP 0."""
    data = make_data(work, 300, args.seed_list[0] + 100, size=args.image_size, classes=3, name="pretrain-data", command="hpo_bench")
    runs = work / "pretrain-runs"
    job = runs / f"pretrain-{args.pretrain_epochs}"
    model = job / "model" / "model.pth"
    if model.is_file():
        return model
    shutil.rmtree(job, ignore_errors=True)
    run_odorch(["train", "--data", str(data), "--weights", "none", "--epochs", str(args.pretrain_epochs),
                "--hp", f"image_size={args.image_size}", "--hp", f"seed={args.seed_list[0]}", "--job-name", job.name,
                "--runs-dir", str(runs)], work / "pretrain.out")  # fmt: skip
    if not model.is_file():
        raise BenchError(f"pretraining wrote no {model}; see {work / 'pretrain.out'}")
    return model


def metrics_epochs(job_dir: str | None) -> int:
    """Epoch lines (with an epoch number) in a trial's metrics.jsonl."""
    if not job_dir:
        return 0
    path = Path(job_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0
    epochs = set()
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("epoch") is not None and (entry.get("metrics") or {}).get("validation:mAP") is not None:
            epochs.add(int(entry["epoch"]))
    return len(epochs)


def run_engine(engine: str, seed: int, data: Path, work: Path, args: argparse.Namespace, weights: str) -> Result:
    """engine: `random` (no pruning) or `tpe+PRUNER`."""
    sampler, pruner = ("random", "none") if engine == BASELINE else ("tpe", engine.split("+", 1)[1])
    study = f"hpo-{sampler}-{seed}" if engine == BASELINE else f"hpo-{sampler}-{pruner}-{seed}"
    runs = work / "runs"
    tune_dir = runs / f"tune-{study}"
    done = work / f"{study}.done"
    settings = {name: getattr(args, name) for name in ("trials", "epochs", "images", "image_size", "batch_size")}
    settings["weights"] = weights
    if done.is_file() and json.loads(done.read_text())["settings"] == settings:
        print(f"[{engine} seed {seed}] measured before with these settings: {done} (delete it to run again)", flush=True)
        return read_result(engine, tune_dir, json.loads(done.read_text())["seconds"])
    shutil.rmtree(tune_dir, ignore_errors=True)  # a fresh study, not a continued one
    for old in runs.glob(f"tune-{study}-trial-*"):
        shutil.rmtree(old, ignore_errors=True)
    cmd = [
        str(odorch_executable()), "tune", "--data", str(data), "--weights", weights,
        "--hp", f"image_size={args.image_size}", "--hp", f"batch_size={args.batch_size}", "--hp", f"seed={seed}",
        "--seed", str(seed), "--epochs", str(args.epochs), "--max-jobs", str(args.trials), "--max-parallel-jobs", "1",
        "--sampler", sampler, "--pruner", pruner, "--study", study, "--runs-dir", str(runs),
    ]  # fmt: skip
    log = work / f"{study}.out"
    print(f"[{engine} seed {seed}] {' '.join(cmd[1:])}", flush=True)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=ROOT, text=True, bufsize=1)  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if re.match(r"trial \d+ ", line):
                print(f"  [{engine} seed {seed}] {line.rstrip()}", flush=True)
        code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        raise BenchError(f"odorch tune ({engine}) exited with {code}; see {log}")
    done.write_text(json.dumps({"settings": settings, "seconds": seconds}))
    return read_result(engine, tune_dir, seconds)


def read_result(engine: str, tune_dir: Path, seconds: float) -> Result:
    """A finished study's figures, from its summary.json and its trials' metrics.jsonl."""
    summary = json.loads((tune_dir / "summary.json").read_text())
    trials = [t for t in summary["trials"] if t.get("state") in ("COMPLETE", "PRUNED", "FAIL")]
    best = (summary.get("best") or {}).get("best_map")
    return Result(
        engine=engine,
        trials=len(trials),
        states=dict(summary.get("counts") or {}),
        best_map=None if best is None else float(best),
        epochs=sum(int(t.get("epochs") or 0) for t in trials),
        metrics_epochs=sum(metrics_epochs(t.get("job_dir")) for t in trials),
        seconds=seconds,
    )


def _ratios(r: Result, rnd: Result) -> tuple[float, float] | None:
    """(best mAP, epochs) of r over random's, None when either study has no best mAP."""
    if r.best_map is None or not rnd.best_map or rnd.epochs == 0:
        return None
    return r.best_map / rnd.best_map, r.epochs / rnd.epochs


def report(results: dict[int, dict[str, Result]], args: argparse.Namespace) -> None:
    """Per seed: each study and its ratios to random's; then the mean ratios of each engine."""
    start = f"pretrained {args.pretrain_epochs} epochs on other demo data" if args.pretrain_epochs else "none"
    print(f"\nssdlite320_mobilenet_v3_large, weights {start}, {args.image_size} px, batch {args.batch_size}, "
          f"{args.epochs} epochs/trial, {args.trials} trials, {args.images} demo images, seeds {args.seeds}\n")
    print("| seed | engine          | states                 | best mAP | epochs | wall s | mAP ratio | epochs ratio |")
    print("|-----:|-----------------|------------------------|---------:|-------:|-------:|----------:|-------------:|")
    ratios: dict[str, list[tuple[float, float] | None]] = {}
    for seed, by_engine in results.items():
        rnd = by_engine[BASELINE]
        for engine, r in by_engine.items():
            states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(r.states.items()))
            best = "-" if r.best_map is None else f"{r.best_map:.4f}"
            pair = _ratios(r, rnd)
            shown = ("-", "-") if pair is None else (f"{pair[0]:.3f}", f"{pair[1]:.3f}")
            if engine != BASELINE:
                ratios.setdefault(engine, []).append(pair)
            print(f"| {seed:>4} | {engine:<15} | {states:<22} | {best:>8} | {r.epochs:>6} | {r.seconds:>6.0f} "
                  f"| {shown[0]:>9} | {shown[1]:>12} |")
            if r.metrics_epochs != r.epochs:
                print(f"  note: {engine} seed {seed}: summary.json epochs {r.epochs}, metrics.jsonl epoch lines {r.metrics_epochs}")
    print(f"\nMean over seeds {args.seeds} (goal: mAP ratio >= {MAP_GOAL}, epochs ratio <= {EPOCH_GOAL}):")
    for engine, pairs in ratios.items():
        if any(p is None for p in pairs):
            print(f"  {engine}: cannot be judged (a study has no completed trial or no best mAP): NOT MET")
            continue
        map_ratio = sum(p[0] for p in pairs) / len(pairs)
        epoch_ratio = sum(p[1] for p in pairs) / len(pairs)
        met = map_ratio >= MAP_GOAL and epoch_ratio <= EPOCH_GOAL
        print(f"  {engine}: mAP ratio {map_ratio:.3f}, epochs ratio {epoch_ratio:.3f}: {'MET' if met else 'NOT MET'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="TPE with each pruner against random search without pruning (`odorch tune`, same trials), "
        "per seed and on average. Goal: >= 99%% of random's best mAP with <= 50%% of its epochs.",
    )
    p.add_argument("--trials", type=int, default=6, help="trials per study (default 6)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    p.add_argument("--images", type=int, default=96, help="demo images; ImageSets split 64/16/20 (default 96)")
    p.add_argument("--image-size", type=int, default=128, help="demo image and training input size (default 128)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size (default 8)")
    p.add_argument("--pretrain-epochs", type=int, default=0,
                   help="first train starting weights for 3 classes on other demo data for N epochs (default 0: from scratch)")
    p.add_argument("--seeds", default="0", help="comma-separated data, training and sampler seeds (default 0)")
    p.add_argument("--parallel", type=int, default=1,
                   help="seeds run at once (default 1); each seed's studies still run one after the other")
    p.add_argument("--pruners", default="median",
                   help=f"comma-separated pruners TPE runs with, each against random ({', '.join(PRUNERS)}; default median)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder (default {DEFAULT_WORK.relative_to(ROOT)})")
    args = p.parse_args(argv)
    try:
        args.seed_list = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: give integers separated by commas, e.g. 0,1,2")
    args.pruner_list = args.pruners.split(",")
    unknown = [x for x in args.pruner_list if x not in PRUNERS]
    if unknown:
        p.error(f"--pruners: unknown {', '.join(unknown)}; use {', '.join(PRUNERS)}")
    for name in ("trials", "epochs", "images", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.image_size < 64:
        p.error("--image-size must be at least 64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        work = args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
        weights = str(pretrain(work, args)) if args.pretrain_epochs else "none"

        def run_seed(seed: int) -> dict[str, Result]:
            data = make_data(work, args.images, seed, size=args.image_size, classes=2, name=f"data-{seed}",
                             command="hpo_bench")
            engines = [BASELINE, *(f"tpe+{p}" for p in args.pruner_list)]
            return {engine: run_engine(engine, seed, data, work, args, weights) for engine in engines}

        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            futures = {seed: pool.submit(run_seed, seed) for seed in args.seed_list}
            results = {seed: future.result() for seed, future in futures.items()}
        report(results, args)
        return 0
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
