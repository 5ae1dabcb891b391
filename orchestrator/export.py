"""`odorch export`: a trained detector as an OpenVINO IR (FP32, and INT8 through NNCF) that is
shown to give PyTorch's answers: detections compared on real images, COCO mAP from the same
evaluation as `odorch evaluate`, and PyTorch / FP32 / INT8 timed in one process. Everything
measured goes to EXPORT_DIR/metrics.json.

Layout: EXPORT_DIR/fp32/{model.xml, model.bin, config.json}, EXPORT_DIR/int8/... (with --int8),
EXPORT_DIR/onnx/{model.onnx, config.json} (with --format onnx), EXPORT_DIR/metrics.json. Each
model folder, and EXPORT_DIR itself, loads with `entrypoints.models.load_trained`.

The IR is traced from a wrapper that takes one [1, 3, H, W] image in [0, 1] and returns
(boxes, scores, labels) in that image's pixels; H and W stay dynamic. torchvision's batched NMS
helper is scripted when traced and becomes an OpenVINO `If` op that NNCF cannot quantize, so
it is replaced, during the export only, by a branch-free version of the same trick.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from odorch.errors import OdorchError

COMPARE_MIN_SCORE = 0.05  # below it, top-k and score-threshold cut-offs legitimately differ
MOVED_PX = 1.0  # a detection farther than this from its nearest counterpart is another box
TIE_SCORE = 1e-6  # scores this close to the last one kept are tied with it
CHECK_IMAGES = 16  # images on which the IR's detections are compared with PyTorch's
TIMING_IMAGES = 50  # inferences timed per model (the split's images, cycled when fewer)
TIMING_WARMUP = 3
OUTPUTS = ("boxes", "scores", "labels")
VARIANT_FOLDERS = ("fp32", "int8", "onnx")
# Faster R-CNN INT8 gives garbage boxes unless its RPN, ROI heads and post-processing stay float
FRCNN_FLOAT_PATTERNS = (r"__module\.detector/.*", r".*\.(rpn|roi_heads|transform)[./].*")


class ExportError(OdorchError):
    """The model cannot be exported or checked; the message names the file or op and the fix."""


class SingleImage(torch.nn.Module):
    """What the IR computes: one [1, 3, H, W] image -> (boxes, scores, labels)."""

    def __init__(self, detector: Any) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.detector([image[0]])[0]
        return out["boxes"], out["scores"], out["labels"]


def export_model(
    model: Any,
    config: dict[str, Any],
    *,
    source: Path,
    data: Path,
    out: Path,
    formats: tuple[str, ...] = ("openvino",),
    split: str = "test",
    int8: bool = False,
    calibration_data: Path | None = None,
    calibration_size: int = 300,
    echo: Callable[[str], Any] = print,
    device: Any = "cpu",
) -> dict[str, Any]:
    """Export `model` (loaded by load_trained from `source`, on the CPU), check, evaluate and time it;
    returns what is written to OUT/metrics.json. Every input is checked before the slow steps.
    Only PyTorch's evaluation runs on `device`: conversion, checks and timing run on the CPU,
    where the exported models run."""
    from odorch.converters.fsutil import atomic_write_json
    from odorch.runtime.openvino_model import OpenVINODetector

    _require(["openvino"] + (["nncf"] if int8 else []) + (["onnx"] if "onnx" in formats else []))
    if int8 and "openvino" not in formats:
        raise ExportError("--int8 quantizes the OpenVINO model: add --format openvino")
    if isinstance(model, OpenVINODetector):
        raise ExportError(f"{source}: already an exported model; export the training run it came from")
    images = load_images(data, split, limit=max(CHECK_IMAGES, TIMING_IMAGES))
    calibration = calibration_data or data
    calibration_images = load_images(calibration, "train", limit=calibration_size) if int8 else []
    example = tracing_example(model, images, source=source)
    metrics: dict[str, Any] = {
        "source": str(source), "model": config["model"], "classes": config["classes"], "data": str(data),
        "split": split, "versions": _versions(), "variants": {},
    }  # fmt: skip
    echo(f"evaluating PyTorch on {split}")
    metrics["variants"]["pytorch"] = {"path": str(source), "size_mb": _weights_mb(model),
                                      **_evaluation(model, config, data, split, device)}
    _remove_previous(out)
    files = {}
    if "openvino" in formats:
        echo(f"converting {config['model']} to OpenVINO (input [1, 3, H, W], H and W dynamic)")
        ir = convert_openvino(model, example, source=source)
        files["fp32"] = save_ir(ir, out / "fp32", config, precision="fp32", source=source)
        if int8:
            echo(f"quantizing to INT8 on {len(calibration_images)} images of {calibration}")
            started = time.perf_counter()
            quantized = quantize_int8(ir, calibration_images, model_name=config["model"])
            metrics["calibration"] = {"data": str(calibration), "images": len(calibration_images),
                                      "seconds": round(time.perf_counter() - started, 1)}
            files["int8"] = save_ir(quantized, out / "int8", config, precision="int8", source=source)
    if "onnx" in formats:
        echo("exporting ONNX")
        files["onnx"] = export_onnx(model, config, example=example, folder=out / "onnx", source=source)
    models = {"pytorch": model}
    for name, file in files.items():
        echo(f"checking {name} against PyTorch and evaluating it on {split}")
        models[name] = OpenVINODetector(file)
        metrics["variants"][name] = check_variant(model, models[name], config, images=images, data=data, split=split,
                                                  reference=metrics["variants"]["pytorch"])
    echo(f"timing {', '.join(models)} on {TIMING_IMAGES} inferences each")
    for name, timing in time_models(models, images).items():
        metrics["variants"][name].update(timing)
    atomic_write_json(out / "metrics.json", metrics, indent=2)
    return metrics


def check_variant(model: Any, exported: Any, config: dict[str, Any], *, images: list[torch.Tensor], data: Path,
                  split: str, reference: dict[str, Any]) -> dict[str, Any]:
    """An exported model's size, its detections against PyTorch's, its evaluation and mAP change."""
    result: dict[str, Any] = {"path": str(exported.path), "size_mb": _size_mb(*exported.path.parent.glob("model.*"))}
    result["vs_pytorch"] = compare_detections(model, exported, images[:CHECK_IMAGES])
    result |= _evaluation(exported, config, data, split)
    result["delta_AP"] = result["stats"]["AP"] - reference["stats"]["AP"]
    result["delta_AP50"] = result["stats"]["AP50"] - reference["stats"]["AP50"]
    return result


def _remove_previous(out: Path) -> None:
    """An earlier export's models and metrics: a stale int8/ would otherwise be what OUT loads as."""
    import shutil

    for name in VARIANT_FOLDERS:
        if (out / name / "config.json").is_file():
            shutil.rmtree(out / name)
    (out / "metrics.json").unlink(missing_ok=True)


