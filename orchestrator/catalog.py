"""`odorch models`: every detector odorch can train, read from ``odorch.runtime.models.MODELS``
(the one table of models), with its parameter count (counted by building the architecture
without weights, nothing downloaded), its measured CPU speed and where its pretrained weights
come from."""

from __future__ import annotations

from typing import Any

# CPU ms per image (PyTorch eager, one image per call) as the benches measured them on the
# 2-core AMD EPYC box (AVX2, no VNNI, no GPU, torch 2.14.1): (ms, date, where the number comes from).
# Re-run the bench and update a row when a model or the box changes; a model without a row is
# listed as "not measured".
CPU_MS: dict[str, tuple[float, str, str]] = {
    "ssdlite320_mobilenet_v3_large": (63.8, "2026-11-22", "bench/infer_bench.py --rounds 5, p50, box under load"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (95.0, "2026-11", "train bench table in NOTES.md (2 threads)"),
    "ssd300_vgg16": (405.0, "2026-11", "train bench table in NOTES.md (2 threads)"),
    "fasterrcnn_mobilenet_v3_large_fpn": (479.0, "2026-11", "train bench table in NOTES.md (2 threads)"),
}
COCO_CLASSES = 90  # torchvision's COCO detectors: 90 category ids (+ background = 91 outputs)


def model_rows() -> list[dict[str, Any]]:
    """One row per trainable model, in MODELS order (imports torch and builds each model: seconds)."""
    from odorch.runtime.models import MODELS

    return [model_row(name) for name in MODELS]


def model_row(name: str) -> dict[str, Any]:
    from odorch.runtime.models import MODELS

    spec = MODELS[name]
    measured = CPU_MS.get(name)
    return {
        "name": name,
        "family": spec.family,
        "input_size": spec.image_size,
        "input": _input(spec),
        "parameters": count_parameters(name),
        "cpu_ms": measured[0] if measured else None,
        "cpu_ms_date": measured[1] if measured else None,
        "cpu_ms_source": measured[2] if measured else None,
        "weights": pretrained_weights(name),
    }


def _input(spec: Any) -> str:
    if spec.family in ("ssd", "hf"):
        return f"{spec.image_size}x{spec.image_size}"
    return f"shorter side {spec.image_size}, longer <= {round(spec.image_size * spec.max_ratio)}"


def count_parameters(name: str) -> int | None:
    """Parameters of the COCO-layout architecture (90 classes), as torchvision's weights count
    them (frozen batch norm holds buffers, not parameters); ImageNet-backbone layout where
    torchvision has no COCO weights. Built without weights: nothing is downloaded. None for a
    transformers model: its architecture is in its hub config, which would be a download."""
    from odorch.runtime.models import MODELS, build_arch

    if MODELS[name].family == "hf":
        return None
    origin = "coco" if MODELS[name].weights_enum else "imagenet"
    model = build_arch(name, [f"class{i}" for i in range(COCO_CLASSES)], origin=origin,
                       image_size=MODELS[name].image_size)
    return sum(p.numel() for p in model.parameters())


def pretrained_weights(name: str) -> dict[str, str | None]:
    """Where weights=coco and weights=imagenet come from (torchvision's weight enums: name and URL)."""
    import inspect

    import torchvision.models.detection as detection
    from torchvision.models import get_weight

    from odorch.runtime import models

    spec = models.MODELS[name]
    if spec.family == "hf":  # a Hugging Face hub id
        return {"coco": spec.weights_enum, "coco_url": f"https://huggingface.co/{spec.weights_enum}", "imagenet": None,
                "imagenet_url": None}  # fmt: skip
    builder = spec.builder or name  # torchvision's, or one odorch defines beside MODELS
    builder = getattr(models, builder, None) or getattr(detection, builder)
    coco = getattr(detection, spec.weights_enum).DEFAULT if spec.weights_enum else None
    backbone = inspect.signature(builder).parameters["weights_backbone"].default
    backbone = get_weight(backbone) if isinstance(backbone, str) else backbone
    return {
        "coco": f"{type(coco).__name__}.{coco.name}" if coco else None,
        "coco_url": coco.url if coco else None,
        "imagenet": f"{type(backbone).__name__}.{backbone.name}" if backbone else None,
        "imagenet_url": backbone.url if backbone else None,
    }


def format_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Table cells: name, family, input, parameters (millions), CPU ms/image (date), weights."""
    out = []
    for r in rows:
        ms = f"{r['cpu_ms']:g} ({r['cpu_ms_date']})" if r["cpu_ms"] is not None else "not measured"
        w = r["weights"]
        weights = f"COCO: {w['coco']}" if w["coco"] else f"no COCO weights; ImageNet backbone: {w['imagenet']}"
        parameters = f"{r['parameters'] / 1e6:.2f}M" if r["parameters"] is not None else "n/a"
        out.append([r["name"], r["family"], r["input"], parameters, ms, weights])
    return out
