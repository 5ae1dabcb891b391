"""Local hyperparameter tuning with Optuna: each trial is a local training job.

Trials run as `run_local_job` jobs named ``tune-<study>-trial-<n>`` under runs_dir, at most
max_parallel_jobs at once (one thread each). The main thread alone talks to Optuna: it follows
every running job's metrics.jsonl, reports each validation:mAP as an intermediate value, stops a
pruned trial's job with SIGTERM (its checkpoint is kept), and tells Optuna each result.

The study lives in a SQLAlchemy storage (default sqlite:///<runs_dir>/tune-<study>/study.db);
running the same command again continues it: trials left RUNNING by a dead tune process become
FAIL and their parameters are enqueued again, until COMPLETE + PRUNED trials reach max_jobs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from odorch.runtime.metrics import OBJECTIVE
from odorch.runtime.train import HYPERPARAMETERS
from odorch.hpo.space import Param, grid, suggest
from odorch.jobs import METRICS_FILE, JobError, pid_alive, process_start

POLL_S = 0.2


class TuneError(RuntimeError):
    """A tuning run that could not produce a result; the message says why."""


def tune_dir_of(runs_dir: Path, study: str) -> Path:
    return Path(runs_dir) / f"tune-{study}"


def default_threads(max_parallel_jobs: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, max_parallel_jobs))


def make_sampler(name: str, space: dict[str, Param], seed: int | None = None, *, max_jobs: int = 20) -> Any:
    """TPE starts from a quarter of the budget at random (4..10 trials), not Optuna's fixed 10,
    so that a 20-trial study spends 15 trials guided rather than 10."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(4, max_jobs // 4)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    raise ValueError(f"unknown sampler {name!r}: use tpe, random or grid")


