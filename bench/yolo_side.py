"""accuracy_bench.py's YOLOv8n side, run by the bench's own venv python (it imports ultralytics,
which odorch's venv does not have): train from scratch for N minutes, then write COCO detections
of the test images (category id = YOLO class + 1, image id from the test json by file name)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--test-json", type=Path, required=True)
    parser.add_argument("--test-images", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()

    from ultralytics import YOLO, settings

    # no analytics, no logger integration (mlflow-skinny and tensorboard are in odorch's venv, and
    # Ultralytics logs to every one it finds, into the current folder), its folders under the bench's
    work = Path(args.project).parent
    settings.update({"sync": False, **dict.fromkeys(("mlflow", "tensorboard", "wandb", "clearml", "comet", "dvc", "raytune"), False),
                     "weights_dir": str(work / "yolo-weights"), "runs_dir": args.project, "datasets_dir": str(work)})  # fmt: skip
    model = YOLO("yolov8n.yaml")  # the architecture only: from scratch
    model.train(data=args.data, time=args.minutes / 60, epochs=1000, imgsz=args.imgsz, device="cpu", workers=2,
                pretrained=False, amp=False, plots=False, project=args.project, name="train", exist_ok=True, seed=0)  # fmt: skip
    best = Path(model.trainer.best if Path(model.trainer.best).is_file() else model.trainer.last)
    model = YOLO(str(best))

    gt = json.loads(args.test_json.read_text())
    ids = {Path(im["file_name"]).stem: im["id"] for im in gt["images"]}
    detections = []
    for image in sorted(args.test_images.iterdir()):
        if image.stem not in ids:
            continue
        result = model.predict(str(image), conf=0.001, iou=0.7, max_det=300, imgsz=args.imgsz, device="cpu", verbose=False)[0]
        for (x0, y0, x1, y1), score, cls in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), result.boxes.cls.tolist()):
            detections.append({"image_id": ids[image.stem], "category_id": int(cls) + 1,
                               "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})  # fmt: skip
    missing = set(ids) - {p.stem for p in args.test_images.iterdir()}
    if missing:
        raise SystemExit(f"{args.test_images}: {len(missing)} test images missing (e.g. {sorted(missing)[:3]})")
    args.out.write_text(json.dumps(detections))
    print(f"wrote {len(detections)} detections of {len(ids)} test images to {args.out} (model {best})")


if __name__ == "__main__":
    main()
