"""The odorch COCO layout as torch datasets: `<channel>/annotations/<split>.json` + `<channel>/images/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class DataError(Exception):
    """A dataset channel cannot be used; the message says what to fix."""


def find_split(channel: Path, split: str) -> Path:
    """The annotation file of `split` in a channel, or the channel's only one."""
    folder = Path(channel) / "annotations"
    wanted = folder / f"{split}.json"
    if wanted.is_file():
        return wanted
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise DataError(
        f"{channel}: no annotations/{split}.json"
        + (f" (found {', '.join(p.name for p in found)})" if found else "")
        + "; give a folder written by `odorch convert` (OUT with annotations/ and images/)"
    )


def load_coco_split(channel: Path, split: str) -> dict[str, Any]:
    path = find_split(channel, split)
    data = json.loads(path.read_text())
    data["_path"] = str(path)
    return data


def class_names(coco: dict[str, Any]) -> list[str]:
    """Class names in label order; the layout guarantees category ids 1..K."""
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    if [c["id"] for c in cats] != list(range(1, len(cats) + 1)):
        raise DataError(f"{coco.get('_path')}: category ids are not 1..K; convert it with `odorch convert coco2coco`")
    return [c["name"] for c in cats]


def train_transforms(*, flip: bool, photometric: bool, scale_jitter: bool, image_size: int) -> Any:
    import torch
    from torchvision.transforms import v2

    steps: list[Any] = []
    if photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    if scale_jitter:
        steps += [
            v2.ScaleJitter((image_size, image_size), scale_range=(0.5, 1.5), antialias=True),
            v2.RandomCrop((image_size, image_size), pad_if_needed=True),
        ]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes(min_size=1)])


def eval_transforms() -> Any:
    import torch
    from torchvision.transforms import v2

    return v2.ToDtype(torch.float32, scale=True)


class CocoDetection:
    """Images as float tensors and targets as torchvision detection models expect them.

    Crowd boxes are left out of training targets: torchvision's detectors have no way to ignore
    a region, and counting a crowd as one object teaches the wrong thing.
    """

    def __init__(self, coco: dict[str, Any], images_dir: Path, transforms: Any):
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        self.images_dir = Path(images_dir)
        self.transforms = transforms
        self.anns: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in self.images}
        for ann in coco["annotations"]:
            if not ann.get("iscrowd", 0):
                self.anns[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        import torch
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        info = self.images[index]
        with Image.open(self.images_dir / info["file_name"]) as im:
            image = tv_tensors.Image(F.pil_to_tensor(im.convert("RGB")))
        anns = self.anns[info["id"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=image.shape[-2:]),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": info["id"],
        }
        image, target = self.transforms(image, target)
        return image, target


def collate(batch: list[Any]) -> tuple[Any, ...]:
    return tuple(zip(*batch))
