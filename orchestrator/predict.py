"""`odorch predict` on anything: image files, folders (optionally recursive), globs that odorch
expands itself, video files (frames out as a video with the boxes drawn, through PyAV) and,
only when the user allows it, image URLs.

Images are decoded as the serving handler decodes a request (``decode_image``: EXIF orientation
applied), so a drawn box sits where the model saw it. Every detection also goes to a COCO
results list (image_id, category_id = the model's label, bbox [x, y, w, h], score): image ids
count the inputs in order, then each video's frames.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from odorch.errors import OdorchError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
URL_MAX_BYTES = 50 * 2**20
URL_TIMEOUT_S = 30.0
_GLOB = re.compile(r"[*?[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PredictError(OdorchError):
    """An input that cannot be predicted on; the message names it and says what to do."""


@dataclass(frozen=True)
class Source:
    kind: str  # "image", "video" or "url"
    location: str  # a file path or a URL
    name: str  # the output's name without suffix, unique among the sources


def collect_sources(texts: list[str], *, recursive: bool = False, allow_url: bool = False) -> tuple[list[Source], int]:
    """The inputs ``texts`` name, in order, and how many files in folders and globs were skipped
    because they are neither images nor videos. A named file of another kind, a path that does
    not exist, a glob that matches nothing or a URL without ``allow_url`` is an error."""
    from odorch.converters.images import IMAGE_EXTENSIONS

    found: list[tuple[str, str, str]] = []  # (kind, location, name)
    skipped = 0
    for text in texts:
        if text.startswith(("http://", "https://")):
            if not allow_url:
                raise PredictError(f"{text}: a URL; odorch fetches it only with --allow-url")
            url = urlparse(text)
            if not url.hostname:
                raise PredictError(f"{text}: not a URL of an image; write http(s)://HOST/PATH")
            found.append(("url", text, Path(url.path).stem or url.hostname))
            continue
        path = Path(text)
        if path.is_file():
            kind = _kind(path, IMAGE_EXTENSIONS)
            if kind is None:
                raise PredictError(f"{path}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or a video "
                                   f"({', '.join(VIDEO_EXTENSIONS)})")
            found.append((kind, str(path), path.stem))
            continue
        if path.is_dir():
            files = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file())
            base = path
        elif _GLOB.search(text):
            files = sorted(Path(p) for p in glob.glob(text, recursive=recursive) if Path(p).is_file())
            if not files:
                raise PredictError(f"{text}: no file matches this pattern")
            base = None
        else:
            raise PredictError(f"{text}: no such file or folder (a glob needs *, ? or [...], quoted so odorch expands it)")
        matched = 0
        for file in files:
            kind = _kind(file, IMAGE_EXTENSIONS)
            if kind is None:
                skipped += 1
                continue
            name = "__".join(file.relative_to(base).with_suffix("").parts) if base is not None else file.stem
            found.append((kind, str(file), name))
            matched += 1
        if base is not None and not matched:
            hint = "" if recursive else " (add --recursive to look in its subfolders)"
            raise PredictError(f"{path}: no images or videos in this folder{hint}")
    return [Source(kind, location, name) for kind, location, name in zip(*_unique(found))], skipped


def _kind(path: Path, image_extensions: tuple[str, ...]) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in image_extensions else "video" if suffix in VIDEO_EXTENSIONS else None


def _unique(found: list[tuple[str, str, str]]) -> tuple[list[str], list[str], list[str]]:
    """Output names made safe (letters, digits, . _ -) and unique (-2, -3, ... on repeats)."""
    names: list[str] = []
    taken: set[str] = set()
    for _, _, name in found:
        base = _UNSAFE.sub("_", name).strip("._") or "input"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        names.append(name)
    return [f[0] for f in found], [f[1] for f in found], names


def fetch_url(url: str, *, max_bytes: int = URL_MAX_BYTES, timeout: float = URL_TIMEOUT_S) -> bytes:
    """The body of ``url`` (at most ``max_bytes``); loopback hosts are reached without a proxy."""
    import urllib.error
    import urllib.request

    from odorch.serve import LOOPBACK

    direct = urlparse(url).hostname in LOOPBACK
    opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if direct else []))
    try:
        with opener.open(url, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise PredictError(f"{url}: the server answered {e.code} {e.reason}") from e
    except OSError as e:  # URLError, refused, timeout
        raise PredictError(f"{url}: cannot fetch it ({getattr(e, 'reason', e)})") from e
    if len(data) > max_bytes:
        raise PredictError(f"{url}: larger than {max_bytes // 2**20} MB; download it and pass the file")
    return data


def predict_sources(model: Any, classes: list[str], sources: list[Source], *, out: Path, device: Any = "cpu",
                    batch_size: int = 1, min_score: float = 0.3,
                    echo: Callable[[str], Any] = print) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``model`` on every source, writing OUT/<name>.png per image and OUT/<name>.mp4 per
    video; returns one record per source (what predictions.json holds) and the COCO results. An
    image that cannot be read or decoded is skipped with its reason as the record's ``error``."""
    records: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    images = [s for s in sources if s.kind != "video"]
    for start in range(0, len(images), batch_size):
        chunk, tensors = [], []
        for source in images[start : start + batch_size]:
            try:
                tensors.append(_decode(source))
                chunk.append(source)
            except PredictError as e:
                records.append({"image": source.location, "error": str(e)})
        for source, tensor, result in zip(chunk, tensors, _detect(model, tensors, device, batch_size)):
            image_id = len(records) + 1
            written = out / f"{source.name}.png"
            drawn = _save_png(tensor, result, classes, written, min_score)
            echo(f"{source.location}: {drawn} boxes ≥ {min_score} -> {written}")
            records.append({"image": source.location, "image_id": image_id, "output": str(written),
                            "detections": _named(result, classes)})
            results += coco_results(image_id, result)
    next_id = len(records) + 1
    for source in (s for s in sources if s.kind == "video"):
        written = out / f"{source.name}.mp4"
        frames = predict_video(model, classes, Path(source.location), written, device=device, batch_size=batch_size,
                               min_score=min_score)
        echo(f"{source.location}: {len(frames)} frames, {sum(len(f['scores']) for f in frames)} detections -> {written}")
        records.append({"video": source.location, "first_image_id": next_id, "frames": len(frames),
                        "output": str(written), "detections": [_named(f, classes) for f in frames]})
        for i, frame in enumerate(frames):
            results += coco_results(next_id + i, frame)
        next_id += len(frames)
    return records, results


