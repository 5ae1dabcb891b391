"""EXIF orientation, 16-bit images and pixel caps, from the converter to every loader: real JPEGs
written by PIL with each of the 8 EXIF orientations, read back by odorch.runtime.data.read_rgb
(train, evaluate, export calibration, predict, report) and the endpoint handler, compared with
PIL's own ImageOps.exif_transpose."""

import base64
import io
import json
import struct
import zlib
from http import HTTPStatus
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from odorch.converters.images import probe_image
from odorch.converters.voc import read_voc
from odorch.runtime import inference
from odorch.runtime.data import CocoDetection, DataError, eval_transforms, read_rgb
from tests.helpers import invoke, read_json

STORED = (64, 40)  # width, height of the stored pixels
BLOCK = (8, 4, 24, 14)  # a red block on grey, in stored pixels: x0, y0, x1, y1


def _exif_jpeg(path: Path, orientation: int) -> Path:
    """A JPEG whose stored pixels hold a red block at BLOCK, tagged with an EXIF orientation."""
    pixels = np.full((STORED[1], STORED[0], 3), 128, np.uint8)
    x0, y0, x1, y1 = BLOCK
    pixels[y0:y1, x0:x1] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=100, subsampling=0, exif=exif.tobytes())
    return path


def _shown_block(path: Path) -> tuple[int, int, int, int]:
    """Where the red block is once PIL applies the orientation (the reference for every loader)."""
    with Image.open(path) as im:
        red = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[..., 0] > 200
    ys, xs = np.nonzero(red & (np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))[..., 1] < 60))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_rgb_applies_exif_orientation_as_pil_does(tmp_path, orientation):
    path = _exif_jpeg(tmp_path / "a.jpg", orientation)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(np.asarray(read_rgb(path)), expected)
    info = probe_image(path)
    assert info.orientation == orientation and info.shown_size == (expected.shape[1], expected.shape[0])


def _voc_with(root: Path, orientation: int, size: tuple[int, int], box: tuple[int, int, int, int]) -> Path:
    _exif_jpeg(root / "JPEGImages" / "a.jpg", orientation)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = box
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height></size>"
        f"<object><name>red</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
        "</bndbox></object></annotation>"
    )
    return root


def _loaded_box_is_red(out: Path) -> tuple[tuple[int, int], float]:
    """Load the converted dataset as training/evaluation does; the share of red pixels in the box."""
    coco = read_json(out / "annotations" / "all.json")
    image, target = CocoDetection(coco, out / "images", eval_transforms())[0]
    assert tuple(image.shape[-2:]) == (coco["images"][0]["height"], coco["images"][0]["width"])
    x0, y0, x1, y1 = (round(v) for v in target["boxes"][0].tolist())
    patch = image[:, y0:y1, x0:x1]
    red = (patch[0] > 0.8) & (patch[1] < 0.25)
    return (coco["images"][0]["width"], coco["images"][0]["height"]), float(red.float().mean())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_annotation_drawn_on_the_shown_image_lands_on_the_object(tmp_path, runner, orientation):
    """The usual case (the annotation tool applied the rotation): the size is the rotated size."""
    probe = _exif_jpeg(tmp_path / "probe.jpg", orientation)
    with Image.open(probe) as im:
        shown = ImageOps.exif_transpose(im).size
    root = _voc_with(tmp_path / "voc", orientation, shown, _shown_block(probe))
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    size, red = _loaded_box_is_red(tmp_path / "out")
    assert size == shown and red > 0.9
    ambiguous = "EXIF-oriented image whose annotation size cannot tell" in result.output
    assert ambiguous == (orientation in (2, 3, 4))  # a flip or 180° keeps the size: said, not guessed


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_annotation_drawn_on_the_stored_pixels_is_turned(tmp_path, runner, orientation):
    """A tool that ignored EXIF: the size is the stored one; boxes are moved to the shown frame."""
    root = _voc_with(tmp_path / "voc", orientation, STORED, BLOCK)
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "1 × EXIF-rotated image annotated on its stored (unrotated) pixels" in result.output
    size, red = _loaded_box_is_red(tmp_path / "out")
    assert size == (STORED[1], STORED[0]) and red > 0.9


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(read_rgb(tmp_path / "g16.png"))
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255] and (rgb[..., 0] == rgb[..., 2]).all()
    dataset = read_voc_one(tmp_path, "g16.png", (4, 4))
    assert dataset.images[0].mode == "I;16"


