"""The runs folder, odorch's on-disk format; every backend, tuner and report reads it through here.

    RUNS_DIR/<job>/job.json        the job record (JOB_FILE; schema: JobRecord)
    RUNS_DIR/<job>/logs.txt        every line the job printed (LOG_FILE)
    RUNS_DIR/<job>/metrics.jsonl   one json line per metric line (METRICS_FILE; see record_line)
    RUNS_DIR/<job>/model/          the trained model (model_dir)
    RUNS_DIR/tune-<study>/         a tuning study (tune_dir)

Only the standard library and odorch.runtime.metrics are imported here.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from odorch.errors import JobError
from odorch.runtime.metrics import OBJECTIVE, parse_epoch, parse_metrics

STATUSES = ("InProgress", "Completed", "Failed", "Stopped")
TERMINAL = ("Completed", "Failed", "Stopped")
JOB_FILE = "job.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "logs.txt"
SUMMARY_FILE = "summary.json"  # of a tuning study, in its tune_dir (hpo.summary writes it)
MODEL_DIR = "model"
TUNE_PREFIX = "tune-"
# SageMaker's rule for training job names, so a local name also works there.
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass
class JobRecord:
    """A job's record, job.json: the fields every backend writes, plus `extra`, a backend's own
    keys (SageMaker: algorithm, training_job_arn, instance_type, estimated_cost_usd, ...; local:
    command; tracking: tensorboard_dir, mlflow), which job.json holds at its top level beside the
    fields. Read and written only through read_job/write_job (from_json/to_json)."""

    job_name: str = ""
    backend: str = "local"  # "local" | "docker" | "sagemaker"
    status: str = "InProgress"  # STATUSES
    failure_reason: str | None = None
    stop_reason: str | None = None
    created: str = ""  # ISO-8601 UTC
    started: str | None = None
    ended: str | None = None
    duration_s: float | None = None
    hyperparameters: dict[str, str] = field(default_factory=dict)
    model: str = ""
    channels: dict[str, str] = field(default_factory=dict)
    job_dir: str = ""
    model_dir: str = ""
    checkpoint_dir: str = ""
    log_file: str = ""
    pid: int | None = None  # the entrypoint's process
    pid_start: str | None = None
    orchestrator_pid: int | None = None  # the odorch process streaming it
    exit_code: int | None = None
    attempts: int = 0
    epoch: int | None = None
    epochs: int | None = None
    metrics_final: dict[str, float | None] = field(default_factory=dict)  # last value of each metric
    best: dict[str, Any] = field(default_factory=lambda: {OBJECTIVE: None, "epoch": None})  # {OBJECTIVE: max, "epoch": n}
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        """The record of a job.json object; keys that are not fields go to extra, missing fields
        take their defaults (a job.json of an earlier version loads)."""
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in names},
                   extra={k: v for k, v in data.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        """The job.json object: the fields, then extra's keys at the same level."""
        out = asdict(self)
        extra = out.pop("extra")
        return {**out, **extra}

    @property
    def best_value(self) -> float | None:
        """The best value of the objective (OBJECTIVE) so far."""
        return self.best.get(OBJECTIVE)


def tune_dir(runs_dir: Path | str, study: str) -> Path:
    """The folder of a tuning study (study.db or amt.json, summary.json, trials)."""
    return Path(runs_dir) / f"{TUNE_PREFIX}{study}"


def read_summary(tune_dir: Path | str) -> dict[str, Any]:
    """A study's summary.json (OSError, ValueError when it is missing or unreadable)."""
    return json.loads((Path(tune_dir) / SUMMARY_FILE).read_text())


