"""Serving entrypoint: the handler functions the SageMaker PyTorch inference toolkit calls.

The toolkit loads the model once with ``model_fn(model_dir, context)`` and then runs, per request,
``output_fn(predict_fn(input_fn(body, content_type), model), accept)``. ``invoke`` does the
same in one call (with the model cached) for a local endpoint server.

Requests (``Content-Type``):

- ``image/jpeg``, ``image/png``, ``application/x-image``: the bytes of one image (anything PIL
  decodes; converted to RGB, as the training loader does);
- ``application/json``: a batch, ``{"instances": [B64, ...], "min_score": 0.5,
  "max_detections": 100, "format": "builtin"}`` (every key but ``instances`` optional) or a
  bare list ``[B64, ...]``; B64 is a base64 image, optionally as a ``data:image/...;base64,``
  URL.

Defaults for ``min_score`` (0.0: everything the model returns) and ``max_detections`` (none:
the model's own limit) come from ``ODORCH_MIN_SCORE`` / ``ODORCH_MAX_DETECTIONS`` in the
serving environment, which is the only way to set them for a single-image request.

Responses (``Accept``):

- ``application/json`` (also ``*/*`` or none): ``{"predictions": [{"boxes": [[x0, y0, x1, y1],
  ...], "labels": [...], "classes": [...], "scores": [...], "width": W, "height": H}]}``,
  one entry per image (a single-image request gets a one-element list); pixel corners,
  labels 1-based (label i is ``classes[i - 1]`` of the training config), by score, highest first;
- ``application/x-od-builtin``, or ``"format": "builtin"`` in a JSON request: the SageMaker
  built-in Object Detection algorithm's ``{"prediction": [[cls, score, xmin, ymin, xmax, ymax],
  ...]}`` with ``cls`` 0-based (a float, as that algorithm writes it) and corners normalized to
  [0, 1] by the image size; a JSON (batch) request gets a list of those, one per image.

``input_fn`` returns a ``Request`` (the image tensors plus the request's options), not a bare
list, so that ``predict_fn`` and ``output_fn`` see the options; it is also a sequence of the
tensors. ``predict_fn`` returns ``Predictions``, a list of per-image dicts that carries the
response format and whether the request held a single image.

A bad request raises ``RequestError``: a ValueError that is also the inference toolkit's
``BaseInferenceToolkitError`` when the toolkit is installed, so the client gets 400 (bad body),
415 (unsupported content type) or 406 (unsupported accept) with the message, not a 500.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from odorch.runtime.models import MODEL_FILE, load_trained

try:  # inside the serving container: its errors carry an HTTP status
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:

    class _ToolkitError(Exception):  # type: ignore[no-redef]
        def __init__(self, status_code: int, message: str, phrase: str) -> None:
            self.status_code = status_code
            self.message = message
            self.phrase = phrase
            super().__init__(status_code, message, phrase)


JSON = "application/json"
BUILTIN = "application/x-od-builtin"
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
CONTENT_TYPES = (*IMAGE_TYPES, JSON)
ACCEPT_TYPES = (JSON, BUILTIN)
FORMATS = ("json", "builtin")
JSON_KEYS = ("instances", "min_score", "max_detections", "format")
BATCH_SIZE = int(os.environ.get("ODORCH_INFERENCE_BATCH", "8"))  # images per forward pass
MAX_IMAGES = int(os.environ.get("ODORCH_MAX_IMAGES", "32"))  # per request, counted before any is decoded
MAX_PIXELS = int(os.environ.get("ODORCH_MAX_PIXELS", "40000000"))  # per image, read from its header before decoding
LIMIT_NAMES = {"images": "ODORCH_MAX_IMAGES", "pixels": "ODORCH_MAX_PIXELS"}  # what a 413 tells to raise


def set_request_limits(*, max_images: int | None = None, max_pixels: int | None = None, names: dict[str, str]) -> None:
    """Set the per-request limits another way than the environment (``odorch serve --max-images /
    --max-pixels``; on SageMaker only the environment variables can be set); `names` (keys
    "images", "pixels") are what the 413 messages name."""
    global MAX_IMAGES, MAX_PIXELS
    if max_images is not None:
        MAX_IMAGES = max_images
        LIMIT_NAMES["images"] = names["images"]
    if max_pixels is not None:
        MAX_PIXELS = max_pixels
        LIMIT_NAMES["pixels"] = names["pixels"]


class RequestError(ValueError, _ToolkitError):
    """The request cannot be served; the message says why (and is the response body)."""

    def __init__(self, message: str, status_code: int = HTTPStatus.BAD_REQUEST) -> None:
        _ToolkitError.__init__(self, int(status_code), message, HTTPStatus(status_code).phrase)

    def __str__(self) -> str:
        return self.message


@dataclass
class Request:
    """What ``input_fn`` returns: CHW float images in [0, 1] on the CPU, and the options."""

    images: list[Any]
    min_score: float = 0.0
    max_detections: int | None = None
    format: str = "json"
    single: bool = False  # an image/* request (one image, not a batch)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.images)

    def __getitem__(self, i: int) -> Any:
        return self.images[i]


class Predictions(list):
    """What ``predict_fn`` returns: one dict per image, plus the response format."""

    def __init__(self, items: Any = (), *, format: str = "json", single: bool = False) -> None:
        super().__init__(items)
        self.format = format
        self.single = single


def model_fn(model_dir: str, context: Any = None) -> dict[str, Any]:
    """The toolkit's hook: exactly two parameters, because the inference toolkit counts them and
    calls ``model_fn(model_dir, context)`` when there are two. On the GPU TorchServe gave the
    worker (``context.system_properties["gpu_id"]``) when there is one."""
    import torch

    gpu = (getattr(context, "system_properties", None) or {}).get("gpu_id")
    device = None if gpu is None or not torch.cuda.is_available() else f"cuda:{gpu}"
    return load_handler_model(model_dir, device=device)


def load_handler_model(model_dir: str | Path, *, device: str | None = None) -> dict[str, Any]:
    """The trained model of ``model_dir`` (``model.pth``) as ``predict_fn`` takes it, on
    ``device`` (default: the GPU when there is one)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, config = load_trained(Path(model_dir), device=device)
    return {"model": model, "config": config, "classes": list(config["classes"]), "device": device}


