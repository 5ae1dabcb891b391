"""`odorch compare`: candidate models on the same images of one split, scored by the COCO
evaluation of `odorch evaluate`, timed per image; orchestrator/report.py writes the report.

A candidate (``NAME=CANDIDATE`` gives it a name) is one of:

- a local run: a job folder (its model/), a model folder or an exported OpenVINO folder, loaded
  as the serving handler's ``model_fn`` loads it, on ``--device`` as `odorch evaluate` runs it;
- a tuning study: ``RUNS_DIR/tune-S`` (a folder with summary.json) or ``tune:S``: its best job;
- a local endpoint URL (``http://127.0.0.1:8080``, `odorch serve`): POST /invocations per image;
- a SageMaker endpoint name: InvokeEndpoint per image (orchestrator/deploy.py).

Every candidate answers in the handler's JSON format (boxes, classes, scores per image: a local
run through ``input_fn``/``predict_fn`` itself), one image per call: after one warm-up call,
every call is timed (decode and forward pass for a local run, the round trip for an endpoint).
Detections are mapped to the split's category ids by class name, as ``label_map`` does, and
scored by ``coco_evaluate``: with one image per call, a local run's numbers equal those of
`odorch evaluate --batch-size 1` (batching changes the last bits of some scores).

Errors come from ``error_analysis``, as `odorch evaluate` reports them: COCOeval's own matches at
IoU 0.5 give the best micro F1 over confidence thresholds 0.025 ... 0.975 (as OpenVINO Training
Extensions reports it) and, at that threshold, precision/recall/F1 per class, a confusion matrix
with the background, and the worst images, which join the report's image grid.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from odorch.errors import OdorchError
from odorch.runs import JOB_FILE, SUMMARY_FILE, model_dir, read_summary, tune_dir

HTTP_TIMEOUT_S = 60.0
GRID_SCORE = 0.5  # boxes drawn in the visual grid when a candidate has no best-F1 threshold
GRID_BOXES = 20  # at most this many boxes per candidate and image in the visual grid
GRID_WORST = 3  # at most this many worst images (one per candidate) join the visual grid
_LABEL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)=(.+)$")
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's rule


class CompareError(OdorchError):
    """A candidate or the data cannot be compared; the message names it and says what to do."""


@dataclass
class Candidate:
    name: str
    kind: str  # "run", "tune", "url" or "endpoint"
    source: str  # as given on the command line
    target: str  # model folder, URL or endpoint name
    job_dir: Path | None = None  # where job.json is, when known
    study_dir: Path | None = None
    classes: list[str] | None = None  # known for local models
    model: str | None = None


Predictor = Callable[[Path, bytes], dict[str, Any]]  # (image file, its bytes) -> the handler's prediction


# ---------------------------------------------------------------- candidates


def parse_candidates(texts: list[str], *, runs_dir: Path) -> list[Candidate]:
    """Candidates from the command line, with unique names."""
    if not texts:
        raise CompareError("give at least one candidate: a run folder, tune:STUDY, http://HOST:PORT or an endpoint name")
    candidates = [parse_candidate(text, runs_dir=runs_dir) for text in texts]
    names = [c.name for c in candidates]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        sources = [c.source for c in candidates if c.name in repeated]
        raise CompareError(f"more than one candidate is named {', '.join(repeated)} ({', '.join(sources)}): "
                           "name each one, e.g. a=runs/job-a b=runs/job-b")
    return candidates


def parse_candidate(text: str, *, runs_dir: Path) -> Candidate:
    from odorch.deploy import job_name_of

    label = _LABEL.match(text)
    name, spec = (label.group(1), label.group(2)) if label and not Path(text).exists() else (None, text)
    if spec.startswith(("http://", "https://")):
        url = urlparse(spec)
        if not url.hostname:
            raise CompareError(f"{spec}: not a URL of an endpoint; write http://HOST:PORT")
        return Candidate(name or url.netloc, "url", text, spec.rstrip("/"))
    if spec.startswith("tune:"):
        return _study(name, text, tune_dir(runs_dir, spec[len('tune:'):]))
    path = Path(spec)
    if path.exists():
        if (path / SUMMARY_FILE).is_file():
            return _study(name, text, path)
        job_dir = _job_dir(path)
        default = job_name_of(job_dir) if job_dir else path.resolve().name
        return Candidate(name or default, "run", text, str(model_dir(path)), job_dir=job_dir)
    if "/" not in spec and _ENDPOINT_NAME.match(spec):
        return Candidate(name or spec, "endpoint", text, spec)
    raise CompareError(f"{spec}: no such file or folder, and not http://HOST:PORT, tune:STUDY or a SageMaker endpoint name")


def _job_dir(path: Path) -> Path | None:
    """The job folder of a job or model folder (the one with job.json), if any."""
    return next((p for p in (path, path.parent) if (p / JOB_FILE).is_file()), None)


def _study(name: str | None, text: str, tune_dir: Path) -> Candidate:
    if not (tune_dir / SUMMARY_FILE).is_file():
        raise CompareError(f"{text}: no study in {tune_dir} (no {SUMMARY_FILE}); tune one with `odorch tune`, "
                           "or pass --runs-dir where its tune-STUDY folder is")
    best = tune_dir / "best"
    if not best.is_dir():
        raise CompareError(f"{text}: study {tune_dir} has no best trial yet (no `best` link: no trial completed)")
    job_dir = best.resolve()
    return Candidate(name or tune_dir.name, "tune", text, str(model_dir(job_dir)), job_dir=job_dir, study_dir=tune_dir)


def open_candidate(candidate: Candidate, *, runs_dir: Path, region: str | None = None, device: str = "cpu") -> Predictor:
    """Load the model on ``device`` (setting the candidate's classes), or check that the endpoint answers."""
    if candidate.kind == "url":
        return _url_predictor(candidate)
    if candidate.kind == "endpoint":
        return _endpoint_predictor(candidate, runs_dir=runs_dir, region=region)
    return _local_predictor(candidate, device)


def _local_predictor(candidate: Candidate, device: str) -> Predictor:
    from odorch.runtime.inference import input_fn, load_handler_model, predict_fn
    from odorch.runtime.models import ModelError

    try:
        handle = load_handler_model(candidate.target, device=device)
    except ModelError as e:
        raise CompareError(f"candidate {candidate.name}: {e}") from e
    config = handle["config"]
    candidate.classes, candidate.model = list(handle["classes"]), config.get("model")
    export = config.get("export") or {}
    if export:  # `odorch export` wrote it: say which format, and find the job it came from
        candidate.model = f"{candidate.model} ({export.get('format')} {export.get('precision')})"
        candidate.job_dir = candidate.job_dir or (_job_dir(Path(export["source"])) if export.get("source") else None)
    return lambda path, data: predict_fn(input_fn(data, "application/x-image"), handle)[0]


def _url_predictor(candidate: Candidate) -> Predictor:
    import urllib.request

    from odorch.deploy import DeployError, image_content_type
    from odorch.serve import LOOPBACK

    direct = urlparse(candidate.target).hostname in LOOPBACK  # never through a proxy
    opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if direct else []))
    _http(opener, candidate, "/ping")

    def predict(path: Path, data: bytes) -> dict[str, Any]:
        try:
            content_type = image_content_type(data, str(path))
        except DeployError as e:
            raise CompareError(f"candidate {candidate.name}: {e}") from e
        body = _http(opener, candidate, "/invocations", data, content_type)
        try:
            response = json.loads(body)
        except ValueError:
            response = None
        return _first_prediction(candidate, response)

    return predict


