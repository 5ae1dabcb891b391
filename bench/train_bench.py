#!/usr/bin/env python3
"""Training throughput: `odorch train` against a bare torchvision training loop.

What is measured
    Images trained per second over N epochs of SSDlite320-MobileNetV3 (from scratch,
    ``--weights none``) on the same data, with the same batch size, input size, threads,
    optimizer and per-epoch validation, run one after the other on the same machine:

    * odorch: the real CLI as a subprocess of this script (no shell):
          odorch train --data WORK/data --model ssdlite320_mobilenet_v3_large --weights none
                 --epochs N --hp batch_size=B --hp num_threads=T --runs-dir WORK/runs ...
      (the CLI starts entrypoints/train.py as its own child process and streams its log).
    * bare: in this process, a plain loop in the style of torchvision's
      references/detection: the torchvision builder, SGD with odorch's defaults for the
      model (lr, momentum, weight decay from entrypoints/models.py and train.py), the same
      linear warm-up + cosine LR, gradient clipping at 10 (odorch's default), channels_last
      on the backbone (odorch does that too), entrypoints.data.CocoDetection with the same
      v2 transforms (flip, ToDtype, SanitizeBoundingBoxes), DataLoader with num_workers=0
      (odorch's CPU default), seeded shuffling, drop_last as odorch.

Fairness: what the clock covers
    Both sides are timed over the same span of work: N epochs, each = every training
    iteration + inference on the validation split + COCO mAP (faster-coco-eval, as odorch
    picks when installed) + one checkpoint (model, optimizer, LR schedule) written with
    torch.save, as torchvision's reference script does every epoch. Process start-up,
    imports, data loading set-up and model construction are excluded from both.

    odorch's clock runs from the moment this script reads the entrypoint's
    ``training <model> on ...`` line (printed after the model, optimizer and loaders are
    built) to the moment it reads the final ``best validation:mAP ...`` line (printed after
    the last epoch's checkpoint): each line is timestamped on arrival through the CLI's pipe.
    The bare clock runs from the same point (everything built) to the same point (last
    checkpoint written). So odorch's own per-iteration work (SIGTERM check, finiteness check,
    progress lines, log streaming, job.json / metrics.jsonl updates, model.pth on a better
    mAP) is inside its time, as it should be. Images trained = epochs x iterations x batch
    (drop_last), the same on both sides. odorch's per-epoch ``time=`` values from its log
    (which exclude the checkpoint) are printed for cross-checking.

Goal: odorch images/s >= 0.95 x bare images/s.

Run:
    .venv/bin/python bench/train_bench.py                  # 3 epochs, 200 demo images
    .venv/bin/python bench/train_bench.py --repeat 2       # best of 2 for each runner
    .venv/bin/python bench/train_bench.py --epochs 1 --images 40   # quick smoke run

Exit status: 0 measured (goal met or not), 2 setup or a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import BenchError, make_data, odorch_executable

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch starts OpenMP: the same as odorch's jobs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_WORK = HERE / ".work" / "train"
MODEL = "ssdlite320_mobilenet_v3_large"
GOAL = 0.95
TIME_RE = re.compile(r"\btime=([0-9.]+)s")


@dataclass
class Result:
    runner: str
    images: int
    seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Setup:
    data: Path
    work: Path
    epochs: int
    batch: int
    threads: int
    seed: int


# ---------------------------------------------------------------- data


def split_size(data: Path, split: str) -> int:
    return len(json.loads((data / "annotations" / f"{split}.json").read_text())["images"])


def images_per_epoch(train_images: int, batch: int) -> int:
    """What one epoch trains with drop_last (as odorch's loader on one process)."""
    return (train_images // batch) * batch if train_images > batch else train_images


# ---------------------------------------------------------------- odorch


def odorch_command(s: Setup, job: str) -> list[str]:
    return [
        str(odorch_executable()), "train", "--data", str(s.data), "--model", MODEL, "--weights", "none",
        "--epochs", str(s.epochs), "--hp", f"batch_size={s.batch}", "--hp", f"num_threads={s.threads}",
        "--hp", f"seed={s.seed}", "--job-name", job, "--runs-dir", str(s.work / "runs"),
    ]  # fmt: skip


def stamped_lines(cmd: list[str], log: Path) -> tuple[int, list[tuple[float, str]]]:
    """Run cmd, timestamping every output line on arrival; (exit code, lines)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    lines: list[tuple[float, str]] = []
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=ROOT, text=True, bufsize=1)  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter(), line.rstrip("\n")))
            out.write(line)
        code = proc.wait()
    return code, lines


def first_stamp(lines: list[tuple[float, str]], prefix: str, log: Path) -> float:
    for stamp, text in lines:
        if text.strip().startswith(prefix):
            return stamp
    raise BenchError(f"odorch printed no line starting {prefix!r}; see {log}")


def run_odorch(s: Setup, index: int) -> Result:
    job = f"bench-{index}"
    shutil.rmtree(s.work / "runs" / job, ignore_errors=True)
    log = s.work / f"odorch-{index}.out"
    code, lines = stamped_lines(odorch_command(s, job), log)
    if code != 0:
        raise BenchError(f"odorch train exited with {code}; see {log}")
    start = first_stamp(lines, "training ", log)
    end = first_stamp(lines, "best validation:mAP", log)
    logs = (s.work / "runs" / job / "logs.txt").read_text()
    epochs = [float(m.group(1)) for m in TIME_RE.finditer(logs)]
    images = s.epochs * images_per_epoch(split_size(s.data, "train"), s.batch)
    return Result("odorch", images, end - start, epochs, note="epoch time= from logs.txt (no checkpoint)")


# ---------------------------------------------------------------- bare torchvision loop


def lr_lambda(warmup: int, total: int) -> Any:
    """Linear warm-up from 0.001x, then cosine to 0 (odorch's default schedule)."""
    warmup = min(warmup, max(total - 1, 0))

    def factor(it: int) -> float:
        if it < warmup:
            return 0.001 + (1 - 0.001) * it / warmup
        return 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(total - warmup, 1)))

    return factor


def bare_loaders(s: Setup) -> tuple[Any, Any, dict[str, Any], int]:
    """(train loader, val loader, val ground truth, classes) as odorch builds them."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    from odorch.runtime.data import CocoDetection, collate

    train_gt = json.loads((s.data / "annotations" / "train.json").read_text())
    val_gt = json.loads((s.data / "annotations" / "val.json").read_text())
    to_float = v2.ToDtype(torch.float32, scale=True)
    train_tf = v2.Compose([v2.RandomHorizontalFlip(p=0.5), to_float, v2.SanitizeBoundingBoxes(min_size=1)])
    train_set = CocoDetection(train_gt, s.data / "images", train_tf)
    val_set = CocoDetection(val_gt, s.data / "images", to_float)
    train = DataLoader(train_set, batch_size=s.batch, shuffle=True, generator=torch.Generator().manual_seed(s.seed),
                       num_workers=0, collate_fn=collate, drop_last=len(train_set) > s.batch)  # fmt: skip
    val = DataLoader(val_set, batch_size=s.batch, num_workers=0, collate_fn=collate)
    return train, val, val_gt, len(train_gt["categories"])


def bare_model(classes: int) -> Any:
    import torch
    import torchvision

    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=classes + 1
    )
    model.backbone.to(memory_format=torch.channels_last)
    return model


def bare_optimizer(model: Any, iters: int, epochs: int) -> tuple[Any, Any]:
    import torch

    from odorch.runtime.models import MODELS
    from odorch.runtime.train import HYPERPARAMETERS

    spec = MODELS[MODEL]
    params = [p for p in model.parameters() if p.requires_grad]
    momentum, warmup = HYPERPARAMETERS["momentum"][1], HYPERPARAMETERS["warmup"][1]
    optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=momentum, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, epochs * iters))
    return optimizer, scheduler


def bare_train_epoch(model: Any, optimizer: Any, scheduler: Any, loader: Any) -> int:
    """One epoch as references/detection's train_one_epoch (no logger); returns images trained."""
    import torch

    model.train()
    seen = 0
    for images, targets in loader:
        images = [im.as_subclass(torch.Tensor) for im in images]
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]} for t in targets]
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        if not math.isfinite(loss.item()):
            raise BenchError(f"bare loop: loss is {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        seen += len(images)
    return seen


def coco_map(gt: dict[str, Any], detections: list[dict[str, Any]]) -> float:
    """COCO bbox AP with faster-coco-eval (pycocotools without it), as odorch's evaluation picks."""
    try:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    except ImportError:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def bare_evaluate(model: Any, loader: Any, gt: dict[str, Any]) -> float:
    import torch

    model.eval()
    detections = []
    with torch.inference_mode():
        for images, targets in loader:
            outputs = model([im.as_subclass(torch.Tensor) for im in images])
            for target, out in zip(targets, outputs):
                boxes = out["boxes"]
                boxes[:, 2:] -= boxes[:, :2]
                for box, score, label in zip(boxes.tolist(), out["scores"].tolist(), out["labels"].tolist()):
                    detections.append({"image_id": target["image_id"], "category_id": label, "bbox": box, "score": score})
    return coco_map(gt, detections)


def run_bare(s: Setup, index: int) -> Result:
    import torch

    torch.manual_seed(s.seed)
    torch.set_num_threads(s.threads)
    train, val, val_gt, classes = bare_loaders(s)
    model = bare_model(classes)
    optimizer, scheduler = bare_optimizer(model, len(train), s.epochs)
    checkpoint = s.work / f"bare-{index}.pth"
    seen, epochs = 0, []
    start = time.perf_counter()
    for epoch in range(s.epochs):
        t0 = time.perf_counter()
        seen += bare_train_epoch(model, optimizer, scheduler, train)
        bare_evaluate(model, val, val_gt)
        epochs.append(time.perf_counter() - t0)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "lr_scheduler": scheduler.state_dict(), "epoch": epoch + 1}  # fmt: skip
        torch.save(state, checkpoint)
    seconds = time.perf_counter() - start
    checkpoint.unlink(missing_ok=True)
    return Result("bare", seen, seconds, epochs, note="epoch time: train + validation (no checkpoint)")