def make_pruner(name: str, *, epochs: int = 10) -> Any:
    """Median pruning starts once 3 trials have finished, and never before epoch `epochs // 4`
    (epoch 1 for fewer than 8 epochs): pruning on the first epochs of a long run stops trials
    that would have won. Measured in bench/hpo_bench.py with 6-epoch trials."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=epochs // 4)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}: use median, hyperband or none")


def _recover(study: Any, echo: Callable[[str], None]) -> None:
    """RUNNING trials whose owner process is gone: FAIL, stop their job, enqueue their params again."""
    from optuna.trial import TrialState

    from odorch.local import stop_local_job

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner, start = t.user_attrs.get("owner_pid"), t.user_attrs.get("owner_start")
        if owner and pid_alive(owner, start):
            continue  # another tune process is running it
        reason = f"interrupted: the tune process (pid {owner}) died"
        job_dir = t.user_attrs.get("job_dir")
        if job_dir and (Path(job_dir) / "job.json").exists():
            try:
                stop_local_job(job_dir, grace_s=10.0, reason=reason)
            except JobError:
                pass
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
        echo(f"trial {t.number}: {reason}; marked FAIL, its parameters queued again")


class _Running:
    def __init__(self, trial: Any, params: dict[str, Any], job_name: str, job_dir: Path, slot: int) -> None:
        self.trial = trial
        self.params = params
        self.job_name = job_name
        self.job_dir = job_dir
        self.slot = slot
        self.thread: threading.Thread | None = None
        self.record: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.read_bytes = 0
        self.reported: dict[int, float] = {}
        self.pruned_at: int | None = None
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


def trial_dicts(study: Any) -> list[dict[str, Any]]:
    """The finished trials of the study as write_summary takes them."""
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
            "fail_reason": t.user_attrs.get("fail_reason"),
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
    pruner: str | Any = "median",
    storage: str | None = None,
    runs_dir: Path = Path("runs"),
    entrypoint: Path | None = None,
    seed: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run (or continue) the study until COMPLETE + PRUNED trials reach max_jobs; return the summary.

    Raises TuneError when no trial of the study succeeded (with the most common failure reason).
    """
    import optuna
    from optuna.trial import TrialState

    from odorch import runtime
    from odorch.hpo.summary import write_summary
    from odorch.local import run_local_job, stop_local_job

    if max_parallel_jobs > max_jobs:
        raise ValueError(f"max_parallel_jobs ({max_parallel_jobs}) is more than max_jobs ({max_jobs})")
    runs_dir = Path(runs_dir)
    tune_dir = tune_dir_of(runs_dir, study)
    tune_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(tune_dir / 'study.db').absolute()}"
    entrypoint = Path(entrypoint or Path(runtime.__file__).parent / "train.py")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = int(fixed.get("epochs", HYPERPARAMETERS["epochs"][1]))
    pruner_obj = make_pruner(pruner, epochs=epochs) if isinstance(pruner, str) else pruner
    st = optuna.create_study(study_name=study, storage=storage, direction="maximize", load_if_exists=True,
                             sampler=make_sampler(sampler, space, seed, max_jobs=max_jobs), pruner=pruner_obj)
    _recover(st, echo)

    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch, no GPUs
        gpus = 0
    threads = default_threads(max_parallel_jobs)
    me, me_start = os.getpid(), process_start(os.getpid())

    def done() -> int:
        return len(st.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    already = done()
    if already:
        echo(f"study {study}: continuing with {already} of {max_jobs} trial(s) finished ({storage})")
    running: list[_Running] = []
    failures_this_run = 0

    def start_trial(slot: int) -> None:
        trial = st.ask()
        params = suggest(trial, space)
        job_name = f"tune-{study}-trial-{trial.number}"
        job_dir = (runs_dir / job_name).absolute()
        for key, value in {"owner_pid": me, "owner_start": me_start, "job": job_name, "job_dir": str(job_dir)}.items():
            trial.set_user_attr(key, value)
        hp = {**{k: str(v) for k, v in fixed.items()}, **params, "model": model}
        hp.setdefault("num_threads", threads)
        extra_env: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
        if gpus:
            extra_env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        r = _Running(trial, params, job_name, job_dir, slot)

        def work() -> None:
            try:
                r.record = run_local_job(
                    job_name=job_name, runs_dir=runs_dir, entrypoint=entrypoint,
                    channels={"train": Path(data), "validation": Path(data)}, hyperparameters=hp, model=model,
                    num_gpus=1 if gpus else 0, echo=False, extra_env=extra_env,
                )
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
            r.trial.report(value, step)
            if r.trial.should_prune():
                r.pruned_at = step
                echo(f"trial {r.trial.number} pruned at epoch {step} ({OBJECTIVE} {value:.4f}): stopping {r.job_name}")
                threading.Thread(target=stop_local_job, args=(r.job_dir,),
                                 kwargs={"reason": f"pruned by optuna at epoch {step}"}, daemon=True).start()

    def finish(r: _Running) -> None:
        nonlocal failures_this_run
        report(r)
        record = r.record or {}
        status = record.get("status")
        best = (record.get("best") or {}).get(OBJECTIVE)
        r.trial.set_user_attr("epochs", record.get("epoch"))
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
                reason = record.get("failure_reason") or record.get("stop_reason") or f"job {status}"
            r.trial.set_user_attr("fail_reason", reason)
            st.tell(r.trial, state=TrialState.FAIL)
            failures_this_run += 1
            state, note = "FAIL", reason
        shown = f" {OBJECTIVE} {best:.4f}" if best is not None else ""
        echo(f"trial {r.trial.number} {state}{shown} epochs {record.get('epoch') or 0} in {took:.0f} s"
             + (f": {note}" if note else "") + f"  [{done()}/{max_jobs} done]")

    try:
        while True:
            for r in [r for r in running if not r.thread.is_alive()]:
                running.remove(r)
                finish(r)
            for r in running:
                report(r)
            # launch: enough trials to reach max_jobs if all succeed; give up after max_jobs failures here
            need = max_jobs - done() - len(running)
            if failures_this_run >= max_jobs:
                need = 0
            free = [s for s in range(max_parallel_jobs) if s not in {r.slot for r in running}]
            for slot in free[: max(0, need)]:
                start_trial(slot)
            if not running:
                break
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
            r.trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            st.tell(r.trial, state=TrialState.FAIL)
            st.enqueue_trial(dict(r.params), user_attrs={"retry_of": r.trial.number})
        raise

    trials = trial_dicts(st)
    summary = write_summary(tune_dir, trials, engine="local", study=study)
    if not any(t["state"] in ("COMPLETE", "PRUNED") for t in trials):
        reasons = Counter(t.get("fail_reason") or "unknown" for t in trials if t["state"] == "FAIL")
        common = reasons.most_common(1)[0][0] if reasons else "no trial ran"
        raise TuneError(f"all {sum(reasons.values())} trial(s) failed: {common}")
    return summary