def _http(opener: Any, candidate: Candidate, route: str, data: bytes | None = None, content_type: str = "") -> bytes:
    import urllib.error
    import urllib.request

    url = candidate.target + route
    headers = {"Content-Type": content_type, "Accept": "application/json"} if data is not None else {}
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers), timeout=HTTP_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        message = e.read(500).decode(errors="replace").strip()
        raise CompareError(f"candidate {candidate.name}: {url} answered {e.code} {e.reason}: {message}") from e
    except OSError as e:  # URLError, refused, reset, timeout
        reason = getattr(e, "reason", e)
        raise CompareError(f"candidate {candidate.name}: cannot reach {url} ({reason}); is the endpoint up? "
                           "Start one with `odorch serve RUN --port PORT`") from e


def _endpoint_predictor(candidate: Candidate, *, runs_dir: Path, region: str | None) -> Predictor:
    from botocore.exceptions import BotoCoreError, ClientError

    from odorch.aws import AwsClients
    from odorch.deploy import TAG, endpoint_algorithm, invoke_endpoint
    from odorch.errors import SageMakerError

    where = f"candidate {candidate.name}: SageMaker endpoint {candidate.target}"
    try:
        clients = AwsClients.from_env(region)
        desc = clients.sagemaker.describe_endpoint(EndpointName=candidate.target)
        tags = clients.sagemaker.list_tags(ResourceArn=desc["EndpointArn"]).get("Tags", [])
    except (SageMakerError, ClientError, BotoCoreError) as e:
        raise CompareError(f"{where}: {e}") from e
    if desc["EndpointStatus"] != "InService":
        raise CompareError(f"{where} is {desc['EndpointStatus']}, not InService; wait for it or deploy it again "
                           "(`odorch endpoints list`)")
    job = {t["Key"]: t["Value"] for t in tags}.get(TAG)
    if job and (runs_dir / job / JOB_FILE).is_file():  # odorch deploy tags the job it serves
        candidate.job_dir = runs_dir / job
    try:
        algorithm = endpoint_algorithm(clients, candidate.target, tags)
    except SageMakerError as e:
        raise CompareError(f"{where}: {e}") from e

    def predict(path: Path, data: bytes) -> dict[str, Any]:
        try:
            return _first_prediction(candidate, invoke_endpoint(clients, candidate.target, path, algorithm=algorithm))
        except (SageMakerError, BotoCoreError) as e:
            raise CompareError(f"{where}: {e}") from e

    return predict


