import os
import signal

import pytest
from click.testing import CliRunner

# Names of the user's shell that would change what a test does: odorch's own settings, AWS's
# (a profile or real credentials would reach a real account) and MLflow's tracking server.
ISOLATED_PREFIXES = ("ODORCH_", "AWS_", "MLFLOW_")


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory):
    """Every test runs as on a clean machine, whatever the shell that started pytest carries: the
    config lookup points at an empty file (so ./odorch.yaml is not read), no AWS_*, ODORCH_* or
    MLFLOW_* variable is inherited, and boto3 reads no ~/.aws files and asks no instance metadata.
    Session-wide, so session fixtures that run odorch see it too; tests that need a variable
    set it with monkeypatch (the AWS harness sets its own). Connections off the loopback are
    refused by pytest-socket (--allow-hosts in pyproject.toml)."""
    empty = tmp_path_factory.mktemp("config") / "empty.yaml"
    empty.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(ISOLATED_PREFIXES):
                mp.delenv(name)
        mp.setenv("ODORCH_CONFIG", str(empty))
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield empty


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt in this test, as in a foreground terminal, even where
    pytest was started with SIGINT ignored (a background job or nohup)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def channels(tmp_path):
    """Empty train and validation channel folders (enough for tests.helpers.run_fake_job)."""
    out = {}
    for name in ("train", "validation"):
        (tmp_path / "data" / name).mkdir(parents=True)
        out[name] = tmp_path / "data" / name
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A converted demo dataset of 24 small images (train/val/test from its ImageSets)."""
    from odorch.converters.coco import write_layout
    from odorch.converters.demo import make_demo_voc
    from odorch.converters.split import source_splits
    from odorch.converters.voc import read_voc

    root = tmp_path_factory.mktemp("tiny")
    make_demo_voc(root / "voc", images=24, classes=2, seed=1, image_size=128)
    dataset = read_voc(root / "voc", imagesets=True)
    write_layout(dataset, root / "data", source_splits(dataset.images), command="test")
    return root / "data"


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto server on 127.0.0.1 for the session (see tests/aws_harness.py)."""
    from tests.aws_harness import start_server

    server, endpoint = start_server()
    yield endpoint
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """AWS on loopback, reset for this test: env for boto3, moto's gaps patched."""
    from tests.aws_harness import AwsHarness

    harness = AwsHarness(moto_endpoint, monkeypatch)
    yield harness
    harness.close()


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, tiny_data):
    """Two SSDlite320 jobs trained from scratch for a few epochs on `tiny_data` by `odorch train`
    (different seeds and learning rates, so their numbers differ; small-b with --device cpu, small-a
    with the default auto): {name: job folder}."""
    from odorch.cli import main

    runs = tmp_path_factory.mktemp("trained") / "runs"
    jobs = {}
    for name, seed, lr, device in (("small-a", 0, "0.05", "auto"), ("small-b", 1, "0.02", "cpu")):
        result = CliRunner().invoke(main, [
            "train", "--data", str(tiny_data), "--weights", "none", "--epochs", "3", "--job-name", name,
            "--runs-dir", str(runs), "--hp", "image_size=128", "--hp", "batch_size=4", "--hp", f"seed={seed}",
            "--hp", f"lr={lr}", "--device", device,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
        jobs[name] = runs / name
    return jobs


@pytest.fixture(scope="session")
def served(trained_runs):
    """`odorch serve`'s server for trained_runs["small-a"] on 127.0.0.1 (a free port), in a thread."""
    import threading

    from odorch.serve import make_server

    server = make_server(trained_runs["small-a"] / "model", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
