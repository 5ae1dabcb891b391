"""Training entrypoint: fine-tune a torchvision detector on an odorch COCO layout.

It obeys the SageMaker training-container contract, with every path taken from the
environment so that the same script runs in a local job folder:

- channels ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION`` (folders written by
  ``odorch convert``: annotations/<split>.json + images/), optional ``SM_CHANNEL_MODEL``
  (initial weights);
- hyperparameters from ``SM_HPS`` or ``<SM_INPUT_CONFIG_DIR>/hyperparameters.json``
  (SageMaker writes every value as a string);
- the best model to ``SM_MODEL_DIR``; a checkpoint every epoch to ``ODORCH_CHECKPOINT_DIR``
  (default /opt/ml/checkpoints, which SageMaker syncs for spot restarts); the failure
  reason to ``<SM_OUTPUT_DIR>/failure``;
- several GPUs or hosts (``SM_NUM_GPUS``, ``SM_HOSTS``): relaunched under torchrun, DDP.

Every epoch it prints one metric line in the format of ``metrics.py``. SIGTERM (spot
interruption, a pruned trial, Ctrl-C) writes a checkpoint and exits with 143; starting
again resumes from it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (python train.py), as SageMaker does
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from odorch.runtime.data import (
    CocoDetection,
    DataError,
    Mosaic,
    class_names,
    collate,
    eval_transforms,
    find_split,
    train_transforms,
)
from odorch.runtime.devices import DEVICES, DeviceError, check_device_name, resolve_device
from odorch.runtime.errors import OdorchError
from odorch.runtime.metrics import format_metrics
from odorch.runtime.models import (
    MODELS,
    ModelError,
    build_arch,
    build_model,
    fit_anchors,
    load_checkpoint_file,
    load_weights,
    matched_shares,
    model_anchors,
    save_model,
    set_anchors,
    spec_of,
)

CHECKPOINT = "checkpoint.pth"
SIGTERM_EXIT = 128 + signal.SIGTERM


class TrainingError(OdorchError):
    """Training cannot go on; the message is the job's failure reason."""


def _bool(text: Any) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not true/false")


def _auto_bool(text: Any) -> str:
    value = str(text).strip().lower()
    if value == "auto":
        return value
    try:
        return "true" if _bool(value) else "false"
    except ValueError:
        raise ValueError(f"{text!r} is not auto/true/false") from None


# name -> (type, default, help); default None = the model's own default
HYPERPARAMETERS: dict[str, tuple[Any, Any, str]] = {
    "model": (str, "ssdlite320_mobilenet_v3_large", f"one of {', '.join(MODELS)}"),
    "weights": (str, "coco", "coco | imagenet | none | PATH (a file; relative to the model channel)"),
    "epochs": (int, 10, "passes over the training data"),
    "batch_size": (int, 8, "images per step (per GPU)"),
    "optimizer": (str, None, "sgd | adamw (model default)"),
    "lr": (float, None, "base learning rate (model default)"),
    "momentum": (float, 0.9, "SGD momentum (AdamW beta1)"),
    "weight_decay": (float, None, "weight decay (model default)"),
    "warmup": (int, 50, "linear warm-up iterations (at most a fifth of the run)"),
    "lr_schedule": (str, "cosine", "cosine | step (×0.1 at 2/3 and 8/9 of the epochs)"),
    "head_lr_mult": (float, 1.0, "detection head learning rate = lr × this (two-stage fine-tuning)"),
    "image_size": (int, None, "input size (model default)"),
    "flip": (_bool, True, "random horizontal flip"),
    "photometric": (_bool, False, "random photometric distortion"),
    "scale_jitter": (_auto_bool, "auto", "auto | true | false: random rescale 0.5–1.5 and crop (auto: from the epoch when "
                                         "validation mAP, at least 0.05, has not risen for 5 epochs, in the run's first half)"),
    "mosaic": (float, 0.0, "probability that a training image is a 2×2 mosaic of four"),
    "close_mosaic": (float, 0.15, "share of the last epochs trained without mosaic"),
    "anchors": (str, "auto", "auto | default | fit (SSD family: default boxes fitted to the training boxes; auto: fitted "
                             "where SSD's own boxes match under half of a class's training boxes)"),
    "ema": (_bool, False, "validate and save an exponential moving average of the weights"),
    "ema_decay": (float, 0.999, "EMA decay (ramped up as min(decay, (1 + n) / (10 + n)) over the first updates)"),
    "warmup_epochs": (float, 0.0, "warm-up length in epochs, when longer than warmup iterations"),
    "lr_batch_ref": (int, 0, "lr is for this many images per step, scaled linearly to batch_size × GPUs (0 = lr as given)"),
    "time": (float, 0.0, "minutes for the whole training: epochs re-planned after each one so the schedule ends on time (0 = use epochs)"),
    "early_stopping_patience": (int, 0, "stop after this many epochs without a better validation mAP (0 = off)"),
    "min_epochs": (int, 1, "never stop early before this many epochs"),
    "clip_grad": (float, 10.0, "gradient norm clip (0 = off)"),
    "seed": (int, 0, "random seed"),
    "num_workers": (int, -1, "data loader workers (-1: 0 on CPU, 4 per GPU)"),
    "num_threads": (int, 0, "CPU threads for torch (0 = torch's default)"),
    "amp": (_bool, False, "mixed precision (GPU only)"),
    "checkpoint_interval": (float, 300.0, "also checkpoint every this many seconds within an epoch (0 = per epoch only): "
                                          "the PyTorch DLC's shell forwards no SIGTERM to this script"),
    "device": (check_device_name, "auto", f"{DEVICES} (auto: a CUDA GPU, else MPS, else the CPU; with several GPUs, each process its own)"),
}
IGNORED_PREFIXES = ("sagemaker_", "_tuning_", "_")
# scale_jitter=auto turns jitter on after this many epochs without a better validation mAP: a run
# that stops improving that early overfits. BCCD's validation mAP stalled at epoch ~20 of 90; jitter
# from then on gave test AP 0.573 (0.485 without, 0.577 with jitter from the start). Chess pieces and
# the demo data, which jitter from the start slowed (AP 0.670 vs 0.767; AP50 0.30 vs 0.65), kept
# improving and were left as they were. Below JITTER_MIN_MAP a run is still finding objects, not
# overfitting: the quickstart's SSDlite sat at validation mAP 0.001 for six epochs, then rose to 0.37.
# Only in the first half of a run: jittered, BCCD's validation fell and took 9 epochs to pass its old
# plateau; at the end of a run validation flattens anyway as the cosine schedule settles (chess
# pieces, 15 min: flat for the last 5 of 34 epochs, when jitter would have cost the last epoch).
JITTER_PATIENCE = 5
JITTER_MIN_MAP = 0.05


