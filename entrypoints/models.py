"""torchvision detectors sized to a dataset's classes, their weights, and saved models.

Label 0 is the background for every model here; dataset class i (0-based) is label i + 1,
which is also its category id in the odorch COCO layout. `num_outputs` is the one place that
says so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from odorch.runtime.modelfile import CONFIG_FILE, MODEL_FILE, ModelError


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "ssd", "frcnn", "dense" (one-stage on an FPN: FCOS) or "hf" (transformers, see hf_detr.py)
    weights_enum: str  # torchvision's COCO weights enum ("": none); for "hf", the COCO checkpoint's hub id
    image_size: int  # default input size (SSD: square side; Faster R-CNN: shorter side)
    max_ratio: float = 1.0  # Faster R-CNN: longer side limit = image_size * max_ratio
    min_image_size: int = 64  # smaller inputs vanish in the deepest feature maps
    lr: float = 0.01
    weight_decay: float = 1e-4
    kwargs: tuple[tuple[str, Any], ...] = ()  # builder defaults (CPU-friendly RPN/ROI sampling)
    builder: str = ""  # torchvision's builder, or one of this module's (default: the model's name)
    optimizer: str = "sgd"  # the default of the optimizer hyperparameter


MODELS: dict[str, ModelSpec] = {
    "ssdlite320_mobilenet_v3_large": ModelSpec(
        "ssd", "SSDLite320_MobileNet_V3_Large_Weights", 320, lr=0.05, weight_decay=4e-5
    ),
    "ssd300_vgg16": ModelSpec("ssd", "SSD300_VGG16_Weights", 300, lr=0.002, weight_decay=5e-4, min_image_size=300),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ModelSpec(
        "frcnn",
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
        320,
        max_ratio=2.0,
        lr=0.02,
        kwargs=(("box_batch_size_per_image", 128), ("rpn_pre_nms_top_n_train", 1000), ("rpn_post_nms_top_n_train", 500)),
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": ModelSpec(
        "frcnn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights", 800, max_ratio=1333 / 800, lr=0.02
    ),
    "fasterrcnn_resnet50_fpn_v2": ModelSpec(
        "frcnn", "FasterRCNN_ResNet50_FPN_V2_Weights", 800, max_ratio=1333 / 800, lr=0.02
    ),
    # the same SSDlite at 512: a stride-16 cell is 1/32 of the image instead of 1/20 (small objects)
    "ssdlite512_mobilenet_v3_large": ModelSpec(
        "ssd", "SSDLite320_MobileNet_V3_Large_Weights", 512, lr=0.05, weight_decay=4e-5,
        builder="ssdlite320_mobilenet_v3_large",
    ),
    # FCOS on MobileNetV3 with a stride-8 FPN level; no COCO weights in torchvision (imagenet or none)
    "fcos_mobilenet_v3_large_fpn": ModelSpec("dense", "", 512, max_ratio=1.5, lr=0.01, builder="fcos_mobilenet_v3_large_fpn"),
    # RT-DETRv2 (ResNet-18-vd) through Hugging Face transformers: `pip install 'odorch[detr]'`
    "rtdetr_v2_r18vd": ModelSpec("hf", "PekingU/rtdetr_v2_r18vd", 640, lr=1e-4, weight_decay=1e-4, optimizer="adamw"),
}


def num_outputs(classes: list[str]) -> int:
    """Class logits a detector needs: one per class plus the background (label 0)."""
    return len(classes) + 1


def spec_of(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name]


def _builder(name: str) -> Any:
    import torchvision.models.detection as detection

    builder = spec_of(name).builder or name
    return globals()[builder] if builder in globals() else getattr(detection, builder)


def _coco_weights(name: str) -> Any:
    import torchvision.models.detection as detection

    if not spec_of(name).weights_enum:
        raise ModelError(f"torchvision has no COCO weights for {name}: use weights=imagenet (its backbone's) or none")
    return getattr(detection, spec_of(name).weights_enum).DEFAULT


FPN_CHANNELS = 128  # FCOS's head runs at stride 8: 256 channels (torchvision's ResNet-50 FCOS) is too slow on a CPU


def fcos_mobilenet_v3_large_fpn(
    *, weights: Any = None, weights_backbone: Any = "MobileNet_V3_Large_Weights.IMAGENET1K_V1", num_classes: int = 91,
    **kwargs: Any,
) -> Any:
    """FCOS on MobileNetV3-Large with FPN levels P3–P7 (strides 8–128; the end of each backbone stage
    at strides 8, 16, 32, then two extra levels) and a 2-conv head; batch norm frozen under
    pretrained backbone weights, as torchvision's MobileNet detectors do."""
    from torch import nn
    from torchvision.models import get_weight, mobilenet_v3_large
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    if weights is not None:
        raise ModelError("torchvision has no COCO weights for fcos_mobilenet_v3_large_fpn")
    if isinstance(weights_backbone, str):
        weights_backbone = get_weight(weights_backbone)
    norm = FrozenBatchNorm2d if weights_backbone is not None else nn.BatchNorm2d
    features = mobilenet_v3_large(weights=weights_backbone, norm_layer=norm).features
    backbone = BackboneWithFPN(
        features, return_layers={"6": "0", "12": "1", "16": "2"}, in_channels_list=[40, 112, 960],
        out_channels=FPN_CHANNELS, extra_blocks=LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS),
    )  # fmt: skip
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    head = FCOSHead(FPN_CHANNELS, 1, num_classes, num_convs=2)
    defaults = {"score_thresh": 0.05, "detections_per_img": 100}
    return FCOS(backbone, num_classes, anchor_generator=anchors, head=head, **{**defaults, **kwargs})