def _decode(source: Source) -> Any:
    from odorch.runtime.inference import RequestError, decode_image

    try:
        data = fetch_url(source.location) if source.kind == "url" else Path(source.location).read_bytes()
        return decode_image(data, source.location)
    except (OSError, RequestError) as e:
        raise PredictError(str(e)) from e


def _detect(model: Any, tensors: list[Any], device: Any, batch_size: int) -> list[dict[str, Any]]:
    from odorch.runtime.predict import detect_images

    return detect_images(model, tensors, device, batch_size=batch_size)


def _save_png(tensor: Any, result: dict[str, Any], classes: list[str], path: Path, min_score: float) -> int:
    import io

    from torchvision.transforms.v2 import functional as F

    from odorch.converters.fsutil import atomic_write_bytes
    from odorch.runtime.predict import draw_on

    canvas = F.to_pil_image(tensor)  # the pixels the model saw (EXIF orientation applied)
    drawn = draw_on(canvas, result, classes, min_score=min_score)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return drawn


def _named(result: dict[str, Any], classes: list[str]) -> list[dict[str, Any]]:
    return [{"box": box, "label": classes[label - 1], "score": score}
            for box, label, score in zip(result["boxes"], result["labels"], result["scores"])]


def coco_results(image_id: int, result: dict[str, Any]) -> list[dict[str, Any]]:
    """COCO results format: category_id is the model's label (odorch's category ids are 1..K)."""
    return [{"image_id": image_id, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)}
            for (x0, y0, x1, y1), label, score in zip(result["boxes"], result["labels"], result["scores"])]


def predict_video(model: Any, classes: list[str], path: Path, out_path: Path, *, device: Any = "cpu",
                  batch_size: int = 1, min_score: float = 0.3) -> list[dict[str, Any]]:
    """Every frame of ``path`` through ``model``, drawn into ``out_path`` (H.264 MP4 at the input's
    frame rate, written to a temporary file and renamed); the detections of each frame."""
    from odorch.runtime.predict import draw_on

    av = _av()
    frames: list[dict[str, Any]] = []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.{os.getpid()}.tmp{out_path.suffix}")
    try:
        with av.open(str(path)) as src:
            if not src.streams.video:
                raise PredictError(f"{path}: no video stream in this file")
            stream = src.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 25
            with av.open(str(tmp), "w") as dst:
                encoder = None
                for batch in _batches(src.decode(stream), batch_size):
                    images = [frame.to_image() for frame in batch]  # RGB PIL images
                    if encoder is None:
                        encoder = _encoder(av, dst, rate, *images[0].size)
                    for image, result in zip(images, _detect(model, [_tensor(im) for im in images], device, batch_size)):
                        draw_on(image, result, classes, min_score=min_score)
                        image = image.crop((0, 0, encoder.width, encoder.height))
                        for packet in encoder.encode(av.VideoFrame.from_image(image).reformat(format="yuv420p")):
                            dst.mux(packet)
                        frames.append(result)
                if encoder is None:
                    raise PredictError(f"{path}: no frames could be decoded")
                for packet in encoder.encode():  # flush
                    dst.mux(packet)
        os.replace(tmp, out_path)
    except av.error.FFmpegError as e:
        raise PredictError(f"{path}: cannot read or write it as video ({e})") from e
    finally:
        tmp.unlink(missing_ok=True)
    return frames


def _av() -> Any:
    try:
        import av
    except ImportError as e:
        raise PredictError("predicting on video needs PyAV: pip install 'odorch[video]' (or pip install av)") from e
    return av


def _batches(frames: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encoder(av: Any, container: Any, rate: Any, width: int, height: int) -> Any:
    """An H.264 stream (MPEG-4 Part 2 where FFmpeg lacks x264); yuv420p needs even sides, so an
    odd last row or column is cropped away."""
    stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
    stream.width, stream.height = width - width % 2, height - height % 2
    stream.pix_fmt = "yuv420p"
    return stream


def _tensor(image: Any) -> Any:
    import torch
    from torchvision.transforms.v2 import functional as F

    return F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
