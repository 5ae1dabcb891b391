"""Backends: where a training job runs (a local process, the training image under Docker, a
SageMaker training job), all behind one interface (backends.base: JobSpec, Backend, run_job)."""

from odorch.backends.base import Backend, JobInterrupted, JobSpec, PreflightProblems, job_outcome, run_job

__all__ = ["Backend", "JobInterrupted", "JobSpec", "PreflightProblems", "job_outcome", "run_job"]