def read_voc_one(root: Path, name: str, size: tuple[int, int]):
    (root / f"{Path(name).stem}.xml").write_text(
        f"<annotation><filename>{name}</filename><size><width>{size[0]}</width><height>{size[1]}</height></size>"
        "<object><name>a</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
        "</annotation>"
    )
    return read_voc(root)


def _header_only_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_loaders_refuse_a_bomb_with_a_data_error(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_header_only_png(60000, 60000))
    with pytest.raises(DataError, match="bomb.png: .*downscale it"):
        read_rgb(tmp_path / "bomb.png")


def test_handler_caps_pixels_and_image_count_before_decoding(tmp_path, monkeypatch):
    with pytest.raises(inference.RequestError) as caught:
        inference.input_fn(_header_only_png(8000, 8000), "image/png")  # under PIL's own cap, over the handler's
    assert caught.value.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "8000x8000 is over 40,000,000 pixels" in str(caught.value)
    jpeg = _exif_jpeg(tmp_path / "a.jpg", 6).read_bytes()
    monkeypatch.setattr(inference, "MAX_IMAGES", 2)
    body = json.dumps({"instances": [base64.b64encode(jpeg).decode()] * 3})
    with pytest.raises(inference.RequestError, match="3 images in one request, over the limit of 2") as caught:
        inference.input_fn(body, "application/json")
    assert caught.value.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    request = inference.input_fn(jpeg, "image/jpeg")  # orientation 6: shown 40 wide, 64 high
    assert tuple(request.images[0].shape) == (3, STORED[0], STORED[1])


def test_predict_draw_uses_the_shown_frame(tmp_path):
    from odorch.runtime.predict import draw

    path = _exif_jpeg(tmp_path / "a.jpg", 8)
    draw(path, {"boxes": [[1, 1, 5, 5]], "labels": [1], "scores": [0.9]}, ["red"], tmp_path / "drawn.png")
    with Image.open(tmp_path / "drawn.png") as im:
        assert im.size == (STORED[1], STORED[0])


@pytest.mark.parametrize("orientation", [3, 6])
def test_jumpstart_and_recordio_images_are_written_upright(tmp_path, runner, orientation):
    """Loaders outside odorch may ignore EXIF: JumpStart and RecordIO get the pixels turned, and
    plain PIL (no EXIF applied) sees the object inside its box."""
    from odorch.converters.coco import read_coco
    from odorch.converters.sagemaker_formats import _image_bytes

    probe = _exif_jpeg(tmp_path / "probe.jpg", orientation)
    with Image.open(probe) as im:
        shown = ImageOps.exif_transpose(im).size
    root = _voc_with(tmp_path / "voc", orientation, shown, _shown_block(probe))
    assert invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out").exit_code == 0
    coco_json = tmp_path / "out" / "annotations" / "all.json"
    result = invoke(runner, "convert", "coco2jumpstart", coco_json, "--images", tmp_path / "out" / "images",
                    "--out", tmp_path / "js")
    assert result.exit_code == 0, result.output
    x0, y0, x1, y1 = (round(v) for v in read_json(tmp_path / "js" / "annotations.json")["annotations"][0]["bbox"])
    recordio = Image.open(io.BytesIO(_image_bytes(read_coco([coco_json]).images[0], None)))
    for im in (Image.open(tmp_path / "js" / "images" / "a.jpg"), recordio):
        assert im.size == shown and im.getexif().get(0x0112, 1) == 1
        patch = np.asarray(im.convert("RGB"))[y0:y1, x0:x1]
        assert ((patch[..., 0] > 200) & (patch[..., 1] < 60)).mean() > 0.9


@pytest.mark.parametrize("name", ["../outside.jpg", "/etc/hostname", "a/../../b.jpg", "", "C:\\..\\x.jpg"])
def test_loader_refuses_file_names_leaving_the_images_folder(tmp_path, name):
    coco = {"_path": "x/annotations/train.json", "images": [{"id": 1, "file_name": name}], "annotations": []}
    with pytest.raises(DataError, match="is empty or leaves"):
        CocoDetection(coco, tmp_path / "images", eval_transforms())