def _require(packages: list[str]) -> None:
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportError(f"export needs {', '.join(missing)}: pip install 'odorch[export]'")


def load_images(data: Path, split: str, *, limit: int) -> list[torch.Tensor]:
    """The first `limit` images of a split as CHW float tensors, read as evaluation reads them."""
    from odorch.evaluate import load_split
    from odorch.runtime.data import CocoDetection, DataError, eval_transforms
    from odorch.runtime.predict import plain

    try:
        coco, file, _ = load_split(data, split)
    except (DataError, OSError, ValueError) as e:
        raise ExportError(f"no usable {split} split: {e}") from e  # e names the folder
    if not coco["images"]:
        raise ExportError(f"{file}: holds no images")
    dataset = CocoDetection(coco, file.parent.parent / "images", eval_transforms())
    try:
        return [plain(dataset[i][0]) for i in range(min(limit, len(dataset)))]
    except OSError as e:
        raise ExportError(f"{data}: an image of the {split} split cannot be read ({e})") from e


def tracing_example(model: Any, images: list[torch.Tensor], *, source: Path) -> torch.Tensor:
    """The first image the model finds something in: a trace without detections breaks the graph."""
    with torch.inference_mode():
        for image in images:
            if len(model([image])[0]["boxes"]):
                return image[None]
    raise ExportError(f"{source}: the model detects nothing in any of {len(images)} images, so there is no "
                      "example to trace the export with; train it longer or export with other --data")


