"""Run a training entrypoint locally, in a job folder laid out like a SageMaker container
(/opt/ml -> runs_dir/job_name), so the very same script runs in SageMaker.

    runs/<job>/input/config/{hyperparameters,resourceconfig,inputdataconfig}.json
    runs/<job>/input/data/<channel> -> the channel's folder (symlink)
    runs/<job>/model/  checkpoints/  output/{failure,data/}
    runs/<job>/logs.txt  metrics.jsonl  job.json
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from odorch.backends.base import JobSpec
from odorch.converters.fsutil import atomic_write_json
from odorch.errors import JobError
from odorch.runs import (
    JOB_FILE,
    LOG_FILE,
    MODEL_DIR,
    JobRecord,
    check_job_name,
    finish_timings,
    hyperparameter_strings,
    new_record,
    now_iso,
    pid_alive,
    process_start,
    read_job,
    record_line,
    refresh_status,
    write_job,
)
from odorch.runtime.metrics import OBJECTIVE
from odorch.tracking import TrackingOptions, open_tracker

HOST = "algo-1"
STOP_FILE = ".stop_requested"
FAILURE_CHARS = 1000
TERM_GRACE_S = 60.0
# after the entrypoint exits, how long to keep reading output its children may still hold open
_DRAIN_S = 5.0
# a record update for progress-only lines at most this often
_SAVE_EVERY_S = 5.0
_CHANNEL = re.compile(r"^[A-Za-z0-9\.\-_]+$")


def job_layout(job_dir: Path) -> dict[str, Path]:
    return {
        "input": job_dir / "input",
        "config": job_dir / "input" / "config",
        "data": job_dir / "input" / "data",
        "model": job_dir / MODEL_DIR,
        "checkpoints": job_dir / "checkpoints",
        "output": job_dir / "output",
        "output_data": job_dir / "output" / "data",
        "failure": job_dir / "output" / "failure",
    }


def prepare_job_dir(job_dir: Path, channels: dict[str, Path], hyperparameters: dict[str, Any]) -> dict[str, Path]:
    """Create (or refresh, on a re-run) the SageMaker-like folder. model/ and checkpoints/ are kept."""
    paths = job_layout(job_dir)
    for key in ("config", "data", "model", "checkpoints", "output_data"):
        paths[key].mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths["config"] / "hyperparameters.json", hyperparameter_strings(hyperparameters), indent=2)
    atomic_write_json(paths["config"] / "resourceconfig.json", {"current_host": HOST, "hosts": [HOST]}, indent=2)
    atomic_write_json(
        paths["config"] / "inputdataconfig.json",
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
         for name in channels},
        indent=2,
    )
    for link in paths["data"].iterdir():  # channels of an earlier attempt that are gone now
        if link.is_symlink() and link.name not in channels:
            link.unlink()
    for name, target in channels.items():
        link = paths["data"] / name
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            raise JobError(f"{link} is a real folder, not a channel link; remove it or pick another --job-name")
        link.symlink_to(target, target_is_directory=target.is_dir())
    paths["failure"].unlink(missing_ok=True)  # the reason of an earlier attempt
    return paths


def job_env(job_dir: Path, channels: dict[str, Path], hyperparameters: dict[str, Any], *, num_gpus: int,
            extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ plus the SM_* variables the SageMaker training toolkit sets."""
    paths = job_layout(job_dir)
    env = dict(os.environ)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    env.update({
        "SM_MODEL_DIR": str(paths["model"]),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps(hyperparameters, default=str),
        "SM_INPUT_DIR": str(paths["input"]),
        "SM_INPUT_CONFIG_DIR": str(paths["config"]),
        "SM_INPUT_DATA_CONFIG": (paths["config"] / "inputdataconfig.json").read_text().strip(),
        "SM_RESOURCE_CONFIG": json.dumps({"current_host": HOST, "hosts": [HOST]}),
        "SM_OUTPUT_DIR": str(paths["output"]),
        "SM_OUTPUT_DATA_DIR": str(paths["output_data"]),
        "SM_NUM_GPUS": str(num_gpus),
        "SM_NUM_CPUS": str(cpus),
        "SM_HOSTS": json.dumps([HOST]),
        "SM_CURRENT_HOST": HOST,
        "ODORCH_CHECKPOINT_DIR": str(paths["checkpoints"]),
        "PYTHONUNBUFFERED": "1",
    })
    for name in channels:
        env[f"SM_CHANNEL_{name.upper()}"] = str(paths["data"] / name)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(extra_env or {})
    return env


