import pytest
from click.testing import CliRunner


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


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
    (different seeds and learning rates, so their numbers differ): {name: job folder}."""
    from odorch.cli import main

    runs = tmp_path_factory.mktemp("trained") / "runs"
    jobs = {}
    for name, seed, lr in (("small-a", 0, "0.05"), ("small-b", 1, "0.02")):
        result = CliRunner().invoke(main, [
            "train", "--data", str(tiny_data), "--weights", "none", "--epochs", "3", "--job-name", name,
            "--runs-dir", str(runs), "--hp", "image_size=128", "--hp", "batch_size=4", "--hp", f"seed={seed}",
            "--hp", f"lr={lr}",
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
