import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from odorch.cli import main
from odorch.hpo.local import retries_due, run_local_tuning
from odorch.hpo.space import parse_space

FIXED = {"weights": "none", "batch_size": "4", "image_size": "128"}
WORKER = Path(__file__).with_name("tune_worker.py")  # `odorch tune` with the stand-in entrypoint
SPACE = {"lr": {"type": "float", "low": 0.005, "high": 0.05, "log": True}}


def _study(runs: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{(runs / f'tune-{name}' / 'study.db').absolute()}")


def _tune_args(data, runs, study, *extra):
    return ["tune", "--data", str(data), "--study", study, "--runs-dir", str(runs), "--weights", "none",
            "--hp", "batch_size=4", "--hp", "image_size=128", *extra]


def test_cli_tune_summary_best_and_report(tiny_data, tmp_path, runner):
    runs = tmp_path / "runs"
    result = runner.invoke(main, _tune_args(tiny_data, runs, "s", "--max-jobs", "4", "--max-parallel-jobs", "2",
                                            "--epochs", "2"))
    assert result.exit_code == 0, result.output
    tune_dir = runs / "tune-s"
    summary = json.loads((tune_dir / "summary.json").read_text())
    assert len(summary["trials"]) == 4
    assert {t["state"] for t in summary["trials"]} <= {"COMPLETE", "PRUNED"}
    assert all(t["job"] == f"tune-s-trial-{t['number']}" for t in summary["trials"])
    hps = json.loads((runs / "tune-s-trial-0" / "input/config/hyperparameters.json").read_text())
    assert hps["num_threads"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    best = summary["best"]
    complete = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert best["best_map"] == max(t["best_map"] for t in complete)
    assert (tune_dir / "best").is_symlink()
    assert (tune_dir / "best").resolve() == (runs / best["job"]).resolve()
    assert (tune_dir / "history.png").stat().st_size > 0 and (tune_dir / "importance.png").stat().st_size > 0
    assert "trial 0" in result.output and "best: trial" in result.output

    report = runner.invoke(main, ["tune", "--report", "s", "--runs-dir", str(runs)])
    assert report.exit_code == 0, report.output
    assert "validation:mAP" in report.output and f"best: trial {best['number']}" in report.output
    assert len([line for line in report.output.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"], ["3"])]) == 4


class _PruneFirst(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number == 0


def test_forced_prune_stops_the_job(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    lines = []
    summary = run_local_tuning(data=tiny_data, model="ssdlite320_mobilenet_v3_large", space=parse_space(SPACE),
                               fixed={**FIXED, "epochs": "10"}, study="p", max_jobs=1, max_parallel_jobs=1,
                               pruner=_PruneFirst(), runs_dir=runs, echo=lines.append)
    (trial,) = summary["trials"]
    assert trial["state"] == "PRUNED"
    record = json.loads((runs / "tune-p-trial-0" / "job.json").read_text())
    assert record["status"] == "Stopped" and record["exit_code"] == 143, record
    assert "pruned" in record["stop_reason"]
    assert (runs / "tune-p-trial-0" / "checkpoints" / "checkpoint.pth").is_file()
    assert any("pruned at epoch" in line for line in lines)


def test_failing_trial_recorded_and_study_goes_on(tiny_data, tmp_path, monkeypatch):
    import odorch.backends.local

    real = odorch.backends.local.run_local_job

    def sometimes_bad(**kwargs):
        if kwargs["job_name"].endswith("trial-1"):
            kwargs["hyperparameters"] = {**kwargs["hyperparameters"], "lr": "-1"}
        return real(**kwargs)

    monkeypatch.setattr(odorch.backends.local, "run_local_job", sometimes_bad)
    runs = tmp_path / "runs"
    summary = run_local_tuning(data=tiny_data, model="ssdlite320_mobilenet_v3_large", space=parse_space(SPACE),
                               fixed={**FIXED, "epochs": "1"}, study="f", max_jobs=2, max_parallel_jobs=2,
                               pruner="none", runs_dir=runs, echo=lambda s: None)
    states = {t["number"]: t["state"] for t in summary["trials"]}
    assert states[1] == "FAIL" and list(states.values()).count("COMPLETE") == 2
    failed = next(t for t in summary["trials"] if t["number"] == 1)
    assert "lr" in failed["fail_reason"] and "positive" in failed["fail_reason"]
    assert _study(runs, "f").trials[1].user_attrs["fail_reason"] == failed["fail_reason"]


def test_all_trials_failing_exit_nonzero(tiny_data, tmp_path, runner):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: categorical, choices: [-1.0, -2.0]}\n")
    runs = tmp_path / "runs"
    result = runner.invoke(main, _tune_args(tiny_data, runs, "bad", "--space", str(space), "--max-jobs", "2",
                                            "--max-parallel-jobs", "2", "--epochs", "1"))
    assert result.exit_code != 0
    # 2 or 3: after the first failure a new trial may start in its slot while the other one still runs
    assert re.search(r"all [23] trial\(s\) failed", result.output) and "must be positive" in result.output


@pytest.mark.parametrize("args, message", [
    (["--max-jobs", "1", "--max-parallel-jobs", "2"], "--max-parallel-jobs"),
    (["--space", "MISSING"], "not found"),
    (["--space", "BADNAME"], "bogus"),
    (["--space", "BADRANGE"], "lr: low"),
])
def test_usage_errors_before_anything_runs(tiny_data, tmp_path, runner, args, message):
    (tmp_path / "badname.yaml").write_text("bogus: {type: float, low: 0.1, high: 1}\n")
    (tmp_path / "badrange.yaml").write_text("lr: {type: float, low: 1, high: 0.1}\n")
    args = [{"MISSING": str(tmp_path / "nope.yaml"), "BADNAME": str(tmp_path / "badname.yaml"),
             "BADRANGE": str(tmp_path / "badrange.yaml")}.get(a, a) for a in args]
    runs = tmp_path / "runs"
    result = runner.invoke(main, _tune_args(tiny_data, runs, "u", *args))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not runs.exists()


def _jobs(runs: Path) -> dict[str, dict]:
    out = {}
    for job in runs.glob("tune-k-trial-*/job.json"):
        try:
            out[job.parent.name] = json.loads(job.read_text())
        except ValueError:
            pass
    return out


@pytest.mark.slow
def test_kill_9_then_rerun_continues(tmp_path):
    """SQLite, the default storage: the tune process is killed with -9 mid-trial; the same command
    run again fails that trial once its last heartbeat is older than --grace-period, runs its
    parameters again and finishes the study. Trials run tests/orchestrator/fake_entrypoint.py
    (through tests/hpo/tune_worker.py: seconds each); the rest is the real CLI."""
    runs = tmp_path / "runs"
    data = tmp_path / "data"  # the stand-in entrypoint reads no data; the channel must exist
    data.mkdir()
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.005, high: 0.05, log: true}\n")
    cmd = [sys.executable, str(WORKER), *_tune_args(data, runs, "k", "--space", str(space), "--max-jobs", "3",
                                                    "--max-parallel-jobs", "2", "--pruner", "none",
                                                    "--heartbeat-interval", "1", "--grace-period", "10")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300  # the worker imports torch first: tens of seconds on a busy machine
    victim = None
    try:
        while time.time() < deadline and victim is None:
            jobs = _jobs(runs)
            finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
            if jobs and any(t.state in finished for t in _study(runs, "k").trials):
                for name, r in jobs.items():
                    if r["status"] == "InProgress" and r.get("pid") and (runs / name / "metrics.jsonl").exists():
                        victim = name
            time.sleep(0.1)
        assert victim, f"no trial with metrics while another completed: {_jobs(runs)}"
    finally:
        proc.kill()
        proc.wait()
        for r in _jobs(runs).values():
            if r["status"] == "InProgress" and r.get("pid"):
                try:
                    os.killpg(r["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
    before = {t.number: t for t in _study(runs, "k").trials}
    interrupted = [t for t in before.values() if t.state == optuna.trial.TrialState.RUNNING]
    assert interrupted
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    completed_before = {n for n, t in before.items() if t.state in finished}
    assert completed_before

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "no heartbeat from its worker for 10 s" in rerun.stdout
    after = _study(runs, "k").trials
    by_number = {t.number: t for t in after}
    summary = {t["number"]: t for t in json.loads((runs / "tune-k" / "summary.json").read_text())["trials"]}
    for n in completed_before:  # finished trials kept
        assert by_number[n].state == before[n].state
        assert by_number[n].value == before[n].value
    for t in interrupted:
        assert by_number[t.number].state == optuna.trial.TrialState.FAIL
        assert "no heartbeat" in summary[t.number]["fail_reason"]
        retry = [r for r in after if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(r) == t.number]
        assert len(retry) == 1 and retry[0].params == t.params and retry[0].state == optuna.trial.TrialState.COMPLETE
        assert summary[retry[0].number]["retry_of"] == t.number
    done = [t for t in after if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 3


def test_seed_reaches_the_sampler(tiny_data, tmp_path, runner, monkeypatch):
    import odorch.hpo.local
    from tests.helpers import invoke

    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        return {"engine": "optuna", "study": kwargs["study"], "trials": [], "best": None, "objective": "validation:mAP"}

    monkeypatch.setattr(odorch.hpo.local, "run_local_tuning", fake_run)
    monkeypatch.setattr("odorch.hpo.summary.format_summary", lambda summary: ["(table)"])
    result = invoke(runner, "tune", "--data", tiny_data, "--max-jobs", 2, "--seed", 7, "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert seen["seed"] == 7


@pytest.mark.parametrize("url, message", [
    ("not a url", "is not a SQLAlchemy URL"),
    ("bogus://host/db", "unknown kind of database 'bogus'"),
    ("postgresql://odorch:secret@127.0.0.1:1/db", "cannot use the database"),  # nothing listens on port 1
    ("sqlite:////nonexistent-dir/study.db", "cannot use the database: unable to open database file"),
    ("CORRUPT", "not an SQLite database (corrupt?)"),
])
def test_bad_storage_is_one_line_error(tmp_path, runner, url, message):
    if url == "CORRUPT":  # the default study.db, overwritten with bytes that are no database
        (tmp_path / "runs" / "tune-b").mkdir(parents=True)
        (tmp_path / "runs" / "tune-b" / "study.db").write_bytes(bytes(range(256)) * 16)
        args = []
    else:
        args = ["--storage", url]
    result = runner.invoke(main, _tune_args(tmp_path, tmp_path / "runs", "b", *args))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith("error: --storage ") and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "secret" not in result.output


def _open_at(url: str, start: float) -> str:
    """Opens the study at url at time start (a spawned process's body); 'ok' or the error."""
    from odorch.hpo.local import TuneError, open_study

    while time.time() < start:
        pass
    try:
        open_study(study="s", url=url, sampler=None, pruner=None, echo=lambda line: None)
    except TuneError as e:
        return str(e)
    return "ok"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_workers_creating_one_sqlite_study_at_once_all_open_it(tmp_path):
    """Four workers opening a new study.db at the same instant race to create its tables; before
    the fix, SQLite's "table studies already exists" failed 8 of 10 such rounds on this machine."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for n in range(3):
            url = f"sqlite:///{tmp_path / f'study{n}.db'}"
            start = time.time() + 2  # after every spawned process has imported optuna
            assert pool.starmap(_open_at, [(url, start)] * 4) == ["ok"] * 4
    assert len(optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'study2.db'}")) == 1


@pytest.mark.slow
def test_two_workers_share_a_runs_dir_and_its_sqlite_study(tmp_path):
    """The same command in two shells: one study in runs/tune-w/study.db, 4 trials in all, each
    trial's job once under the shared runs dir, one summary listing every trial. Trials run
    tests/orchestrator/fake_entrypoint.py (through tests/hpo/tune_worker.py); the rest is the real CLI."""
    runs = tmp_path / "runs"
    data = tmp_path / "data"  # the stand-in entrypoint reads no data; the channel must exist
    data.mkdir()
    cmd = [sys.executable, str(WORKER), *_tune_args(data, runs, "w", "--max-jobs", "4", "--pruner", "none")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _study(runs, "w").trials
    complete = sorted(t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert len(complete) == 4
    for t in trials:  # both asking for the last trial at once: the higher number backs off, never runs
        if t.number not in complete:
            assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["fail_reason"].startswith("not run")
    started = [int(line.split()[1]) for out in outs for line in out.splitlines() if " started: " in line]
    assert sorted(started) == complete  # every trial started once, by one of the two
    assert all(" started: " in out for out in outs)  # both workers ran trials
    trained = sorted(m.parent.parent.name for m in runs.glob("tune-w-trial-*/model/model.txt"))
    assert trained == sorted(f"tune-w-trial-{n}" for n in complete)
    summary = json.loads((runs / "tune-w" / "summary.json").read_text())
    assert sorted(t["number"] for t in summary["trials"]) == sorted(t.number for t in trials)
    assert (runs / "tune-w" / "best").resolve() == (runs / summary["best"]["job"]).resolve()


def test_a_trial_asked_by_a_worker_that_died_at_once_is_failed_and_retried(tmp_path):
    """A worker killed between asking for a trial and its first heartbeat leaves a RUNNING trial
    that Optuna's fail_stale_trials never fails (it has no heartbeat row); the next worker fails
    it once it is older than --grace-period, queues its parameters and finishes the study instead
    of waiting on it. The dead worker is simulated by asking through Optuna in this process."""
    runs = tmp_path / "runs"
    data = tmp_path / "data"
    data.mkdir()
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.005, high: 0.05, log: true}\n")
    (runs / "tune-o").mkdir(parents=True)
    storage = f"sqlite:///{(runs / 'tune-o' / 'study.db').absolute()}"
    study = optuna.create_study(study_name="o", storage=storage, direction="maximize")
    orphan = study.ask()
    orphan.suggest_float("lr", 0.005, 0.05, log=True)
    time.sleep(2)  # older than the grace period below
    cmd = [sys.executable, str(WORKER), *_tune_args(data, runs, "o", "--space", str(space), "--max-jobs", "1",
                                                    "--pruner", "none", "--heartbeat-interval", "1", "--grace-period", "2")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"trial {orphan.number}: its worker stopped within 2 s of asking for it" in done.stdout
    trials = {t.number: t for t in _study(runs, "o").trials}
    assert trials[orphan.number].state == optuna.trial.TrialState.FAIL
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == orphan.number]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == orphan.params


def test_a_trial_failed_by_another_worker_holds_its_slot_until_its_retry_is_queued():
    """Optuna fails a stale trial, then its callback queues it again: between the two, a worker
    counting free slots must count the retry as running, or it asks for a new trial and the study
    ends with the retry left waiting (seen once in a clean-clone run of test_postgres)."""
    from optuna.trial import TrialState

    study = optuna.create_study(direction="maximize")
    stale = study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1)})
    study.tell(stale, state=TrialState.FAIL)  # as fail_stale_trials leaves it: no job_status
    ended = study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1)})
    ended.set_user_attr("job_status", "Failed")  # a job that ended badly: not retried
    study.tell(ended, state=TrialState.FAIL)
    assert retries_due(study.get_trials(deepcopy=False)) == 1
    study.enqueue_trial(stale.params, user_attrs={"retry_of": stale.number})
    assert retries_due(study.get_trials(deepcopy=False)) == 0
