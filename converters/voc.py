"""Pascal VOC reader: finds XMLs and images in the usual layouts and validates every box.

Coordinates are taken as pixel edges, as Datumaro and Roboflow do: COCO
``[x, y, w, h] = [xmin, ymin, xmax - xmin, ymax - ymin]``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from odorch.converters.coco import SPLIT_WORDS
from odorch.converters.dataset import (
    Box,
    Dataset,
    DatasetError,
    ImageRecord,
    Problems,
    accept_label,
    check_mode,
    final_classes,
    fix_box,
    gc_paused,
    image_frame,
    orient_box,
    parse_flag,
)
from odorch.converters.images import IMAGE_EXTENSIONS, ImageProblem, probe_image

IMAGE_DIRS = ("jpegimages", "images", "image", "imgs", "img")
IMAGE_DIR_WORDS = ("image", "img", "jpeg", "jpg", "png", "photo", "picture", "frame")
IMAGESET_NAMES = ("train", "val", "test")


def find_xml_files(folders: list[Path]) -> list[str]:
    """Every *.xml under the folders at any depth, in any folder name (hidden folders aside), as
    text (10k Path objects cost ~0.1 s here and again in each worker).

    Links are followed, each real folder once, so a symlink loop ends where it starts.
    """
    seen: set[str] = set()
    found: list[str] = []
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(".xml")]
    return found


def _is_image_dir(name: str) -> bool:
    name = name.lower()
    return name in IMAGE_DIRS or any(word in name for word in IMAGE_DIR_WORDS)


def image_folders(xml_dir: Path, root: Path, extra: list[Path]) -> list[Path]:
    """Where the images of the XMLs in xml_dir may lie, nearest first: beside them; in an image
    folder (JPEGImages, images, *_img ...) beside xml_dir or beside any folder above it up to the
    root, at the same place below it (JPEGImages/train for Annotations/train); the folders above
    up to the root; then --images folders."""
    folders = [xml_dir]
    here = xml_dir
    top = root if xml_dir == root or root in xml_dir.parents else xml_dir.parent  # --annotations outside root
    while here != top:
        parent = here.parent
        below = xml_dir.relative_to(here).parts  # from `here` down to xml_dir
        for sibling in _image_children(parent, skip=here):
            mirrored = sibling.joinpath(*below)
            folders += [mirrored, sibling] if below and mirrored.is_dir() else [sibling]
        folders.append(parent)
        here = parent
    if xml_dir == top:
        folders += _image_children(top, skip=None)
    return list(dict.fromkeys(folders + list(extra)))


def _image_children(folder: Path, *, skip: Path | None) -> list[Path]:
    try:
        children = [p for p in sorted(folder.iterdir()) if p != skip and _is_image_dir(p.name) and p.is_dir()]
    except OSError:
        return []
    return sorted(children, key=lambda p: p.name.lower() not in IMAGE_DIRS)


class ImageIndex:
    """Image files of one folder (their paths as text), looked up by file name or by stem."""

    def __init__(self, folder: Path):
        self.by_name: dict[str, str] = {}
        self.by_stem: dict[str, str] = {}
        try:
            with os.scandir(folder) as listing:  # the suffix first: most folders hold other files too
                entries = {entry.name: entry for entry in listing if entry.name.lower().endswith(IMAGE_EXTENSIONS)}
            for name in sorted(entries):
                stem, ext = os.path.splitext(name)
                if ext and entries[name].is_file():
                    self.by_name.setdefault(name, entries[name].path)
                    self.by_stem.setdefault(stem, entries[name].path)
        except OSError:
            pass  # a folder that vanished or cannot be listed holds no image we can use


_INDEXES: dict[Path, ImageIndex] = {}  # per process: folders are listed once per read_voc


def find_image(folders: list[Path], filename: str | None, path: str | None, xml_stem: str) -> str | None:
    """The image named by <filename>, then by the basename of <path>, then by the XML's stem
    (with any image extension), searched folder by folder, nearest first. Only base names are
    looked up in listed folders: nothing in an XML can point outside them."""
    indexes = [_INDEXES.get(folder) or _INDEXES.setdefault(folder, ImageIndex(folder)) for folder in folders]
    for kind, key in _image_keys(filename, path, xml_stem):
        for index in indexes:
            found = (index.by_name if kind == "name" else index.by_stem).get(key)
            if found is not None:
                return found
    return None


def _image_keys(filename: str | None, path: str | None, xml_stem: str) -> Iterator[tuple[str, str]]:
    """What find_image looks up, in order (made as needed: the first key nearly always finds it)."""
    for text in (filename, path):
        if text:
            name = text.replace("\\", "/").rsplit("/", 1)[-1]
            yield "name", name
            stem, ext = os.path.splitext(name)
            yield "stem", stem if ext.lower() in IMAGE_EXTENSIONS else name
    yield "stem", xml_stem


def read_imagesets(root: Path) -> dict[str, str]:
    """image id -> split from ImageSets/Main/{train,val,test}.txt (trainval.txt stands in for train)."""
    main = root / "ImageSets" / "Main"
    if not main.is_dir():
        raise DatasetError(f"{main}: not found; --imagesets needs ImageSets/Main/{{train,val,test}}.txt (or use --split)")
    files = {name: main / f"{name}.txt" for name in IMAGESET_NAMES}
    if not files["train"].exists() and (main / "trainval.txt").exists():
        files["train"] = main / "trainval.txt"
    split_of: dict[str, str] = {}
    for split, path in files.items():
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            image_id = line.split()[0] if line.split() else ""
            if not image_id:
                continue
            if split_of.get(image_id, split) != split:
                raise DatasetError(
                    f"{path}: {image_id} is also in {split_of[image_id]}.txt; an image must be in one split only"
                )
            split_of[image_id] = split
    if not split_of:
        raise DatasetError(f"{main}: no ids in train/val/test/trainval .txt files")
    return split_of


def folder_split(rel: str) -> str | None:
    """'train' / 'val' / 'test' from the first folder of a relative posix path named for a split
    (train, training, val, valid, validation, test)."""
    for part in rel.split("/")[:-1]:
        split = SPLIT_WORDS.get(part.lower())
        if split:
            return split
    return None


def _texts(element: ET.Element | None) -> dict[str, str]:
    """Child tag -> text (direct children only: much faster than findtext paths on 10k files)."""
    return {} if element is None else {child.tag: (child.text or "").strip() for child in element}


ObjectFields = tuple[str, list[float], dict[str, int], str]  # name, corners, flags, bad flags

_CORNERS = {"xmin": 0, "ymin": 1, "xmax": 2, "ymax": 3}
_FLAGS = ("difficult", "truncated", "occluded")
_PLAIN_FLAGS = {"0": 0, "1": 1}


def _object_fields(obj: ET.Element) -> ObjectFields:
    """(name, [xmin, ymin, xmax, ymax] with NaN for a missing or bad value, flags, flags that are
    not booleans) in one pass; of a repeated tag, the last one counts."""
    label, corners, attributes, bad = "", [math.nan] * 4, {}, ""
    for child in obj:
        tag = child.tag
        if tag == "bndbox":
            for coord in child:
                i = _CORNERS.get(coord.tag)
                if i is not None:
                    corners[i] = _coordinate(coord.text)
        elif tag == "name":
            label = (child.text or "").strip()
        elif tag in _FLAGS and child.text:
            value = _PLAIN_FLAGS.get(child.text)  # "0" / "1": nearly every file, without parse_flag's work
            if value is None and child.text.strip():
                flag = parse_flag(child.text)
                if flag is None:
                    bad += f"<{tag}>{child.text.strip()[:20]}</{tag}> "
                    continue
                value = int(flag)
            if value is not None:
                attributes[tag] = value
    return label, corners, attributes, bad.strip()


def _coordinate(text: str | bytes | None) -> float:
    """The number in a coordinate's text; NaN for a missing or bad one (fix_box drops the box)."""
    try:
        return float(text) if text else math.nan
    except ValueError:
        return math.nan