def _media_type(header: Any) -> str:
    return str(header or "").split(";")[0].strip().lower()


def input_fn(request_body: Any, content_type: str) -> Request:
    """Decode a request body into image tensors and options (see the module docstring)."""
    media = _media_type(content_type)
    defaults = _defaults()
    if media in IMAGE_TYPES:
        if isinstance(request_body, str):
            raise RequestError(f"{media}: the body must be the image's bytes, not text")
        return Request([decode_image(bytes(request_body), "the request body")], single=True, **defaults)
    if media == JSON:
        return _json_request(request_body, defaults)
    raise RequestError(
        f"unsupported content type {content_type!r}; send one of {', '.join(CONTENT_TYPES)}",
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    )


def _defaults() -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, env in (("min_score", "ODORCH_MIN_SCORE"), ("max_detections", "ODORCH_MAX_DETECTIONS")):
        raw = os.environ.get(env, "").strip()
        if raw:
            try:
                value: Any = float(raw) if key == "min_score" else int(raw)
            except ValueError as e:
                raise RequestError(f"{env}={raw!r} in the serving environment is not a number", 500) from e
            options[key] = _check_option(key, value, f"{env} in the serving environment")
    return options


def _check_option(key: str, value: Any, where: str) -> Any:
    if key == "min_score":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise RequestError(f"{where}: min_score must be a number in [0, 1], not {value!r}")
        return float(value)
    if key == "max_detections":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RequestError(f"{where}: max_detections must be a whole number >= 0 (or null), not {value!r}")
        return value
    if value not in FORMATS:
        raise RequestError(f"{where}: format must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def _json_request(body: Any, defaults: dict[str, Any]) -> Request:
    try:
        data = json.loads(body)
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(f"{JSON}: the body is not valid JSON ({e})") from e
    options = dict(defaults)
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(JSON_KEYS))
        if unknown:
            raise RequestError(f"{JSON}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(JSON_KEYS)}")
        if "instances" not in data:
            raise RequestError(f'{JSON}: expected {{"instances": [<base64 image>, ...]}} or a list of base64 images')
        instances = data["instances"]
        for key in JSON_KEYS[1:]:
            if key in data:
                options[key] = _check_option(key, data[key], JSON)
    else:
        instances = data
    if not isinstance(instances, list) or not instances:
        raise RequestError(f"{JSON}: instances must be a non-empty list of base64 images")
    if len(instances) > MAX_IMAGES:
        raise RequestError(
            f"{JSON}: {len(instances)} images in one request, over the limit of {MAX_IMAGES} "
            f"({LIMIT_NAMES['images']}); send them in several requests",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    images = [decode_image(_b64(item, i), f"instance {i}") for i, item in enumerate(instances)]
    return Request(images, **options)


def _b64(item: Any, i: int) -> bytes:
    if not isinstance(item, str):
        raise RequestError(f"instance {i}: expected a base64 string, got {type(item).__name__}")
    text = item.strip()
    if text.startswith("data:"):  # data:image/png;base64,....
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"instance {i}: not valid base64 ({e})") from e