def _first_prediction(candidate: Candidate, response: Any) -> dict[str, Any]:
    try:
        prediction = response["predictions"][0]
        if not all(isinstance(prediction[k], list) for k in ("boxes", "classes", "scores")):
            raise TypeError("boxes, classes and scores must be lists")
    except (KeyError, IndexError, TypeError) as e:
        raise CompareError(f"candidate {candidate.name}: {candidate.target} did not answer in odorch's JSON format "
                           f'({{"predictions": [{{"boxes", "classes", "scores", ...}}]}}): {e!r}') from e
    return prediction


# ---------------------------------------------------------------- classes


def check_classes(candidates: list[Candidate], data_classes: list[str], file: Path) -> list[str]:
    """Refuse local candidates with different class sets, or a split with classes they lack;
    returns notes on candidates whose class order differs (their labels are mapped by name)."""
    from odorch.evaluate import label_map

    known = [c for c in candidates if c.classes is not None]
    if not known:
        return []
    if any(set(c.classes or []) != set(known[0].classes or []) for c in known):
        listed = "; ".join(f"{c.name}: {', '.join(c.classes or [])}" for c in known)
        raise CompareError(f"the candidates were trained on different class sets ({listed}); "
                           "compare models trained on the same classes (in any order: they are matched by name)")
    try:
        label_map(known[0].classes or [], data_classes, file)
    except ValueError as e:
        raise CompareError(f"candidate{'s' if len(known) > 1 else ''} {', '.join(c.name for c in known)}: {e}") from e
    return [f"{c.name}: labels mapped to the data's classes by name (its order: {', '.join(c.classes or [])})"
            for c in known if c.classes != data_classes]


def check_answered_classes(candidate: Candidate, predictions: list[dict[str, Any]], known: list[str], where: str) -> None:
    """An endpoint's classes are only known from its answers: each must be one of ``known`` (of ``where``)."""
    answered = {name for p in predictions for name in p["classes"]}
    unknown = sorted(answered - set(known))
    if unknown:
        raise CompareError(f"candidate {candidate.name} ({candidate.target}) detects classes not in {where}: "
                           f"{', '.join(unknown)} (known: {', '.join(known)}); compare models trained on the same classes")


# ---------------------------------------------------------------- running and scoring


def run_candidate(candidate: Candidate, predict: Predictor,
                  images: list[tuple[int, Path]]) -> tuple[list[dict[str, Any]], list[float]]:
    """Predictions for every image, one call each, and each call's seconds (after one warm-up call)."""
    from odorch.runtime.inference import RequestError

    first = images[0][1]
    predictions, seconds = [], []
    try:
        predict(first, first.read_bytes())
        for _, path in images:
            data = path.read_bytes()
            start = time.perf_counter()
            predictions.append(predict(path, data))
            seconds.append(time.perf_counter() - start)
    except (OSError, RequestError) as e:
        raise CompareError(f"candidate {candidate.name}: {e}") from e
    return predictions, seconds