def parse_hyperparameters(raw: dict[str, Any]) -> dict[str, Any]:
    """Typed hyperparameters with defaults filled in; unknown or invalid ones are errors."""
    unknown = sorted(k for k in raw if k not in HYPERPARAMETERS and not k.startswith(IGNORED_PREFIXES))
    if unknown:
        raise TrainingError(f"unknown hyperparameter(s) {', '.join(unknown)}; valid: {', '.join(HYPERPARAMETERS)}")
    hp = {}
    for name, (kind, default, _) in HYPERPARAMETERS.items():
        value = raw.get(name, default)
        try:
            hp[name] = None if value is None else kind(value)
        except ValueError as e:
            raise TrainingError(f"hyperparameter {name}={value!r}: {e}") from e
    spec = spec_of(hp["model"]) if hp["model"] in MODELS else None
    if spec is None:
        raise TrainingError(f"unknown model {hp['model']!r}; valid models: {', '.join(MODELS)}")
    hp["optimizer"] = spec.optimizer if hp["optimizer"] is None else hp["optimizer"]
    hp["lr"] = spec.lr if hp["lr"] is None else hp["lr"]
    hp["weight_decay"] = spec.weight_decay if hp["weight_decay"] is None else hp["weight_decay"]
    hp["image_size"] = spec.image_size if hp["image_size"] is None else hp["image_size"]
    choices_of = {"optimizer": ("sgd", "adamw"), "lr_schedule": ("cosine", "step"), "anchors": ("auto", "default", "fit")}
    for name, choices in choices_of.items():
        if hp[name] not in choices:
            raise TrainingError(f"hyperparameter {name}={hp[name]!r}: use one of {', '.join(choices)}")
    for name in ("epochs", "batch_size", "image_size"):
        if hp[name] < 1:
            raise TrainingError(f"hyperparameter {name}={hp[name]}: must be at least 1")
    if hp["image_size"] < spec.min_image_size:
        raise TrainingError(f"hyperparameter image_size={hp['image_size']}: {hp['model']} needs at least {spec.min_image_size}")
    if not hp["lr"] > 0:
        raise TrainingError(f"hyperparameter lr={hp['lr']}: must be positive")
    for name, low, high in (("mosaic", 0, 1), ("close_mosaic", 0, 1), ("ema_decay", 0, 1)):
        if not low <= hp[name] <= high:
            raise TrainingError(f"hyperparameter {name}={hp[name]}: must be between {low} and {high}")
    for name in ("time", "warmup_epochs", "lr_batch_ref"):
        if hp[name] < 0:
            raise TrainingError(f"hyperparameter {name}={hp[name]}: must not be negative")
    if hp["anchors"] == "fit" and spec.family != "ssd":
        raise TrainingError(f"hyperparameter anchors=fit: only the SSD family has default boxes to fit, not {hp['model']}")
    return hp