def _start_record(job_dir: Path, *, job_name: str, model: str, hyperparameters: dict[str, Any],
                  channels: dict[str, Path]) -> JobRecord:
    """A new record, or the earlier attempt's record reset for a re-run (JobError if Completed/running)."""
    if (job_dir / JOB_FILE).exists():
        record = refresh_status(read_job(job_dir), job_dir=job_dir)
        status = record.status
        if status == "Completed":
            raise JobError(
                f"job {job_name!r} already completed ({job_dir}); pick another --job-name "
                f"(or delete {job_dir} to train it again from scratch)"
            )
        if status == "InProgress":
            raise JobError(f"job {job_name!r} is still running (pid {record.pid or record.orchestrator_pid}); "
                           "stop it first or pick another --job-name")
        record = replace(record, status="InProgress", failure_reason=None, stop_reason=None, started=None, ended=None,
                         duration_s=None, pid=None, pid_start=None, exit_code=None, model=model,
                         hyperparameters=hyperparameter_strings(hyperparameters),
                         channels={n: str(p) for n, p in channels.items()})
    elif job_dir.exists() and any(job_dir.iterdir()):
        raise JobError(f"{job_dir} exists and is not an odorch job folder; pick another --job-name or --runs-dir")
    else:
        record = new_record(job_name=job_name, backend="local", job_dir=job_dir, model=model,
                            hyperparameters=hyperparameters, channels=channels)
    record.attempts += 1
    record.orchestrator_pid = os.getpid()
    return record


def _reader(stream: Any, lines: queue.Queue) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode("utf-8", errors="replace"))
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


class _Console:
    """Echo lines with a rich progress bar driven by train:progress; silent when echo is off."""

    def __init__(self, job_name: str, echo: bool) -> None:
        self.job_name = job_name
        self.progress = None
        if echo:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=Console(), transient=False,
            )
            self.task = self.progress.add_task(job_name, total=100.0)
            self.progress.start()

    def line(self, text: str, *, show: bool) -> None:
        if self.progress is not None and show:
            self.progress.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def update(self, record: JobRecord, progress: float | None) -> None:
        if self.progress is None:
            return
        desc = self.job_name
        if record.epoch is not None:
            desc += f" epoch {record.epoch}/{record.epochs}"
        best = record.best_value
        if best is not None:
            desc += f" best {OBJECTIVE} {best:.4f}"
        kwargs: dict[str, Any] = {"description": desc}
        if progress is not None:
            kwargs["completed"] = max(0.0, min(100.0, progress))
        self.progress.update(self.task, **kwargs)

    def close(self, message: str) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress.console.print(message, markup=False, highlight=False, soft_wrap=True)


