"""Dated tables about AWS that odorch needs and cannot ask AWS for cheaply: SageMaker instance
types (size, GPUs, on-demand price), the AWS Deep Learning Containers (DLC) images the
training and serving jobs run in, and the SageMaker built-in Object Detection algorithm image.

Everything here is a snapshot taken on ``TABLES_DATE`` and goes stale: refresh it (and the
date) when AWS publishes new images or changes prices. Sources:

- DLC image tags and per-region registry accounts: ``available_images.md`` in
  github.com/aws/deep-learning-containers ("SageMaker Framework Containers" and the region
  table), cross-checked with ``src/sagemaker/image_uri_config/pytorch.json`` in
  github.com/aws/sagemaker-python-sdk. The training tags chosen
  (``2.10.0-{gpu-py313-cu130,cpu-py313}-ubuntu22.04-sagemaker``) are the PyTorch 2.10 SageMaker
  training images, the newest supported ones; the serving tags
  (``2.6.0-{gpu-py312-cu124,cpu-py312}-ubuntu22.04-sagemaker``) the PyTorch 2.6 SageMaker
  inference images, the last ones with TorchServe and the SageMaker inference toolkit (no newer
  PyTorch inference DLC exists for SageMaker). The entrypoints need torch >= 2.1 and
  torchvision >= 0.16.
- End of support: the DLC framework support policy (aws.github.io/deep-learning-containers,
  "Framework Support Policy": GA and EOP dates), in ``END_OF_PATCH``. After its EOP date an
  image gets no more security patches: preflight warns (``support_warning``).
- Built-in Object Detection image accounts: ``src/sagemaker/image_uri_config/object-detection.json``
  in github.com/aws/sagemaker-python-sdk (repository ``object-detection``, tag ``1``).
- Instance sizes: the EC2/SageMaker instance-type pages. Prices: the Amazon SageMaker pricing
  page, on-demand *training* prices in us-east-1, in USD per hour, rounded; other regions and
  hosting cost somewhat more. Treat every figure as an estimate for planning, not a bill.
- Spot: SageMaker managed spot training bills the spot price, which AWS advertises as "up to
  90%" below on-demand and which moves with demand. ``SPOT_FACTOR`` holds a *typical* fraction
  of the on-demand price per family (an estimate, not a quote).

A region or instance type missing from a table is an error that lists what is known: pass an
image URI explicitly to use another region (any ECR image your account can pull).
"""

from __future__ import annotations

import re
from typing import Any

from odorch.errors import OdorchError

TABLES_DATE = "2026-11-30"

# --- AWS Deep Learning Containers (PyTorch, SageMaker flavour) ---------------------------------

PYTORCH_DLC_VERSION = "2.10.0"  # training
PYTORCH_INFERENCE_DLC_VERSION = "2.6.0"  # serving: the last PyTorch inference DLC with TorchServe
TRAINING_TAG_GPU = f"{PYTORCH_DLC_VERSION}-gpu-py313-cu130-ubuntu22.04-sagemaker"
TRAINING_TAG_CPU = f"{PYTORCH_DLC_VERSION}-cpu-py313-ubuntu22.04-sagemaker"
# CUDA 13 dropped Volta (V100: ml.p3*): the newest image that still runs there is PyTorch 2.8 on CUDA 12.9
TRAINING_TAG_VOLTA = "2.8.0-gpu-py312-cu129-ubuntu22.04-sagemaker"
INFERENCE_TAG_GPU = f"{PYTORCH_INFERENCE_DLC_VERSION}-gpu-py312-cu124-ubuntu22.04-sagemaker"
INFERENCE_TAG_CPU = f"{PYTORCH_INFERENCE_DLC_VERSION}-cpu-py312-ubuntu22.04-sagemaker"
TRAINING_REPOSITORY = "pytorch-training"
INFERENCE_REPOSITORY = "pytorch-inference"

# (repository, framework major.minor) -> end of patch (EOP), from the DLC framework support policy
END_OF_PATCH: dict[tuple[str, str], str] = {
    (TRAINING_REPOSITORY, "2.10"): "2027-01-21",
    (TRAINING_REPOSITORY, "2.9"): "2026-10-15",
    (TRAINING_REPOSITORY, "2.8"): "2026-08-06",
    (TRAINING_REPOSITORY, "2.7"): "2026-04-23",
    (TRAINING_REPOSITORY, "2.6"): "2026-01-29",
    (INFERENCE_REPOSITORY, "2.6"): "2026-06-30",  # extended: the last inference images with TorchServe
}

