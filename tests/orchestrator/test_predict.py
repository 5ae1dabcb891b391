"""odorch predict on anything (folders, globs, a video, a URL from a local server) and --device,
run through the CLI as a user would, outputs read back with PIL, PyAV and json."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from odorch.cli import main

NAME = "ssdlite320_mobilenet_v3_large"
CLASSES = ["circle", "square"]


def predict(*args: object) -> object:
    return CliRunner().invoke(main, ["predict", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A saved model whose head is spread so that it detects something on any image (untrained: fast)."""
    import torch

    from odorch.runtime.models import build_model, save_model

    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = build_model(NAME, CLASSES, weights="none", image_size=128)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.3)
    save_model(root / "model", model.eval(), {"model": NAME, "classes": CLASSES, "image_size": 128,
                                              "origin": "none", "weights": "none"})
    return root / "model"


@pytest.fixture(scope="module")
def photos(tiny_data, tmp_path_factory):
    """A folder: 3 JPEGs at the top, 2 in a subfolder, and a text file that is no image."""
    root = tmp_path_factory.mktemp("photos")
    images = sorted((tiny_data / "images").glob("*.jpg"))[:5]
    (root / "sub").mkdir()
    for i, image in enumerate(images):
        shutil.copy(image, root / ("sub" if i >= 3 else ".") / image.name)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_recursive_with_coco_results(run, photos, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    result = predict(run, photos, "--recursive", "--out", out, "--min-score", 0, "--save-json", "--batch-size", 2,
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "skipped 1 file(s) that are neither images nor videos" in result.stderr
    files = sorted(p for p in photos.rglob("*.jpg"))
    records = json.loads((out / "predictions.json").read_text())
    assert sorted(r["image"] for r in records) == [str(p) for p in files]
    assert [r["image_id"] for r in records] == [1, 2, 3, 4, 5]
    for record in records:
        source, drawn = Path(record["image"]), Path(record["output"])
        assert drawn.parent == out and drawn.suffix == ".png"
        if source.parent.name == "sub":
            assert drawn.name == f"sub__{source.stem}.png"  # no clash between folders
        with Image.open(drawn) as im, Image.open(source) as original:
            assert im.format == "PNG" and im.size == original.size
        assert record["detections"] and {d["label"] for d in record["detections"]} <= set(CLASSES)
    results = json.loads((out / "results.json").read_text())
    assert len(results) == sum(len(r["detections"]) for r in records)
    first = [r for r in results if r["image_id"] == 1]
    for coco, named in zip(first, records[0]["detections"]):
        x0, y0, x1, y1 = named["box"]
        assert coco["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
        assert coco["score"] == named["score"] and CLASSES[coco["category_id"] - 1] == named["label"]
    top = predict(run, photos, "--out", tmp_path / "top")  # without --recursive: the 3 at the top
    assert top.exit_code == 0, top.output
    assert len(json.loads((tmp_path / "top" / "predictions.json").read_text())) == 3


def test_batched_equals_one_by_one(run, photos, tmp_path):
    one = predict(run, photos, "--out", tmp_path / "one", "--batch-size", 1)
    four = predict(run, photos, "--out", tmp_path / "four", "--batch-size", 4)
    assert one.exit_code == 0 and four.exit_code == 0, one.output + four.output
    a = json.loads((tmp_path / "one" / "predictions.json").read_text())
    b = json.loads((tmp_path / "four" / "predictions.json").read_text())
    for x, y in zip(a, b):  # the same images are the same size: batching changes only rounding
        assert len(x["detections"]) == len(y["detections"])
        for d, e in zip(x["detections"], y["detections"]):
            assert d["label"] == e["label"] and d["box"] == pytest.approx(e["box"], abs=1e-2)


def test_glob_is_expanded_by_odorch(run, photos, tmp_path):
    result = predict(run, str(photos / "**" / "*.jpg"), "--recursive", "--out", tmp_path / "g")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "g" / "predictions.json").read_text())) == 5
    flat = predict(run, str(photos / "*.jpg"), "--out", tmp_path / "f")
    assert flat.exit_code == 0 and len(json.loads((tmp_path / "f" / "predictions.json").read_text())) == 3
    nothing = predict(run, str(photos / "*.bmp"), "--out", tmp_path / "n")
    assert nothing.exit_code == 2 and "*.bmp: no file matches this pattern" in nothing.stderr