def branch_free_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                            iou_threshold: float) -> torch.Tensor:
    """torchvision's per-class NMS coordinate trick without its `if empty` branch: the offset
    comes from max(boxes, 0), which exists for zero boxes too, and NMS of nothing is nothing."""
    from torchvision.ops import nms

    max_coordinate = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


@contextlib.contextmanager
def _tracing() -> Iterator[None]:
    """torchvision's scripted batched-NMS helper replaced by the branch-free one (restored after),
    and the tracer's notes on torchvision's shape arithmetic, expected here, silenced."""
    from torchvision.ops import boxes

    from odorch.runtime.models import patched

    with patched(boxes, "_batched_nms_coordinate_trick", branch_free_batched_nms), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def convert_openvino(model: Any, example: torch.Tensor, *, source: Path) -> Any:
    """The traced IR; an op OpenVINO has no conversion for becomes an ExportError naming it."""
    import openvino as ov
    from openvino.frontend import OpConversionFailure

    with _tracing():
        try:
            ir = ov.convert_model(SingleImage(model).eval(), example_input=example,
                                  input=ov.PartialShape([1, 3, -1, -1]))
        except OpConversionFailure as e:
            ops = unconvertible_ops(str(e))
            raise ExportError(
                f"{source}: OpenVINO {ov.get_version().split('-')[0]} cannot convert the op(s) "
                f"{', '.join(ops) or '(unnamed; see below)'}; replace the layers that use them with supported ones, "
                f"or keep using the PyTorch model (odorch evaluate/predict/serve take the run itself)\n{e}"
            ) from e
    for output, name in zip(ir.outputs, OUTPUTS):
        output.get_tensor().set_names({name})
    return ir


def unconvertible_ops(message: str) -> list[str]:
    """Op names from OpenVINO's conversion report: those without a conversion rule, else those
    whose conversion failed (a failed prim::Constant is usually a side effect of the former)."""
    found = {}
    for kind in ("No conversion rule found for operations", "Conversion is failed for"):
        names = []
        for line in re.findall(rf"{kind}:\s*(.+)", message):
            names += [name.strip() for name in line.split(",") if name.strip()]
        found[kind] = names
    return found["No conversion rule found for operations"] or found["Conversion is failed for"]


def quantize_int8(ir: Any, images: list[torch.Tensor], *, model_name: str) -> Any:
    """NNCF post-training quantization; Faster R-CNN keeps its RPN, ROI heads and post-processing
    in float (quantized, they give all-zero boxes)."""
    import logging

    import nncf

    from odorch.runtime.models import spec_of

    nncf.set_log_level(logging.WARNING)
    # nncf imports torch's C++-extension builder, which warns "No CUDA runtime is found" on any
    # machine with a CUDA toolkit but no GPU; this CPU quantization never builds an extension.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    scope = None
    if spec_of(model_name).family == "frcnn":
        scope = nncf.IgnoredScope(patterns=list(FRCNN_FLOAT_PATTERNS), validate=False)
    dataset = nncf.Dataset(images, lambda image: image[None].numpy())
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars; stdout may be --json
        return nncf.quantize(ir, dataset, subset_size=len(images), ignored_scope=scope)


def save_ir(ir: Any, folder: Path, config: dict[str, Any], *, precision: str, source: Path) -> Path:
    """model.xml + model.bin with FP32 weights kept as such, and the config load_trained needs."""
    import openvino as ov

    from odorch.converters.fsutil import atomic_write_json
    from odorch.runtime.openvino_model import IR_FILE

    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ir, folder / IR_FILE, compress_to_fp16=False)
    export = {"format": "openvino", "precision": precision, "source": str(source), **_versions()}
    atomic_write_json(folder / "config.json", {**config, "export": export}, indent=2)
    return folder / IR_FILE


