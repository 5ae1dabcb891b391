"""Which torch device a command or a training job runs on: ``auto``, ``cpu``, ``cuda``,
``cuda:N`` or ``mps``. ``auto`` takes the first CUDA GPU, else Apple's MPS, else the CPU; a
device this machine does not have is an error that says what it has, never a silent fallback."""

from __future__ import annotations

import re
from typing import Any

from odorch.runtime.errors import OdorchError

DEVICES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class DeviceError(OdorchError, ValueError):
    """A device name that is not one, or a device this machine lacks; the message says what it has."""


def check_device_name(name: str) -> str:
    """``name`` lower-cased if it names a device at all (no torch needed: for option parsing)."""
    if not _DEVICE.match(name.strip().lower()):
        raise DeviceError(f"{name!r} is not a device; use {DEVICES}")
    return name.strip().lower()


def resolve_device(name: str = "auto") -> Any:
    """The ``torch.device`` that ``name`` means here."""
    import torch

    name = check_device_name(name)
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if not count:
            raise DeviceError(f"device {name}: this machine has no CUDA GPU that torch {torch.__version__} can use "
                              f"(CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto")
        if index >= count:
            raise DeviceError(f"device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if name == "mps" and not has_mps:
        raise DeviceError("device mps: Apple's Metal (MPS) backend is not available here; use --device cpu or auto")
    return torch.device(name)