def decode_image(data: bytes, what: str) -> Any:
    """One image's bytes as a CHW float tensor in [0, 1] (RGB), as the training loader reads it
    (EXIF orientation applied, 16-bit scaled); over MAX_PIXELS it is refused before decoding."""
    import torch
    from torchvision.transforms.v2 import functional as F

    from odorch.runtime.data import DataError, read_rgb

    if not data:
        raise RequestError(f"{what}: empty; send the bytes of a JPEG or PNG image")
    try:
        rgb = read_rgb(io.BytesIO(data), what=what, max_pixels=MAX_PIXELS)  # decodes: a truncated file fails here
    except DataError as e:
        raise RequestError(f"{e} ({LIMIT_NAMES['pixels']})", HTTPStatus.REQUEST_ENTITY_TOO_LARGE) from e
    except Exception as e:  # PIL raises many kinds for bad data
        raise RequestError(f"{what}: cannot be decoded as an image ({type(e).__name__}: {e}); send JPEG or PNG bytes") from e
    return F.to_dtype(F.pil_to_tensor(rgb), torch.float32, scale=True)


def predict_fn(data: Any, model: dict[str, Any]) -> Predictions:
    """Detections per image: boxes [x0, y0, x1, y1] in pixels, labels (1-based), class names,
    scores (highest first), filtered by the request's min_score and max_detections."""
    import torch

    request = data if isinstance(data, Request) else Request(list(data))
    net, device, classes = model["model"], model["device"], model["classes"]
    out = Predictions(format=request.format, single=request.single)
    with torch.inference_mode():
        for start in range(0, len(request.images), max(1, BATCH_SIZE)):
            chunk = request.images[start : start + max(1, BATCH_SIZE)]
            for image, result in zip(chunk, net([im.to(device) for im in chunk])):
                out.append(_detections(result, image, classes, request.min_score, request.max_detections))
    return out


def _detections(result: dict[str, Any], image: Any, classes: list[str], min_score: float, max_detections: int | None) -> dict[str, Any]:
    import torch

    scores = result["scores"].detach().float().cpu()
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[scores[order] >= min_score]
    if max_detections is not None:
        order = order[:max_detections]
    labels = [int(v) for v in result["labels"].detach().cpu()[order].tolist()]
    return {
        "boxes": result["boxes"].detach().float().cpu()[order].tolist(),
        "labels": labels,
        "classes": [classes[v - 1] if 1 <= v <= len(classes) else str(v) for v in labels],
        "scores": scores[order].tolist(),
        "width": int(image.shape[-1]),
        "height": int(image.shape[-2]),
    }


def _response_kind(accept: Any) -> str:
    """'json' or 'builtin' for an Accept header (a list of types, with q-values, is read in order)."""
    for part in str(accept or "").split(","):
        media = _media_type(part)
        if media in ("", "*/*", "application/*", JSON):
            return "json"
        if media == BUILTIN:
            return "builtin"
    raise RequestError(
        f"unsupported accept {accept!r}; ask for one of {', '.join(ACCEPT_TYPES)}", HTTPStatus.NOT_ACCEPTABLE
    )


def builtin_detections(prediction: dict[str, Any]) -> dict[str, Any]:
    """One image's detections in the built-in algorithm's format: [cls, score, xmin, ymin, xmax, ymax],
    cls 0-based, corners divided by the image's width and height."""
    w, h = prediction["width"], prediction["height"]
    rows = []
    for (x0, y0, x1, y1), label, score in zip(prediction["boxes"], prediction["labels"], prediction["scores"]):
        corners = [x0 / w, y0 / h, x1 / w, y1 / h]
        rows.append([float(label - 1), float(score), *[min(1.0, max(0.0, c)) for c in corners]])
    return {"prediction": rows}


def output_fn(prediction: Any, accept: str) -> bytes:
    """Serialize ``predict_fn``'s result as JSON (see the module docstring for both formats)."""
    kind = _response_kind(accept)
    if kind == "builtin" or getattr(prediction, "format", "json") == "builtin":
        items = [builtin_detections(p) for p in prediction]
        body: Any = items[0] if getattr(prediction, "single", False) and len(items) == 1 else items
    else:
        body = {"predictions": list(prediction)}
    return json.dumps(body).encode()


_CACHE: dict[str, tuple[Any, dict[str, Any]]] = {}  # model.pth -> (its stat, model_fn's result)


def invoke(model_dir: str | Path, body: Any, content_type: str, accept: str = JSON) -> bytes:
    """One request end to end, as the toolkit runs it; the model is loaded again only when
    its model.pth changes."""
    file = Path(model_dir).resolve() / MODEL_FILE
    stamp = (file.stat().st_ino, file.stat().st_mtime_ns) if file.exists() else None
    cached = _CACHE.get(str(file))
    if cached is None or cached[0] != stamp:
        cached = _CACHE[str(file)] = (stamp, model_fn(str(model_dir)))
    return output_fn(predict_fn(input_fn(body, content_type), cached[1]), accept)