def replace_head(model: Any, name: str, classes: list[str]) -> None:
    """Swap the class-dependent layers of a COCO model for ones sized to `classes`."""
    from torch import nn
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.ssd import SSDClassificationHead
    from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

    n = num_outputs(classes)
    if spec_of(name).family == "frcnn":
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, n)
        return
    size = model.transform.fixed_size or (320, 320)
    out_channels = det_utils.retrieve_out_channels(model.backbone, size)
    num_anchors = model.anchor_generator.num_anchors_per_location()
    if name.startswith("ssdlite"):
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        model.head.classification_head = SSDLiteClassificationHead(out_channels, num_anchors, n, norm_layer)
    else:
        model.head.classification_head = SSDClassificationHead(out_channels, num_anchors, n)


def set_image_size(model: Any, name: str, image_size: int) -> None:
    """Input size the model's own transform resizes to (SSD: a square; Faster R-CNN: shorter side)."""
    spec = spec_of(name)
    if spec.family == "hf":
        model.image_size = image_size
        return
    model.transform.min_size = (image_size,)
    if spec.family == "ssd":
        model.transform.max_size = image_size
        model.transform.fixed_size = (image_size, image_size)
    else:
        model.transform.max_size = round(image_size * spec.max_ratio)


MIN_CELLS = 1.5  # a default box this many grid cells wide still overlaps a box half a cell away at IoU 0.5
MATCH_IOU = 0.5  # SSD's matcher trains a default box on an object it overlaps this much


def matched_shares(
    boxes: list[tuple[float, float, float, float]], labels: list[int], *, model: Any, image_size: int
) -> dict[int, float]:
    """Share of each class's boxes (x1, y1, x2, y2 as fractions of their image) that one of an SSD
    model's own default boxes overlaps at IoU >= MATCH_IOU: a class whose boxes mostly fall below
    it is learnt from few, badly placed default boxes (BCCD's platelets: none of them)."""
    from torchvision.ops import box_iou

    xyxy, labels_t = _sized(boxes, labels)
    best = box_iou(xyxy, _default_boxes(model.anchor_generator, feature_grids(model, image_size), image_size)).max(dim=1).values
    return {int(c): float((best[labels_t == c] >= MATCH_IOU).double().mean()) for c in labels_t.unique()}