@dataclass
class Paths:
    train: Path
    validation: Path | None
    model_channel: Path | None
    model_dir: Path
    checkpoints: Path
    output: Path
    config: Path

    @classmethod
    def from_env(cls) -> Paths:
        env = os.environ
        data = Path(env.get("SM_INPUT_DIR", "/opt/ml/input")) / "data"
        channel = lambda name: Path(env.get(f"SM_CHANNEL_{name.upper()}", data / name))  # noqa: E731
        return cls(
            train=channel("train"),
            validation=channel("validation") if channel("validation").exists() else None,
            model_channel=channel("model") if channel("model").exists() else None,
            model_dir=Path(env.get("SM_MODEL_DIR", "/opt/ml/model")),
            checkpoints=checkpoint_dir(env),
            output=Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output")),
            config=Path(env.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")),
        )


def checkpoint_dir(env: Any) -> Path:
    """ODORCH_CHECKPOINT_DIR (default /opt/ml/checkpoints, which SageMaker syncs with the job's
    CheckpointConfig), in a folder named after the SageMaker job (TRAINING_JOB_NAME) when there is
    one: AMT gives every child of a tuning job the same checkpoint S3 prefix."""
    root = Path(env.get("ODORCH_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    job = env.get("TRAINING_JOB_NAME", "").strip()
    return root / job if job and "/" not in job and job not in (".", "..") else root


def read_raw_hyperparameters(paths: Paths) -> dict[str, Any]:
    if "SM_HPS" in os.environ:
        return json.loads(os.environ["SM_HPS"])
    file = paths.config / "hyperparameters.json"
    return json.loads(file.read_text()) if file.exists() else {}


class StopFlag:
    """Set by SIGTERM; checked between steps so a checkpoint is written from a consistent state."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


class Stopped(Exception):
    pass


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def needs_launch(env: dict[str, str]) -> tuple[int, list[str]] | None:
    """(processes per host, hosts) when SageMaker gave several GPUs or hosts and torchrun has not
    started us yet; None for a single process."""
    if "WORLD_SIZE" in env:
        return None
    gpus = int(env.get("SM_NUM_GPUS", "0") or 0)
    hosts = json.loads(env.get("SM_HOSTS", "[]")) or ["algo-1"]
    if gpus > 1 or len(hosts) > 1:
        return max(gpus, 1), hosts
    return None


def relaunch_under_torchrun(per_host: int, hosts: list[str]) -> int:
    import subprocess

    current = os.environ.get("SM_CURRENT_HOST", hosts[0])
    command = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={per_host}", f"--nnodes={len(hosts)}", f"--node_rank={hosts.index(current)}",
        f"--master_addr={hosts[0]}", "--master_port=29500", str(Path(__file__).resolve()),
    ]  # fmt: skip
    return subprocess.call(command)


def init_distributed() -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    d = Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        torch.cuda.set_device(d.local_rank)
    return d


def log(dist: Dist, message: str) -> None:
    if dist.main:
        print(message, flush=True)


def resolve_weights(weights: str, paths: Paths) -> Path | None:
    """A local weights file (relative names are looked up in the model channel first)."""
    if weights in ("coco", "imagenet", "none"):
        return None
    for candidate in ([paths.model_channel / weights] if paths.model_channel else []) + [Path(weights)]:
        if candidate.is_file():
            return candidate
    where = f" or in the model channel {paths.model_channel}" if paths.model_channel else ""
    raise TrainingError(f"weights={weights}: no such file{where}; use coco, imagenet, none or a path to a checkpoint")


def make_model(hp: dict[str, Any], classes: list[str], paths: Paths, dist: Dist) -> tuple[Any, str, Any]:
    """(model, origin of its weights: coco | imagenet | none, which fixes its architecture, and the
    default boxes of a saved SSD-family model it starts from, fitted or SSD's own: its box
    regression is relative to them, so they are kept)."""
    if spec_of(hp["model"]).family == "hf" and hp["weights"] not in ("coco", "imagenet", "none") and Path(hp["weights"]).is_dir():
        return build_model(hp["model"], classes, weights=hp["weights"], image_size=hp["image_size"]), "coco", None  # a transformers folder
    file = resolve_weights(hp["weights"], paths)
    if file is None:
        return build_model(hp["model"], classes, weights=hp["weights"], image_size=hp["image_size"]), hp["weights"], None
    data = load_checkpoint_file(file)
    config = data.get("config", {}) if isinstance(data, dict) else {}
    origin = config.get("origin", "coco")  # a bare state dict is torchvision's COCO model
    model = build_arch(hp["model"], classes, origin=origin, image_size=hp["image_size"])
    fresh = load_weights(model, file, hp["model"], classes)
    log(dist, f"loaded {file}" + (f"; re-initialised {len(fresh)} tensors that differ ({', '.join(fresh[:4])}…)" if fresh else ""))
    if config.get("classes") and config["classes"] != classes:
        log(dist, f"note: {file} was trained on classes {config['classes']}; the head is re-initialised for {classes}")
    anchors = config.get("anchors")
    if anchors is None and spec_of(hp["model"]).family == "ssd":
        anchors = model_anchors(model)  # SSD's own boxes: the saved box regression was learnt against them
    return model, origin, anchors


def head_and_body(model: Any, name: str) -> tuple[list[Any], list[Any]]:
    family = spec_of(name).family
    heads = [model.rpn, model.roi_heads] if family == "frcnn" else [] if family == "hf" else [model.head]
    head_ids = {id(p) for module in heads for p in module.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) in head_ids], [p for p in params if id(p) not in head_ids]


def make_optimizer(model: Any, hp: dict[str, Any], world_size: int = 1) -> Any:
    import torch

    head, body = head_and_body(model, hp["model"])
    lr = scaled_lr(hp, world_size)
    groups = [{"params": body, "lr": lr}, {"params": head, "lr": lr * hp["head_lr_mult"]}]
    if hp["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(hp["momentum"], 0.999), weight_decay=hp["weight_decay"])
    return torch.optim.SGD(groups, lr=lr, momentum=hp["momentum"], weight_decay=hp["weight_decay"])


def scaled_lr(hp: dict[str, Any], world_size: int = 1) -> float:
    """The linear scaling rule (Goyal et al. 2017): lr given for lr_batch_ref images per step."""
    if not hp["lr_batch_ref"]:
        return hp["lr"]
    return hp["lr"] * hp["batch_size"] * world_size / hp["lr_batch_ref"]


def lr_factor(hp: dict[str, Any], iters_per_epoch: int) -> Any:
    """Multiplier of the base LR at a global iteration: linear warm-up, then cosine or step. It
    reads hp["epochs"] at every step, so a time budget can fix the epoch count after the first ones."""

    def factor(it: int) -> float:
        total = hp["epochs"] * iters_per_epoch
        # at most a fifth of the run: 50 iterations were 50 of a short CPU run's 52 (quickstart's Faster R-CNN)
        warmup = min(max(hp["warmup"], round(hp["warmup_epochs"] * iters_per_epoch)), total // 5)
        milestones = [round(total * 2 / 3), round(total * 8 / 9)]
        if it < warmup:
            return 0.001 + (1 - 0.001) * it / warmup
        if hp["lr_schedule"] == "step":
            return 0.1 ** sum(it >= m for m in milestones)
        return 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(total - warmup, 1)))

    return factor


def make_ema(model: Any, decay: float) -> Any:
    """torch's AveragedModel as an exponential moving average of weights and batch-norm statistics,
    its decay ramped up as min(decay, (1 + n) / (10 + n)) so that short runs average too."""
    from torch.optim.swa_utils import AveragedModel

    def update(averaged: list[Any], current: list[Any], num_averaged: Any) -> None:
        d = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, 1 - d)
            else:  # num_batches_tracked
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def plan_epochs(*, budget_s: float, elapsed_s: float, epoch_s: float, done: int) -> int:
    """The epoch count that ends a time budget: the epochs done plus as many more of `epoch_s`
    (an epoch's time, validation included) as the time left holds; at least one."""
    return max(done, 1) + max(int((budget_s - elapsed_s) // max(epoch_s, 1e-9)), 0)


def typical_epoch_s(durations: list[float]) -> float:
    """The time the next epoch will take: the mean of the last three, leaving out the first epoch
    (one-off costs) once there are others. The second epoch alone misjudged a 20-minute BCCD run
    by 14 %: validation slows as the model starts to detect."""
    recent = durations[1:][-3:] or durations
    return sum(recent) / len(recent)


# what a resumed job may change: the epoch count (a time budget plans it while training) and where it runs
RESUME_MAY_DIFFER = ("epochs", "device", "num_workers", "num_threads", "checkpoint_interval")


def save_checkpoint(paths: Paths, state: dict[str, Any]) -> None:
    import torch

    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = paths.checkpoints / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, paths.checkpoints / CHECKPOINT)


def load_resume(paths: Paths, hp: dict[str, Any], classes: list[str]) -> dict[str, Any] | None:
    file = paths.checkpoints / CHECKPOINT
    if not file.exists():
        return None
    try:
        state = load_checkpoint_file(file)
    except ModelError as e:
        raise TrainingError(f"{e} (delete {file} to start this job from scratch)") from e
    config = state.get("config", {})
    if config.get("model") != hp["model"] or config.get("classes") != classes:
        raise TrainingError(
            f"{file} is a checkpoint of {config.get('model')} for classes {config.get('classes')}, but this job trains "
            f"{hp['model']} for {classes}: use another job name or delete the checkpoint"
        )
    theirs, ours = {k: _retyped(k, v) for k, v in (config.get("hyperparameters") or {}).items()}, hp
    differ = sorted(k for k in set(theirs) | set(ours) if k not in RESUME_MAY_DIFFER and theirs.get(k) != ours.get(k))
    if differ:
        raise TrainingError(
            f"{file} is a checkpoint of a job with other hyperparameters ({', '.join(f'{k}={theirs.get(k)!r}' for k in differ)}; "
            f"this job: {', '.join(f'{k}={ours.get(k)!r}' for k in differ)}): use another job name or delete the checkpoint"
        )
    return state


def _retyped(name: str, value: Any) -> Any:
    """A checkpoint's hyperparameter in this version's type, so that an older checkpoint's setting
    equals the same setting today (scale_jitter was False before it took auto, now 'false')."""
    kind = HYPERPARAMETERS.get(name, (None,))[0]
    if kind is None or value is None:
        return value
    try:
        return kind(value)
    except (ValueError, TypeError, DeviceError):
        return value


def evaluate(model: Any, loader: Any, gt: dict[str, Any], device: Any) -> dict[str, Any]:
    from odorch.runtime.evaluation import coco_evaluate
    from odorch.runtime.predict import detect

    return coco_evaluate(gt, detect(model, loader, device))


def out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def train_one_epoch(ctx: dict[str, Any], epoch: int) -> dict[str, float]:
    """The epoch's mean loss, and how many of its samples' boxes (`annotated`) augmentation cut
    away (`cut`): scale jitter's crop and mosaic leave out boxes that no longer show."""
    import torch

    from odorch.runtime.predict import plain

    model, optimizer, scheduler, hp, dist = ctx["model"], ctx["optimizer"], ctx["scheduler"], ctx["hp"], ctx["dist"]
    model.train()
    if ctx["sampler"] is not None:
        ctx["sampler"].set_epoch(epoch)
    loader = ctx["train_loader"]
    total_iters = hp["epochs"] * len(loader)
    report_every = max(1, len(loader) // 10)
    losses, annotated, kept = [], 0, 0
    for it, (images, targets) in enumerate(loader):
        if ctx["stop"].requested:
            raise Stopped()
        if hp["checkpoint_interval"] > 0 and time.monotonic() - ctx["checkpointed"] >= hp["checkpoint_interval"]:
            ctx["checkpoint"](epoch)  # this epoch again on resume, from these weights (as after SIGTERM)
            log(dist, f"checkpoint: epoch {epoch + 1}, step {it}/{len(loader)} (every {hp['checkpoint_interval']:g} s)")
        annotated += sum(t["annotated"] for t in targets)
        kept += sum(len(t["labels"]) for t in targets)
        images = [plain(im).to(ctx["device"]) for im in images]
        targets = [{"boxes": plain(t["boxes"]).to(ctx["device"]), "labels": t["labels"].to(ctx["device"])} for t in targets]
        with torch.autocast("cuda", enabled=ctx["amp"]):
            loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
            raise TrainingError(
                f"loss is {loss.item()} at epoch {epoch + 1} iteration {it + 1} ({parts}); "
                f"lower lr (now {optimizer.param_groups[0]['lr']:.4g}) or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        ctx["scaler"].scale(loss).backward()
        if hp["clip_grad"] > 0:
            ctx["scaler"].unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["clip_grad"])
        ctx["scaler"].step(optimizer)
        ctx["scaler"].update()
        scheduler.step()
        if ctx["ema"] is not None:
            ctx["ema"].update_parameters(getattr(model, "module", model))
        losses.append(loss.item())
        done = epoch * len(loader) + it + 1
        if (it + 1) % report_every == 0 and done < total_iters:
            log(dist, format_metrics({"train:progress": 100 * done / total_iters}) + f" loss={loss.item():.4f}")
    return {"loss": sum(losses) / max(len(losses), 1), "annotated": annotated, "cut": annotated - kept}


def build_loaders(hp: dict[str, Any], paths: Paths, dist: Dist, device: Any) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    train_file = find_split(paths.train, "train")
    val_file = find_split(paths.validation or paths.train, "val")
    train_gt, val_gt = json.loads(train_file.read_text()), json.loads(val_file.read_text())
    classes = class_names(train_gt)
    if class_names(val_gt) != classes:
        raise DataError(f"{val_file} has classes {class_names(val_gt)} but {train_file} has {classes}: convert both together")
    if val_file == train_file:
        log(dist, f"warning: validating on the training data ({train_file}); convert with --split to hold some out")
    augment = {"flip": hp["flip"], "photometric": hp["photometric"], "image_size": hp["image_size"],
               "stretch": spec_of(hp["model"]).family == "ssd"}  # fmt: skip
    jittered = train_transforms(**augment, scale_jitter=True)
    plain = jittered if hp["scale_jitter"] == "true" else train_transforms(**augment, scale_jitter=False)
    train_set = CocoDetection(train_gt, train_file.parent.parent / "images", plain)
    val_set = CocoDetection(val_gt, val_file.parent.parent / "images", eval_transforms())
    if len(train_set) == 0:
        raise DataError(f"{train_file}: no images")
    mosaic = Mosaic(train_set, size=hp["image_size"], p=hp["mosaic"], stretch=augment["stretch"]) if hp["mosaic"] > 0 else None
    workers = hp["num_workers"] if hp["num_workers"] >= 0 else (4 if device.type == "cuda" else 0)
    generator = torch.Generator().manual_seed(hp["seed"])
    sampler = DistributedSampler(train_set, seed=hp["seed"]) if dist.world_size > 1 else None
    train_loader = DataLoader(
        mosaic or train_set, batch_size=hp["batch_size"], shuffle=sampler is None, sampler=sampler, generator=generator,
        num_workers=workers, collate_fn=collate, drop_last=len(train_set) > hp["batch_size"] * dist.world_size,
    )  # fmt: skip
    val_loader = DataLoader(val_set, batch_size=hp["batch_size"], num_workers=workers, collate_fn=collate)
    return {"train_loader": train_loader, "val_loader": val_loader, "train_gt": train_gt, "val_gt": val_gt, "classes": classes,
            "sampler": sampler, "generator": generator, "mosaic": mosaic, "train_set": train_set, "jittered": jittered}  # fmt: skip


def dataset_anchors(hp: dict[str, Any], model: Any, coco: dict[str, Any], dist: Dist, *, origin: str) -> dict[str, list[float]] | None:
    """anchors=fit: SSD default boxes fitted to the training boxes (relative to their image).
    anchors=auto fits them only where the model's own boxes leave a class mostly unmatched, as
    YOLOv5 refits its anchors only when they recall too few boxes. In 20 minutes from scratch it
    took BCCD (no platelet matched) from AP 0.414 to 0.49-0.51 and chess pieces (0-3 % matched)
    from 0.639 to 0.771; on the demo data (three quarters of every class matched) it lost (AP50
    0.26 vs 0.81 in the end-to-end test's 14 epochs). With COCO weights (`origin` coco) auto keeps
    the model's boxes: the box regression they bring was learnt against them."""
    if hp["anchors"] == "default" or spec_of(hp["model"]).family != "ssd":
        return None
    if hp["anchors"] == "auto" and origin == "coco":
        log(dist, "anchors=auto: the model's default boxes are kept (the COCO weights' box regression was learnt against them; --hp anchors=fit fits them anyway)")
        return None
    boxes, labels = relative_boxes(coco)
    if hp["anchors"] == "auto":
        names = {c["id"]: c["name"] for c in coco["categories"]}
        shares = matched_shares(boxes, labels, model=model, image_size=hp["image_size"])
        missed = [f"{names.get(c, c)} {share:.0%}" for c, share in sorted(shares.items(), key=lambda item: item[1]) if share < 0.5]
        if not missed:
            log(dist, "anchors=auto: the model's default boxes are kept (they match at least half of each class's training boxes at IoU 0.5)")
            return None
        poor = ", ".join(missed[:5]) + (f" and {len(missed) - 5} more classes" if len(missed) > 5 else "")
        if len(boxes) < len(model.anchor_generator.scales):
            log(dist, f"anchors=auto: the model's default boxes match few training boxes ({poor}), but {len(boxes)} are too few to fit; kept")
            return None
        log(dist, f"anchors=auto: the model's default boxes match few training boxes at IoU 0.5 ({poor}): fitting them to the training boxes")
    return fit_anchors(boxes, labels, model=model, image_size=hp["image_size"])


def relative_boxes(coco: dict[str, Any]) -> tuple[list[tuple[float, float, float, float]], list[int]]:
    """Every box with a size, not a crowd, as x1, y1, x2, y2 fractions of its image, and its category id."""
    size = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    boxes, labels = [], []
    for a in coco["annotations"]:
        (x, y, w, h), (width, height) = a["bbox"], size[a["image_id"]]
        if not a.get("iscrowd", 0) and w > 0 and h > 0:
            boxes.append((x / width, y / height, (x + w) / width, (y + h) / height))
            labels.append(a["category_id"])
    return boxes, labels


def train(hp: dict[str, Any], paths: Paths, dist: Dist, stop: StopFlag) -> None:
    import torch

    started = time.monotonic()
    torch.manual_seed(hp["seed"])
    if hp["num_threads"] > 0:
        torch.set_num_threads(hp["num_threads"])
    device = resolve_device(hp["device"])
    if device.type == "cuda" and dist.world_size > 1:
        device = torch.device("cuda", dist.local_rank)
    cuda = device.type == "cuda"
    if hp["amp"] and not cuda:
        log(dist, "note: amp=true needs a GPU; training in float32")
    ctx: dict[str, Any] = {"hp": hp, "dist": dist, "stop": stop, "device": device, "amp": hp["amp"] and cuda}
    ctx.update(build_loaders(hp, paths, dist, device))
    classes = ctx["classes"]
    resume = load_resume(paths, hp, classes)
    if resume is not None:
        origin, anchors = resume["config"]["origin"], resume["config"].get("anchors")
        model = build_arch(hp["model"], classes, origin=origin, image_size=hp["image_size"], arch=resume["config"].get("arch"))
    else:
        model, origin, anchors = make_model(hp, classes, paths, dist)
        if anchors:
            log(dist, f"starting from {hp['weights']}: its default boxes are kept (anchors={hp['anchors']} not applied)")
        else:
            anchors = dataset_anchors(hp, model, ctx["train_gt"], dist, origin=origin)
    if anchors:
        set_anchors(model, anchors)
        log(dist, f"default boxes: scales {anchors['scales']}, aspect ratios {anchors['aspect_ratios']}")
    family = spec_of(hp["model"]).family
    if family != "hf":
        body = model.backbone if family == "ssd" else model.backbone.body
        body.to(memory_format=torch.channels_last)  # 2–4× faster on CPU (measured), neutral on GPU
    model.to(device)
    config = {
        "model": hp["model"], "classes": classes, "image_size": hp["image_size"], "origin": origin,
        "weights": hp["weights"], "hyperparameters": hp, "anchors": anchors,
        "arch": model.model.config.to_dict() if family == "hf" else None,  # a transformers model's config
    }  # fmt: skip
    ema = make_ema(model, hp["ema_decay"]) if hp["ema"] else None
    optimizer = make_optimizer(model, hp, dist.world_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(hp, len(ctx["train_loader"])))
    start, best, history, spent, durations = 0, {"validation:mAP": -1.0, "epoch": 0}, [], 0.0, []
    jitter_from = None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["lr_scheduler"])
        if ema is not None and resume.get("ema") is not None:
            ema.load_state_dict(resume["ema"])
        start, best, history = resume["epoch"], resume["best"], resume["history"]
        hp["epochs"], spent = resume.get("epochs", hp["epochs"]), resume.get("elapsed_s", 0.0)
        durations, jitter_from = resume.get("epoch_s", []), resume.get("jitter_from")
        log(dist, f"resuming from {paths.checkpoints / CHECKPOINT}: {start} epoch(s) done, best mAP {best['validation:mAP']:.4f}")
    if dist.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist.local_rank] if cuda else None)
    ctx.update(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema, checkpointed=time.monotonic(),
               scaler=torch.amp.GradScaler("cuda", enabled=ctx["amp"]))  # fmt: skip
    raw_model = getattr(model, "module", model)
    final = ema.module if ema is not None else raw_model  # what is validated and saved
    elapsed = lambda: spent + time.monotonic() - started  # noqa: E731

    def checkpoint(epoch_done: int) -> None:
        ctx["checkpointed"] = time.monotonic()
        if dist.main:
            save_checkpoint(paths, {
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(), "epoch": epoch_done, "best": best,
                "history": history, "config": config, "ema": ema.state_dict() if ema is not None else None,
                "epochs": hp["epochs"], "elapsed_s": elapsed(), "epoch_s": durations, "jitter_from": jitter_from,
            })  # fmt: skip

    ctx["checkpoint"] = checkpoint
    log(dist, f"training {hp['model']} on {len(ctx['train_loader'].dataset)} images, {len(classes)} classes "
              f"({', '.join(classes)}), {hp['epochs']} epochs, batch {hp['batch_size']}, device {device}")  # fmt: skip
    epoch = start
    try:
        while epoch < hp["epochs"]:
            t0 = time.time()
            torch.manual_seed(hp["seed"] + epoch)  # each epoch's shuffle and augmentation from its own seed:
            ctx["generator"].manual_seed(hp["seed"] + epoch)  # a resumed run repeats what an unbroken one does
            if ctx["mosaic"] is not None:
                ctx["mosaic"].enabled = epoch < hp["epochs"] - round(hp["close_mosaic"] * hp["epochs"])
            jitter_from = scale_jitter_from(hp, best, epoch, jitter_from, dist)
            if jitter_from is not None:  # the Mosaic wrapper reads its dataset's transforms too
                ctx["train_set"].transforms = ctx["jittered"]
            trained = train_one_epoch(ctx, epoch)
            metrics = {"train:loss": trained["loss"]}
            if dist.main:
                result = evaluate(final, ctx["val_loader"], ctx["val_gt"], device)
                metrics["validation:mAP"] = result["stats"]["AP"]
                metrics["validation:mAP50"] = result["stats"]["AP50"]
                history.append(metrics["validation:mAP"])
            durations.append(time.time() - t0)
            if hp["time"] > 0:
                plan_time_budget(hp, dist, epoch_s=typical_epoch_s(durations), elapsed_s=elapsed(), done=epoch + 1)
            if dist.main and metrics["validation:mAP"] > best["validation:mAP"]:
                best = {"validation:mAP": metrics["validation:mAP"], "epoch": epoch + 1}
                save_model(paths.model_dir, final, {**config, "epoch": epoch + 1, "metrics": metrics})
            stopping = should_stop_early(hp, best, epoch + 1, dist)
            if stopping:  # the run's last epoch, also for a rerun of this job that resumes it
                hp["epochs"] = epoch + 1
            metrics["train:progress"] = 100.0 * (epoch + 1) / hp["epochs"]
            checkpoint(epoch + 1)  # before the line: a reported epoch is a saved one
            log(dist, format_metrics(metrics, epoch=epoch + 1, epochs=hp["epochs"]) + f" time={time.time() - t0:.1f}s")
            report_cut_boxes(dist, epoch + 1, trained["cut"], trained["annotated"])
            if stopping:
                log(dist, f"early stopping: no better validation:mAP for {epoch + 1 - best['epoch']} epochs (best "
                          f"{best['validation:mAP']:.4f} at epoch {best['epoch']}; early_stopping_patience "
                          f"{hp['early_stopping_patience']}, min_epochs {hp['min_epochs']})")  # fmt: skip
            epoch += 1
    except Stopped:
        checkpoint(epoch)
        log(dist, f"stopped by SIGTERM in epoch {epoch + 1}; checkpoint saved to {paths.checkpoints / CHECKPOINT}")
        raise
    log(dist, f"best validation:mAP {best['validation:mAP']:.4f} at epoch {best['epoch']}; model saved to {paths.model_dir}")


def report_cut_boxes(dist: Dist, epoch: int, cut: int, annotated: int) -> None:
    """Boxes augmentation left out of an epoch's training targets, over all ranks: a crop or a
    mosaic that cuts a box away drops it, and the user should see how many."""
    if dist.world_size > 1:
        import torch.distributed

        counts: list[Any] = [None] * dist.world_size
        torch.distributed.all_gather_object(counts, (cut, annotated))
        cut, annotated = (sum(c[i] for c in counts) for i in (0, 1))
    if cut:
        log(dist, f"augmentation left out {cut} of the {annotated} boxes in epoch {epoch}'s training samples "
                  f"({100 * cut / annotated:.1f} %): cut out of view by scale jitter's crop or mosaic, or under 1 px")  # fmt: skip


def plan_time_budget(hp: dict[str, Any], dist: Dist, *, epoch_s: float, elapsed_s: float, done: int) -> None:
    """Re-plan hp["epochs"] after every epoch so that training ends within hp["time"] minutes (the
    same on every rank). The cosine schedule reads hp["epochs"] at each step, so a late re-plan
    only stretches or shortens what is left of it."""
    epochs = plan_epochs(budget_s=hp["time"] * 60, elapsed_s=elapsed_s, epoch_s=epoch_s, done=done)
    epochs = from_main(dist, epochs)
    if epochs != hp["epochs"] or done == 1:
        log(dist, f"time budget {hp['time']:g} min: {elapsed_s:.0f} s spent, {epoch_s:.1f} s an epoch; "
                  f"{epochs} epochs in all")  # fmt: skip
    hp["epochs"] = epochs


def should_stop_early(hp: dict[str, Any], best: dict[str, Any], epochs_done: int, dist: Dist) -> bool:
    patience = hp["early_stopping_patience"]
    return from_main(dist, bool(patience and epochs_done >= hp["min_epochs"] and epochs_done - best["epoch"] >= patience))


def scale_jitter_from(hp: dict[str, Any], best: dict[str, Any], epochs_done: int, jitter_from: int | None, dist: Dist) -> int | None:
    """scale_jitter=auto: the epoch (0-based) from which training images are jittered, or None
    yet. Due once validation mAP has not risen for JITTER_PATIENCE epochs, from a best of at
    least JITTER_MIN_MAP, while at least half of the run's epochs are still to come."""
    if hp["scale_jitter"] != "auto" or jitter_from is not None:
        return jitter_from
    stalled = epochs_done - best["epoch"]
    due = best["validation:mAP"] >= JITTER_MIN_MAP and stalled >= JITTER_PATIENCE and 2 * epochs_done <= hp["epochs"]
    if not from_main(dist, due):
        return None
    log(dist, f"scale_jitter=auto: no better validation:mAP for {stalled} epochs (best {best['validation:mAP']:.4f} at epoch "
              f"{best['epoch']}): training images are rescaled 0.5–1.5 from epoch {epochs_done + 1} on")  # fmt: skip
    return epochs_done


def from_main(dist: Dist, value: Any) -> Any:
    """Rank 0's value on every rank: decisions that rest on validation, which only rank 0 runs."""
    if dist.world_size == 1:
        return value
    import torch.distributed

    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def failure_reason(e: BaseException, hp: dict[str, Any] | None) -> str:
    if out_of_memory(e):
        batch = (hp or {}).get("batch_size", "?")
        lower = f" (e.g. batch_size={max(1, batch // 2)})" if isinstance(batch, int) else ""
        return f"out of memory with batch_size={batch}: lower batch_size{lower} or image_size. {type(e).__name__}: {e}"
    if isinstance(e, (TrainingError, ModelError, DataError, DeviceError)):
        return str(e)
    return f"{type(e).__name__}: {e}"


def write_failure(paths: Paths, reason: str) -> None:
    try:
        paths.output.mkdir(parents=True, exist_ok=True)
        (paths.output / "failure").write_text(reason)
    except OSError:
        pass


def main() -> int:
    launch = needs_launch(dict(os.environ))
    if launch is not None:
        return relaunch_under_torchrun(*launch)
    paths = Paths.from_env()
    stop = StopFlag()
    hp = None
    try:
        hp = parse_hyperparameters(read_raw_hyperparameters(paths))
        train(hp, paths, init_distributed(), stop)
        return 0
    except Stopped:
        return SIGTERM_EXIT
    except BaseException as e:  # noqa: BLE001 - every failure must reach output/failure
        if isinstance(e, KeyboardInterrupt):
            return SIGTERM_EXIT
        reason = failure_reason(e, hp)
        write_failure(paths, reason)
        if not isinstance(e, (TrainingError, ModelError, DataError, DeviceError)):
            traceback.print_exc()
        print(f"error: {reason}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
