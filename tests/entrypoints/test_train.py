"""The training entrypoint, through `odorch train` (local backend) and run bare as SageMaker would."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from odorch import runtime
from odorch.runs import read_job, read_metrics
from odorch.runtime.metrics import metric_definitions
from odorch.runtime.train import (
    HYPERPARAMETERS,
    Paths,
    TrainingError,
    failure_reason,
    load_resume,
    needs_launch,
    parse_hyperparameters,
)
from tests.helpers import invoke, load_coco, with_unknown_class

TRAIN_PY = Path(runtime.__file__).parent / "train.py"
ODORCH = Path(sys.executable).parent / "odorch"
FAST = ["--weights", "none", "--hp", "batch_size=4", "--hp", "image_size=128"]


def test_hyperparameters_are_typed_from_strings_with_model_defaults():
    hp = parse_hyperparameters({"model": "ssd300_vgg16", "epochs": "3", "flip": "false", "sagemaker_program": "train.py"})
    assert hp["epochs"] == 3 and hp["flip"] is False
    assert hp["lr"] == 0.002 and hp["image_size"] == 300  # ssd300's own defaults
    assert set(hp) == set(HYPERPARAMETERS)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"learning_rate": "0.1"}, "unknown hyperparameter(s) learning_rate; valid: model, weights, epochs"),
        ({"model": "yolo"}, "valid models: ssdlite320_mobilenet_v3_large"),
        ({"epochs": "ten"}, "epochs='ten'"),
        ({"flip": "maybe"}, "flip='maybe'"),
        ({"optimizer": "lion"}, "use one of sgd, adamw"),
        ({"model": "ssd300_vgg16", "image_size": "128"}, "needs at least 300"),
    ],
)
def test_bad_hyperparameters_name_the_fix(raw, message):
    with pytest.raises(TrainingError) as err:
        parse_hyperparameters(raw)
    assert message in str(err.value)


def test_train_command_refuses_bad_input_before_a_job_exists(tmp_path, runner, tiny_data):
    result = invoke(runner, "train", "--data", tiny_data, "--hp", "lr_decay=2", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "unknown hyperparameter(s) lr_decay" in result.stderr
    result = invoke(runner, "train", "--data", tiny_data, "--model", "yolo", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "valid models:" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_failure_reasons():
    assert "lower batch_size (e.g. batch_size=4)" in failure_reason(torch.OutOfMemoryError("CUDA out of memory"), {"batch_size": 8})
    assert "lower batch_size" in failure_reason(MemoryError(), {"batch_size": 2})
    assert failure_reason(KeyError("x"), None) == "KeyError: 'x'"


def test_needs_launch_for_several_gpus_or_hosts():
    assert needs_launch({"SM_NUM_GPUS": "1", "SM_HOSTS": '["algo-1"]'}) is None
    assert needs_launch({"SM_NUM_GPUS": "4", "SM_HOSTS": '["algo-1"]'}) == (4, ["algo-1"])
    assert needs_launch({"SM_NUM_GPUS": "0", "SM_HOSTS": '["algo-1", "algo-2"]'}) == (1, ["algo-1", "algo-2"])
    assert needs_launch({"SM_NUM_GPUS": "4", "WORLD_SIZE": "4"}) is None  # already under torchrun


def test_train_evaluate_predict(tmp_path, runner, tiny_data):
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "j1", "--epochs", 2, *FAST, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    job = runs / "j1"
    record = read_job(job)
    assert record.status == "Completed" and record.hyperparameters["epochs"] == "2"
    config = json.loads((job / "model" / "config.json").read_text())
    assert config["classes"] == ["circle", "square"] and config["origin"] == "none" and config["image_size"] == 128
    checkpoint = torch.load(job / "checkpoints" / "checkpoint.pth", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "best"} <= set(checkpoint) and checkpoint["epoch"] == 2

    # the regexes SageMaker is given read the same numbers the local parser stored
    log = (job / "logs.txt").read_text()
    epoch_lines = [line for line in log.splitlines() if line.startswith("epoch=")]
    assert len(epoch_lines) == 2
    stored = [m for m in read_metrics(job) if m["epoch"] is not None]
    assert [m["epoch"] for m in stored] == [1, 2]
    for line, record_ in zip(epoch_lines, stored):
        for definition in metric_definitions():
            value = float(re.search(definition["Regex"], line).group(1))
            assert record_["metrics"][definition["Name"]] == pytest.approx(value)

    result = invoke(runner, "evaluate", job, "--data", tiny_data, "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    evaluation = json.loads((job / "eval-test.json").read_text())
    assert list(evaluation["stats"]) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert set(evaluation["per_class"]) == {"circle", "square"}
    assert json.loads(result.output)["stats"] == evaluation["stats"]

    image = tiny_data / "images" / load_coco(tiny_data / "annotations" / "test.json").dataset["images"][0]["file_name"]
    result = invoke(runner, "predict", job, image, "--out", tmp_path / "pred", "--min-score", 0)
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(tmp_path / "pred" / f"{image.stem}.png") as drawn, Image.open(image) as original:
        assert drawn.size == original.size
    predictions = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert predictions[0]["detections"] and predictions[0]["detections"][0]["label"] in ("circle", "square")


def test_nan_loss_fails_the_job_with_that_reason(tmp_path, runner, tiny_data):
    hp = ["--hp", "lr=1e6", "--hp", "clip_grad=0", "--hp", "warmup=0"]
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "nan", "--epochs", 3, *FAST, *hp, "--runs-dir", tmp_path)
    assert result.exit_code == 1
    record = read_job(tmp_path / "nan")
    assert record.status == "Failed"
    assert re.match(r"loss is (nan|inf) at epoch \d+ iteration \d+ .*lower lr", record.failure_reason)


def test_evaluate_refuses_classes_the_model_lacks(tmp_path, runner, tiny_data):
    runs = tmp_path / "runs"
    assert invoke(runner, "train", "--data", tiny_data, "--job-name", "j", "--epochs", 1, *FAST, "--runs-dir", runs).exit_code == 0
    other = with_unknown_class(tiny_data, tmp_path / "other")
    result = invoke(runner, "evaluate", runs / "j", "--data", other)
    assert result.exit_code == 1
    assert "classes the model was not trained on: hexagon" in result.stderr


def _env(tmp_path, data, **hps):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    env.update(
        SM_CHANNEL_TRAIN=str(data), SM_CHANNEL_VALIDATION=str(data), SM_MODEL_DIR=str(tmp_path / "model"),
        SM_OUTPUT_DIR=str(tmp_path / "output"), ODORCH_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        SM_INPUT_DIR=str(tmp_path / "input"), SM_HPS=json.dumps({"weights": "none", "batch_size": 4, "image_size": 128, **hps}),
    )  # fmt: skip
    return env


def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path, tiny_data):
    proc = subprocess.Popen([sys.executable, str(TRAIN_PY)], env=_env(tmp_path, tiny_data, epochs=50),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    for line in proc.stdout:
        if "train:progress=" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 143
    assert "stopped by SIGTERM" in rest
    state = torch.load(tmp_path / "checkpoints" / "checkpoint.pth", weights_only=True)
    assert state["epoch"] == 0 and "optimizer" in state
    assert not (tmp_path / "output" / "failure").exists()


def test_corrupt_checkpoint_fails_with_a_reason(tmp_path, tiny_data):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint.pth").write_bytes(b"not a checkpoint")
    proc = subprocess.run([sys.executable, str(TRAIN_PY)], env=_env(tmp_path, tiny_data, epochs=1), capture_output=True, text=True)
    assert proc.returncode == 1
    reason = (tmp_path / "output" / "failure").read_text()
    assert "corrupt or not a PyTorch checkpoint" in reason and "delete" in reason


def test_resume_refuses_a_checkpoint_of_other_classes(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"config": {"model": "ssdlite320_mobilenet_v3_large", "classes": ["a"]}}, tmp_path / "checkpoints" / "checkpoint.pth")
    paths = Paths(tmp_path, None, None, tmp_path / "m", tmp_path / "checkpoints", tmp_path / "o", tmp_path / "c")
    hp = parse_hyperparameters({})
    with pytest.raises(TrainingError, match=r"classes \['a'\], but this job trains .* for \['a', 'b'\]"):
        load_resume(paths, hp, ["a", "b"])


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_kill_9_then_rerun_resumes_from_the_last_checkpoint(tmp_path, tiny_data):
    runs = tmp_path / "runs"
    command = [str(ODORCH), "train", "--data", str(tiny_data), "--job-name", "r", "--epochs", "5", *FAST, "--runs-dir", str(runs)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = runs / "r"
    epochs_logged = lambda: [m["epoch"] for m in read_metrics(job) if m["epoch"]] if (job / "metrics.jsonl").exists() else []  # noqa: E731
    assert _wait_for(lambda: 2 in epochs_logged(), timeout=300), "epoch 2 never finished"
    child = read_job(job).pid
    os.kill(proc.pid, signal.SIGKILL)  # the whole machine dies during epoch 3: odorch and its entrypoint
    os.kill(child, signal.SIGKILL)
    proc.wait()
    assert 5 not in epochs_logged()
    assert torch.load(job / "checkpoints" / "checkpoint.pth", weights_only=True)["epoch"] >= 2

    listed = subprocess.run([str(ODORCH), "jobs", "list", "--runs-dir", str(runs)], capture_output=True, text=True)
    assert "Failed" in listed.stdout  # never stuck InProgress
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    log = (job / "logs.txt").read_text()
    resumed = re.search(r"resuming from .*checkpoint.pth: (\d+) epoch\(s\) done", log)
    assert resumed and int(resumed.group(1)) >= 2
    record = read_job(job)
    assert record.status == "Completed" and record.attempts == 2
    epochs = epochs_logged()
    assert epochs[-1] == 5 and sorted(set(epochs)) == [1, 2, 3, 4, 5]
    assert epochs.count(1) == 1  # finished epochs were not trained again


def test_ddp_two_cpu_processes_with_gloo(tmp_path, tiny_data):
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, str(TRAIN_PY)], env=_env(single, tiny_data, epochs=1), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ddp = tmp_path / "ddp"
    env = _env(ddp, tiny_data, epochs=1, num_threads=1, mosaic=1.0)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(TRAIN_PY)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("epoch=1/1 ") == 1  # only rank 0 reports
    # boxes mosaic cut away: gathered from both ranks (a gather on one rank alone would hang) and reported once
    assert len(re.findall(r"augmentation left out \d+ of the \d+ boxes in epoch 1's", proc.stdout)) == 1
    a = torch.load(single / "model" / "model.pth", weights_only=True)["model"]
    b = torch.load(ddp / "model" / "model.pth", weights_only=True)["model"]
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


@pytest.mark.slow
def test_end_to_end_demo_to_map50(tmp_path):
    """demo-data -> convert -> train SSDlite from scratch for a few CPU minutes -> evaluate."""
    run = lambda *args: subprocess.run([str(ODORCH), *map(str, args)], cwd=tmp_path, capture_output=True, text=True)  # noqa: E731
    assert run("demo-data", "demo", "--images", 250).returncode == 0
    assert run("convert", "voc2coco", "demo", "--out", "data", "--imagesets").returncode == 0
    trained = run("train", "--data", "data", "--job-name", "e2e", "--epochs", 14, "--weights", "none")
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run("evaluate", "runs/e2e", "--data", "data", "--split", "test", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    stats = json.loads(evaluated.stdout)["stats"]
    print("end-to-end test mAP50", stats["AP50"], "mAP", stats["AP"])
    assert stats["AP50"] >= 0.5


def test_resume_refuses_a_checkpoint_of_other_hyperparameters(tmp_path):
    """AMT children on spot may see each other's checkpoints: same model and classes, other lr."""
    ours = parse_hyperparameters({"lr": "0.01"})
    (tmp_path / "checkpoints").mkdir()
    config = {"model": ours["model"], "classes": ["a", "b"], "hyperparameters": {**ours, "lr": 0.02, "epochs": 3}}
    torch.save({"config": config}, tmp_path / "checkpoints" / "checkpoint.pth")
    paths = Paths(tmp_path, None, None, tmp_path / "m", tmp_path / "checkpoints", tmp_path / "o", tmp_path / "c")
    with pytest.raises(TrainingError, match=r"other hyperparameters \(lr=0.02; this job: lr=0.01\)"):
        load_resume(paths, ours, ["a", "b"])
    config["hyperparameters"]["lr"] = 0.01  # a spot restart of the same job (the epoch count may have been fixed since)
    torch.save({"config": config}, tmp_path / "checkpoints" / "checkpoint.pth")
    assert load_resume(paths, ours, ["a", "b"])["config"] == config