def fit_anchors(
    boxes: list[tuple[float, float, float, float]], labels: list[int], *, model: Any, image_size: int
) -> dict[str, list[float]]:
    """SSD default boxes fitted to a dataset, as YOLOv5's autoanchor does for its anchors: the
    scales and aspect ratios that maximise the mean IoU of each training box with its best default
    box (`boxes` are x1, y1, x2, y2 as fractions of their image; SSD stretches every image to a
    square), each class weighing the same, since AP is a mean over classes. The search starts from
    the model's own boxes and from a k-means of the box sizes and descends one parameter at a time.
    The counts stay the model's, so the head's shape (and COCO weights) still fit."""
    import numpy as np
    import torch
    from torchvision.ops import box_iou

    old = model.anchor_generator
    levels, per_level = len(old.aspect_ratios), max(len(r) for r in old.aspect_ratios)
    xyxy, labels_t = _sized(boxes, labels)
    if len(xyxy) < levels + 1:
        raise ModelError(f"anchors=fit needs at least {levels + 1} training boxes, found {len(xyxy)}: use anchors=default")
    xyxy, labels_t = _balanced_sample(xyxy, labels_t, per_class=500)
    weights = 1.0 / torch.bincount(labels_t)[labels_t].double()
    grids = feature_grids(model, image_size)

    def fitness(params: Any) -> float:
        scales, ratios = np.exp(params[: levels + 1]), np.exp(params[levels + 1 :])
        defaults = _default_boxes(_box_generator(old, scales=list(scales), ratios=list(ratios)), grids, image_size)
        best = box_iou(xyxy, defaults).max(dim=1).values.double()
        return float((best * weights).sum() / weights.sum())

    wh = (xyxy[:, 2:] - xyxy[:, :2]).double().numpy()
    floors = [MIN_CELLS / g for g in grids]
    kmeans = np.maximum(np.exp(_kmeans_1d(np.log(np.sqrt(wh[:, 0] * wh[:, 1])), levels + 1)), floors + floors[-1:])
    kmeans_ratios = np.maximum(np.exp(_kmeans_1d(np.abs(np.log(wh[:, 0] / wh[:, 1])), per_level)), 1.1)
    own = model_anchors(model)
    starts = [np.log(np.concatenate([own["scales"], own["aspect_ratios"]])),
              np.log(np.concatenate([np.minimum(kmeans, 1.0), kmeans_ratios]))]  # fmt: skip
    params = max(starts, key=fitness)
    low, high = np.log([0.01] * (levels + 1) + [1.0] * per_level), np.log([1.0] * (levels + 1) + [4.0] * per_level)
    params = _descend(params, fitness, low=low, high=high)
    return {"scales": [round(float(x), 5) for x in np.exp(params[: levels + 1])],
            "aspect_ratios": [round(float(x), 5) for x in np.exp(params[levels + 1 :])]}  # fmt: skip


def _sized(boxes: list[tuple[float, float, float, float]], labels: list[int]) -> tuple[Any, Any]:
    """The boxes (and their labels) as tensors, those without width or height left out."""
    import torch

    xyxy = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    keep = ((xyxy[:, 2:] - xyxy[:, :2]) > 0).all(dim=1)
    return xyxy[keep], torch.as_tensor(labels).reshape(-1)[keep]


def _default_boxes(generator: Any, grids: list[int], image_size: int) -> Any:
    """Every default box of `generator` on feature maps of `grids` cells a side, as fractions of the image."""
    import torch
    from torchvision.models.detection.image_list import ImageList

    probe = ImageList(torch.zeros(1, 3, image_size, image_size), [(image_size, image_size)])
    return generator(probe, [torch.zeros(1, 1, g, g) for g in grids])[0] / image_size