# ---------------------------------------------------------------- report


def best(results: list[Result], runner: str) -> Result:
    return max((r for r in results if r.runner == runner), key=lambda r: r.rate)


def print_table(results: list[Result], s: Setup, repeat: int) -> float:
    odorch, bare = best(results, "odorch"), best(results, "bare")
    ratio = odorch.rate / bare.rate
    print(f"\n{MODEL}, weights none, batch {s.batch}, {s.threads} threads, {s.epochs} epochs, "
          f"{split_size(s.data, 'train')} train / {split_size(s.data, 'val')} val images (best of {repeat})")  # fmt: skip
    print("seconds = N epochs of training + per-epoch validation (inference + COCO mAP) + per-epoch checkpoint;")
    print("process start-up and model construction excluded on both sides\n")
    print("| runner | images trained | seconds | images/s | odorch/bare |")
    print("|--------|---------------:|--------:|---------:|------------:|")
    print(f"| bare   | {bare.images:>14,} | {bare.seconds:>7.1f} | {bare.rate:>8.2f} |           – |")
    print(f"| odorch | {odorch.images:>14,} | {odorch.seconds:>7.1f} | {odorch.rate:>8.2f} | {ratio:>11.3f} |")
    for r in (bare, odorch):
        print(f"  {r.runner} per-epoch seconds ({r.note}): {', '.join(f'{t:.1f}' for t in r.epoch_seconds)}")
    for runner in ("bare", "odorch"):
        rates = ", ".join(f"{r.rate:.2f}" for r in results if r.runner == runner)
        print(f"  {runner} images/s of every run (in order): {rates}")
    medians = {runner: statistics.median(r.rate for r in results if r.runner == runner) for runner in ("bare", "odorch")}
    print(f"  medians: bare {medians['bare']:.2f}, odorch {medians['odorch']:.2f} images/s, "
          f"ratio {medians['odorch'] / medians['bare']:.3f}")  # fmt: skip
    return ratio


