"""odorch's user errors: the base (OdorchError, from the container code, which ships alone) and
the errors several modules raise. Each module's own errors derive from these."""

from odorch.runtime.errors import OdorchError

__all__ = ["JobError", "OdorchError", "PreflightError", "SageMakerError"]


class JobError(OdorchError, ValueError):
    """A job that cannot be created, found, read or re-run; the message says what to do."""


class SageMakerError(JobError):
    """A SageMaker job that cannot be started, followed or read; the message says what to do."""


class PreflightError(SageMakerError):
    """Found before any money is spent: nothing was uploaded and no job was created."""