def _terminate(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the entrypoint (it checkpoints and exits), SIGKILL its process group after grace_s."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace_s)
        return
    except subprocess.TimeoutExpired:
        pass
    except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _failure_reason(job_dir: Path, exit_code: int, tail: deque[str]) -> str:
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"killed by {name}" + (" (out of memory?)" if exit_code == -signal.SIGKILL else "")
    failure = job_layout(job_dir)["failure"]
    if failure.is_file():
        text = failure.read_text(errors="replace").strip()
        if text:
            return text[:FAILURE_CHARS]
    last = next((t.strip() for t in reversed(tail) if t.strip()), None)
    if last is None:
        return f"exit code {exit_code}, nothing printed"
    return f"{last[:FAILURE_CHARS]} (exit code {exit_code})"


def run_local_job(
    *,
    job_name: str,
    runs_dir: Path,
    entrypoint: Path,
    channels: dict[str, Path],
    hyperparameters: dict[str, Any],
    model: str = "",
    num_gpus: int = 0,
    echo: bool = True,
    extra_env: dict[str, str] | None = None,
    container: Callable[[Path, dict[str, Path], dict[str, Any], int], list[str]] | None = None,
    tracking: TrackingOptions | None = None,
) -> JobRecord:
    """Run `python entrypoint` in runs_dir/job_name/ and return the final job record.

    Every metric record also goes to TensorBoard and, with tracking.mlflow_uri, MLflow (odorch.tracking).

    With `container` (backends.docker), the command it gives for (job folder, channels,
    hyperparameters, GPUs) runs instead, with the environment of this process.

    Raises JobError (a ValueError) before anything runs for a bad name, a missing entrypoint or
    channel, a Completed job of the same name, or one still running. On Ctrl-C the entrypoint gets
    SIGTERM (SIGKILL after 60 s), the record says Stopped, and KeyboardInterrupt is re-raised.
    """
    check_job_name(job_name)
    entrypoint = Path(entrypoint).absolute()
    if not entrypoint.is_file():
        raise JobError(f"entrypoint {entrypoint} not found")
    abs_channels: dict[str, Path] = {}
    for name, path in channels.items():
        if not _CHANNEL.match(name):
            raise JobError(f"bad channel name {name!r}: use letters, digits, '.', '-', '_'")
        path = Path(path).absolute()
        if not path.exists():
            raise JobError(f"channel {name!r}: {path} not found")
        abs_channels[name] = path
    runs_dir = Path(runs_dir)
    job_dir = (runs_dir / job_name).absolute()
    record = _start_record(job_dir, job_name=job_name, model=model, hyperparameters=hyperparameters,
                           channels=abs_channels)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / STOP_FILE).unlink(missing_ok=True)
    write_job(job_dir, record)
    try:
        prepare_job_dir(job_dir, abs_channels, hyperparameters)
        env = job_env(job_dir, abs_channels, hyperparameters, num_gpus=num_gpus, extra_env=extra_env)
        tracker = open_tracker(job_dir, record, tracking, echo=lambda text: print(text, file=sys.stderr))
    except BaseException as e:
        record.status = "Failed"
        record.failure_reason = f"could not prepare the job folder: {e}"
        finish_timings(record)
        write_job(job_dir, record)
        raise
    if container is None:
        command = [sys.executable, str(entrypoint)]
    else:
        command = container(job_dir, abs_channels, hyperparameters, num_gpus)
        env = dict(os.environ)  # the job's SM_* are given to the container, not to the docker client
    log = open(job_dir / LOG_FILE, "a", encoding="utf-8")
    if record.attempts > 1:
        log.write(f"===== odorch: attempt {record.attempts} of job {job_name}, {now_iso()} =====\n")
        log.flush()
    console = _Console(job_name, echo)
    tail: deque[str] = deque(maxlen=20)
    proc: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    interrupted = False
    try:
        record.started = now_iso()
        started = time.time()
        try:
            # own process group: a terminal Ctrl-C reaches odorch only, which then sends SIGTERM
            group: dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
            proc = subprocess.Popen(command, cwd=job_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **group)
        except OSError as e:
            record.status = "Failed"
            record.failure_reason = f"could not start {command}: {e}"
            finish_timings(record)
            write_job(job_dir, record)
            raise JobError(record.failure_reason) from e
        record.pid = proc.pid
        record.pid_start = process_start(proc.pid)
        record.extra["command"] = command
        write_job(job_dir, record)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
        reader.start()
        last_save = time.time()
        exited_at: float | None = None
        try:
            while True:
                try:
                    raw = lines.get(timeout=0.2)
                except queue.Empty:
                    if exited_at is None and proc.poll() is not None:
                        exited_at = time.time()
                    if exited_at is not None and time.time() - exited_at > _DRAIN_S:
                        break  # a child of the entrypoint still holds the pipe open
                    continue
                if raw is None:
                    break
                log.write(raw if raw.endswith("\n") else raw + "\n")
                log.flush()
                changed = False  # an epoch or a metric other than train:progress
                progress = None
                for text in raw.rstrip("\r\n").split("\r"):  # a tqdm-style line holds several
                    if not text.strip():
                        continue
                    tail.append(text)
                    values, epoch = record_line(job_dir, record, text, sink=tracker.log)
                    progress = values.get("train:progress", progress)
                    only_progress = set(values) == {"train:progress"} and epoch is None
                    changed = changed or (bool(values) and not only_progress) or epoch is not None
                    console.line(text, show=not only_progress)  # the bar shows progress lines
                if progress is not None or changed:
                    console.update(record, progress)
                if changed or (progress is not None and time.time() - last_save > _SAVE_EVERY_S):
                    write_job(job_dir, record)
                    last_save = time.time()
        except KeyboardInterrupt:
            interrupted = True
            record.stop_reason = "interrupted (Ctrl-C): SIGTERM sent to the entrypoint"
            _terminate(proc, TERM_GRACE_S)
            _drain(lines, log, deadline=time.time() + 2.0)
        exit_code = proc.wait()
        record.exit_code = exit_code
        finish_timings(record)
        stop_file = job_dir / STOP_FILE
        if interrupted or stop_file.exists():
            record.status = "Stopped"
            if not interrupted:
                record.stop_reason = stop_file.read_text().strip() or "stop requested"
        elif exit_code == 0:
            record.status = "Completed"
        else:
            record.status = "Failed"
            record.failure_reason = _failure_reason(job_dir, exit_code, tail)
        stop_file.unlink(missing_ok=True)
        write_job(job_dir, record)
        summary = f"{job_name}: {record.status}"
        if record.failure_reason:
            summary += f": {record.failure_reason}"
        if record.best_value is not None:
            summary += f" (best {OBJECTIVE} {record.best_value:.4f} at epoch {record.best['epoch']})"
        summary += f" in {time.time() - started:.0f} s; logs: {job_dir / LOG_FILE}"
        console.close(summary)
    except BaseException as e:
        # Ctrl-C outside the streaming loop, or a bug in odorch itself: never leave the child
        # running or the record InProgress
        if proc is not None and proc.poll() is None:
            _terminate(proc, TERM_GRACE_S)
        if record.status == "InProgress":
            if isinstance(e, KeyboardInterrupt):
                record.status = "Stopped"
                record.stop_reason = "interrupted (Ctrl-C)"
            else:
                record.status = "Failed"
                record.failure_reason = f"odorch failed while running the job: {type(e).__name__}: {e}"
            if proc is not None:
                record.exit_code = proc.poll()
            finish_timings(record)
            write_job(job_dir, record)
        console.close(f"{job_name}: {record.status}")
        raise
    finally:
        log.close()
        tracker.close(record, job_dir=job_dir)
        write_job(job_dir, record)
        # (not closed while the reader thread may still block on it: close() would wait for it)
        if proc is not None and proc.stdout is not None and reader is not None and not reader.is_alive():
            proc.stdout.close()
    if interrupted:
        raise KeyboardInterrupt
    return record