def _balanced_sample(boxes: Any, labels: Any, *, per_class: int) -> tuple[Any, Any]:
    """At most `per_class` boxes of each class (a fixed draw), so that fitting stays quick."""
    import torch

    generator = torch.Generator().manual_seed(0)
    keep = []
    for label in labels.unique():
        where = (labels == label).nonzero().flatten()
        keep.append(where[torch.randperm(len(where), generator=generator)[:per_class]])
    keep = torch.cat(keep).sort().values
    _, dense = labels[keep].unique(return_inverse=True)
    return boxes[keep], dense


def _descend(params: Any, fitness: Any, *, low: Any, high: Any, rounds: int = 8) -> Any:
    """Coordinate descent on log-parameters: each in turn tried a few steps up and down, every step
    that improves `fitness` kept, until a round improves nothing. The large steps let one level's
    boxes jump to another class's size (BCCD: RBCs met by the finest level's extra box)."""
    import numpy as np

    params, best = np.array(params, dtype=np.float64), fitness(params)
    for _ in range(rounds):
        improved = False
        for i in range(len(params)):
            for step in (-0.7, -0.35, -0.15, 0.15, 0.35, 0.7):
                trial = params.copy()
                trial[i] = np.clip(trial[i] + step, low[i], high[i])
                value = fitness(trial)
                if value > best + 1e-5:
                    params, best, improved = trial, value, True
        if not improved:
            break
    return params


def feature_grids(model: Any, image_size: int) -> list[int]:
    """Cells per side of each feature map an SSD model's default boxes sit on, at its square input."""
    import torch

    backbone, training = model.backbone, model.backbone.training
    backbone.eval()  # batch norm must not learn from the probe
    try:
        with torch.inference_mode():
            features = backbone(torch.zeros(1, 3, image_size, image_size))
    finally:
        backbone.train(training)
    return [int(f.shape[-1]) for f in features.values()]


def _kmeans_1d(values: Any, k: int, *, iterations: int = 50) -> Any:
    """Sorted centres of Lloyd's k-means in one dimension, started at the quantiles (deterministic)."""
    import numpy as np

    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        nearest = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        centres = np.array([values[nearest == j].mean() if (nearest == j).any() else centres[j] for j in range(k)])
    return np.sort(centres)


def model_anchors(model: Any) -> dict[str, list[float]]:
    """An SSD model's default boxes in fit_anchors' form (each level's ratios are a prefix of the longest)."""
    generator = model.anchor_generator
    return {"scales": [float(x) for x in generator.scales], "aspect_ratios": [float(x) for x in max(generator.aspect_ratios, key=len)]}


def set_anchors(model: Any, anchors: dict[str, list[float]]) -> None:
    """Replace an SSD model's default boxes by `anchors` (from fit_anchors); weights are unaffected."""
    old = model.anchor_generator
    levels, per_level = len(old.aspect_ratios), max(len(r) for r in old.aspect_ratios)
    if len(anchors["scales"]) != levels + 1 or len(anchors["aspect_ratios"]) != per_level:
        raise ModelError(f"anchors {anchors} do not fit this model ({levels} levels, up to {per_level} aspect ratios each)")
    model.anchor_generator = _box_generator(old, scales=list(anchors["scales"]), ratios=list(anchors["aspect_ratios"]))