def coco_detections(image_id: int, prediction: dict[str, Any], category_ids: dict[str, int]) -> list[dict[str, Any]]:
    """COCO results of one image's prediction; classes the data does not have are left out, as
    `odorch evaluate` leaves them out."""
    import torch

    from odorch.runtime.predict import xywh

    boxes = xywh(torch.tensor(prediction["boxes"], dtype=torch.float32).reshape(-1, 4))
    return [
        {"image_id": image_id, "category_id": category_ids[name], "bbox": box, "score": float(score)}
        for box, name, score in zip(boxes, prediction["classes"], prediction["scores"])
        if name in category_ids
    ]


def latency_ms(seconds: list[float]) -> dict[str, Any]:
    import numpy as np

    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "mean": float(ms.mean()),
            "images": len(seconds)}


# ---------------------------------------------------------------- what else is known


def model_size_mb(candidate: Candidate) -> float | None:
    """MB on disk of the model files: model.pth, or an OpenVINO model's .xml + .bin."""
    from odorch.runtime.models import MODEL_FILE
    from odorch.runtime.openvino_model import find_ir
    if candidate.kind in ("run", "tune"):
        path = Path(candidate.target)
    elif candidate.kind == "endpoint" and candidate.job_dir is not None:  # the job it was deployed from
        path = model_dir(candidate.job_dir)
    else:
        return None
    xml = find_ir(path)
    files = [xml, xml.with_suffix(".bin")] if xml else [path] if path.is_file() else [path / MODEL_FILE]
    sizes = [f.stat().st_size for f in files if f.is_file()]
    return round(sum(sizes) / 2**20, 3) if sizes else None


def training_info(candidate: Candidate) -> dict[str, Any] | None:
    """Job, backend, duration and cost from job.json (and the study's totals for a tuning study)."""
    from odorch.runs import JobError, read_job

    if candidate.job_dir is None:
        return None
    try:
        record = read_job(candidate.job_dir)
    except JobError:
        return None
    info: dict[str, Any] = {"job": record.job_name, "backend": record.backend, "duration_s": record.duration_s,
                            "cost_usd": record.extra.get("estimated_cost_usd")}
    if candidate.study_dir is not None:
        summary = read_summary(candidate.study_dir)
        trials = summary.get("trials") or []
        info["study"] = {"trials": len(trials), "duration_s": sum(t.get("duration_s") or 0 for t in trials),
                         "cost_usd": summary.get("cost_usd")}
    return info


# ---------------------------------------------------------------- the comparison