# LabelImg's <object> (and Roboflow's, with <occluded>), as bytes: name, pose, truncated,
# difficult, occluded, bndbox in that order, no attributes, comments, entities or CR. Only text
# that ElementTree would return unchanged is matched: coordinates and pose in printable ASCII,
# the name in any UTF-8 (checked when decoded), never <, > or &. Each run of characters is
# followed by one outside its class, so it never gives back any: possessive where Python has them
# (3.11+; the split is ~15 % faster).
_RUN = b"*+" if sys.version_info >= (3, 11) else b"*"
_WS = rb"[ \t\n]" + _RUN
_ASCII = rb"[^<>&\x00-\x08\x0b-\x1f\x7f-\xff]" + _RUN
_TEXT = rb"[^<>&\x00-\x08\x0b-\x1f]" + _RUN  # any UTF-8 (checked when decoded) but markup and controls
_LABELIMG_OBJECT = re.compile(
    rb"<object>" + _WS + rb"<name>(" + _TEXT + rb")</name>" + _WS
    + rb"(?:<pose>" + _ASCII + rb"</pose>" + _WS + rb")?"
    + rb"(?:<truncated>([01])</truncated>" + _WS + rb")?"
    + rb"(?:<difficult>([01])</difficult>" + _WS + rb")?"
    + rb"(?:<occluded>([01])</occluded>" + _WS + rb")?"
    + rb"<bndbox>" + _WS
    + _WS.join(rb"<%s>(%s)</%s>" % (tag, _ASCII, tag) for tag in (b"xmin", b"ymin", b"xmax", b"ymax"))
    + _WS + rb"</bndbox>" + _WS + rb"</object>"
)
_GROUPS = 8
_MARKER = b"<object/>"
_ENCODING = re.compile(rb"""<\?xml[^>]*?encoding[ \t\n]*=[ \t\n]*["']([^"']*)["']""")
_LABELIMG_OBJECT_WS = re.compile(_LABELIMG_OBJECT.pattern + _WS)