_DLC_DEFAULT_ACCOUNT = "763104351884"
DLC_REGISTRIES: dict[str, str] = {
    "us-east-1": _DLC_DEFAULT_ACCOUNT,
    "us-east-2": _DLC_DEFAULT_ACCOUNT,
    "us-west-1": _DLC_DEFAULT_ACCOUNT,
    "us-west-2": _DLC_DEFAULT_ACCOUNT,
    "ca-central-1": _DLC_DEFAULT_ACCOUNT,
    "ca-west-1": "204538143572",
    "sa-east-1": _DLC_DEFAULT_ACCOUNT,
    "mx-central-1": "637423239942",
    "eu-central-1": _DLC_DEFAULT_ACCOUNT,
    "eu-central-2": "380420809688",
    "eu-west-1": _DLC_DEFAULT_ACCOUNT,
    "eu-west-2": _DLC_DEFAULT_ACCOUNT,
    "eu-west-3": _DLC_DEFAULT_ACCOUNT,
    "eu-north-1": _DLC_DEFAULT_ACCOUNT,
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "ap-northeast-1": _DLC_DEFAULT_ACCOUNT,
    "ap-northeast-2": _DLC_DEFAULT_ACCOUNT,
    "ap-northeast-3": "364406365360",
    "ap-south-1": _DLC_DEFAULT_ACCOUNT,
    "ap-south-2": "772153158452",
    "ap-southeast-1": _DLC_DEFAULT_ACCOUNT,
    "ap-southeast-2": _DLC_DEFAULT_ACCOUNT,
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ap-east-1": "871362719292",
    "af-south-1": "626614931356",
    "il-central-1": "780543022126",
    "me-south-1": "217643126080",
    "me-central-1": "914824155844",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
}

# --- SageMaker built-in Object Detection algorithm (object-detection:1) ----------------------

BUILTIN_OD_REPOSITORY = "object-detection"
BUILTIN_OD_TAG = "1"
BUILTIN_OD_REGISTRIES: dict[str, str] = {
    "us-east-1": "811284229777",
    "us-east-2": "825641698319",
    "us-west-1": "632365934929",
    "us-west-2": "433757028032",
    "ca-central-1": "469771592824",
    "sa-east-1": "855470959533",
    "eu-central-1": "813361260812",
    "eu-west-1": "685385470294",
    "eu-west-2": "644912444149",
    "eu-west-3": "749696950732",
    "eu-north-1": "669576153137",
    "eu-south-1": "257386234256",
    "ap-northeast-1": "501404015308",
    "ap-northeast-2": "306986355934",
    "ap-northeast-3": "867004704886",  # the built-in algorithms' account (364406365360 holds the DLCs there)
    "ap-south-1": "991648021394",
    "ap-southeast-1": "475088953585",
    "ap-southeast-2": "544295431143",
    "ap-east-1": "286214385809",
    "af-south-1": "455444449433",
    "me-south-1": "249704162688",
    "cn-north-1": "390948362332",
    "cn-northwest-1": "387376663083",
}

# --- Instance types -----------------------------------------------------------------------------
# name: (vcpus, memory GiB, gpus, GPU memory GB per GPU, GPU model, on-demand USD/hour us-east-1)

