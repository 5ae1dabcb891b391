"""The odorch COCO layout as torch datasets: `<channel>/annotations/<split>.json` + `<channel>/images/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from odorch.runtime.errors import OdorchError


class DataError(OdorchError):
    """A dataset channel cannot be used; the message says what to fix."""


_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}  # EXIF Orientation -> PIL transpose, as ImageOps.exif_transpose


def read_rgb(source: Any, *, what: str | None = None, max_pixels: int | None = None) -> Any:
    """An image (a path or a binary file) as the RGB PIL image every odorch loader uses: EXIF
    orientation applied, as `odorch convert` measured the image; 16-bit greyscale (PIL's I;16 and
    I modes) scaled to 8 bits, not clipped (convert("RGB") clips it: a 16-bit PNG trained white).

    Raises DataError for an image over `max_pixels` (default PIL's cap), checked from the header
    before anything is decoded.
    """
    from PIL import Image

    name = what or str(source)
    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(source) as im:
            if im.width * im.height > limit:
                raise DataError(f"{name}: {im.width}x{im.height} is over {limit:,} pixels; downscale it")
            orientation = im.getexif().get(0x0112)
            rgb = _to_rgb(im)
    except Image.DecompressionBombError as e:
        raise DataError(f"{name}: {e}; downscale it") from e
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return rgb.transpose(getattr(Image.Transpose, method)) if method else rgb


def _to_rgb(im: Any) -> Any:
    if im.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return im.convert("RGB")
    import numpy as np
    from PIL import Image

    pixels = np.asarray(im, dtype=np.float64)
    if im.mode == "F":  # float images: [0, 1] when they fit, else taken as 8-bit values
        pixels = pixels * 255 if pixels.size and pixels.max() <= 1 else pixels
    else:
        pixels = pixels / 257  # 0..65535 -> 0..255
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L").convert("RGB")


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


def train_transforms(*, flip: bool, photometric: bool, scale_jitter: bool, image_size: int, stretch: bool = False) -> Any:
    """`stretch`: the model squeezes every image to image_size × image_size (SSD), so scale jitter
    starts from that shape; jittering the image as it is would train on other proportions than
    the model sees when it detects."""
    import torch
    from torchvision.transforms import v2

    steps: list[Any] = []
    if photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    if scale_jitter:
        if stretch:
            steps.append(v2.Resize((image_size, image_size), antialias=True))
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
        for im in self.images:
            parts = str(im.get("file_name", "")).replace("\\", "/").split("/")
            if not parts[0] or ".." in parts or "\0" in im["file_name"]:
                raise DataError(
                    f"{coco.get('_path')}: image {im['id']} file_name {im['file_name']!r} is empty or leaves "
                    f"{self.images_dir}; write the channel with `odorch convert`"
                )
        self.anns: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in self.images}
        for ann in coco["annotations"]:
            if not ann.get("iscrowd", 0):
                self.anns[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        return self.transforms(*self.load(index))

    def load(self, index: int) -> tuple[Any, dict[str, Any]]:
        """The image (uint8) and its target before any transform; `annotated`, its box count, rides
        through the transforms so that training can count the boxes augmentation cut away."""
        import torch
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        info = self.images[index]
        image = tv_tensors.Image(F.pil_to_tensor(read_rgb(self.images_dir / info["file_name"])))
        anns = self.anns[info["id"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=image.shape[-2:]),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": info["id"],
            "annotated": len(anns),
        }
        return image, target


MOSAIC_MIN_VISIBLE = 0.1  # a box cut by the mosaic is kept while this share of its area shows (as YOLOv5)


class Mosaic:
    """Training samples as 2×2 mosaics (YOLOv4/v5) with probability `p`: more objects, at more
    positions and cut by more borders per image. The training loop sets `enabled` False for the
    last epochs, so that the model ends on images like the ones it will see. `stretch`: as in
    train_transforms."""

    def __init__(self, dataset: CocoDetection, *, size: int, p: float, stretch: bool = False):
        self.dataset, self.size, self.p, self.stretch, self.enabled = dataset, size, p, stretch, True

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        import torch

        if not self.enabled or torch.rand(()).item() >= self.p:
            return self.dataset[index]
        others = torch.randint(len(self.dataset), (3,)).tolist()
        center = (torch.randint(self.size // 4, 3 * self.size // 4 + 1, (2,))).tolist()
        samples = [self.dataset.load(i) for i in (index, *others)]
        image, target = mosaic(samples, size=self.size, center=center, stretch=self.stretch)
        return self.dataset.transforms(image, target)


def mosaic(samples: list[tuple[Any, dict[str, Any]]], *, size: int, center: tuple[int, int],
           stretch: bool = False) -> tuple[Any, dict[str, Any]]:
    """Four (image, target) pairs on one size×size canvas: each resized so that its longer side is
    `size` (`stretch`: to size × size, the square SSD squeezes every image to when it detects),
    placed top-left, top-right, bottom-left and bottom-right of `center`; boxes moved, clipped to
    what shows, and dropped when less than MOSAIC_MIN_VISIBLE of them shows."""
    import torch
    from torchvision import tv_tensors
    from torchvision.ops import box_area
    from torchvision.transforms.v2 import functional as F

    xc, yc = center
    canvas = torch.full((3, size, size), 114, dtype=torch.uint8)
    boxes, labels = [], []
    for k, (image, target) in enumerate(samples):
        h, w = image.shape[-2:]
        nh, nw = (size, size) if stretch else (max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w))))
        image, resized = F.resize(image, [nh, nw], antialias=True), F.resize(target["boxes"], [nh, nw])
        x0, y0 = (xc - nw if k % 2 == 0 else xc), (yc - nh if k < 2 else yc)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + nw, size), min(y0 + nh, size)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        canvas[:, cy0:cy1, cx0:cx1] = image[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        moved = resized.as_subclass(torch.Tensor) + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        shown = torch.stack([moved[:, 0].clamp(cx0, cx1), moved[:, 1].clamp(cy0, cy1),
                             moved[:, 2].clamp(cx0, cx1), moved[:, 3].clamp(cy0, cy1)], dim=1)  # fmt: skip
        keep = (box_area(shown) > 0) & (box_area(shown) >= MOSAIC_MIN_VISIBLE * box_area(moved))
        boxes.append(shown[keep])
        labels.append(target["labels"][keep])
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.cat([torch.zeros(0, 4), *boxes]), format="XYXY", canvas_size=(size, size)),
        "labels": torch.cat([torch.zeros(0, dtype=torch.int64), *labels]),
        "image_id": samples[0][1]["image_id"],
        "annotated": sum(len(t["labels"]) for _, t in samples),
    }
    return tv_tensors.Image(canvas), target


def collate(batch: list[Any]) -> tuple[Any, ...]:
    return tuple(zip(*batch))
