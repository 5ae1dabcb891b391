"""Accuracy in a wall-time budget: odorch's defaults vs Ultralytics YOLOv8n, both from scratch.

BCCD with its ImageSets split (205 train / 87 val / 72 test), N minutes (default 20) of wall time
each, one after the other on the same machine:

- odorch: exactly `odorch train --data D --weights none --time N` (the defaults are the recipe);
- YOLOv8n: `YOLO("yolov8n.yaml").train(data=..., time=N/60, device="cpu")` from scratch, in the
  bench's own venv (bench/.work/accuracy/yolo-venv: the main venv's packages through a .pth file,
  plus `pip install --no-deps ultralytics` and the three packages it needs that the main venv
  lacks), on the same split written by `odorch convert coco2yolo`.

Both models then detect the test images (YOLO at Ultralytics' own validation settings, conf 0.001,
IoU 0.7, 300 detections) and are scored by the same evaluator, odorch.runtime.evaluation
.coco_evaluate, on the same test json. It prints AP, AP50 and per-class AP50 and their ratios,
and writes WORK/result.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, BenchError, run_odorch  # noqa: E402

BCCD = ROOT.parent / "shared" / "datasets" / "bccd" / "BCCD"
YOLO_PACKAGES = ["ultralytics==8.4.190"]  # installed with --no-deps: its torch pin must not replace ours
YOLO_EXTRAS = ["ultralytics-thop>=2.0", "opencv-python-headless>=4.10", "polars>=1.0"]  # what the main venv lacks
YOLO_SIDE = Path(__file__).resolve().parent / "yolo_side.py"


def convert(bccd: Path, work: Path) -> Path:
    data = work / "data"
    if not (data / "annotations" / "test.json").is_file():
        run_odorch(["convert", "voc2coco", str(bccd), "--out", str(data), "--imagesets"], work / "convert.log")
    return data


def odorch_side(data: Path, work: Path, minutes: float, hp: list[str]) -> tuple[list[dict], float]:
    """`odorch train --data D --weights none --time N [--hp K=V ...]`, then the best model on the test split."""
    import shutil

    from torch.utils.data import DataLoader

    from odorch.runtime.data import CocoDetection, collate, eval_transforms
    from odorch.runtime.models import load_trained
    from odorch.runtime.predict import detect

    runs = work / "runs"
    shutil.rmtree(runs / "odorch", ignore_errors=True)
    t0 = time.monotonic()
    run_odorch(["train", "--data", str(data), "--weights", "none", "--time", f"{minutes:g}", "--runs-dir", str(runs),
                "--job-name", "odorch", *(a for kv in hp for a in ("--hp", kv))], work / "odorch-train.log")  # fmt: skip
    seconds = time.monotonic() - t0
    gt = json.loads((data / "annotations" / "test.json").read_text())
    model, _ = load_trained(runs / "odorch" / "model")
    loader = DataLoader(CocoDetection(gt, data / "images", eval_transforms()), batch_size=4, collate_fn=collate)
    return detect(model, loader, "cpu"), seconds


def yolo_venv(work: Path) -> Path:
    """WORK/yolo-venv: sees the main venv's packages (torch included) and adds Ultralytics."""
    venv = work / "yolo-venv"
    python = venv / "bin" / "python"
    stamp = venv / "odorch-bench.json"
    key = json.dumps({"packages": YOLO_PACKAGES, "extras": YOLO_EXTRAS})
    if stamp.is_file() and stamp.read_text() == key:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "odorch-main-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for args in (["--no-deps", *YOLO_PACKAGES], YOLO_EXTRAS):
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise BenchError(f"pip install {' '.join(args)} into {venv} failed: {result.stderr.strip()[-800:]}")
    check = subprocess.run([str(python), "-c", "import ultralytics, torch; print(torch.__version__)"], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"{venv}: ultralytics does not import: {check.stderr.strip()[-800:]}")
    stamp.write_text(key)
    return python