def compare(candidates: list[Candidate], *, data: Path, split: str, runs_dir: Path, region: str | None = None,
            device: str = "cpu", echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Open, run and score every candidate on ``split`` of ``data`` (local models on ``device``); the report's content."""
    from odorch.evaluate import load_split
    from odorch.runtime.data import DataError
    from odorch.runtime.evaluation import F1_THRESHOLDS, coco_evaluate, error_analysis

    try:
        gt, file, data_classes = load_split(data, split)
    except DataError as e:
        raise CompareError(str(e)) from e
    images_dir = file.parent.parent / "images"
    images = [(im["id"], images_dir / im["file_name"]) for im in sorted(gt["images"], key=lambda im: im["id"])]
    if not images:
        raise CompareError(f"{file}: no images to compare on; choose another --split")
    predictors = [open_candidate(c, runs_dir=runs_dir, region=region, device=device) for c in candidates]
    notes = check_classes(candidates, data_classes, file)
    local = [c for c in candidates if c.classes is not None]
    known, where = (local[0].classes or [], "the other candidates' classes") if local else (data_classes, str(file))
    category_ids = {name: i + 1 for i, name in enumerate(data_classes)}  # by name, as label_map maps
    rows, all_predictions = [], {}
    for candidate, predict in zip(candidates, predictors):
        echo(f"{candidate.name}: {len(images)} images of {file} through {candidate.target}")
        predictions, seconds = run_candidate(candidate, predict, images)
        if candidate.classes is None:
            check_answered_classes(candidate, predictions, known, where)
        detections = [d for (image_id, _), p in zip(images, predictions) for d in coco_detections(image_id, p, category_ids)]
        result = coco_evaluate(gt, detections, curves=True)
        errors = error_analysis(gt, detections)
        rows.append({
            "name": candidate.name, "kind": candidate.kind, "source": candidate.source, "target": candidate.target,
            "model": candidate.model, "classes": candidate.classes,
            "stats": result["stats"], "per_class": result["per_class"], "images": result["images"],
            "detections": result["detections"], "backend": result["backend"], "f1": errors["f1"], "errors": errors,
            "latency_ms": latency_ms(seconds), "size_mb": model_size_mb(candidate), "training": training_info(candidate),
            "pr_curve": result["pr_curves"]["precision"],
        })  # fmt: skip
        all_predictions[candidate.name] = predictions
        recall = result["pr_curves"]["recall"]
    winner, summary = verdict(rows)
    min_scores = {r["name"]: r["f1"]["threshold"] or GRID_SCORE for r in rows}
    return {
        "summary": summary, "winner": winner, "data": str(data), "split": split, "annotations": str(file),
        "images": len(images), "classes": data_classes, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "f1_thresholds": list(F1_THRESHOLDS), "pr_recall": recall, "candidates": rows,
        "grid": grid_rows(gt, images, data_classes, min_scores, all_predictions, rows), "grid_min_score": min_scores,
        "notes": notes,
    }  # fmt: skip


def verdict(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """The winner (highest AP to 3 decimals; the faster one on a tie) and why, in one sentence."""
    ranked = sorted(rows, key=lambda r: (-round(r["stats"]["AP"], 3), r["latency_ms"]["p50"]))
    win = ranked[0]
    ap, ms = win["stats"]["AP"], _ms(win["latency_ms"]["p50"])
    if len(ranked) == 1:
        return win["name"], f"{win['name']} is the only candidate: AP {ap:.3f}, at {ms} ms/image."
    other = ranked[1]
    other_ap, other_ms = other["stats"]["AP"], _ms(other["latency_ms"]["p50"])
    if round(ap, 3) == round(other_ap, 3):
        return win["name"], (f"{win['name']} wins: AP {ap:.3f}, tied with {other['name']}, and faster: "
                             f"{ms} ms/image vs {other_ms} ms.")
    return win["name"], (f"{win['name']} wins: AP {ap:.3f} vs {other_ap:.3f} ({ap - other_ap:+.3f}) for {other['name']}, "
                         f"at {ms} ms/image vs {other_ms} ms.")


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def grid_rows(gt: dict[str, Any], images: list[tuple[int, Path]], data_classes: list[str], min_scores: dict[str, float],
              predictions: dict[str, list[dict[str, Any]]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One image per class (a different one where the split allows), then each candidate's worst
    image not shown yet (at most GRID_WORST): its ground-truth boxes and each candidate's best
    GRID_BOXES boxes scoring at least ``min_scores[candidate]``."""
    index = {image_id: i for i, (image_id, _) in enumerate(images)}
    truth: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        truth[ann["image_id"]].append({"box": [x, y, x + w, y + h], "class": data_classes[ann["category_id"] - 1]})
    used: set[int] = set()
    shown: list[tuple[int, str | None, str]] = []  # (image id, class, label)
    for cls in data_classes:
        having = [image_id for image_id, _ in images if any(b["class"] == cls for b in truth[image_id])]
        if not having:
            continue
        image_id = next((i for i in having if i not in used), having[0])
        used.add(image_id)
        shown.append((image_id, cls, cls))
    for row in rows[:GRID_WORST]:
        worst = next((w for w in row["errors"]["worst_images"] if w["image_id"] not in used), None)
        if worst is not None:
            used.add(worst["image_id"])
            label = f"worst of {row['name']}:\n{worst['missed']} missed, {worst['false_positives']} false pos."
            shown.append((worst["image_id"], None, label))
    out = []
    for image_id, cls, label in shown:
        boxes = {}
        for candidate, min_score in min_scores.items():
            p = predictions[candidate][index[image_id]]
            kept = [{"box": b, "class": c, "score": s}
                    for b, c, s in zip(p["boxes"], p["classes"], p["scores"]) if s >= min_score]
            boxes[candidate] = kept[:GRID_BOXES]  # the handler's answers are by score, highest first
        out.append({"class": cls, "label": label, "image": str(images[index[image_id]][1]), "truth": truth[image_id],
                    "candidates": boxes})
    return out