def export_onnx(model: Any, config: dict[str, Any], *, example: torch.Tensor, folder: Path, source: Path) -> Path:
    """model.onnx (opset 17, H and W dynamic) traced from the same wrapper as the IR; it is
    checked by running it with OpenVINO's ONNX reader (onnxruntime is not a dependency)."""
    from odorch.converters.fsutil import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "model.onnx"
    axes = {"image": {2: "height", 3: "width"}, **{name: {0: "detections"} for name in OUTPUTS}}
    with _tracing():
        try:
            torch.onnx.export(SingleImage(model).eval(), (example,), str(file), dynamo=False, opset_version=17,
                              input_names=["image"], output_names=list(OUTPUTS), dynamic_axes=axes)
        except Exception as e:  # the TorchScript exporter raises many kinds for an unsupported op
            first = str(e).splitlines()[0] if str(e) else ""
            raise ExportError(f"{source}: torch.onnx.export failed ({type(e).__name__}: {first})") from e
    export = {"format": "onnx", "precision": "fp32", "source": str(source), **_versions()}
    atomic_write_json(folder / "config.json", {**config, "export": export}, indent=2)
    return file


def compare_detections(reference: Any, candidate: Any, images: list[torch.Tensor]) -> dict[str, Any]:
    """Largest box and score difference between each reference detection (score >=
    COMPARE_MIN_SCORE) and the nearest candidate box of the same label; a detection whose label
    the candidate does not give at all is counted as unmatched. Boxes are matched, not rows:
    near-tied scores come out in another order. A detection whose nearest candidate is over
    MOVED_PX away is counted as moved: for FP32 that is rounding flipping an NMS or top-k decision
    between near-tied boxes, so the `unmoved_` maxima leave those out (they would measure two
    different boxes); for INT8 most boxes move. A moved detection whose score ties the last one
    either model kept (within TIE_SCORE) is counted apart, as `tied_at_cutoff`: which of several
    equal-scored boxes fill the last places is the sort's choice, and CPUs differ in it."""
    diffs = {"box": 0.0, "score": 0.0, "unmoved_box": 0.0, "unmoved_score": 0.0}
    compared = unmatched = moved = tied = count_diff = 0

    def widen(prefix: str, box: Any, score: Any) -> None:
        if len(box):
            diffs[prefix + "box"] = max(diffs[prefix + "box"], float(box.max()))
            diffs[prefix + "score"] = max(diffs[prefix + "score"], float(score.abs().max()))

    with torch.inference_mode():
        for image in images:
            ref, cand = reference([image])[0], candidate([image])[0]
            keep = ref["scores"] >= COMPARE_MIN_SCORE
            count_diff = max(count_diff, abs(int(keep.sum()) - int((cand["scores"] >= COMPARE_MIN_SCORE).sum())))
            if not len(cand["boxes"]):
                unmatched += int(keep.sum())
                continue
            distance = torch.cdist(ref["boxes"][keep], cand["boxes"], p=float("inf"))
            distance[ref["labels"][keep][:, None] != cand["labels"][None]] = float("inf")
            nearest, index = distance.min(dim=1)
            found = nearest.isfinite()
            same = found & (nearest <= MOVED_PX)
            cutoff = float(torch.cat([ref["scores"], cand["scores"]]).min()) + TIE_SCORE
            at_cutoff = found & ~same & (ref["scores"][keep] <= cutoff)
            compared += int(found.sum())
            unmatched += int((~found).sum())
            moved += int((found & ~same & ~at_cutoff).sum())
            tied += int(at_cutoff.sum())
            score = ref["scores"][keep] - cand["scores"][index]
            widen("", nearest[found], score[found])
            widen("unmoved_", nearest[same], score[same])
    return {"images": len(images), "min_score": COMPARE_MIN_SCORE, "matched": compared, "unmatched": unmatched,
            "moved": moved, "tied_at_cutoff": tied, "max_box_diff_px": diffs["box"], "max_score_diff": diffs["score"],
            "unmoved_max_box_diff_px": diffs["unmoved_box"], "unmoved_max_score_diff": diffs["unmoved_score"],
            "max_count_diff": count_diff}