def yolo_side(data: Path, work: Path, minutes: float, imgsz: int) -> tuple[list[dict], float]:
    """YOLOv8n from scratch for N minutes on the same split, then its detections on the test json."""
    import yaml

    python = yolo_venv(work)
    layout = work / "yolo-data"
    if not (layout / "data.yaml").is_file():
        run_odorch(["convert", "coco2yolo", str(data), "--out", str(layout)], work / "coco2yolo.log")
    config = yaml.safe_load((layout / "data.yaml").read_text())
    config["path"] = str(layout.resolve())  # Ultralytics reads a relative path under its own datasets folder
    (work / "bccd-yolo.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = work / "yolo-detections.json"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "YOLO_CONFIG_DIR": str(work / "yolo-config"), "YOLO_OFFLINE": "1"}
    command = [str(python), str(YOLO_SIDE), "--data", str(work / "bccd-yolo.yaml"), "--minutes", f"{minutes:g}",
               "--project", str(work / "yolo-runs"), "--test-json", str(data / "annotations" / "test.json"),
               "--test-images", str(layout / "images" / "test"), "--out", str(out), "--imgsz", str(imgsz)]  # fmt: skip
    print(f"[yolo] {' '.join(command[1:])}", flush=True)
    t0 = time.monotonic()
    with open(work / "yolo-train.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=work).returncode
    if code != 0:
        raise BenchError(f"the YOLO side exited with {code}; see {work / 'yolo-train.log'}")
    return json.loads(out.read_text()), time.monotonic() - t0


def report(results: dict[str, dict], classes: list[str]) -> None:
    names = list(results)
    rows = [("AP", lambda r: r["stats"]["AP"]), ("AP50", lambda r: r["stats"]["AP50"]), ("APs", lambda r: r["stats"]["APs"])]
    rows += [(f"AP50 {c}", lambda r, c=c: r["per_class"][c]["AP50"]) for c in classes]
    print(f"\n{'':16}" + "".join(f"{n:>10}" for n in names) + ("   odorch/yolov8n" if len(names) == 2 else ""))
    for label, get in rows:
        values = [get(results[n]) for n in names]
        ratio = f"   {values[0] / values[1]:.2f}×" if len(values) == 2 and values[1] > 0 else ""
        print(f"{label:16}" + "".join(f"{v:>10.3f}" for v in values) + ratio)
    print(f"{'wall s':16}" + "".join(f"{results[n]['seconds']:>10.0f}" for n in names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-time budget of each side (default 20)")
    parser.add_argument("--bccd", type=Path, default=BCCD, help="BCCD's Pascal VOC root (with ImageSets/Main)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".work" / "accuracy")
    parser.add_argument("--sides", default="odorch,yolov8n", help="which to run, comma-separated (default both)")
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                        help="odorch side: a hyperparameter to screen before it becomes a default (repeatable; "
                        "the goal is judged on the defaults alone)")
    parser.add_argument("--yolo-imgsz", type=int, default=320, help="YOLOv8n's input size (default 320: at Ultralytics' own 640 it trains only 8 epochs in 20 min on 2 cores)")
    args = parser.parse_args()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not set(sides) <= {"odorch", "yolov8n"} or not sides:
        parser.error("--sides takes odorch, yolov8n or both")
    if not (args.bccd / "ImageSets" / "Main" / "test.txt").is_file():
        print(f"error: {args.bccd}: not BCCD with ImageSets/Main/test.txt; pass --bccd", file=sys.stderr)
        return 2
    from odorch.runtime.evaluation import coco_evaluate

    args.work.mkdir(parents=True, exist_ok=True)
    try:
        data = convert(args.bccd, args.work)
        gt = json.loads((data / "annotations" / "test.json").read_text())
        results = {}
        for side in sides:
            if side == "odorch":
                detections, seconds = odorch_side(data, args.work, args.minutes, args.hp)
            else:
                detections, seconds = yolo_side(data, args.work, args.minutes, args.yolo_imgsz)
            results[side] = {**coco_evaluate(gt, detections), "seconds": seconds}
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    classes = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    print(f"\nBCCD test split ({len(gt['images'])} images), from scratch, {args.minutes:g} min of wall time each, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
          + (f"; odorch with --hp {' --hp '.join(args.hp)}" if args.hp else "")
          + (f"; YOLOv8n at {args.yolo_imgsz} px" if "yolov8n" in sides else ""))  # fmt: skip
    report(results, classes)
    (args.work / "result.json").write_text(json.dumps({"minutes": args.minutes, "hp": args.hp, "yolo_imgsz": args.yolo_imgsz, "results": results}, indent=2))
    print(f"wrote {args.work / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
