"""DETR-family detectors from Hugging Face `transformers` (the optional `detr` extra) behind the
torchvision detector interface, so that training, evaluation, serving and export need no other
code path: in train mode `model(images, targets)` returns a loss dict, in eval mode `model(images)`
returns one {"boxes", "scores", "labels"} dict per image, in the image's pixels, label 0 being
the background as everywhere in odorch (transformers' class i is odorch's label i + 1).

Images are resized to a square `image_size` and left in [0, 1]: RT-DETR's image processor
rescales and does not normalise. Weights come from a hub id ("coco": the model table's COCO
checkpoint) or a local folder written by `save_pretrained` / `huggingface-cli download`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from odorch.runtime.modelfile import ModelError

INSTALL = "pip install 'odorch[detr]' (transformers)"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ModelError(f"DETR-family models need Hugging Face transformers: {INSTALL}") from e
    return transformers


class HFDetector(nn.Module):
    """A transformers object-detection model answering as a torchvision detector does."""

    def __init__(self, model: Any, *, image_size: int, detections_per_img: int = 100):
        super().__init__()
        self.model = model
        self.image_size = image_size
        self.detections_per_img = detections_per_img

    def forward(self, images: list[Any], targets: list[dict[str, Any]] | None = None) -> Any:
        import torch
        import torch.nn.functional as F

        size = (self.image_size, self.image_size)
        pixels = torch.stack([F.interpolate(im[None], size=size, mode="bilinear", align_corners=False)[0] for im in images])
        if self.training:
            if targets is None:
                raise ValueError("in training mode the model needs targets")
            labels = [_hf_target(t, im.shape[-2:]) for t, im in zip(targets, images)]
            out = self.model(pixel_values=pixels, labels=labels)
            return {"loss": out.loss}
        out = self.model(pixel_values=pixels)
        return [self._detections(logits, boxes, im.shape[-2:]) for logits, boxes, im in zip(out.logits, out.pred_boxes, images)]

    def _detections(self, logits: Any, boxes: Any, hw: Any) -> dict[str, Any]:
        """Top-scoring (query, class) pairs, as transformers' RT-DETR post-processing picks them."""
        import torch
        from torchvision.ops import box_convert

        if getattr(self.model.config, "use_focal_loss", True):
            scores = logits.sigmoid()
        else:  # DETR: softmax over the classes and "no object" (the last one), which is dropped
            scores = logits.softmax(-1)[:, :-1]
        num_classes = scores.shape[-1]
        top = scores.flatten().topk(min(self.detections_per_img, scores.numel()))
        query, label = top.indices // num_classes, top.indices % num_classes
        h, w = hw
        xyxy = box_convert(boxes[query], "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        return {"boxes": xyxy, "scores": top.values, "labels": label + 1}


def _hf_target(target: dict[str, Any], hw: Any) -> dict[str, Any]:
    """odorch's pixel xyxy boxes and labels 1..K as transformers' normalised cxcywh and classes 0..K-1."""
    import torch
    from torchvision.ops import box_convert

    h, w = hw
    boxes = box_convert(target["boxes"], "xyxy", "cxcywh") / torch.tensor([w, h, w, h], dtype=torch.float32, device=target["boxes"].device)
    return {"class_labels": target["labels"] - 1, "boxes": boxes}


def build(hub_id: str, classes: list[str], *, weights: str, image_size: int, arch: dict[str, Any] | None = None) -> HFDetector:
    """weights 'coco' (the hub id's checkpoint), 'none' (the hub id's architecture, or `arch`, a
    config dict, from scratch) or a local folder with config.json + weights."""
    transformers = _transformers()
    labels = {"id2label": dict(enumerate(classes)), "label2id": {c: i for i, c in enumerate(classes)}}
    if arch is not None:
        config = transformers.AutoConfig.for_model(**{**arch, **labels})
        return HFDetector(transformers.AutoModelForObjectDetection.from_config(config), image_size=image_size)
    source = hub_id if weights in ("coco", "none") else weights
    if weights not in ("coco", "none") and not (Path(weights) / "config.json").is_file():
        raise ModelError(f"weights={weights}: not a folder with config.json (a transformers checkpoint); use coco, none or such a folder")
    try:
        if weights == "none":
            config = transformers.AutoConfig.from_pretrained(source, **labels)
            model = transformers.AutoModelForObjectDetection.from_config(config)
        else:
            model = transformers.AutoModelForObjectDetection.from_pretrained(source, **labels, ignore_mismatched_sizes=True)
    except OSError as e:
        raise ModelError(
            f"cannot load {source} ({str(e).splitlines()[0]}). Offline, download it where there is a network "
            f"(`huggingface-cli download {hub_id} --local-dir DIR`, or save_pretrained) and pass weights=DIR, "
            f"the local folder; transformers' cache is {_hub_cache()}"
        ) from e
    return HFDetector(model, image_size=image_size)


def _hub_cache() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"
