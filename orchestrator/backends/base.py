"""The job interface every backend implements: a JobSpec in, the job record (runs.JobRecord) out.

    problems = backend.preflight(spec)   # every problem, before anything is spent or written
    record = backend.run(spec, echo=...) # runs to the end; record.status says how it ended
    record = backend.stop(record)        # from any process

run_job is the one call `odorch train`, `odorch quickstart` and the notebooks make.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from odorch.algorithms import Algorithm
from odorch.errors import JobError
from odorch.runs import JobRecord, elapsed
from odorch.runtime.metrics import OBJECTIVE

Echo = Callable[[str], None]


@dataclass(frozen=True)
class JobSpec:
    """One training job: where its folder goes (runs_dir/name), its data, model, hyperparameters
    (as the algorithm takes them) and the algorithm that runs."""

    name: str
    runs_dir: Path
    data: Path
    model: str
    hyperparameters: Mapping[str, str]
    algorithm: Algorithm

    @property
    def job_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


class Backend(Protocol):
    name: str

    def preflight(self, spec: JobSpec) -> list[str]: ...

    def run(self, spec: JobSpec, *, echo: Echo | None = None) -> JobRecord: ...

    def stop(self, record: JobRecord) -> JobRecord: ...


class PreflightProblems(JobError):
    """Preflight found problems; nothing was started. The message lists each with its fix."""


def run_job(spec: JobSpec, backend: Backend, *, echo: Echo | None = None) -> JobRecord:
    """Preflight (PreflightProblems when anything is wrong), then run; the final record."""
    problems = backend.preflight(spec)
    if problems:
        raise PreflightProblems(f"not starting job {spec.name} ({backend.name}): " + "; ".join(problems))
    return backend.run(spec, echo=echo)


class JobInterrupted(JobError):
    """Ctrl-C stopped the job (a local job keeps its checkpoint)."""


def job_outcome(spec: JobSpec, record: JobRecord) -> list[str]:
    """The lines that say how a job ended; JobError unless it Completed with its model
    (JobInterrupted when Ctrl-C stopped it)."""
    billed = ""
    if record.backend == "sagemaker":
        cost = record.extra.get("estimated_cost_usd")
        billed = f" ({record.extra.get('billable_seconds')} s billed" + (f", about ${cost:.2f}" if cost is not None else "") + ")"
    if record.status != "Completed":
        reason = record.failure_reason or record.stop_reason or ""
        message = f"job {spec.name} {record.status}{billed}: {reason}"
        if record.stop_reason == "interrupted (Ctrl-C)":
            raise JobInterrupted(message)
        raise JobError(message)
    if record.extra.get("model_error"):
        raise JobError(f"job {spec.name} Completed but {record.extra['model_error']}")
    where = f" on SageMaker{billed}" if billed else f" in {elapsed(record)}"
    lines = [f"job {spec.name} Completed{where}; best {OBJECTIVE} {record.best_value}", f"model: {record.model_dir}"]
    if not spec.algorithm.model_loadable:
        return [*lines, f"the model is {spec.algorithm.model_kind}: odorch evaluate/predict cannot load it locally"]
    return [*lines, f"next: odorch evaluate {spec.job_dir} --data {spec.data} --split test"]