def _box_generator(old: Any, *, scales: list[float], ratios: list[float]) -> Any:
    """A DefaultBoxGenerator like `old` with other scales and ratios, each level keeping its own
    count of ratios (SSD300 has one on some levels, two on others), so the head still fits."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    return DefaultBoxGenerator([ratios[: len(r)] for r in old.aspect_ratios], scales=scales, steps=old.steps, clip=old.clip)


def build_model(name: str, classes: list[str], *, weights: str = "none", image_size: int | None = None) -> Any:
    """A detector for `classes`: weights 'coco' (torchvision's COCO model, head replaced),
    'imagenet' (pretrained backbone only) or 'none' (from scratch). A local file is loaded
    into `build_arch` by `load_weights`."""
    import inspect

    spec = spec_of(name)
    if spec.family == "hf":
        return _build_hf(name, classes, weights=weights, image_size=image_size or spec.image_size)
    kwargs = dict(spec.kwargs)
    builder = _builder(name)
    if weights == "coco":
        model = _download_guard(name, _coco_weights(name), lambda: builder(weights=_coco_weights(name), **kwargs))
        replace_head(model, name, classes)
    elif weights == "imagenet":
        from torchvision.models import get_weight

        backbone = inspect.signature(builder).parameters["weights_backbone"].default
        backbone = get_weight(backbone) if isinstance(backbone, str) else backbone
        model = _download_guard(name, backbone, lambda: builder(weights=None, num_classes=num_outputs(classes), **kwargs))
    elif weights == "none":
        model = builder(weights=None, weights_backbone=None, num_classes=num_outputs(classes), **kwargs)
    else:
        raise ModelError(f"weights={weights!r}: use coco, imagenet, none or a path to a checkpoint file")
    set_image_size(model, name, image_size or spec.image_size)
    return model


def _build_hf(name: str, classes: list[str], *, weights: str, image_size: int, arch: dict[str, Any] | None = None) -> Any:
    from odorch.runtime.hf_detr import build

    if weights == "imagenet":
        raise ModelError(f"{name}: weights=imagenet is for torchvision models; use coco ({spec_of(name).weights_enum}), none or a local folder")
    return build(spec_of(name).weights_enum, classes, weights=weights, image_size=image_size, arch=arch)


def _download_guard(name: str, weights: Any, build: Any) -> Any:
    """Build with torchvision weights; offline, fail at once naming the file to put in the torch cache."""
    import torch

    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        return build()
    except OSError as e:  # URLError and socket errors are OSErrors
        raise ModelError(
            f"cannot download the pretrained weights of {name} ({e}). Offline, put {file.name} "
            f"(from {weights.url}) at {file}, or pass weights=PATH to a local file, or weights=none"
        ) from e
    except RuntimeError as e:
        raise ModelError(f"the pretrained weights of {name} in {file} are unusable ({e}): delete that file") from e


def build_arch(name: str, classes: list[str], *, origin: str, image_size: int, arch: dict[str, Any] | None = None) -> Any:
    """The architecture of a model whose weights came from `origin` ('coco', 'imagenet' or
    'none'), without downloading anything: torchvision's builders change it with the weights
    (SSDlite keeps MobileNet's full tail only under an ImageNet backbone; Faster R-CNN
    MobileNet freezes batch norm under any pretrained weights). A transformers model ("hf")
    is rebuilt from `arch`, its config as saved in the odorch config."""
    from torchvision.models.detection import ssdlite

    if origin not in ("coco", "imagenet", "none"):
        raise ModelError(f"unknown weights origin {origin!r}")
    if spec_of(name).family == "hf":
        if arch is None:
            raise ModelError(f"{name}: its config lacks 'arch' (the transformers config); train it again")
        return _build_hf(name, classes, weights="none", image_size=image_size, arch=arch)
    original = ssdlite.mobilenet_v3_large
    full_tail = name.startswith("ssdlite") and origin == "imagenet"
    with patched(ssdlite, "mobilenet_v3_large", partial(_full_tail, original) if full_tail else original):
        model = build_model(name, classes, weights="none", image_size=image_size)
    if (name.startswith("fasterrcnn_mobilenet") or spec_of(name).family == "dense") and origin != "none":
        _freeze_batch_norm(model.backbone.body)
    return model


def _full_tail(original: Any, **kwargs: Any) -> Any:
    return original(**{**kwargs, "reduced_tail": False})


@contextlib.contextmanager
def patched(module: Any, attr: str, value: Any) -> Any:
    """module.attr = value inside the with block only (torchvision's helpers, swapped while building or exporting)."""
    saved = getattr(module, attr)
    setattr(module, attr, value)
    try:
        yield
    finally:
        setattr(module, attr, saved)


def _freeze_batch_norm(module: Any) -> None:
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    for child_name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            setattr(module, child_name, frozen)
        else:
            _freeze_batch_norm(child)


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True, turning every failure into a ModelError that names the file."""
    import pickle

    import torch

    if not Path(path).is_file():
        raise ModelError(f"{path}: not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as e:
        raise ModelError(f"{path}: corrupt or not a PyTorch checkpoint ({str(e).splitlines()[0]}); replace or delete it") from e


def load_weights(model: Any, path: Path, name: str, classes: list[str]) -> list[str]:
    """Initialise from a local file: an odorch model.pth/checkpoint or a bare state dict
    (e.g. torchvision's COCO file). Layers whose shape differs (another class count) keep
    their fresh initialisation; their names are returned so the caller can say so."""
    data = load_checkpoint_file(path)
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise ModelError(f"{path}: holds no model weights (expected a state dict or a dict with 'model')")
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if len(matching) < len(own) // 2:
        raise ModelError(
            f"{path}: only {len(matching)} of {len(own)} tensors fit {name}; is it a checkpoint of another model?"
        )
    model.load_state_dict(matching, strict=False)
    return sorted(set(own) - set(matching))


def save_model(model_dir: Path, model: Any, config: dict[str, Any]) -> None:
    """model.pth (weights + config, loadable with weights_only=True) and a readable config.json."""
    import json
    import os

    import torch

    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    tmp = model_dir / f".{MODEL_FILE}.tmp"
    torch.save({"format": "odorch-model", "model": state, "config": config}, tmp)
    os.replace(tmp, model_dir / MODEL_FILE)
    tmp = model_dir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, model_dir / CONFIG_FILE)


def load_trained(path: Path, *, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """A saved odorch model (its folder or model.pth) in eval mode, with its config; or a model
    written by `odorch export` (model.xml / model.onnx, its folder, or the export folder: INT8
    if there, else FP32), run by OpenVINO on the CPU whatever `device` says (see
    entrypoints/openvino_model.py)."""
    from odorch.runtime.openvino_model import find_ir, load_ir

    path = Path(path)
    _refuse_builtin_od(path)
    exported = find_ir(path)
    if exported is not None:
        return load_ir(exported)
    file = path / MODEL_FILE if path.is_dir() else path
    data = load_checkpoint_file(file)
    if not isinstance(data, dict) or data.get("format") != "odorch-model":
        raise ModelError(f"{file}: not an odorch model (train one with `odorch train`)")
    config = data.get("config") or {}
    missing = [k for k in ("model", "classes", "origin", "image_size") if k not in config]
    if missing:
        raise ModelError(f"{file}: its config lacks {', '.join(missing)} (written by an older odorch?); train it again")
    model = build_arch(config["model"], config["classes"], origin=config["origin"], image_size=int(config["image_size"]),
                       arch=config.get("arch"))  # fmt: skip
    if config.get("anchors"):
        set_anchors(model, config["anchors"])
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as e:
        raise ModelError(f"{file}: weights do not fit {config['model']} ({str(e).splitlines()[0]})") from e
    return model.to(device).eval(), config


def _refuse_builtin_od(path: Path) -> None:
    """A model of the SageMaker built-in Object Detection algorithm (`--algorithm builtin-od`) is
    MXNet (*-symbol.json + *.params): say so instead of failing on a missing model.pth."""
    folder = path if path.is_dir() else path.parent
    if any(folder.glob("*-symbol.json")) or any(folder.glob("*.params")):
        raise ModelError(f"{path}: an MXNet model of the SageMaker built-in Object Detection algorithm "
                         "(--algorithm builtin-od); odorch cannot load it locally: deploy it to a SageMaker endpoint "
                         "to evaluate or predict with it")


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)