def _element(tag: bytes, value: bytes = _ASCII) -> bytes:
    return rb"(?:<%s>%s</%s>%s)?" % (tag, value, tag, _WS)


# The whole of a LabelImg / Roboflow file: an optional BOM and UTF-8 declaration, the header
# elements in their order (each optional), then the objects up to </annotation>, which
# _labelimg_file reads one by one with _LABELIMG_OBJECT_WS.
_LABELIMG_HEAD = re.compile(
    rb"(?:\xef\xbb\xbf)?"
    + rb"""(?:<\?xml version=(?:"1\.0"|'1\.0')(?: encoding=(?:"(?i:utf-8)"|'(?i:utf-8)'))?\?>""" + _WS + rb")?"
    + rb"""<annotation(?: verified=(?:"yes"|"no"))?>""" + _WS  # LabelImg marks files it verified
    + _element(b"folder")
    + _element(b"filename", rb"(?P<filename>" + _TEXT + rb")")
    + _element(b"path", rb"(?P<path>" + _TEXT + rb")")
    + rb"(?:<source>" + _WS + _element(b"database") + rb"</source>" + _WS + rb")?"
    + rb"(?:<size>" + _WS + _element(b"width", rb"(?P<width>" + _ASCII + rb")")
    + _element(b"height", rb"(?P<height>" + _ASCII + rb")") + _element(b"depth") + rb"</size>" + _WS + rb")?"
    + _element(b"segmented")
    + rb"(?s:(?P<objects>.*))</annotation>" + _WS + rb"\Z"
)

# filename, path, declared width and height (None where absent), the objects' fields
VocFields = tuple["str | None", "str | None", "str | None", "str | None", list[ObjectFields]]


def _labelimg_file(data: bytes) -> VocFields | None:
    """The fields of a whole file in LabelImg's or Roboflow's layout (its header elements in their
    order, then nothing but objects), read by regular expressions alone; None for any other file.
    Every text it takes is one that ElementTree returns unchanged, so the result is the same as its."""
    head = _LABELIMG_HEAD.match(data)
    if head is None:
        return None
    parts = _LABELIMG_OBJECT_WS.split(head["objects"])
    if any(parts[:: _GROUPS + 1]):  # text between the objects: not this layout
        return None
    fields = _objects_of(parts)
    filename, path = _xml_text(head["filename"]), _xml_text(head["path"])
    if fields is None or (filename is None) != (head["filename"] is None) or (path is None) != (head["path"] is None):
        return None
    width, height = head["width"], head["height"]
    return (
        filename,
        path,
        None if width is None else width.strip().decode(),
        None if height is None else height.strip().decode(),
        fields,
    )


def _xml_text(text: bytes | None) -> str | None:
    """UTF-8 text as ElementTree would return it; None when it is not (or there is none)."""
    if text is None:
        return None
    try:
        decoded = text.decode()
    except UnicodeDecodeError:
        return None
    return None if "\ufffe" in decoded or "\uffff" in decoded else decoded  # not XML characters