def time_models(models: dict[str, Any], images: list[torch.Tensor], *, runs: int = TIMING_IMAGES,
                warmup: int = TIMING_WARMUP) -> dict[str, dict[str, float]]:
    """ms per image (p50, p95) of each model on the same images, one image per call, in this
    process; the models take turns image by image, so a busy moment of the machine slows all
    of them alike."""
    inputs = [images[i % len(images)] for i in range(runs)]
    ms: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for image in inputs[:warmup]:
                model([image])
        for image in inputs:
            for name, model in models.items():
                started = time.perf_counter()
                model([image])
                ms[name].append((time.perf_counter() - started) * 1000)
    return {name: {"ms_p50": statistics.median(t), "ms_p95": statistics.quantiles(t, n=20)[-1], "timed": runs}
            for name, t in ms.items()}


def _evaluation(model: Any, config: dict[str, Any], data: Path, split: str, device: Any = "cpu") -> dict[str, Any]:
    """`odorch evaluate`'s result for the model (on ``device``, then back on the CPU), less what
    every variant shares."""
    from odorch.evaluate import evaluate_model

    try:
        result = evaluate_model(model.to(device), config, data, split, device=device, errors=False)
    except ValueError as e:
        raise ExportError(str(e)) from e
    finally:
        model.to("cpu")
    return {key: result[key] for key in ("stats", "per_class", "detections")}


def _size_mb(*files: Path) -> float:
    return round(sum(f.stat().st_size for f in files) / 2**20, 2)


def _weights_mb(model: Any) -> float:
    return round(sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20, 2)


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for package in ("torch", "torchvision", "openvino", "nncf"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def export_run(run: Path, *, data: Path, out: Path, formats: tuple[str, ...] = ("openvino",), split: str = "test",
               int8: bool = False, calibration_data: Path | None = None, calibration_size: int = 300,
               echo: Callable[[str], Any] = print, device: Any = "cpu") -> tuple[dict[str, Any], list[str]]:
    """`odorch export`: export the model of a job or model folder (export_model); returns
    metrics.json's content and the lines that tell a person what came out."""
    from odorch.runs import model_dir
    from odorch.runtime.models import load_trained

    model, config = load_trained(model_dir(run), device="cpu")
    metrics = export_model(model, config, source=Path(run).resolve(), data=data, out=out, device=device,
                           formats=tuple(dict.fromkeys(formats)), split=split, int8=int8,
                           calibration_data=calibration_data, calibration_size=calibration_size, echo=echo)
    lines = [f"{config['model']} on {split} of {data}:", *(f"  {line}" for line in format_summary(metrics)),
             f"wrote {Path(out) / 'metrics.json'}"]
    return metrics, lines


def format_summary(metrics: dict[str, Any]) -> list[str]:
    """A table people read: mAP, its change, agreement with PyTorch, speed and size per variant."""
    rows = [("variant", "AP", "AP50", "ΔAP", "max Δbox px", "max Δscore", "moved", "ms/img p50", "speed-up", "MB")]
    base = metrics["variants"]["pytorch"].get("ms_p50")
    for name, v in metrics["variants"].items():
        stats, diff = v.get("stats", {}), v.get("vs_pytorch", {})
        ms = v.get("ms_p50")
        rows.append((
            name, _num(stats.get("AP")), _num(stats.get("AP50")), _num(v.get("delta_AP"), signed=True),
            _small(diff.get("max_box_diff_px")), _small(diff.get("max_score_diff")),
            f"{diff['moved']}/{diff['matched']}" if diff else "–", _num(ms, digits=1), f"{base / ms:.2f}×" if ms and base else "–", _num(v.get("size_mb"), digits=1),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


def _num(value: float | None, *, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _small(value: float | None) -> str:
    """A difference that is 1e-5 for FP32 and whole pixels for INT8: two significant digits."""
    return "–" if value is None else f"{value:.2g}"
