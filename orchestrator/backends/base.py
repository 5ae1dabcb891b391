"""The job interface every backend implements: a JobSpec in, the job record (runs.JobRecord) out.

    problems = backend.preflight(spec)   # every problem, before anything is spent or written
    record = backend.run(spec, echo=...) # runs to the end; record["status"] says how it ended
    record = backend.stop(record)        # from any process

run_job is the one call `odorch train`, `odorch quickstart` and the notebooks make.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from odorch.algorithms import Algorithm
from odorch.errors import JobError

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

    def run(self, spec: JobSpec, *, echo: Echo | None = None) -> dict[str, Any]: ...

    def stop(self, record: dict[str, Any]) -> dict[str, Any]: ...


class PreflightProblems(JobError):
    """Preflight found problems; nothing was started. The message lists each with its fix."""


def run_job(spec: JobSpec, backend: Backend, *, echo: Echo | None = None) -> dict[str, Any]:
    """Preflight (PreflightProblems when anything is wrong), then run; the final record."""
    problems = backend.preflight(spec)
    if problems:
        raise PreflightProblems(f"not starting job {spec.name} ({backend.name}): " + "; ".join(problems))
    return backend.run(spec, echo=echo)
