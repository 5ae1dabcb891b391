"""Running a detector over images: COCO-format detections for evaluation, boxes for people."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plain(tensor: Any) -> Any:
    """A tv_tensor as a plain Tensor (models should not see the transforms' subclasses)."""
    import torch

    return tensor.as_subclass(torch.Tensor)


def detect(model: Any, loader: Any, device: Any) -> list[dict[str, Any]]:
    """COCO result dicts (bbox as [x, y, w, h], category_id = label) for every image of `loader`."""
    import torch

    model.eval()
    results = []
    with torch.inference_mode():
        for images, targets in loader:
            outputs = model([plain(im).to(device) for im in images])
            for target, out in zip(targets, outputs):
                for box, score, label in zip(xywh(out["boxes"].cpu()), out["scores"].tolist(), out["labels"].tolist()):
                    results.append(
                        {"image_id": target["image_id"], "category_id": int(label), "bbox": box, "score": float(score)}
                    )
    return results


def xywh(boxes: Any) -> list[list[float]]:
    """[x0, y0, x1, y1] boxes (a float tensor) as COCO's [x, y, w, h], computed in the tensor's
    dtype, so that boxes that went through JSON give the same numbers as the model's own."""
    boxes = boxes.clone()
    boxes[:, 2:] -= boxes[:, :2]
    return boxes.tolist()


def detect_images(model: Any, images: list[Any], device: Any = "cpu", *, batch_size: int = 1) -> list[dict[str, Any]]:
    """boxes [x0, y0, x1, y1] in pixels, labels and scores per CHW float image, ``batch_size``
    images per forward pass (batched convolutions round the last bits of scores differently)."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            for result in model([im.to(device) for im in images[start : start + batch_size]]):
                out.append({k: v.cpu().tolist() for k, v in result.items()})
    return out


def detect_files(model: Any, paths: list[Path], device: Any = "cpu") -> list[dict[str, Any]]:
    """boxes [x0, y0, x1, y1] in pixels, labels and scores per image file."""
    import torch
    from torchvision.transforms.v2 import functional as F

    from odorch.runtime.data import read_rgb

    model.eval()
    out = []
    with torch.inference_mode():
        for path in paths:
            image = F.to_dtype(F.pil_to_tensor(read_rgb(path)), torch.float32, scale=True)
            result = model([image.to(device)])[0]
            out.append({k: v.cpu().tolist() for k, v in result.items()})
    return out


def draw(path: Path, result: dict[str, Any], classes: list[str], out_path: Path, *, min_score: float = 0.3) -> int:
    """Save `path` with its boxes above `min_score` drawn and named; returns how many were drawn."""
    from odorch.runtime.data import read_rgb

    canvas = read_rgb(path)  # the frame the boxes were predicted in
    drawn = draw_on(canvas, result, classes, min_score=min_score)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_path)
    return drawn


def draw_on(canvas: Any, result: dict[str, Any], classes: list[str], *, min_score: float = 0.3) -> int:
    """Draw the boxes above `min_score` on the RGB PIL image `canvas`, named; returns how many."""
    from PIL import ImageDraw

    colors = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
    pen = ImageDraw.Draw(canvas)
    drawn = 0
    for box, label, score in zip(result["boxes"], result["labels"], result["scores"]):
        if score < min_score:
            continue
        color = colors[(label - 1) % len(colors)]
        pen.rectangle(box, outline=color, width=max(1, round(max(canvas.size) / 300)))
        pen.text((box[0] + 2, box[1] + 1), f"{classes[label - 1]} {score:.2f}", fill=color)
        drawn += 1
    return drawn