def print_verdict(ratio: float) -> None:
    met = "met" if ratio >= GOAL else "NOT met"
    print(f"\nGoal: odorch/bare images/s >= {GOAL:.2f}; ratio {ratio:.3f}: goal {met}.")


# ---------------------------------------------------------------- main


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Images/s of `odorch train` against a bare torchvision loop (same model, data, batch, "
        "threads, per-epoch validation). Goal: odorch/bare >= 0.95.",
    )
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    p.add_argument("--images", type=int, default=200, help="demo images to generate; ImageSets split 64/16/20 (default 200)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder (default {DEFAULT_WORK.relative_to(ROOT)})")
    p.add_argument("--repeat", type=int, default=1, help="runs of each runner, alternating order; best is reported (default 1)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--threads", type=int, default=default_threads(), help="torch threads for both (default: usable cores)")
    p.add_argument("--seed", type=int, default=0, help="data and training seed (default 0)")
    args = p.parse_args(argv)
    for name in ("epochs", "images", "repeat", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(args: argparse.Namespace) -> int:
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(work, args.images, args.seed, command="train_bench")
    s = Setup(data, work, args.epochs, args.batch_size, args.threads, args.seed)
    results: list[Result] = []
    for i in range(args.repeat):
        order = (run_bare, run_odorch) if i % 2 == 0 else (run_odorch, run_bare)
        for runner in order:
            result = runner(s, i)
            print(f"run {i + 1}/{args.repeat} {result.runner}: {result.images} images in {result.seconds:.1f} s "
                  f"= {result.rate:.2f} images/s", flush=True)  # fmt: skip
            results.append(result)
    if len({r.images for r in results}) != 1:
        raise BenchError(f"images trained differ: {', '.join(f'{r.runner} {r.images}' for r in results)}")
    print_verdict(print_table(results, s, args.repeat))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
