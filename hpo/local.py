"""Local hyperparameter tuning with Optuna: each trial is a local training job.

Trials run as jobs on the local backend (backends.run_job, as `odorch train` runs one), named
``tune-<study>-trial-<n>`` under runs_dir, at most
max_parallel_jobs at once (one thread each). The main thread alone talks to Optuna: it follows
every running job's metrics.jsonl, reports each validation:mAP as an intermediate value, stops a
pruned trial's job with SIGTERM (its checkpoint is kept), and tells Optuna each result.

The study lives in a SQLAlchemy storage (default sqlite:///<runs_dir>/tune-<study>/study.db).
Any number of tune processes ("workers", on one machine or several) given the same storage and
study work on one study: each starts trials while COMPLETE + PRUNED + RUNNING trials of the whole
study are fewer than max_jobs, and waits while other workers' trials run. Every worker records a
heartbeat of its running trials in the storage (Optuna's RDB heartbeat); a trial whose worker
stops beating for grace_s (kill -9, a lost machine) is failed by the next worker that looks
(optuna.storages.fail_stale_trials) and its parameters are queued again
(RetryHeartbeatStaleTrialCallback), as is one whose worker died before its first heartbeat
(fail_stale). Running the same command again continues a study.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odorch.algorithms import Algorithm, get_algorithm
from odorch.errors import OdorchError
from odorch.hpo.space import Param, grid, suggest
from odorch.runs import JOB_FILE, METRICS_FILE, JobError, JobRecord, tune_dir
from odorch.runtime.metrics import OBJECTIVE
from odorch.runtime.train import HYPERPARAMETERS
from odorch.tracking import TrackingOptions, close_study_run, for_trial, open_study_run

POLL_S = 0.2
HEARTBEAT_S = 10
GRACE_S = 60
MAX_RETRY = 3
RETRY_WAIT_S = 10  # how long a failed trial's retry is awaited before new trials are asked for


class TuneError(OdorchError, RuntimeError):
    """A tuning run that could not produce a result; the message says why."""


def tune_dir_of(runs_dir: Path, study: str) -> Path:
    return tune_dir(runs_dir, study)


def default_threads(max_parallel_jobs: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, max_parallel_jobs))


def make_sampler(name: str, space: dict[str, Param], seed: int | None = None, *, max_jobs: int = 20) -> Any:
    """TPE starts from a quarter of the budget at random (4..10 trials), not Optuna's fixed 10,
    so that a 20-trial study spends 15 trials guided rather than 10. Optuna 5's TPE is already
    multivariate and a constant liar (trials running in other workers count as bad, so parallel
    workers do not all sample the same spot)."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(4, max_jobs // 4)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    raise ValueError(f"unknown sampler {name!r}: use tpe, random or grid")


def make_pruner(name: str, *, epochs: int = 10) -> Any:
    """Successive halving, the default, keeps at epochs 1, 4, 16... the top quarter of the trials
    that reached it: with TPE it kept random search's best mAP (1.003x, 3 seeds of 20 trials in
    bench/hpo_bench.py) with 0.38x its epochs, where median pruning kept 0.987x with 0.51x.
    Median and percentile pruning start once 3 trials have finished, and never before epoch
    `epochs // 4` (epoch 1 for fewer than 8 epochs)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=epochs // 4)
    if name == "percentile":  # keeps only trials in the top quarter at the same epoch
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=epochs // 4)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}: use median, percentile, halving, hyperband or none")


def _shown(url: str) -> str:
    """The storage URL with its password masked: it goes into messages and logs."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)


