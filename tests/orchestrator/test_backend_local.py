"""The local backend: job folder, environment, streaming, outcomes, stop/Ctrl-C, re-runs, `odorch jobs`.

Every job runs tests/orchestrator/fake_entrypoint.py (stdlib only), so each test takes well
under a few seconds.
"""

import _thread
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from odorch import runs as jobs_mod
from odorch.backends import local
from odorch.backends.local import run_local_job, stop_local_job
from odorch.runs import (
    JOB_FILE,
    JobError,
    list_jobs,
    new_record,
    process_start,
    read_job,
    read_metrics,
    refresh_status,
    write_job,
)
from tests.helpers import FAKE_ENTRYPOINT, invoke, run_fake_job


def seen(job_dir):
    return json.loads((Path(job_dir) / "output" / "data" / "seen.json").read_text())


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def in_thread_when_sleeping(job_dir, action, timeout=15.0):
    """Run action(record) in a thread once the fake printed 'sleeping' (it is then mid-training)."""
    result = {}

    def target():
        deadline = time.time() + timeout
        log = Path(job_dir) / "logs.txt"
        while time.time() < deadline:
            if log.is_file() and "sleeping" in log.read_text():
                result["value"] = action(read_job(job_dir))
                return
            time.sleep(0.02)
        result["value"] = "never started sleeping"

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def test_completed_job_record_folder_metrics_logs_and_env(tmp_path, channels, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    t0 = time.time()
    record = run_local_job(
        job_name="job1", runs_dir=tmp_path / "runs", entrypoint=FAKE_ENTRYPOINT, channels=channels,
        hyperparameters={"epochs": 3, "lr": 0.01, "pretrained": True, "sizes": [1, 2], "name": "a b"},
        model="fasterrcnn_mobilenet_v3_large_fpn", num_gpus=2, echo=False, extra_env={"FAKE_EXTRA": "yes"},
    )
    job = (tmp_path / "runs" / "job1").absolute()
    assert record == read_job(job)
    assert record.status == "Completed" and record.exit_code == 0 and record.failure_reason is None
    assert record.job_name == "job1" and record.backend == "local" and record.attempts == 1
    assert record.model == "fasterrcnn_mobilenet_v3_large_fpn"
    assert record.job_dir == str(job) and record.model_dir == str(job / "model")
    assert record.channels == {n: str(p.absolute()) for n, p in channels.items()}
    assert record.hyperparameters == {"epochs": "3", "lr": "0.01", "pretrained": "true", "sizes": "[1, 2]", "name": "a b"}
    created, started, ended = (datetime.fromisoformat(t) for t in (record.created, record.started, record.ended))
    assert all(d.utcoffset().total_seconds() == 0 for d in (created, started, ended))
    assert t0 - 1 <= created.timestamp() <= started.timestamp() <= ended.timestamp() <= time.time() + 1
    assert 0 <= record.duration_s < 30
    assert isinstance(record.pid, int) and record.pid != os.getpid()
    assert record.epoch == 3 and record.epochs == 3
    assert record.best == {"validation:mAP": 0.5, "epoch": 2}
    assert record.metrics_final == {"train:loss": 0.3333, "validation:mAP": 0.4, "validation:mAP50": 0.65,
                                       "train:progress": 100.0}

    entries = read_metrics(job)
    per_epoch = [e for e in entries if e["epoch"] is not None]
    assert [e["epoch"] for e in per_epoch] == [1, 2, 3]
    assert [e["metrics"] for e in per_epoch] == [
        {"train:loss": 1.0, "validation:mAP": 0.2, "validation:mAP50": 0.45},
        {"train:loss": 0.5, "validation:mAP": 0.5, "validation:mAP50": 0.75},
        {"train:loss": 0.3333, "validation:mAP": 0.4, "validation:mAP50": 0.65},
    ]
    progress = [e["metrics"]["train:progress"] for e in entries if e["epoch"] is None]
    assert progress == [round(i / 12 * 100, 1) for i in range(1, 13)]
    assert all(isinstance(e["time"], float) for e in entries)

    log = (job / "logs.txt").read_text().splitlines()
    assert log[0] == "fake entrypoint: 3 epochs, resuming after epoch 0"
    assert "epoch=2/3 train:loss=0.5000 validation:mAP=0.5 validation:mAP50=0.750000" in log
    assert log.count("train:progress=50.0") == 1 and log[-1] == "done" and len(log) == 1 + 12 + 3 + 1

    config = job / "input" / "config"
    hps_json = json.loads((config / "hyperparameters.json").read_text())
    assert hps_json == record.hyperparameters and all(isinstance(v, str) for v in hps_json.values())
    assert json.loads((config / "resourceconfig.json").read_text()) == {"current_host": "algo-1", "hosts": ["algo-1"]}
    assert set(json.loads((config / "inputdataconfig.json").read_text())) == {"train", "validation"}
    for name, path in channels.items():
        link = job / "input" / "data" / name
        assert link.is_symlink() and os.readlink(link) == str(path.absolute())
    assert (job / "model" / "model.txt").is_file() and (job / "checkpoints" / "last.txt").read_text() == "3"
    assert (job / "output").is_dir() and not (job / "output" / "failure").exists()

    s = seen(job)
    env = s["env"]
    assert s["argv"] == [str(FAKE_ENTRYPOINT)] and s["cwd"] == str(job)
    assert s["hps"] == {"epochs": 3, "lr": 0.01, "pretrained": True, "sizes": [1, 2], "name": "a b"}  # typed
    assert s["hyperparameters_json"] == record.hyperparameters
    assert env["SM_MODEL_DIR"] == str(job / "model")
    assert json.loads(env["SM_CHANNELS"]) == ["train", "validation"]
    assert env["SM_CHANNEL_TRAIN"] == str(job / "input" / "data" / "train")
    assert env["SM_CHANNEL_VALIDATION"] == str(job / "input" / "data" / "validation")
    assert env["SM_INPUT_DIR"] == str(job / "input") and env["SM_INPUT_CONFIG_DIR"] == str(config)
    assert env["SM_OUTPUT_DIR"] == str(job / "output") and env["SM_OUTPUT_DATA_DIR"] == str(job / "output" / "data")
    assert env["SM_NUM_GPUS"] == "2" and int(env["SM_NUM_CPUS"]) >= 1
    assert json.loads(env["SM_HOSTS"]) == ["algo-1"] and env["SM_CURRENT_HOST"] == "algo-1"
    assert env["ODORCH_CHECKPOINT_DIR"] == str(job / "checkpoints")
    assert env["PYTHONUNBUFFERED"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE" and env["FAKE_EXTRA"] == "yes"


def test_echo_shows_lines_and_summary_but_not_progress_lines(tmp_path, channels, monkeypatch, capsys):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    record = run_local_job(job_name="echo", runs_dir=tmp_path / "runs", entrypoint=FAKE_ENTRYPOINT, channels=channels,
                           hyperparameters={"epochs": 2}, echo=True)
    out = capsys.readouterr().out
    assert "epoch=1/2 train:loss=1.0000" in out and "done" in out
    assert "train:progress=" not in out
    assert "echo: Completed" in out and "best validation:mAP 0.5000 at epoch 2" in out
    assert seen(record.job_dir)["env"]["OMP_WAIT_POLICY"] == "ACTIVE"  # not overridden


def test_failure_file_is_the_reason(tmp_path, channels):
    record = run_fake_job(tmp_path / "runs", channels, epochs=1, fail_with="dataset has no validation images")
    assert record.status == "Failed" and record.exit_code == 1
    assert record.failure_reason == "dataset has no validation images"
    assert read_job(record.job_dir).status == "Failed"
    assert "about to fail" in Path(record.log_file).read_text()  # stderr is merged into the log
    long = run_fake_job(tmp_path / "runs", channels, name="long", epochs=1, fail_with="x" * 5000)
    assert long.failure_reason == "x" * 1000


def test_uncaught_exception_last_line_is_the_reason(tmp_path, channels):
    record = run_fake_job(tmp_path / "runs", channels, epochs=1, raise_error="bad annotation file train.json")
    assert record.status == "Failed" and record.exit_code == 1
    assert record.failure_reason == "RuntimeError: bad annotation file train.json (exit code 1)"
    assert "Traceback (most recent call last)" in Path(record.log_file).read_text()


def test_killed_child_is_failed_with_the_signal(tmp_path, channels):
    job = tmp_path / "runs" / "job1"
    thread, result = in_thread_when_sleeping(job, lambda r: os.kill(r.pid, signal.SIGKILL))
    t0 = time.time()
    record = run_fake_job(tmp_path / "runs", channels, epochs=2, sleep=30)
    thread.join()
    assert result["value"] is None
    assert time.time() - t0 < 10
    assert record.status == "Failed" and record.exit_code == -9
    assert record.failure_reason == "killed by SIGKILL (out of memory?)"
    assert record.epoch == 1 and record.best == {"validation:mAP": 0.2, "epoch": 1}


def test_stale_in_progress_is_refreshed_to_failed(tmp_path, runner):
    runs = tmp_path / "runs"
    gone = dead_pid()
    rec = replace(new_record(job_name="stale", backend="local", job_dir=runs / "stale"),
                  pid=gone, orchestrator_pid=gone, started=jobs_mod.now_iso(), attempts=1)
    write_job(runs / "stale", rec)
    (runs / "stale" / "logs.txt").write_text("epoch=1/5 validation:mAP=0.1\n")

    # a live process, and a live pid whose start time says it is another process (pid reused)
    alive = replace(new_record(job_name="alive", backend="local", job_dir=runs / "alive"),
                    pid=os.getpid(), pid_start=process_start(os.getpid()), orchestrator_pid=os.getpid())
    write_job(runs / "alive", alive)
    reused = replace(new_record(job_name="reused", backend="local", job_dir=runs / "reused"),
                     pid=os.getpid(), pid_start="1", orchestrator_pid=os.getpid())
    write_job(runs / "reused", reused)

    assert refresh_status(read_job(runs / "alive")).status == "InProgress"
    by_name = {r.job_name: r for r in list_jobs(runs)}
    assert by_name["alive"].status == "InProgress"
    assert by_name["reused"].status == "Failed"
    assert by_name["stale"].status == "Failed"
    assert by_name["stale"].failure_reason == f"the process running this job (pid {gone}) is gone"
    on_disk = read_job(runs / "stale")
    assert on_disk.status == "Failed" and on_disk.ended and on_disk.duration_s is not None


def test_stop_local_job_sends_sigterm_and_marks_stopped(tmp_path, channels):
    job = tmp_path / "runs" / "job1"
    thread, result = in_thread_when_sleeping(job, lambda r: stop_local_job(job))
    t0 = time.time()
    record = run_fake_job(tmp_path / "runs", channels, epochs=3, sleep=30, handle_sigterm=True)
    thread.join()
    assert time.time() - t0 < 10
    assert record.status == "Stopped" and record.exit_code == 143 and record.failure_reason is None
    assert result["value"].status == "Stopped"
    assert (job / "checkpoints" / "sigterm.txt").is_file()
    assert "got SIGTERM, checkpoint saved" in (job / "logs.txt").read_text()
    assert read_job(job).status == "Stopped" and not (job / local.STOP_FILE).exists()
    assert stop_local_job(job).status == "Stopped"  # a finished job is left as it is


def test_stop_local_job_without_its_odorch_process(tmp_path):
    """The odorch process is gone but the entrypoint still runs: stop_local_job ends it and records it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rec = replace(new_record(job_name="orphan", backend="local", job_dir=tmp_path / "orphan"),
                      pid=proc.pid, pid_start=process_start(proc.pid), orchestrator_pid=dead_pid(),
                      started=jobs_mod.now_iso())
        write_job(tmp_path / "orphan", rec)
        record = stop_local_job(tmp_path / "orphan", grace_s=5)
        assert proc.wait(5) == -signal.SIGTERM
        assert record.status == "Stopped" and read_job(tmp_path / "orphan").status == "Stopped"
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_terminates_child_marks_stopped_and_reraises(tmp_path, channels, sigint_raises):
    job = tmp_path / "runs" / "job1"
    thread, _ = in_thread_when_sleeping(job, lambda r: _thread.interrupt_main())
    with pytest.raises(KeyboardInterrupt):
        run_fake_job(tmp_path / "runs", channels, epochs=3, sleep=30, handle_sigterm=True)
    thread.join()
    record = read_job(job)
    assert record.status == "Stopped" and record.exit_code == 143 and "Ctrl-C" in record.stop_reason
    assert (job / "checkpoints" / "sigterm.txt").is_file()
    assert "got SIGTERM, checkpoint saved" in (job / "logs.txt").read_text()


def test_ctrl_c_kills_a_child_that_ignores_sigterm(tmp_path, channels, monkeypatch, sigint_raises):
    monkeypatch.setattr(local, "TERM_GRACE_S", 0.5)
    job = tmp_path / "runs" / "job1"
    thread, _ = in_thread_when_sleeping(job, lambda r: _thread.interrupt_main())
    with pytest.raises(KeyboardInterrupt):
        run_fake_job(tmp_path / "runs", channels, epochs=3, sleep=30, ignore_sigterm=True)
    thread.join()
    record = read_job(job)
    assert record.status == "Stopped" and record.exit_code == -9
    assert not jobs_mod.pid_alive(record.pid, record.pid_start)


def test_rerun_of_failed_job_resumes_in_the_same_folder(tmp_path, channels):
    first = run_fake_job(tmp_path / "runs", channels, epochs=2, fail_with="boom")
    job = Path(first.job_dir)
    assert first.status == "Failed" and (job / "checkpoints" / "last.txt").read_text() == "2"
    second = run_fake_job(tmp_path / "runs", channels, epochs=4)
    assert second.job_dir == first.job_dir
    assert second.status == "Completed" and second.attempts == 2
    assert second.failure_reason is None and second.exit_code == 0
    assert second.created == first.created and second.started >= first.ended
    assert seen(job)["resumed_from"] == 2
    assert not (job / "output" / "failure").exists()
    log = (job / "logs.txt").read_text()
    assert "boom" not in log and "about to fail" in log  # the first attempt's output is kept
    assert "===== odorch: attempt 2 of job job1" in log
    assert log.index("about to fail") < log.index("attempt 2") < log.index("epoch=3/4")
    assert [e["epoch"] for e in read_metrics(job) if e["epoch"]] == [1, 2, 3, 4]
    assert second.epoch == 4 and second.best == {"validation:mAP": 0.5, "epoch": 2}


def test_rerun_of_completed_job_is_refused(tmp_path, channels):
    first = run_fake_job(tmp_path / "runs", channels, epochs=1)
    with pytest.raises(JobError, match="already completed.*pick another --job-name"):
        run_fake_job(tmp_path / "runs", channels, epochs=1)
    assert issubclass(JobError, ValueError)
    assert read_job(first.job_dir) == first


def test_bad_arguments_fail_before_anything_runs(tmp_path, channels):
    runs = tmp_path / "runs"
    with pytest.raises(JobError, match="bad job name"):
        run_fake_job(tmp_path / "runs", channels, name="bad_name!")
    with pytest.raises(JobError, match="channel 'test'.*not found"):
        run_fake_job(tmp_path / "runs", {**channels, "test": tmp_path / "nope"})
    with pytest.raises(JobError, match="entrypoint .* not found"):
        run_local_job(job_name="x", runs_dir=runs, entrypoint=tmp_path / "nope.py", channels=channels,
                      hyperparameters={}, echo=False)
    assert not runs.exists()


def test_jobs_cli_list_describe_logs(tmp_path, channels, runner):
    runs = tmp_path / "runs"
    run_fake_job(tmp_path / "runs", channels, name="good", epochs=3)
    run_fake_job(tmp_path / "runs", channels, name="broken", epochs=1, raise_error="nope")
    gone = dead_pid()
    rec = replace(new_record(job_name="stale", backend="local", job_dir=runs / "stale", model="retinanet"),
                  pid=gone, orchestrator_pid=gone)
    write_job(runs / "stale", rec)

    result = invoke(runner, "jobs", "list", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert set(rows) == {"good", "broken", "stale"}
    assert "Completed" in rows["good"] and "0.5000 (epoch 2)" in rows["good"] and "3/3" in rows["good"]
    assert "fasterrcnn_mobilenet_v3_large_fpn" in rows["good"]
    assert "Failed" in rows["broken"] and "Failed" in rows["stale"] and "retinanet" in rows["stale"]
    assert read_job(runs / "stale").status == "Failed"  # refreshed on disk

    result = invoke(runner, "jobs", "describe", "broken", "--runs-dir", runs)
    assert result.exit_code == 0
    described = json.loads(result.output)
    assert described == json.loads((runs / "broken" / JOB_FILE).read_text())  # job.json as it is on disk
    assert described["failure_reason"].startswith("RuntimeError: nope")

    result = invoke(runner, "jobs", "logs", "good", "--runs-dir", runs, "--tail", 2)
    assert result.exit_code == 0 and result.output == "epoch=3/3 train:loss=0.3333 validation:mAP=0.4 validation:mAP50=0.650000\ndone\n"
    result = invoke(runner, "jobs", "logs", "good", "--runs-dir", runs)
    assert result.output == (runs / "good" / "logs.txt").read_text()

    for command in ("describe", "logs"):
        result = invoke(runner, "jobs", command, "nosuch", "--runs-dir", runs)
        assert result.exit_code == 1
        assert "no job 'nosuch'" in result.stderr and "known jobs: broken, good, stale" in result.stderr

    result = invoke(runner, "jobs", "list", "--runs-dir", tmp_path / "empty")
    assert result.exit_code == 0 and "no jobs in" in result.output


def test_jobs_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from odorch.cli import main\n"
        "for args in (['--help'], ['jobs', '--help'], ['jobs', 'list', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0\n"
        "print(sorted(m for m in ('torch', 'rich', 'numpy', 'odorch.backends.local') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pid_alive_counts_an_unreaped_child_as_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    try:
        assert not jobs_mod.pid_alive(proc.pid)
        assert jobs_mod.pid_alive(os.getpid(), process_start(os.getpid()))
    finally:
        proc.wait()


# ---- Docker: SageMaker's local mode without the SDK ----