_INSTANCES: dict[str, tuple[int, int, int, int, str | None, float]] = {
    "ml.m5.large": (2, 8, 0, 0, None, 0.115),
    "ml.m5.xlarge": (4, 16, 0, 0, None, 0.23),
    "ml.m5.2xlarge": (8, 32, 0, 0, None, 0.461),
    "ml.m5.4xlarge": (16, 64, 0, 0, None, 0.922),
    "ml.m5.12xlarge": (48, 192, 0, 0, None, 2.765),
    "ml.m5.24xlarge": (96, 384, 0, 0, None, 5.53),
    "ml.c5.xlarge": (4, 8, 0, 0, None, 0.204),
    "ml.c5.2xlarge": (8, 16, 0, 0, None, 0.408),
    "ml.c5.4xlarge": (16, 32, 0, 0, None, 0.816),
    "ml.c5.9xlarge": (36, 72, 0, 0, None, 1.836),
    "ml.c5.18xlarge": (72, 144, 0, 0, None, 3.672),
    "ml.p3.2xlarge": (8, 61, 1, 16, "V100", 3.825),
    "ml.p3.8xlarge": (32, 244, 4, 16, "V100", 14.688),
    "ml.p3.16xlarge": (64, 488, 8, 16, "V100", 28.152),
    "ml.p3dn.24xlarge": (96, 768, 8, 32, "V100", 35.894),
    "ml.p4d.24xlarge": (96, 1152, 8, 40, "A100", 37.688),
    "ml.g4dn.xlarge": (4, 16, 1, 16, "T4", 0.736),
    "ml.g4dn.2xlarge": (8, 32, 1, 16, "T4", 0.94),
    "ml.g4dn.4xlarge": (16, 64, 1, 16, "T4", 1.505),
    "ml.g4dn.8xlarge": (32, 128, 1, 16, "T4", 2.72),
    "ml.g4dn.12xlarge": (48, 192, 4, 16, "T4", 4.89),
    "ml.g4dn.16xlarge": (64, 256, 1, 16, "T4", 5.44),
    "ml.g5.xlarge": (4, 16, 1, 24, "A10G", 1.408),
    "ml.g5.2xlarge": (8, 32, 1, 24, "A10G", 1.515),
    "ml.g5.4xlarge": (16, 64, 1, 24, "A10G", 2.03),
    "ml.g5.8xlarge": (32, 128, 1, 24, "A10G", 3.06),
    "ml.g5.12xlarge": (48, 192, 4, 24, "A10G", 7.09),
    "ml.g5.16xlarge": (64, 256, 1, 24, "A10G", 5.12),
    "ml.g5.24xlarge": (96, 384, 4, 24, "A10G", 10.18),
    "ml.g5.48xlarge": (192, 768, 8, 24, "A10G", 20.36),
    "ml.g6.xlarge": (4, 16, 1, 24, "L4", 1.006),
    "ml.g6.2xlarge": (8, 32, 1, 24, "L4", 1.222),
    "ml.g6.4xlarge": (16, 64, 1, 24, "L4", 1.654),
    "ml.g6.8xlarge": (32, 128, 1, 24, "L4", 2.518),
    "ml.g6.12xlarge": (48, 192, 4, 24, "L4", 5.752),
    "ml.g6.16xlarge": (64, 256, 1, 24, "L4", 4.246),
    "ml.g6.24xlarge": (96, 384, 4, 24, "L4", 8.344),
    "ml.g6.48xlarge": (192, 768, 8, 24, "L4", 16.688),
}

# Typical spot price as a fraction of on-demand, per family: an ESTIMATE for planning (AWS
# advertises savings of up to 90%; the real discount varies by region, zone and hour).
SPOT_FACTOR: dict[str, float] = {
    "m5": 0.35,
    "c5": 0.35,
    "p3": 0.30,
    "p3dn": 0.35,
    "p4d": 0.40,
    "g4dn": 0.30,
    "g5": 0.35,
    "g6": 0.35,
}
DEFAULT_SPOT_FACTOR = 0.30


# an image the user names (train --image, deploy --image): any account's ECR, China partition included
IMAGE_URI = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$")


def image_uri_problems(image: str | None) -> list[str]:
    """The problem with an --image the user gave (none when it is None or an ECR image URI)."""
    if image is None or IMAGE_URI.match(image):
        return []
    return [f"--image {image!r} is not an ECR image URI: give ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG"]


class UnknownInstanceError(OdorchError, ValueError):
    """An instance type missing from the dated table."""


class UnknownRegionError(OdorchError, ValueError):
    """A region missing from a dated image table."""


def normalize_instance(name: str) -> str:
    """``"p3.2xlarge"`` / ``"ML.P3.2XLARGE"`` → ``"ml.p3.2xlarge"``."""
    n = name.strip().lower()
    if not n:
        raise UnknownInstanceError("empty instance type")
    return n if n.startswith("ml.") else f"ml.{n}"


def is_known_instance(name: str) -> bool:
    try:
        return normalize_instance(name) in _INSTANCES
    except UnknownInstanceError:
        return False


# training types that SageMaker hosting does not offer (real-time endpoints)
NOT_HOSTING = ("ml.p3dn.24xlarge",)


def is_hosting_instance(name: str) -> bool:
    """A known instance type that can host a real-time endpoint."""
    return is_known_instance(name) and normalize_instance(name) not in NOT_HOSTING


def _family(instance: str) -> str:
    return instance.split(".")[1]


def instance_info(name: str) -> dict[str, Any]:
    """Size and on-demand us-east-1 price of a SageMaker instance type (``gpu_memory_gb`` is per GPU)."""
    n = normalize_instance(name)
    try:
        vcpus, mem, gpus, gpu_mem, gpu_model, price = _INSTANCES[n]
    except KeyError:
        raise UnknownInstanceError(
            f"unknown SageMaker instance type {name!r} (table of {TABLES_DATE}); known: {', '.join(_INSTANCES)}"
        ) from None
    return {
        "name": n,
        "family": _family(n),
        "vcpus": vcpus,
        "memory_gib": mem,
        "gpus": gpus,
        "gpu_model": gpu_model,
        "gpu_memory_gb": gpu_mem,
        "usd_per_hour": price,
    }


