"""Synthetic Pascal VOC demo dataset ("shapes on textures").

``make_demo_voc(out)`` writes a small, fully valid VOC dataset so every part of
odorch (convert, train, tune, compare, export) can run on a fresh machine with
no data of its own::

    out/Annotations/demo_000000.xml ...
    out/JPEGImages/demo_000000.jpg ...   (a few .png)
    out/ImageSets/Main/train.txt         seeded 64/16/20 split of image ids
    out/ImageSets/Main/val.txt           (ids are file stems, sorted)
    out/ImageSets/Main/test.txt
    out/labels.txt                       class names, one per line

Classes are shapes, in the fixed order of ``SHAPES`` (the first ``classes`` of
them). Each image is ``image_size`` x ``image_size`` with a textured
background (gradient + smooth noise at two scales, sometimes stripes, pixel
noise) and 1-4 filled shapes of a random colour chosen to contrast (in
luminance) with what lies under it. Objects are 20-90 px, may overlap a little
(pairwise IoU < 0.3, and no box more than half covered by another), and class
usage is balanced by drawing classes from a shuffled bag.

Boxes are the tight pixel extent of the drawn (visible) pixels, in the
pixel-edge convention: a shape covering columns 10..29 has xmin=10, xmax=30, so
COCO ``x = xmin, w = xmax - xmin``; always ``0 <= xmin < xmax <= width``.

Edge cases, with deterministic counts (``n`` = images; ``r(x)`` = round half
up; for ``n >= 10`` each count is at least 1, for ``n < 10`` the rounded value
is used, which is 0 for all but the largest rates):

* greyscale images (mode "L", JPEG, ``<depth>1``):  ``r(0.05 n)``  -> 10 of 200
* PNG images (colour):                              ``r(0.03 n)``  -> 6 of 200
* images with no objects (zero ``<object>``):       2 (1 if n < 20, 0 if n < 10)
* objects cut by the border (``<truncated>1``, box clipped to the image, at
  most one per image, visible part >= 16 px):      ``r(0.04 n)``  -> 8 of 200
* tiny objects (largest box side < 16 px, ``<difficult>1``):
                                                    ``r(0.03 n)``  -> 6 of 200

Empty, greyscale and PNG images are disjoint sets; truncated and difficult
objects live in non-empty images. No other object is truncated or tiny.

Output is deterministic: the same arguments give byte-identical files (numpy
``Generator``s seeded from ``seed``, PIL drawing without anti-aliasing, JPEG
quality 90, no timestamps or paths in any file). Every file is written to a
temporary name in its directory and moved into place with ``os.replace``.
Re-running into the same directory overwrites it; stale ``demo_NNNNNN``
annotations/images left by an earlier, larger run are removed so the
directory always matches the returned summary.
"""

from __future__ import annotations

import io
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPES", "make_demo_voc"]

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon",
)

ID_PREFIX = "demo_"
SPLITS = (("train", 0.64), ("val", 0.16))  # test gets the rest (~0.20)
JPEG_QUALITY = 90

MIN_SIZE, MAX_SIZE = 20, 90     # nominal object size (px) of ordinary objects
TRUNC_MIN_SIZE = 32             # truncated objects: big enough to stay visible
TINY_MIN, TINY_MAX = 8, 14      # nominal size of tiny (difficult) objects
TINY_LIMIT = 16                 # box max side < 16 px  <=>  difficult
MAX_IOU = 0.3
MAX_COVER = 0.5                 # intersection / smaller box area

RATE_GREY, RATE_PNG, RATE_TRUNC, RATE_TINY = 0.05, 0.03, 0.04, 0.03
PIXEL_NOISE = (1.5, 4.0)        # sigma range of the final per-pixel noise

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # PIL's RGB -> L
_STALE = re.compile(rf"^{ID_PREFIX}\d{{6}}\.(xml|jpg|png)$")


# --------------------------------------------------------------------------- helpers
def _r(x: float) -> int:
    """Round half up (Python's round() is banker's rounding)."""
    return int(math.floor(x + 0.5))