def _objects_of(parts: list) -> list[ObjectFields] | None:
    """The fields of every object in the pieces _LABELIMG_OBJECT.split returns; None when a name
    is not XML text. Objects of one flag set share one attributes dict (Box.attributes is read-only)."""
    fields = []
    for i in range(1, len(parts), _GROUPS + 1):
        label = _label(parts[i])
        if label is None:
            return None
        try:
            corners = [float(parts[i + 4]), float(parts[i + 5]), float(parts[i + 6]), float(parts[i + 7])]
        except ValueError:  # an empty or non-numeric coordinate
            corners = [_coordinate(text) for text in parts[i + 4 : i + 8]]
        fields.append((label, corners, _flags(parts[i + 1], parts[i + 2], parts[i + 3]), ""))
    return fields


@functools.lru_cache(maxsize=1024)
def _label(name: bytes) -> str | None:
    label = _xml_text(name)
    return None if label is None else label.strip()


@functools.lru_cache(maxsize=32)
def _flags(truncated: bytes | None, difficult: bytes | None, occluded: bytes | None) -> dict[str, int]:
    """The attributes of a <truncated>, <difficult>, <occluded> set, each b"0", b"1" or absent (None)."""
    given = (("truncated", truncated), ("difficult", difficult), ("occluded", occluded))
    return {tag: _PLAIN_FLAGS[value.decode()] for tag, value in given if value is not None}


def _labelimg_fields(data: bytes) -> VocFields | None:
    """The fields of a UTF-8 VOC file whose objects all lie directly in <annotation> in LabelImg's
    layout, its header in any: the objects are read by one regular expression and only the rest,
    each object left as an empty <object/>, by ElementTree (half the time of the whole tree on
    BCCD). None for any other file, which the caller parses whole: the result is the same as
    ElementTree's on every file this accepts (tests/converters/test_voc_fast.py)."""
    if b"<!" in data or not _utf8_only(data):  # a DTD entity may hold an object the markers can't place
        return None
    parts = _LABELIMG_OBJECT.split(data)
    count = len(parts) // (_GROUPS + 1)
    try:
        root = ET.fromstring(_MARKER.join(parts[:: _GROUPS + 1]))
    except (ET.ParseError, LookupError):
        return None
    # every object is one of the markers and every marker is a child of the root: the file had no
    # other object (wrapped, nested, or in another layout) and no match was inside a comment or text
    if root.tag != "annotation" or len(root.findall("object")) != count or sum(1 for _ in root.iter("object")) != count:
        return None
    fields = _objects_of(parts)
    return None if fields is None else _header_of(root, fields)


def _header_of(root: ET.Element, fields: list[ObjectFields]) -> VocFields:
    size = _texts(root.find("size"))
    return root.findtext("filename"), root.findtext("path"), size.get("width"), size.get("height"), fields


def _utf8_only(data: bytes) -> bool:
    """True when expat reads the file as UTF-8: no other declared encoding, no UTF-16/32."""
    head = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    if b"\x00" in head[:4] or head.startswith((b"\xfe\xff", b"\xff\xfe")):
        return False
    if not head.startswith(b"<?xml"):
        return True
    declared = _ENCODING.match(head)
    return declared is None or declared.group(1).lower() == b"utf-8"


# An image as plain values: source path, width, height, mode, origin, split, EXIF orientation, and
# its boxes as tuples of Box's fields in order. Workers send these back: plain tuples pickle about
# 4x faster than ImageRecord/Box objects, and no Box is made twice.
Packed = tuple[str, int, int, str, str, "str | None", int, list[tuple]]