def known_instances() -> list[str]:
    return list(_INSTANCES)


def price_per_hour(instance_type: str, *, spot: bool = False) -> float:
    """On-demand USD/hour (us-east-1) or, with ``spot``, an estimate from ``SPOT_FACTOR``."""
    info = instance_info(instance_type)
    price = float(info["usd_per_hour"])
    if spot:
        price *= SPOT_FACTOR.get(info["family"], DEFAULT_SPOT_FACTOR)
    return price


def estimate_cost(instance_type: str, seconds: float, *, count: int = 1, spot: bool = False) -> float:
    """USD for ``count`` instances billed ``seconds`` each (SageMaker bills per second)."""
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return price_per_hour(instance_type, spot=spot) * count * seconds / 3600.0


def instance_has_gpu(instance_type: str) -> bool:
    """From the table; an unlisted ml.p*/ml.g* type counts as GPU, ml.m/c/r/t as CPU."""
    n = normalize_instance(instance_type)
    if n in _INSTANCES:
        return _INSTANCES[n][2] > 0
    family = _family(n) if n.count(".") >= 2 else ""
    if family.startswith(("inf", "trn")):
        family = ""  # AWS Inferentia / Trainium: Neuron images, not these
    if family[:1] in ("p", "g"):
        return True
    if family[:1] in ("m", "c", "r", "t"):
        return False
    raise UnknownInstanceError(
        f"cannot tell whether {instance_type!r} has a GPU (not in the table of {TABLES_DATE}; "
        "Inferentia/Trainium need Neuron images); pass an image URI explicitly"
    )


def _registry(region: str, table: dict[str, str], what: str) -> str:
    r = region.strip().lower()
    if r not in table:
        raise UnknownRegionError(
            f"no {what} registry known for region {region!r} (table of {TABLES_DATE}); "
            f"known regions: {', '.join(sorted(table))}. "
            "Pass an image URI explicitly to use another region (any ECR image the account can pull)."
        )
    domain = "amazonaws.com.cn" if r.startswith("cn-") else "amazonaws.com"
    return f"{table[r]}.dkr.ecr.{r}.{domain}"


def training_image(region: str, instance_type: str) -> str:
    """PyTorch DLC training image URI for the region, GPU or CPU by the instance type."""
    host = _registry(region, DLC_REGISTRIES, "AWS Deep Learning Containers")
    tag = TRAINING_TAG_GPU if instance_has_gpu(instance_type) else TRAINING_TAG_CPU
    if is_known_instance(instance_type) and instance_info(instance_type)["gpu_model"] == "V100":
        tag = TRAINING_TAG_VOLTA
    return f"{host}/{TRAINING_REPOSITORY}:{tag}"


def inference_image(region: str, instance_type: str) -> str:
    """PyTorch DLC serving image URI for the region, GPU or CPU by the instance type."""
    host = _registry(region, DLC_REGISTRIES, "AWS Deep Learning Containers")
    tag = INFERENCE_TAG_GPU if instance_has_gpu(instance_type) else INFERENCE_TAG_CPU
    return f"{host}/{INFERENCE_REPOSITORY}:{tag}"


def builtin_od_image(region: str) -> str:
    """SageMaker built-in Object Detection algorithm image (training and serving)."""
    host = _registry(region, BUILTIN_OD_REGISTRIES, "SageMaker built-in Object Detection")
    return f"{host}/{BUILTIN_OD_REPOSITORY}:{BUILTIN_OD_TAG}"


def support_warning(image: str, *, today: str | None = None) -> str | None:
    """A one-line warning when END_OF_PATCH says the DLC image is past its end of patch (as of
    ``today``, ISO date, default the current UTC date); None for a supported image and for images
    the table does not know (a user's own, the built-in algorithm's)."""
    import datetime as dt
    import re

    match = re.search(r"/([a-z0-9-]+):(\d+\.\d+)\.", image)
    if not match:
        return None
    eop = END_OF_PATCH.get((match.group(1), match.group(2)))
    today = today or dt.datetime.now(dt.timezone.utc).date().isoformat()
    if eop is None or today <= eop:
        return None
    return (f"{image} reached its end of patch on {eop} (DLC support policy, table of {TABLES_DATE}): it gets no more "
            "security fixes; update odorch (a newer table) or pass a supported image")