def test_an_unreadable_image_is_skipped_and_reported(run, photos, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(photos, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    result = predict(run, folder, "--out", tmp_path / "o", "--save-json")
    assert result.exit_code == 1, result.output
    assert f"skipped: {folder / 'broken.jpg'}: cannot be decoded as an image" in result.stderr
    assert "1 of 4 input(s) could not be read" in result.stderr
    records = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert [r["image"] for r in records if "error" in r] == [str(folder / "broken.jpg")]
    assert len([r for r in records if "output" in r]) == 3 and len(list((tmp_path / "o").glob("*.png"))) == 3
    assert {r["image_id"] for r in json.loads((tmp_path / "o" / "results.json").read_text())} == {2, 3, 4}


@pytest.mark.parametrize("given, message", [
    ("notes.txt", "notes.txt: not an image"),
    ("missing.jpg", "missing.jpg: no such file or folder"),
    ("http://127.0.0.1:9/a.jpg", "a URL; odorch fetches it only with --allow-url"),
])  # fmt: skip
def test_bad_sources(run, photos, tmp_path, given, message):
    source = given if given.startswith("http") else photos / given
    result = predict(run, source, "--out", tmp_path / "o")
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "o").exists()


def test_video_in_video_out(run, tiny_data, tmp_path):
    """A 9-frame MP4 written here with PyAV; the drawn video read back has 9 frames of the same size."""
    av = pytest.importorskip("av")
    import numpy as np
    from PIL import Image

    video = tmp_path / "clip.mp4"
    frames = sorted((tiny_data / "images").glob("*.jpg"))[:9]
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for path in frames:
            with Image.open(path) as im:
                frame = av.VideoFrame.from_ndarray(np.asarray(im.convert("RGB").resize((128, 128))), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    result = predict(run, video, "--out", out, "--min-score", 0, "--save-json", "--batch-size", 4)
    assert result.exit_code == 0, result.output
    with av.open(str(out / "clip.mp4")) as drawn:
        decoded = list(drawn.decode(video=0))
        assert len(decoded) == len(frames) == 9
        assert (decoded[0].width, decoded[0].height) == (128, 128)
        assert drawn.streams.video[0].average_rate == 5
    [record] = json.loads((out / "predictions.json").read_text())
    assert record["video"] == str(video) and record["frames"] == 9 and record["first_image_id"] == 1
    assert len(record["detections"]) == 9 and all(record["detections"])
    results = json.loads((out / "results.json").read_text())
    assert sorted({r["image_id"] for r in results}) == list(range(1, 10))
    assert not list(out.glob(".*"))  # no temporary file left behind


@pytest.fixture
def image_server(photos):
    """photos/ over HTTP on 127.0.0.1 (a free port), in a thread."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(photos))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_url_only_when_allowed(run, photos, image_server, tmp_path):
    name = sorted(photos.glob("*.jpg"))[0].name
    refused = predict(run, f"{image_server}/{name}", "--out", tmp_path / "r")
    assert refused.exit_code == 2 and "--allow-url" in refused.stderr
    fetched = predict(run, f"{image_server}/{name}", "--allow-url", "--out", tmp_path / "u", "--batch-size", 1)
    local = predict(run, photos / name, "--out", tmp_path / "l", "--batch-size", 1)
    assert fetched.exit_code == 0 and local.exit_code == 0, fetched.output + local.output
    [by_url] = json.loads((tmp_path / "u" / "predictions.json").read_text())
    [by_file] = json.loads((tmp_path / "l" / "predictions.json").read_text())
    assert by_url["image"] == f"{image_server}/{name}" and by_url["detections"] == by_file["detections"]
    assert (tmp_path / "u" / f"{Path(name).stem}.png").read_bytes() == (tmp_path / "l" / f"{Path(name).stem}.png").read_bytes()
    missing = predict(run, f"{image_server}/nothing.jpg", "--allow-url", "--out", tmp_path / "m")
    assert missing.exit_code == 1 and "nothing.jpg: the server answered 404" in missing.stderr


# ---------------------------------------------------------------- --device


def test_device_choices(run, photos, tmp_path, tiny_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the no-GPU error cannot be shown")
    image = sorted(photos.glob("*.jpg"))[0]
    for device in ("cpu", "auto"):
        result = predict(run, image, "--out", tmp_path / device, "--device", device)
        assert result.exit_code == 0, result.output
    for command in (["predict", str(run), str(image), "--out", str(tmp_path / "c")],
                    ["evaluate", str(run), "--data", str(tiny_data)],
                    ["compare", str(run), "--data", str(tiny_data), "--out", str(tmp_path / "cmp")],
                    ["serve", str(run), "--port", "0"],
                    ["export", str(run), "--data", str(tiny_data), "--out", str(tmp_path / "exp")],
                    ["train", "--data", str(tiny_data), "--runs-dir", str(tmp_path / "runs"), "--job-name", "j"],
                    ["tune", "--data", str(tiny_data), "--runs-dir", str(tmp_path / "runs"), "--max-jobs", "1"]):
        for device in ("cuda",) if command[0] == "tune" else ("cuda", "cuda:1"):
            result = CliRunner().invoke(main, [*command, "--device", device])
            assert result.exit_code == 1, (command, result.output)
            assert f"Error: device {device}: this machine has no CUDA GPU" in result.stderr, command
            assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "c").exists() and not (tmp_path / "exp").exists()
    one_gpu_each = CliRunner().invoke(main, ["tune", "--data", str(tiny_data), "--runs-dir", str(tmp_path / "runs"),
                                             "--device", "cuda:1"])
    assert one_gpu_each.exit_code == 2 and "local trials get one GPU each" in one_gpu_each.stderr
    wrong = predict(run, image, "--out", tmp_path / "w", "--device", "tpu")
    assert wrong.exit_code == 2 and "'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps" in wrong.stderr


def test_train_passes_the_device_to_the_entrypoint(trained_runs):
    """--device cpu becomes the job's device hyperparameter; auto (the default) adds none and the
    entrypoint picks (here: the CPU, no GPU)."""
    import torch

    b = json.loads((trained_runs["small-b"] / "job.json").read_text())
    a = json.loads((trained_runs["small-a"] / "job.json").read_text())
    assert b["hyperparameters"]["device"] == "cpu" and "device" not in a["hyperparameters"]
    assert ", device cpu" in (trained_runs["small-b"] / "logs.txt").read_text()
    auto = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert f", device {auto}" in (trained_runs["small-a"] / "logs.txt").read_text()


def test_resolve_device_here():
    import torch

    from odorch.runtime.devices import DeviceError, resolve_device
    from odorch.runtime.train import TrainingError, parse_hyperparameters

    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("CPU") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="MPS"):
            resolve_device("mps")
    assert parse_hyperparameters({"device": "cuda:0"})["device"] == "cuda:0"
    assert parse_hyperparameters({})["device"] == "auto"
    with pytest.raises(TrainingError, match="hyperparameter device='gpu'"):
        parse_hyperparameters({"device": "gpu"})