def _read_xml(
    xml_path: str | Path,
    folders: list[Path],
    problems: Problems,
    classes: list[str] | None,
    split: str | None,
    where: str,
) -> Packed | None:
    try:
        data = _file_bytes(xml_path)
        parsed = _labelimg_file(data) or _labelimg_fields(data)
        root = None if parsed else ET.fromstring(data)  # as ET.parse, without its Python-level wrapper
    except ET.ParseError as e:
        line, col = e.position
        problems.error(f"{xml_path}:{line}:{col}: malformed XML ({e}); fix or delete this file")
        return None
    except LookupError as e:  # an encoding Python does not know
        problems.error(f"{xml_path}: {e}; save the file as UTF-8")
        return None
    except OSError as e:  # a broken link, a symlink loop, no permission
        problems.add("xml_unreadable", f"{where}: {e.strerror or e}")
        return None
    if parsed is None:
        if root.tag != "annotation":
            problems.add("xml_not_voc", f"{where}: <{root.tag}>")
            return None
        objects = [child for child in root if child.tag == "object"]
        wrapped = [obj for child in root if child.tag != "object" for obj in child.iter("object")]
        if wrapped:
            problems.add("box_wrapped", f"{where}: {len(wrapped)} in <{_wrapper_tags(root)}>", n=len(wrapped))
            objects += wrapped
        parsed = _header_of(root, [_object_fields(obj) for obj in objects])
    filename, path, declared_width, declared_height, fields = parsed
    image_path = find_image(folders, filename, path, _stem(xml_path))
    if image_path is None:
        problems.add("image_missing", f"{where} (<filename>{filename}</filename>)")
        problems.drop_boxes(len(fields))
        return None
    try:
        info = probe_image(image_path)
    except ImageProblem as e:
        problems.add(e.reason, str(e))
        problems.drop_boxes(len(fields))
        return None
    width, height, turn = image_frame(info, (declared_width, declared_height), problems, where)
    boxes = []
    kept = 0
    for n, (label, corners, attributes, bad) in enumerate(fields, start=1):
        if not label:
            problems.add("box_no_label", f"{where} object {n}")
            problems.count_box("dropped")
            continue
        if bad:
            problems.add("box_bad_flag", f"{where} object {n}: {bad}")
            problems.count_box("dropped")
            continue
        if classes is not None and not accept_label(label, classes, problems, f"{where} object {n}"):
            continue
        if turn != 1:
            corners = orient_box(corners, turn, info.width, info.height)
        x0, y0, x1, y1 = corners
        if 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height:  # fix_box's common case, counted below
            kept += 1
            repaired = False
        else:
            fixed = fix_box(x0, y0, x1, y1, width=width, height=height, problems=problems, where=f"{where} object {n}")
            if fixed is None:
                continue
            repaired = fixed != (x0, y0, x1, y1)
            x0, y0, x1, y1 = fixed
        boxes.append((x0, y0, x1, y1, label, False, bool(attributes.get("difficult")), attributes, None, None, repaired))
    if kept:
        problems.boxes["total"] += kept
        problems.boxes["kept"] += kept
    check_mode(info.mode, where, problems)
    return (str(image_path), width, height, info.mode, where, split, info.orientation, boxes)


