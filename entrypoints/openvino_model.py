"""A model written by `odorch export`, run by OpenVINO where a torchvision detector is expected.

`odorch export` writes EXPORT_DIR/fp32/ and, with --int8, EXPORT_DIR/int8/, each holding
model.xml + model.bin (an OpenVINO IR of the detector wrapped to take one [1, 3, H, W] image in
[0, 1] and return boxes, scores, labels in the image's pixels) and config.json (the trained
model's config plus an "export" entry); with --format onnx, EXPORT_DIR/onnx/model.onnx of the
same wrapper. `find_ir` says whether a path is such a model: the file, its folder, or EXPORT_DIR
itself, which means its INT8 model when there is one, else its FP32 one. `OpenVINODetector`
answers `model(images)` as a torchvision detector in eval mode does, so evaluation, prediction
and serving need no other code path.

openvino is imported only when such a model is loaded: a serving container needs it only then.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from odorch.runtime.modelfile import CONFIG_FILE, ModelError

IR_FILE = "model.xml"
ONNX_FILE = "model.onnx"
PRECISIONS = ("int8", "fp32")  # the order EXPORT_DIR is searched in


def find_ir(path: Path) -> Path | None:
    """The model.xml / model.onnx that `path` names (the file, its folder, or an export folder), else None."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix in (".xml", ".onnx") else None
    for folder in (path, *(path / p for p in PRECISIONS)):
        for name in (IR_FILE, ONNX_FILE):
            if (folder / name).is_file():
                return folder / name
    return None


def load_ir(path: Path) -> tuple[OpenVINODetector, dict[str, Any]]:
    """The model compiled for the CPU, with the config.json beside it."""
    config_file = path.parent / CONFIG_FILE
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{config_file}: unreadable ({e}); an exported model needs the config.json "
                         f"`odorch export` writes beside {path.name}: export it again") from e
    missing = [k for k in ("model", "classes") if k not in config]
    if missing:
        raise ModelError(f"{config_file}: lacks {', '.join(missing)}; export the model again with `odorch export`")
    return OpenVINODetector(path), config


class OpenVINODetector:
    """`model(list of CHW float tensors) -> list of {"boxes", "scores", "labels"}` over an export.

    One image per inference (the IR's input is [1, 3, H, W], H and W free); calls from several
    threads take turns on one infer request. `eval()` and `to()` exist so callers written for
    torch models work unchanged: the IR always runs on the CPU."""

    training = False

    def __init__(self, path: Path) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise ModelError(f"{path}: an exported model; install openvino "
                             "(pip install 'openvino>=2026.4') to run it") from e
        self.path = Path(path)
        try:
            # f32: on CPUs with bf16 units (AMX, AVX512-BF16: Sapphire Rapids, SageMaker's m7i/c7i)
            # OpenVINO otherwise computes an FP32 model's convolutions in bf16, silently
            self.compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except RuntimeError as e:
            raise ModelError(f"{path}: not a loadable model ({str(e).splitlines()[0]}); export it again") from e
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, images: list[Any]) -> list[dict[str, Any]]:
        import numpy as np
        import torch

        out = []
        with self._lock:
            for image in images:
                batch = np.ascontiguousarray(image.detach().cpu().float().numpy()[None])
                result = self._request.infer({0: batch})
                boxes, scores, labels = (np.array(result[output]) for output in self.compiled.outputs)
                out.append({
                    "boxes": torch.from_numpy(boxes).float(),
                    "scores": torch.from_numpy(scores).float(),
                    "labels": torch.from_numpy(labels).long(),
                })  # fmt: skip
        return out

    def eval(self) -> OpenVINODetector:
        return self

    def to(self, *_args: Any, **_kwargs: Any) -> OpenVINODetector:
        return self