def _edge_counts(n: int) -> dict[str, int]:
    def cnt(rate: float) -> int:
        c = _r(rate * n)
        return max(1, c) if n >= 10 else c

    return {
        "empty": 2 if n >= 20 else (1 if n >= 10 else 0),
        "greyscale": cnt(RATE_GREY),
        "png": cnt(RATE_PNG),
        "truncated": cnt(RATE_TRUNC),
        "difficult": cnt(RATE_TINY),
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float32 (size, size, 3) texture: gradient + smooth noise (+ stripes)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    a = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(a) + yy * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c1, c2 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    # keep the gradient moderate so a contrasting colour always exists
    c2 = c1 + (c2 - c1) * np.float32(rng.uniform(0.2, 0.7))
    img = c1 + (c2 - c1) * t[..., None]

    for cells, amp in ((int(rng.integers(3, 7)), rng.uniform(20, 50)),
                       (int(rng.integers(10, 28)), rng.uniform(8, 25))):
        small = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
        up = Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)
        img += (np.asarray(up, dtype=np.float32) / 255.0 - 0.5) * np.float32(2 * amp)

    if rng.random() < 0.5:
        period = rng.uniform(6, 40)
        b = rng.uniform(0, math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin((xx * math.cos(b) + yy * math.sin(b)) * (2 * math.pi * size / period) + phase)
        if rng.random() < 0.5:
            wave = np.sign(wave)  # hard stripes
        direction = rng.normal(size=3).astype(np.float32)
        direction /= max(float(np.linalg.norm(direction)), 1e-6)
        img += wave[..., None] * direction * np.float32(rng.uniform(15, 40))
    return img


def _shape_mask(shape: str, s: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one shape with nominal size ``s``, cropped to its pixels."""
    side = int(math.ceil(s * 1.6)) + 4
    c = side / 2.0
    r = s / 2.0
    if shape in ("square", "diamond"):
        ang = rng.uniform(-math.pi / 12, math.pi / 12)
    elif shape == "cross":
        ang = rng.uniform(-math.pi / 9, math.pi / 9)
    else:
        ang = rng.uniform(0, 2 * math.pi)
    ca, sa = math.cos(ang), math.sin(ang)

    def poly(pts):
        return [(c + x * ca - y * sa, c + x * sa + y * ca) for x, y in pts]

    def regular(k, radius, start=-math.pi / 2):
        return [(radius * math.cos(start + 2 * math.pi * i / k),
                 radius * math.sin(start + 2 * math.pi * i / k)) for i in range(k)]

    im = Image.new("L", (side, side), 0)
    d = ImageDraw.Draw(im)
    if shape == "circle":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif shape == "ring":
        ri = r * 0.55
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
        d.ellipse([c - ri, c - ri, c + ri, c + ri], fill=0)
    elif shape == "square":
        h = r * 0.9
        d.polygon(poly([(-h, -h), (h, -h), (h, h), (-h, h)]), fill=255)
    elif shape == "triangle":
        d.polygon(poly(regular(3, r * 1.1)), fill=255)
    elif shape == "star":
        outer, inner = r * 1.05, r * 0.45
        pts = [((outer if i % 2 == 0 else inner) * math.cos(-math.pi / 2 + math.pi * i / 5),
                (outer if i % 2 == 0 else inner) * math.sin(-math.pi / 2 + math.pi * i / 5))
               for i in range(10)]
        d.polygon(poly(pts), fill=255)
    elif shape == "cross":
        a = r * 0.32
        pts = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a),
               (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]
        d.polygon(poly(pts), fill=255)
    elif shape == "diamond":
        d.polygon(poly([(0, -r), (0.62 * r, 0), (0, r), (-0.62 * r, 0)]), fill=255)
    elif shape == "hexagon":
        d.polygon(poly(regular(6, r, start=0.0)), fill=255)
    else:  # pragma: no cover - guarded by make_demo_voc
        raise ValueError(shape)
    box = im.getbbox()
    if box is None:
        return np.zeros((0, 0), dtype=bool)
    return np.asarray(im.crop(box)) > 0


def _iou_ok(box, placed) -> bool:
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    for (a0, b0, a1, b1) in placed:
        iw = min(x1, a1) - max(x0, a0)
        ih = min(y1, b1) - max(y0, b0)
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        other = (a1 - a0) * (b1 - b0)
        if inter / (area + other - inter) >= MAX_IOU or inter / min(area, other) > MAX_COVER:
            return False
    return True


def _place(kind: str, shape: str, canvas: np.ndarray, placed: list, rng: np.random.Generator,
           sizes: tuple[int, int, int]):
    """Try to place one object; returns (box, visible_mask, (x, y)) or None."""
    H, W = canvas.shape[:2]
    min_size, max_size, trunc_min = sizes
    tries = 60 if kind == "normal" else 400
    for _ in range(tries):
        if kind == "tiny":
            s = rng.uniform(TINY_MIN, TINY_MAX)
        elif kind == "trunc":
            s = rng.uniform(trunc_min, max_size)
        else:
            s = rng.uniform(min_size, max_size)
        m = _shape_mask(shape, s, rng)
        h, w = m.shape
        if h == 0 or h > H or w > W:
            continue
        if kind == "trunc":
            edge = int(rng.integers(4))
            along = w if edge < 2 else h
            lo, hi = max(1, int(math.ceil(0.2 * along))), max(1, int(0.5 * along))
            p = int(rng.integers(lo, hi + 1))
            if edge == 0:
                x, y = -p, int(rng.integers(0, H - h + 1))
            elif edge == 1:
                x, y = W - w + p, int(rng.integers(0, H - h + 1))
            elif edge == 2:
                x, y = int(rng.integers(0, W - w + 1)), -p
            else:
                x, y = int(rng.integers(0, W - w + 1)), H - h + p
        else:
            x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
        # visible part of the mask
        cx0, cy0 = max(0, -x), max(0, -y)
        cx1, cy1 = min(w, W - x), min(h, H - y)
        vis = m[cy0:cy1, cx0:cx1]
        rows, cols = np.flatnonzero(vis.any(axis=1)), np.flatnonzero(vis.any(axis=0))
        if rows.size == 0:
            continue
        box = (x + cx0 + int(cols[0]), y + cy0 + int(rows[0]),
               x + cx0 + int(cols[-1]) + 1, y + cy0 + int(rows[-1]) + 1)
        bw, bh = box[2] - box[0], box[3] - box[1]
        if kind == "tiny":
            if not (max(bw, bh) < TINY_LIMIT and min(bw, bh) >= 3):
                continue
        elif max(bw, bh) < TINY_LIMIT or min(bw, bh) < 6:
            continue
        if kind == "trunc" and vis.sum() < 0.3 * m.sum():
            continue
        if not _iou_ok(box, placed):
            continue
        return box, vis, (x + cx0, y + cy0)
    return None


def _pick_colour(canvas: np.ndarray, vis: np.ndarray, xy, rng: np.random.Generator) -> np.ndarray:
    x, y = xy
    h, w = vis.shape
    under = canvas[y:y + h, x:x + w][vis]                    # (N, 3) float
    luma = under @ _LUMA                                     # (N,)
    cand = rng.integers(0, 256, (32, 3)).astype(np.float32)
    score = (np.abs((cand @ _LUMA)[:, None] - luma[None, :]) >= 45).mean(axis=1)
    good = np.flatnonzero(score >= 0.95)
    return cand[good[0]] if good.size else cand[int(np.argmax(score))]


def _annotation_xml(filename: str, width: int, height: int, depth: int, objects) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = str(depth)
    ET.SubElement(root, "segmented").text = "0"
    for name, box, truncated, difficult in objects:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = name
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = "1" if truncated else "0"
        ET.SubElement(o, "difficult").text = "1" if difficult else "0"
        bb = ET.SubElement(o, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, tag).text = str(int(v))
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8") + b"\n"


# --------------------------------------------------------------------------- main API
def make_demo_voc(out: Path, *, images: int = 200, classes: int = 3, seed: int = 0,
                  image_size: int = 256) -> dict:
    """Write a synthetic Pascal VOC dataset to ``out`` and return a summary.

    Returns ``{"images", "objects", "classes", "greyscale", "png", "empty",
    "truncated", "difficult", "out"}``. See the module docstring for layout,
    conventions and edge-case counts.
    """
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) \
            or not 1 <= classes <= len(SHAPES):
        raise ValueError(
            f"classes must be an integer between 1 and {len(SHAPES)} "
            f"(shapes: {', '.join(SHAPES)}), got {classes!r}")
    if isinstance(images, bool) or not isinstance(images, (int, np.integer)) or images < 1:
        raise ValueError(f"images must be a positive integer, got {images!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size < 64:
        raise ValueError(f"image_size must be an integer >= 64, got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n, classes, seed, size = int(images), int(classes), int(seed), int(image_size)
    names = list(SHAPES[:classes])
    max_size = min(MAX_SIZE, int(size * 0.45))
    sizes = (MIN_SIZE, max_size, min(TRUNC_MIN_SIZE, max_size))

    out = Path(out)
    ann_dir, img_dir, set_dir = out / "Annotations", out / "JPEGImages", out / "ImageSets" / "Main"
    for d in (ann_dir, img_dir, set_dir):
        d.mkdir(parents=True, exist_ok=True)

    # ---- dataset-level plan (one Generator; per-image Generators are separate streams)
    plan = np.random.default_rng(seed)
    counts = _edge_counts(n)
    order = plan.permutation(n)
    e, g, p = counts["empty"], counts["greyscale"], counts["png"]
    empty = set(order[:e].tolist())
    grey = set(order[e:e + g].tolist())
    png = set(order[e + g:e + g + p].tolist())
    nonempty = np.array(sorted(set(range(n)) - empty), dtype=np.int64)
    trunc_imgs = set(plan.choice(nonempty, counts["truncated"], replace=False).tolist())
    tiny_imgs = set(plan.choice(nonempty, counts["difficult"], replace=False).tolist())
    split_perm = plan.permutation(n)
    bag: deque[int] = deque()

    def next_class() -> int:
        if not bag:
            bag.extend(plan.permutation(classes).tolist())
        return bag.popleft()

    ids = [f"{ID_PREFIX}{i:06d}" for i in range(n)]
    written: set[str] = set()
    n_objects = n_trunc = n_tiny = 0
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
        canvas = _background(rng, size)
        objects = []
        placed: list[tuple[int, int, int, int]] = []
        if i not in empty:
            kinds = (["trunc"] if i in trunc_imgs else []) + (["tiny"] if i in tiny_imgs else [])
            k = max(int(rng.integers(1, 5)), len(kinds))
            kinds += ["normal"] * (k - len(kinds))
            for kind in kinds:
                cls = next_class()
                res = _place(kind, names[cls], canvas, placed, rng, sizes)
                if res is None:
                    if kind != "normal":  # pragma: no cover - practically unreachable
                        raise RuntimeError(f"could not place a {kind} object in image {i}")
                    bag.appendleft(cls)
                    continue
                box, vis, (x, y) = res
                colour = _pick_colour(canvas, vis, (x, y), rng)
                h, w = vis.shape
                canvas[y:y + h, x:x + w][vis] = colour
                placed.append(box)
                objects.append((names[cls], box, kind == "trunc", kind == "tiny"))
        sigma = np.float32(rng.uniform(*PIXEL_NOISE))
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * sigma
        arr = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        if i in grey:
            img = img.convert("L")
        if i in png:
            ext, fmt, kw = ".png", "PNG", {}
        else:
            ext, fmt, kw = ".jpg", "JPEG", {"quality": JPEG_QUALITY}
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        fname = ids[i] + ext
        _atomic_write(img_dir / fname, buf.getvalue())
        _atomic_write(ann_dir / f"{ids[i]}.xml",
                      _annotation_xml(fname, size, size, 1 if img.mode == "L" else 3, objects))
        written.update((fname, f"{ids[i]}.xml"))
        n_objects += len(objects)
        n_trunc += sum(o[2] for o in objects)
        n_tiny += sum(o[3] for o in objects)

    # ---- splits, labels
    n_train = _r(SPLITS[0][1] * n)
    n_val = min(_r(SPLITS[1][1] * n), n - n_train)
    parts = {"train": split_perm[:n_train], "val": split_perm[n_train:n_train + n_val],
             "test": split_perm[n_train + n_val:]}
    for name, idx in parts.items():
        lines = "".join(ids[j] + "\n" for j in sorted(idx.tolist()))
        _atomic_write(set_dir / f"{name}.txt", lines.encode())
    _atomic_write(out / "labels.txt", "".join(c + "\n" for c in names).encode())

    # ---- remove stale files from an earlier run into the same directory
    for d in (ann_dir, img_dir):
        for f in d.iterdir():
            if _STALE.match(f.name) and f.name not in written:
                f.unlink()

    assert n_trunc == counts["truncated"] and n_tiny == counts["difficult"]
    return {
        "images": n,
        "objects": n_objects,
        "classes": names,
        "greyscale": len(grey),
        "png": len(png),
        "empty": len(empty),
        "truncated": n_trunc,
        "difficult": n_tiny,
        "out": str(out),
    }


def describe_demo(info: dict) -> str:
    """The line `odorch demo-data` prints about what make_demo_voc wrote."""
    return (f"wrote {info['images']} images, {info['objects']} boxes, classes {', '.join(info['classes'])} to "
            f"{info['out']} (Pascal VOC; {info['greyscale']} greyscale, {info['png']} PNG, {info['empty']} without boxes)")