def _file_bytes(path: Path | str) -> bytes:
    """The whole file in four system calls (open, fstat, read, close), half those of open().read();
    a folder raises IsADirectoryError as open() does."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        data = chunk = os.read(fd, size + 1)
        while chunk and len(data) != size:  # the file changed meanwhile, or a short read: read to its end
            chunk = os.read(fd, 1 << 16)
            data += chunk
        return data
    finally:
        os.close(fd)


def _wrapper_tags(root: ET.Element) -> str:
    return ", ".join(sorted({child.tag for child in root if child.tag != "object" and child.find(".//object") is not None}))


PARALLEL_MIN = 2000  # XMLs; below this a process pool costs more than it saves
CHUNK = 250  # XMLs per task: small enough that the workers finish together

Job = tuple[str, "str | None", str]  # XML, its source split, its name in messages


def _read_chunk(
    jobs: list[Job], *, folders_of: dict[str, list[Path]], classes: list[str] | None
) -> tuple[list[Packed | None], Problems]:
    """Read XMLs with their own Problems, so chunks can run in worker processes (forked ones inherit
    read_voc's paused GC; spawned ones, as on macOS, pause it here)."""
    problems = Problems()
    with gc_paused():
        return [
            _read_xml(path, folders_of[os.path.dirname(path)], problems, classes, split, where) for path, split, where in jobs
        ], problems


def _unpack(packed: Packed) -> ImageRecord:
    source, width, height, mode, origin, split, orientation, boxes = packed
    path = Path(source)
    return ImageRecord(
        source=path,
        file_name=path.name,
        width=width,
        height=height,
        mode=mode,
        boxes=list(itertools.starmap(Box, boxes)),
        origin=origin,
        split=split,
        orientation=orientation,
    )


@gc_paused()  # its collections would only walk the boxes being read again and again
def read_voc(
    root: Path,
    *,
    classes: list[str] | None = None,
    imagesets: bool | None = False,
    images_dirs: list[Path] | None = None,
    annotations_dirs: list[Path] | None = None,
) -> Dataset:
    """Read a Pascal VOC dataset laid out in any way; raises DatasetError when nothing usable is found.

    Every *.xml under the root (or under `annotations_dirs`) is read or counted with the reason it
    was not. Each image's split is the folder it lies under (train/, validation/ ...); with
    `imagesets` True it is ImageSets/Main's instead and unlisted images are dropped; with None,
    ImageSets/Main's where it lists the image (for `inspect`).
    """
    _INDEXES.clear()  # folders are listed afresh by each read (forked workers inherit the empty cache)
    _flags.cache_clear()  # boxes share attribute dicts within one read only
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; give the VOC root (the folder holding the .xml files)")
    extra = [Path(os.path.abspath(d)) for d in images_dirs or []]
    xml_roots = [Path(os.path.abspath(d)) for d in annotations_dirs or []] or [root]
    xml_files = find_xml_files(xml_roots)
    if not xml_files:
        raise DatasetError(
            f"{', '.join(map(str, xml_roots))}: no .xml annotation file at any depth; give the VOC root "
            "or --annotations DIR"
        )
    split_of = None
    if imagesets or (imagesets is None and (root / "ImageSets" / "Main").is_dir()):
        split_of = read_imagesets(root)
    parents = [os.path.dirname(p) for p in xml_files]
    one_folder = len(set(parents)) == 1
    problems = Problems()
    jobs: list[Job] = []
    for xml_path in xml_files:
        rel = _relative(xml_path, root)
        where = os.path.basename(xml_path) if one_folder else rel
        split = folder_split(rel)
        if split_of is not None:
            listed = split_of.get(_stem(xml_path))
            if listed is None and imagesets:
                problems.add("image_not_in_split", where)
                problems.drop_boxes(_count_objects(xml_path))
                continue
            split = listed or split
        jobs.append((xml_path, split, where))
    folders_of = {folder: image_folders(Path(folder), root, extra) for folder in dict.fromkeys(parents)}
    workers = min(os.cpu_count() or 1, 8)
    images: list[ImageRecord] = []
    read = partial(_read_chunk, folders_of=folders_of, classes=classes)
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    with contextlib.ExitStack() as stack:
        if len(jobs) >= PARALLEL_MIN and workers >= 2:
            read_all = stack.enter_context(ProcessPoolExecutor(workers)).map
        else:
            read_all = map
        for packed, chunk_problems in read_all(read, chunks):
            problems.merge(chunk_problems)
            images += [_unpack(image) for image in packed if image is not None]
    seen: dict[Path, str] = {}
    unique = []
    for image in images:
        if image.source in seen:
            problems.error(
                f"{image.origin}: image {image.source.name} is already annotated by {seen[image.source]}; "
                "keep one annotation file per image"
            )
            continue
        seen[image.source] = image.origin
        unique.append(image)
    images = unique
    if split_of is not None and imagesets:
        known = {_stem(p) for p in xml_files}
        for image_id in sorted(set(split_of) - known):
            problems.add("imageset_unknown_id", image_id)
    problems.raise_if_unusable()
    if not images:
        raise DatasetError(f"{root}: no usable image; the dataset is empty", problems=problems)
    return Dataset(
        images=images,
        classes=final_classes(images, classes, problems),
        problems=problems,
        source=str(root),
    )


def _relative(path: str, root: Path) -> str:
    """Path(path).relative_to(root).as_posix() by text (both are absolute and normalized), or the
    whole path for one outside the root (from --annotations)."""
    text, prefix = str(path), str(root).rstrip("/") + "/"
    return text[len(prefix) :] if text.startswith(prefix) else "." if text == str(root) else text


def _stem(path: str | Path) -> str:
    """Path(path).stem, by text."""
    name = os.path.basename(path)
    i = name.rfind(".")
    return name[:i] if 0 < i < len(name) - 1 else name


def _count_objects(xml_path: str) -> int:
    try:
        return sum(1 for _ in ET.parse(xml_path).getroot().iter("object"))
    except (ET.ParseError, LookupError, OSError):
        return 0