def _why(error: BaseException) -> str:
    """The first line of the database driver's message, found in the chain of exceptions that
    Optuna and SQLAlchemy wrap it in."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    first = next((e.orig for e in chain if getattr(e, "orig", None) is not None), chain[-1])
    text = str(first).strip()
    return text.splitlines()[0] if text else type(first).__name__


def _lost_creation_race(error: BaseException) -> bool:
    """Whether error is another worker creating the same tables or study at the same moment
    (SQLite: "table studies already exists"; PostgreSQL: duplicate key or relation); retrying sees them."""
    import sqlalchemy

    return isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in _why(error)


def open_study(*, study: str, url: str, sampler: Any, pruner: Any, heartbeat_s: int = HEARTBEAT_S,
               grace_s: int = GRACE_S, echo: Callable[[str], None] = print) -> tuple[Any, Any]:
    """Create or load the study in Optuna's RDB storage at url, heartbeats on; (study, storage).

    A trial whose worker records no heartbeat for grace_s seconds is failed by the next worker
    that calls fail_stale_trials, and _RetryStale queues its parameters again.
    Raises TuneError (one line, password masked) for a URL or database that cannot be used.
    """
    import optuna
    import sqlalchemy

    shown = _shown(url)
    try:
        for attempt in range(1, 4):
            try:
                storage = optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                                     heartbeat_stale_trial_callback=_RetryStale(grace_s, echo))
                return optuna.create_study(study_name=study, storage=storage, direction="maximize",
                                           load_if_exists=True, sampler=sampler, pruner=pruner), storage
            except sqlalchemy.exc.DBAPIError as e:
                if attempt == 3 or not _lost_creation_race(e):
                    raise
                time.sleep(attempt)  # workers starting together race to create the tables: the loser waits
    except sqlalchemy.exc.NoSuchModuleError:
        raise TuneError(f"--storage {shown}: unknown kind of database {shown.split(':')[0]!r}: "
                        "use postgresql://USER:PASSWORD@HOST/DB, mysql+pymysql://... or sqlite:///PATH/study.db") from None
    except sqlalchemy.exc.ArgumentError:
        raise TuneError(f"--storage {shown!r} is not a SQLAlchemy URL: "
                        "use postgresql://USER:PASSWORD@HOST/DB or sqlite:///PATH/study.db") from None
    except ImportError as e:
        raise TuneError(f"--storage {shown}: its database driver is not installed ({e.__cause__ or e}): "
                        "for postgresql:// pip install 'odorch[postgres]'") from None
    except sqlalchemy.exc.DBAPIError as e:
        why = _why(e)
        if url.startswith("sqlite") and "not a database" in why:
            raise TuneError(f"--storage {shown}: the file is not an SQLite database (corrupt?): "
                            "move it away to start a new study, or give another --storage") from None
        raise TuneError(f"--storage {shown}: cannot use the database: {why}") from None
    except RuntimeError as e:  # optuna: a schema written by another Optuna version
        raise TuneError(f"--storage {shown}: {str(e).splitlines()[0]}") from None


class _RetryStale:
    """The heartbeat-stale callback: Optuna's RetryHeartbeatStaleTrialCallback queues the dead
    worker's trial again; its job, when it runs on this machine, is stopped (a worker killed with
    -9 leaves its training job running until it next writes to the closed pipe)."""

    def __init__(self, grace_s: int, echo: Callable[[str], None]) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.grace_s = grace_s
        self.echo = echo
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def __call__(self, study: Any, trial: Any) -> None:
        from odorch.backends.local import stop_local_job

        self.retry(study, trial)
        reason = f"no heartbeat from its worker for {self.grace_s} s"
        job_dir = trial.user_attrs.get("job_dir")
        if trial.user_attrs.get("host") == socket.gethostname() and job_dir and (Path(job_dir) / JOB_FILE).exists():
            threading.Thread(target=stop_local_job, args=(job_dir,), kwargs={"reason": reason}, daemon=True).start()
        self.echo(f"trial {trial.number}: {reason} (killed, or its machine lost): FAIL, "
                  f"its parameters queued again (at most {MAX_RETRY} times)")


def fail_stale(st: Any, rdb: Any, *, study_id: int, grace_s: int, echo: Callable[[str], None]) -> None:
    """Fail the trials whose worker died: Optuna's fail_stale_trials for those with a heartbeat
    (_RetryStale queues them again), and here the RUNNING ones with no job that started over
    grace_s ago (by their start time): a worker killed between asking for a trial and its first
    heartbeat leaves one that fail_stale_trials never sees, and every worker would wait on it."""
    import datetime

    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(st)
    now = datetime.datetime.now()  # Optuna stamps datetime_start with the asking machine's local clock
    for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "job_dir" in t.user_attrs or t.datetime_start is None or (now - t.datetime_start).total_seconds() < grace_s:
            continue
        reason = f"its worker stopped within {grace_s} s of asking for it, before starting a job"
        try:
            rdb.set_trial_user_attr(rdb.get_trial_id_from_study_id_trial_number(study_id, t.number), "fail_reason", reason)
            st.tell(t.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError, RuntimeError):  # another worker failed it first
            continue
        if t.params:
            st.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
        echo(f"trial {t.number}: {reason}: FAIL" + (", its parameters queued again" if t.params else ""))


class _Heartbeat:
    """Records a heartbeat of each of this worker's running trials every interval, from its own
    thread: a slow ask, tell or database in the main loop must not make them look stale."""

    def __init__(self, storage: Any, interval_s: float) -> None:
        self.storage = storage
        self.interval_s = interval_s
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="odorch-heartbeat", daemon=True)
        self.thread.start()

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        with self.lock:
            self.trial_ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        import optuna
        import sqlalchemy

        while not self.stopped.wait(self.interval_s):
            with self.lock:
                trial_ids = list(self.trial_ids)
            for trial_id in trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
                    pass  # the database is unreachable for now (optuna wraps the driver's error): the next beat tries again


class _Running:
    def __init__(self, trial: Any, params: dict[str, Any], job_name: str, job_dir: Path, slot: int) -> None:
        self.trial = trial
        self.params = params
        self.job_name = job_name
        self.job_dir = job_dir
        self.slot = slot
        self.thread: threading.Thread | None = None
        self.record: JobRecord | None = None
        self.error: BaseException | None = None
        self.read_bytes = 0
        self.reported: dict[int, float] = {}
        self.pruned_at: int | None = None
        self.lost = False  # another worker failed the trial (our heartbeat came too late)
        self.trial_id: int | None = None
        self.started = time.time()

    def new_maps(self) -> list[tuple[int, float]]:
        """(epoch, validation:mAP) lines appended to metrics.jsonl since the last call."""
        path = self.job_dir / METRICS_FILE
        try:
            with open(path, "rb") as f:
                f.seek(self.read_bytes)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.read_bytes += end + 1
        out = []
        for line in chunk[: end + 1].decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            value = (entry.get("metrics") or {}).get(OBJECTIVE)
            if value is None:
                continue
            step = entry.get("epoch") or (len(self.reported) + 1)
            out.append((int(step), float(value)))
        return out


def _fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _retry_of(trial: Any) -> int | None:
    """The trial this one runs again: after a dead worker (Optuna's retry history) or a Ctrl-C."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        history = RetryHeartbeatStaleTrialCallback.retry_history(trial)
    return history[-1] if history else trial.user_attrs.get("retry_of")


def retries_due(trials: list[Any]) -> int:
    """Trials failed in the last RETRY_WAIT_S seconds by something other than their own job's end
    (a stale heartbeat, a worker that died before its job, Ctrl-C), whose retry is not queued yet.
    The worker failing them queues them a moment later (Optuna fails a stale trial, then its
    callback queues it): a worker asking for a trial in between would run a new one instead, and
    the study would end with the retry left waiting."""
    import datetime

    from optuna.trial import TrialState

    now = datetime.datetime.now()  # Optuna stamps datetime_complete with the failing machine's local clock
    failed = [t for t in trials if t.state == TrialState.FAIL and "job_status" not in t.user_attrs
              and t.datetime_complete is not None and 0 <= (now - t.datetime_complete).total_seconds() < RETRY_WAIT_S]
    if not failed:  # every poll: look up retries only when one may be missing
        return 0
    retried = {_retry_of(t) for t in trials}
    return sum(1 for t in failed if t.number not in retried)


def trial_dicts(study: Any) -> list[dict[str, Any]]:
    """The finished trials of the study (of all its workers) as write_summary takes them."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        values = list(t.intermediate_values.values())
        best = t.value if t.state == TrialState.COMPLETE else (max(values) if values else None)
        duration = t.duration.total_seconds() if t.duration is not None else None
        out.append({
            "number": t.number,
            "params": dict(t.params),
            "best_map": best,
            "epochs": t.user_attrs.get("epochs", len(values) or None),
            "state": t.state.name,
            "duration_s": None if duration is None else round(duration, 1),
            "cost_usd": None,
            "job": t.user_attrs.get("job"),
            "job_dir": t.user_attrs.get("job_dir"),
            "fail_reason": t.user_attrs.get("fail_reason") or (
                "no heartbeat from its worker (killed, or its machine lost)" if t.state == TrialState.FAIL else None),
            "retry_of": _retry_of(t),
            "host": t.user_attrs.get("host"),
        })
    return out


def run_local_tuning(
    *,
    data: Path,
    model: str,
    space: dict[str, Param],
    fixed: dict[str, Any],
    study: str,
    max_jobs: int,
    max_parallel_jobs: int = 1,
    sampler: str = "tpe",
    pruner: str | Any = "halving",
    storage: str | None = None,
    runs_dir: Path = Path("runs"),
    algorithm: Algorithm | None = None,
    seed: int | None = None,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
    echo: Callable[[str], None] = print,
    tracking: TrackingOptions | None = None,
) -> dict:
    """Run (or continue) the study until COMPLETE + PRUNED trials of all its workers reach max_jobs;
    return the summary. Each trial is a JobSpec of `algorithm` (default: odorch's entrypoint) run
    on the local backend.

    Raises TuneError when the storage cannot be used, or when no trial of the study succeeded
    (with the most common failure reason).
    """
    import optuna
    import sqlalchemy
    from optuna.trial import TrialState

    from odorch.backends import JobSpec, run_job
    from odorch.backends.local import LocalBackend, stop_local_job
    from odorch.hpo.summary import write_summary

    if max_parallel_jobs > max_jobs:
        raise ValueError(f"max_parallel_jobs ({max_parallel_jobs}) is more than max_jobs ({max_jobs})")
    runs_dir = Path(runs_dir)
    tune_dir = tune_dir_of(runs_dir, study)
    tune_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(tune_dir / 'study.db').absolute()}"
    algorithm = get_algorithm(algorithm or "pytorch")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its warnings on a lost database carry tracebacks
    epochs = int(fixed.get("epochs", HYPERPARAMETERS["epochs"][1]))
    pruner_obj = make_pruner(pruner, epochs=epochs) if isinstance(pruner, str) else pruner
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat, retry
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    st, rdb = open_study(study=study, url=storage, sampler=make_sampler(sampler, space, seed, max_jobs=max_jobs),
                         pruner=pruner_obj, heartbeat_s=heartbeat_s, grace_s=grace_s, echo=echo)
    study_id = rdb.get_study_id_from_name(study)
    fail_stale(st, rdb, study_id=study_id, grace_s=grace_s, echo=echo)
    # MLflow: the study is a parent run (kept in the study, so every worker and re-run shares it)
    parent = open_study_run(tracking, study=study, params={**fixed, "model": model, "sampler": sampler, "max_jobs": max_jobs},
                            previous=st.user_attrs.get("mlflow"), echo=echo)
    if parent:
        st.set_user_attr("mlflow", parent)
    parent_run_id = parent["run_id"] if parent else None

    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch, no GPUs
        gpus = 0
    threads = default_threads(max_parallel_jobs)
    host = socket.gethostname()
    finished = (TrialState.COMPLETE, TrialState.PRUNED)

    def counts() -> tuple[int, int]:
        """(COMPLETE + PRUNED, RUNNING + retries about to be queued) trials of the study, every worker's."""
        trials = st.get_trials(deepcopy=False)
        states = Counter(t.state for t in trials)
        return states[TrialState.COMPLETE] + states[TrialState.PRUNED], states[TrialState.RUNNING] + retries_due(trials)

    def done() -> int:
        return counts()[0]

    already, elsewhere = counts()
    if already or elsewhere:
        echo(f"study {study}: continuing with {already} of {max_jobs} trial(s) finished, {elsewhere} running "
             f"({_shown(storage)})")
    running: list[_Running] = []
    failures_this_run = 0
    heartbeat = _Heartbeat(rdb, heartbeat_s)

    def surplus(number: int) -> bool:
        """Whether trial `number` would exceed max_jobs: another worker asked at the same moment
        (the trial with the lower number goes on)."""
        ahead = [t for t in st.get_trials(deepcopy=False, states=(*finished, TrialState.RUNNING))
                 if t.state != TrialState.RUNNING or t.number < number]
        return len(ahead) >= max_jobs

    def start_trial(slot: int) -> None:
        trial = st.ask()
        trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        heartbeat.add(trial_id)
        params = suggest(trial, space)
        if surplus(trial.number):
            heartbeat.remove(trial_id)
            retry_of = _retry_of(rdb.get_trial(trial_id))
            trial.set_user_attr("fail_reason", "not run: max_jobs trials were already finished or running")
            st.tell(trial, state=TrialState.FAIL)
            if retry_of is not None:  # a dead worker's trial: queue it again for the next free slot
                st.enqueue_trial(params, user_attrs={"retry_of": retry_of})
            return
        job_name = f"{tune_dir_of(Path(), study).name}-trial-{trial.number}"
        job_dir = (runs_dir / job_name).absolute()
        for key, value in {"host": host, "worker_pid": os.getpid(), "job": job_name, "job_dir": str(job_dir)}.items():
            trial.set_user_attr(key, value)
        hp = {**{k: str(v) for k, v in fixed.items()}, **params, "model": model}
        hp.setdefault("num_threads", threads)
        extra_env: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
        if gpus:
            extra_env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        r = _Running(trial, params, job_name, job_dir, slot)
        r.trial_id = trial_id

        def work() -> None:
            try:
                spec = JobSpec(name=job_name, runs_dir=runs_dir, data=Path(data), model=model, hyperparameters=hp,
                               algorithm=algorithm)
                tracked = for_trial(tracking, tune_dir=tune_dir, job_name=job_name, parent_run_id=parent_run_id)
                backend = LocalBackend(options={"num_gpus": 1 if gpus else 0, "extra_env": extra_env, "tracking": tracked})
                r.record = run_job(spec, backend)
            except BaseException as e:  # noqa: BLE001 - reported as the trial's failure
                r.error = e

        r.thread = threading.Thread(target=work, name=job_name, daemon=True)
        running.append(r)
        echo(f"trial {trial.number} started: {job_name} {_fmt_params(params)}")
        r.thread.start()

    def report(r: _Running) -> None:
        for step, value in r.new_maps():
            if step in r.reported or r.pruned_at is not None:
                continue
            r.reported[step] = value
            try:
                r.trial.report(value, step)
            except optuna.exceptions.UpdateFinishedTrialError:
                lose(r)
                return
            if r.trial.should_prune():
                r.pruned_at = step
                echo(f"trial {r.trial.number} pruned at epoch {step} ({OBJECTIVE} {value:.4f}): stopping {r.job_name}")
                threading.Thread(target=stop_local_job, args=(r.job_dir,),
                                 kwargs={"reason": f"pruned by optuna at epoch {step}"}, daemon=True).start()

    def lose(r: _Running) -> None:
        """Another worker failed r's trial as stale (and queued it again): stop its job, keep no result."""
        if not r.lost:
            r.lost = True
            echo(f"trial {r.trial.number}: failed by another worker (no heartbeat from here for {grace_s} s): "
                 f"stopping {r.job_name}; the trial runs again as a retry")
            threading.Thread(target=stop_local_job, args=(r.job_dir,),
                             kwargs={"reason": "failed by another worker: heartbeat late"}, daemon=True).start()

    def finish(r: _Running) -> None:
        heartbeat.remove(r.trial_id)
        report(r)
        if r.lost:
            return
        try:
            tell(r)
        except optuna.exceptions.UpdateFinishedTrialError:
            lose(r)

    def tell(r: _Running) -> None:
        nonlocal failures_this_run
        record = r.record or JobRecord(job_name=r.job_name)  # run_job raised: r.error says why
        status = record.status if r.record else None
        best = record.best_value
        r.trial.set_user_attr("epochs", record.epoch)
        r.trial.set_user_attr("job_status", status)
        took = time.time() - r.started
        if r.pruned_at is not None and status in ("Stopped", "Completed"):
            st.tell(r.trial, state=TrialState.PRUNED)
            state, note = "PRUNED", f"at epoch {r.pruned_at}"
        elif status == "Completed" and best is not None:
            st.tell(r.trial, best)
            state, note = "COMPLETE", ""
        else:
            if r.error is not None:
                reason = f"{type(r.error).__name__}: {r.error}" if not isinstance(r.error, JobError) else str(r.error)
            elif status == "Completed":
                reason = f"the job reported no {OBJECTIVE}"
            else:
                reason = record.failure_reason or record.stop_reason or f"job {status}"
            r.trial.set_user_attr("fail_reason", reason)
            st.tell(r.trial, state=TrialState.FAIL)
            failures_this_run += 1
            state, note = "FAIL", reason
        shown = f" {OBJECTIVE} {best:.4f}" if best is not None else ""
        echo(f"trial {r.trial.number} {state}{shown} epochs {record.epoch or 0} in {took:.0f} s"
             + (f": {note}" if note else "") + f"  [{done()}/{max_jobs} done]")

    next_stale_check = time.time() + heartbeat_s
    waiting_said = False
    try:
        while True:
            for r in [r for r in running if not r.thread.is_alive()]:
                running.remove(r)
                finish(r)
            for r in running:
                report(r)
            if time.time() >= next_stale_check:  # a dead worker's trial: FAIL, queued again
                fail_stale(st, rdb, study_id=study_id, grace_s=grace_s, echo=echo)
                next_stale_check = time.time() + heartbeat_s
            # launch: enough trials to reach max_jobs if all running ones (every worker's) succeed;
            # give up after max_jobs failures here
            n_done, n_running = counts()
            need = max_jobs - n_done - n_running
            if failures_this_run >= max_jobs:
                need = 0
            free = [s for s in range(max_parallel_jobs) if s not in {r.slot for r in running}]
            for slot in free[: max(0, need)]:
                start_trial(slot)
            if not running:
                if n_done >= max_jobs or failures_this_run >= max_jobs:
                    break
                if n_running and not waiting_said:  # they may fail, or their worker die: then a retry runs here
                    echo(f"waiting for {n_running} trial(s) of other workers ({n_done}/{max_jobs} done; "
                         f"a dead worker's trial is retried {grace_s} s after its last heartbeat)")
                waiting_said = bool(n_running)
            else:
                waiting_said = False
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        echo("interrupted: stopping the running trials (their checkpoints are kept)")
        for r in running:
            try:
                stop_local_job(r.job_dir, grace_s=30.0, reason="tuning interrupted (Ctrl-C)")
            except JobError:
                pass
        for r in running:
            if r.thread is not None:
                r.thread.join(timeout=35.0)
            heartbeat.remove(r.trial_id)
            r.trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            st.tell(r.trial, state=TrialState.FAIL)
            st.enqueue_trial(dict(r.params), user_attrs={"retry_of": r.trial.number})
        close_study_run(tracking, parent_run_id, tune_dir=tune_dir, best=None, status="KILLED", echo=echo)
        raise
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:  # the database went away
        for r in running:
            try:
                stop_local_job(r.job_dir, grace_s=30.0, reason="tuning stopped: the study's database failed")
            except JobError:
                pass
        close_study_run(tracking, parent_run_id, tune_dir=tune_dir, best=None, status="FAILED", echo=echo)
        raise TuneError(f"--storage {_shown(storage)}: the database failed mid-study ({_why(e)}); the running "
                        "trials were stopped and other workers retry them: run the same command to continue") from None
    finally:
        heartbeat.stop()

    trials = trial_dicts(st)
    summary = write_summary(tune_dir, trials, engine="local", study=study)
    succeeded = any(t["state"] in ("COMPLETE", "PRUNED") for t in trials)
    close_study_run(tracking, parent_run_id, tune_dir=tune_dir, best=(summary.get("best") or {}).get("best_map"),
                    status="FINISHED" if succeeded else "FAILED", echo=echo)
    if not succeeded:
        reasons = Counter(t.get("fail_reason") or "unknown" for t in trials if t["state"] == "FAIL")
        common = reasons.most_common(1)[0][0] if reasons else "no trial ran"
        raise TuneError(f"all {sum(reasons.values())} trial(s) failed: {common}")
    return summary