def _drain(lines: queue.Queue, log: Any, *, deadline: float) -> None:
    """Log what the entrypoint printed while shutting down."""
    while time.time() < deadline:
        try:
            raw = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if raw is None:
            return
        log.write(raw if raw.endswith("\n") else raw + "\n")
        log.flush()


def stop_local_job(job_dir: Path | str, *, grace_s: float = TERM_GRACE_S, reason: str = "stop requested") -> JobRecord:
    """Stop a running local job: SIGTERM its entrypoint (SIGKILL after grace_s) and mark it Stopped.

    Works from any process. When the odorch process streaming the job is alive it writes the final
    record itself (it sees the stop request); otherwise this function does. A job that is not
    InProgress is returned unchanged."""
    job_dir = Path(job_dir)
    record = refresh_status(read_job(job_dir), job_dir=job_dir)
    if record.status != "InProgress":
        return record
    (job_dir / STOP_FILE).write_text(reason + "\n")
    pid, start = record.pid, record.pid_start
    if pid and pid_alive(pid, start):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + grace_s
        while pid_alive(pid, start) and time.time() < deadline:
            time.sleep(0.05)
        if pid_alive(pid, start):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    # give the streaming odorch process a moment to write the final record itself
    owner = record.orchestrator_pid
    deadline = time.time() + 10.0
    while owner and pid_alive(owner) and time.time() < deadline:
        record = read_job(job_dir)
        if record.status != "InProgress":
            return record
        time.sleep(0.05)
    record = read_job(job_dir)
    if record.status == "InProgress":
        record.status = "Stopped"
        record.stop_reason = reason
        finish_timings(record)
        write_job(job_dir, record)
        (job_dir / STOP_FILE).unlink(missing_ok=True)
    return record


@dataclass
class LocalBackend:
    """A job as a process of this machine. `options` go to run_local_job (num_gpus, extra_env, ...)."""

    options: dict[str, Any] = field(default_factory=dict)
    name: str = "local"

    def preflight(self, spec: JobSpec) -> list[str]:
        problems = []
        try:
            check_job_name(spec.name)
        except JobError as e:
            problems.append(str(e))
        if not spec.algorithm.runs_locally:
            return problems + [f"{spec.algorithm.title} runs only on SageMaker: add --instance TYPE (e.g. ml.p3.2xlarge)"]
        if not Path(spec.data).is_dir():
            problems.append(f"--data {spec.data}: no such folder; give one written by `odorch convert`")
        return problems + spec.algorithm.check(dict(spec.hyperparameters))

    def run(self, spec: JobSpec, *, echo: Callable[[str], None] | None = None) -> JobRecord:
        data = Path(spec.data)
        return run_local_job(job_name=spec.name, runs_dir=spec.runs_dir, entrypoint=spec.algorithm.entrypoint(),
                             channels={"train": data, "validation": data}, hyperparameters=dict(spec.hyperparameters),
                             model=spec.model, echo=echo is not None, **self.options)

    def stop(self, record: JobRecord) -> JobRecord:
        return stop_local_job(record.job_dir)