def model_dir(run: Path | str) -> Path:
    """The model of a job folder (its model/), or RUN itself when it is a model folder or file."""
    run = Path(run)
    return run / MODEL_DIR if (run / MODEL_DIR).is_dir() else run


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def iso_from_unix(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def elapsed(record: JobRecord) -> str:
    """The job's run time as H:MM:SS (so far, while InProgress); "" when unknown."""
    seconds = record.duration_s
    if seconds is None and record.status == "InProgress":
        started = parse_iso(record.started)
        seconds = (datetime.now(timezone.utc) - started).total_seconds() if started else None
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def check_job_name(name: str) -> str:
    if not _JOB_NAME.match(name or ""):
        raise JobError(
            f"bad job name {name!r}: use 1-63 letters, digits and hyphens, starting with a letter or digit "
            "(SageMaker's rule for training job names)"
        )
    return name


def hyperparameter_strings(hyperparameters: dict[str, Any]) -> dict[str, str]:
    """Values as SageMaker writes hyperparameters.json: strings. Strings stay as they are,
    numbers via str(), booleans/None/lists/dicts as json ("true", "null", "[1, 2]") so that
    json.loads gives them back, as the SageMaker training toolkit does when it builds SM_HPS."""
    out = {}
    for key, value in hyperparameters.items():
        if isinstance(value, str):
            out[str(key)] = value
        elif isinstance(value, (bool, type(None), list, tuple, dict)):
            out[str(key)] = json.dumps(value)
        else:
            out[str(key)] = str(value)
    return out


def new_record(*, job_name: str, backend: str, job_dir: Path, model: str = "",
               hyperparameters: dict[str, Any] | None = None, channels: dict[str, Any] | None = None) -> JobRecord:
    job_dir = Path(job_dir).absolute()
    return JobRecord(
        job_name=job_name,
        backend=backend,
        created=now_iso(),
        hyperparameters=hyperparameter_strings(hyperparameters or {}),
        model=model,
        channels={name: str(path) for name, path in (channels or {}).items()},
        job_dir=str(job_dir),
        model_dir=str(job_dir / MODEL_DIR),
        checkpoint_dir=str(job_dir / "checkpoints"),
        log_file=str(job_dir / LOG_FILE),
    )


def read_job(job_dir: Path | str) -> JobRecord:
    """The record in job_dir's job.json (JobError when it is missing or not a job record)."""
    path = Path(job_dir) / JOB_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise JobError(f"no job record {path}") from None
    except (OSError, ValueError) as e:
        raise JobError(f"cannot read job record {path}: {e}") from None
    if not isinstance(data, dict):
        raise JobError(f"cannot read job record {path}: not a json object")
    wrong = _wrong_types(data)
    if wrong:
        raise JobError(f"cannot read job record {path}: {'; '.join(wrong)}; correct the file or remove the job's folder")
    return JobRecord.from_json(data)


def _wrong_types(data: dict[str, Any]) -> list[str]:
    """The fields of a job.json object whose value is not of the field's type (an int is a float too)."""
    import types
    import typing

    hints = typing.get_type_hints(JobRecord)
    wrong = []
    for f in fields(JobRecord):
        if f.name == "extra" or f.name not in data:
            continue
        hint = hints[f.name]
        kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        allowed = tuple(typing.get_origin(k) or k for k in kinds) + ((int,) if float in kinds else ())
        value = data[f.name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            wrong.append(f"{f.name} is {json.dumps(value)}, not {f.type}")
    return wrong


def write_job(job_dir: Path | str, record: JobRecord) -> None:
    """Write job.json atomically (temp file in the same folder + os.replace)."""
    from odorch.converters.fsutil import atomic_write_json

    atomic_write_json(Path(job_dir) / JOB_FILE, record.to_json(), indent=2, default=str)


def list_jobs(runs_dir: Path | str, *, refresh: bool = True) -> list[JobRecord]:
    """Every job under runs_dir (folders holding a job.json), oldest first. Stale InProgress
    records are refreshed (and rewritten) unless refresh=False. An unreadable job.json gives a
    record with status "Unreadable" and the error as failure_reason instead of disappearing."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    records = []
    for job_dir in sorted(p for p in runs_dir.iterdir() if (p / JOB_FILE).is_file()):
        try:
            record = read_job(job_dir)
        except JobError as e:
            record = JobRecord(job_name=job_dir.name, status="Unreadable", failure_reason=str(e), job_dir=str(job_dir))
        else:
            if refresh:
                record = refresh_status(record, job_dir=job_dir)
        records.append(record)
    records.sort(key=lambda r: (r.created, r.job_name))
    return records


def find_job(runs_dir: Path | str, job_name: str) -> Path:
    """The folder of job_name, or a JobError that lists the known jobs."""
    job_dir = Path(runs_dir) / job_name
    if (job_dir / JOB_FILE).is_file():
        return job_dir
    known = sorted(r.job_name for r in list_jobs(runs_dir, refresh=False))
    listed = ", ".join(known) if known else "none"
    raise JobError(f"no job {job_name!r} in {runs_dir}; known jobs: {listed}")


# ---------------------------------------------------------------- processes


def process_start(pid: int) -> str | None:
    """The kernel's start time of pid (Linux /proc), to tell a reused pid from ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    """True while pid runs (a zombie counts as gone); with start, also the same process."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): os.kill is all we know
    fields = stat[stat.rfind(")") + 2:].split()
    if fields and fields[0] in ("Z", "X"):
        return False
    if start is not None and len(fields) > 19 and fields[19] != start:
        return False
    return True


def finish_timings(record: JobRecord, ended: float | None = None) -> None:
    ended = time.time() if ended is None else ended
    record.ended = iso_from_unix(ended)
    started = parse_iso(record.started)
    record.duration_s = round(max(0.0, ended - started.timestamp()), 1) if started else None


def refresh_status(record: JobRecord, *, job_dir: Path | str | None = None, save: bool = True) -> JobRecord:
    """A record left InProgress whose process is gone is rewritten as Failed, so no job stays
    stuck InProgress. Local jobs only (a SageMaker record is refreshed from SageMaker).

    Gone means: the entrypoint's pid is dead (or reused by another process); or no entrypoint
    was started and the odorch process that was starting it is dead. Returns the record (changed
    in place) and saves it to job_dir (default: record.job_dir) when it changed and save."""
    if record.status != "InProgress" or record.backend != "local":
        return record
    pid, start = record.pid, record.pid_start
    if pid:
        if pid_alive(pid, start):
            return record
        gone = pid
    else:
        parent = record.orchestrator_pid
        if parent and pid_alive(parent):
            return record
        gone = parent
    record.status = "Failed"
    record.failure_reason = f"the process running this job (pid {gone}) is gone"
    job_dir = Path(job_dir if job_dir is not None else record.job_dir or ".")
    log = job_dir / LOG_FILE
    finish_timings(record, log.stat().st_mtime if log.is_file() else None)
    if save:
        write_job(job_dir, record)
    return record


# ---------------------------------------------------------------- metrics


class LineMetrics(NamedTuple):
    values: dict[str, float]
    epoch: tuple[int, int | None] | None


def record_line(job_dir: Path | str, record: JobRecord, text: str, *,
                sink: Callable[[dict[str, Any]], None] | None = None) -> LineMetrics:
    """The one path from a job's log line to its metrics, for every backend: the metrics the line
    holds are appended to metrics.jsonl, given to `sink` (a tracker's log: TensorBoard, MLflow)
    and folded into the record. A line of the built-in algorithm carries no epoch total: the
    record's is kept."""
    values = parse_metrics(text)
    epoch = parse_epoch(text)
    if epoch is not None and epoch[1] is None:
        epoch = (epoch[0], record.epochs)
    if values:
        entry = append_metrics(job_dir, values, epoch[0] if epoch else None)
        if sink is not None:
            sink(entry)
        update_from_metrics(record, values, epoch)
    return LineMetrics(values, epoch)



def append_metrics(job_dir: Path | str, line_metrics: dict[str, float], epoch: int | None) -> dict[str, Any]:
    """Append one json line {"time", "epoch", "metrics"} to metrics.jsonl (nan/inf as null)."""
    entry = {
        "time": time.time(),
        "epoch": epoch,
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in line_metrics.items()},
    }
    with open(Path(job_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return entry


def read_metrics(job_dir: Path | str) -> list[dict[str, Any]]:
    """Every entry of metrics.jsonl, in order; a torn last line (killed writer) is skipped."""
    path = Path(job_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def update_from_metrics(record: JobRecord, line_metrics: dict[str, float], epoch: tuple[int, int] | None) -> None:
    """metrics_final (last value of each), best (max of the objective and its epoch), epoch/epochs."""
    if epoch is not None:
        record.epoch, record.epochs = epoch
    for name, value in line_metrics.items():
        record.metrics_final[name] = value if math.isfinite(value) else None
    value = line_metrics.get(OBJECTIVE)
    if value is not None and math.isfinite(value):
        best = record.best
        if best.get(OBJECTIVE) is None or value > best[OBJECTIVE]:
            best[OBJECTIVE] = value
            best["epoch"] = epoch[0] if epoch else record.epoch
