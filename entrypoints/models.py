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

MODEL_FILE = "model.pth"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "ssd" or "frcnn"
    weights_enum: str  # torchvision's COCO weights enum
    image_size: int  # default input size (SSD: square side; Faster R-CNN: shorter side)
    max_ratio: float = 1.0  # Faster R-CNN: longer side limit = image_size * max_ratio
    min_image_size: int = 64  # smaller inputs vanish in the deepest feature maps
    lr: float = 0.01
    weight_decay: float = 1e-4
    kwargs: tuple[tuple[str, Any], ...] = ()  # builder defaults (CPU-friendly RPN/ROI sampling)


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
}


class ModelError(Exception):
    """A model cannot be built or loaded; the message says what to do."""


def num_outputs(classes: list[str]) -> int:
    """Class logits a detector needs: one per class plus the background (label 0)."""
    return len(classes) + 1


def spec_of(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name]


def _builder(name: str) -> Any:
    import torchvision.models.detection as detection

    return getattr(detection, name)


def _coco_weights(name: str) -> Any:
    import torchvision.models.detection as detection

    return getattr(detection, spec_of(name).weights_enum).DEFAULT


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
    model.transform.min_size = (image_size,)
    if spec.family == "ssd":
        model.transform.max_size = image_size
        model.transform.fixed_size = (image_size, image_size)
    else:
        model.transform.max_size = round(image_size * spec.max_ratio)


def build_model(name: str, classes: list[str], *, weights: str = "none", image_size: int | None = None) -> Any:
    """A detector for `classes`: weights 'coco' (torchvision's COCO model, head replaced),
    'imagenet' (pretrained backbone only) or 'none' (from scratch). A local file is loaded
    into `build_arch` by `load_weights`."""
    import inspect

    spec = spec_of(name)
    kwargs = dict(spec.kwargs)
    builder = _builder(name)
    if weights == "coco":
        model = _download_guard(name, _coco_weights(name), lambda: builder(weights=_coco_weights(name), **kwargs))
        replace_head(model, name, classes)
    elif weights == "imagenet":
        backbone = inspect.signature(builder).parameters["weights_backbone"].default
        model = _download_guard(name, backbone, lambda: builder(weights=None, num_classes=num_outputs(classes), **kwargs))
    elif weights == "none":
        model = builder(weights=None, weights_backbone=None, num_classes=num_outputs(classes), **kwargs)
    else:
        raise ModelError(f"weights={weights!r}: use coco, imagenet, none or a path to a checkpoint file")
    set_image_size(model, name, image_size or spec.image_size)
    return model


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


def build_arch(name: str, classes: list[str], *, origin: str, image_size: int) -> Any:
    """The architecture of a model whose weights came from `origin` ('coco', 'imagenet' or
    'none'), without downloading anything: torchvision's builders change it with the weights
    (SSDlite keeps MobileNet's full tail only under an ImageNet backbone; Faster R-CNN
    MobileNet freezes batch norm under any pretrained weights)."""
    from torchvision.models.detection import ssdlite

    if origin not in ("coco", "imagenet", "none"):
        raise ModelError(f"unknown weights origin {origin!r}")
    original = ssdlite.mobilenet_v3_large
    full_tail = name.startswith("ssdlite") and origin == "imagenet"
    with _patched(ssdlite, "mobilenet_v3_large", partial(_full_tail, original) if full_tail else original):
        model = build_model(name, classes, weights="none", image_size=image_size)
    if name.startswith("fasterrcnn_mobilenet") and origin != "none":
        _freeze_batch_norm(model.backbone.body)
    return model


def _full_tail(original: Any, **kwargs: Any) -> Any:
    return original(**{**kwargs, "reduced_tail": False})


@contextlib.contextmanager
def _patched(module: Any, attr: str, value: Any) -> Any:
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
    model = build_arch(config["model"], config["classes"], origin=config["origin"], image_size=int(config["image_size"]))
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as e:
        raise ModelError(f"{file}: weights do not fit {config['model']} ({str(e).splitlines()[0]})") from e
    return model.to(device).eval(), config


def _refuse_builtin_od(path: Path) -> None:
    """A model of the SageMaker built-in Object Detection algorithm (`--algorithm builtin-od`) is
    MXNet (*-symbol.json + *.params): say so instead of failing on a missing model.pth."""
    import json

    folder = path if path.is_dir() else path.parent
    builtin = any(folder.glob("*-symbol.json")) or any(folder.glob("*.params"))
    for job in (folder / "job.json", folder.parent / "job.json"):
        try:
            builtin = builtin or json.loads(job.read_text()).get("algorithm") == "builtin-od"
        except (OSError, ValueError, AttributeError):
            pass
    if builtin:
        raise ModelError(f"{path}: an MXNet model of the SageMaker built-in Object Detection algorithm "
                         "(--algorithm builtin-od); odorch cannot load it locally: deploy it to a SageMaker endpoint "
                         "to evaluate or predict with it")


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)
