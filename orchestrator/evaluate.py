"""Evaluating a trained model on a split of an odorch dataset, matching classes by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def label_map(model_classes: list[str], data_classes: list[str], data_file: Path) -> dict[int, int]:
    """Model label -> dataset category id; a dataset class the model never learned is an error."""
    unknown = [name for name in data_classes if name not in model_classes]
    if unknown:
        raise ValueError(
            f"{data_file} has classes the model was not trained on: {', '.join(unknown)} "
            f"(model classes: {', '.join(model_classes)}); evaluate on data with the model's classes"
        )
    return {model_classes.index(name) + 1: i + 1 for i, name in enumerate(data_classes)}


def load_split(data: Path, split: str) -> tuple[dict[str, Any], Path, list[str]]:
    """The ground truth of DATA/annotations/SPLIT.json as coco_evaluate takes it, that file
    (its images are in file.parent.parent / "images") and its class names in category id order."""
    from odorch.runtime.data import class_names, load_coco_split

    gt = load_coco_split(data, split)
    classes = class_names(gt)
    return gt, Path(gt.pop("_path")), classes


def evaluate_model(model: Any, config: dict[str, Any], data: Path, split: str, *, batch_size: int = 1,
                   score_threshold: float | None = None, device: Any = "cpu", errors: bool = True) -> dict[str, Any]:
    """COCO statistics of ``model`` on ``split`` and (``errors``) its errors at ``score_threshold``
    (default: the best-F1 threshold) as ``error_analysis`` finds them; ``model`` is on ``device``."""
    import torch
    from torch.utils.data import DataLoader

    from odorch.runtime.data import CocoDetection, collate, eval_transforms
    from odorch.runtime.evaluation import coco_evaluate, error_analysis
    from odorch.runtime.predict import detect

    gt, file, data_classes = load_split(data, split)
    mapping = label_map(config["classes"], data_classes, file)
    dataset = CocoDetection(gt, file.parent.parent / "images", eval_transforms())
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    detections = detect(model, loader, torch.device(device))
    kept = []
    for det in detections:
        if det["category_id"] in mapping:  # classes of the model that this dataset does not have
            kept.append({**det, "category_id": mapping[det["category_id"]]})
    result = {"model": config["model"], "annotations": str(file), "split": split, **coco_evaluate(gt, kept)}
    if errors:
        result["errors"] = error_analysis(gt, kept, score_threshold=score_threshold)
    return result
