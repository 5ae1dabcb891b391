import pytest
from click.testing import CliRunner


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A converted demo dataset of 24 small images (train/val/test from its ImageSets)."""
    from converters.coco import write_layout
    from converters.demo import make_demo_voc
    from converters.split import source_splits
    from converters.voc import read_voc

    root = tmp_path_factory.mktemp("tiny")
    make_demo_voc(root / "voc", images=24, classes=2, seed=1, image_size=128)
    dataset = read_voc(root / "voc", imagesets=True)
    write_layout(dataset, root / "data", source_splits(dataset.images), command="test")
    return root / "data"