def test_resume_reads_an_older_checkpoints_hyperparameters_in_todays_types(tmp_path):
    """scale_jitter was true/false (a bool in the checkpoint) before it took auto (now a string): an
    older run resumes with the same setting given again, and is refused with another."""
    (tmp_path / "checkpoints").mkdir()
    old = {**parse_hyperparameters({}), "scale_jitter": False}
    torch.save({"config": {"model": old["model"], "classes": ["a"], "hyperparameters": old}}, tmp_path / "checkpoints" / "checkpoint.pth")
    paths = Paths(tmp_path, None, None, tmp_path / "m", tmp_path / "checkpoints", tmp_path / "o", tmp_path / "c")
    assert load_resume(paths, parse_hyperparameters({"scale_jitter": "false"}), ["a"]) is not None
    with pytest.raises(TrainingError, match=r"other hyperparameters \(scale_jitter='false'; this job: scale_jitter='auto'\)"):
        load_resume(paths, parse_hyperparameters({}), ["a"])


def test_checkpoints_of_a_sagemaker_job_go_to_its_own_folder():
    """SageMaker syncs /opt/ml/checkpoints with one S3 prefix, shared by every child of a tuning job."""
    from odorch.runtime.train import checkpoint_dir

    assert checkpoint_dir({"TRAINING_JOB_NAME": "t-001-ab12cd34"}) == Path("/opt/ml/checkpoints/t-001-ab12cd34")
    assert checkpoint_dir({"ODORCH_CHECKPOINT_DIR": "/x", "TRAINING_JOB_NAME": "j"}) == Path("/x/j")
    assert checkpoint_dir({"ODORCH_CHECKPOINT_DIR": "/x"}) == Path("/x")
    assert checkpoint_dir({"TRAINING_JOB_NAME": ".."}) == Path("/opt/ml/checkpoints")
