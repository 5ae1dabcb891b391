"""Native MXNet RecordIO (.rec + .idx) reading and writing, without mxnet.

SageMaker's built-in Object Detection algorithm consumes RecordIO files. The
byte layout mirrors dmlc-core's ``RecordIOWriter`` and mxnet's
``recordio.pack``/``MXIndexedRecordIO`` exactly, so files written here are
byte-identical to what mxnet 1.9.1 writes for the same payloads.

Framing (all little-endian uint32): each record is one or more chunks
``[MAGIC][lrec][data]`` followed by zero padding to a 4-byte multiple of the
*total* payload length, written once after the last chunk. ``lrec`` is
``(cflag << 29) | length``. The writer splits a payload at every 4-byte
aligned occurrence of the magic word (the magic itself is dropped and restored
by the reader) so a reader can resynchronise on magic words.

Payload: ``IRHeader`` ('IfQQ': flag, label, id, id2) + optional float32 label
array (flag = its length) + image bytes.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)  # b"\x0a\x23\xd7\xce"
LREC_LENGTH_BITS = 29
MAX_CHUNK_LENGTH = (1 << LREC_LENGTH_BITS) - 1
MAX_RECORD_LENGTH = MAX_CHUNK_LENGTH  # dmlc refuses records >= 2**29 bytes

CFLAG_WHOLE = 0
CFLAG_FIRST = 1
CFLAG_MIDDLE = 2
CFLAG_LAST = 3

_CHUNK_HEADER = struct.Struct("<II")  # magic, lrec
IR_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2 (24 bytes, no padding)
IR_HEADER_SIZE = IR_HEADER.size


class IRHeader(NamedTuple):
    """mxnet's image-record header; ``flag`` > 0 means that many float32 labels follow."""

    flag: int
    label: float
    id: int
    id2: int


PathLike = str | os.PathLike


# --------------------------------------------------------------------------- payloads


def _pack_floats(values: Sequence[float]) -> bytes:
    # struct's 'f' rounds to nearest-even like np.float32 does in mxnet's pack().
    return struct.pack("<%df" % len(values), *values)


def pack_detection(
    record_id: int, labels: Sequence[float], image_bytes: bytes, id2: int = 0
) -> bytes:
    """Build a detection payload as mxnet ``recordio.pack_img`` does with an array label.

    ``labels`` is the full im2rec array ``[header_width, label_width, cls, xmin, ymin,
    xmax, ymax, ...]`` with normalized coordinates; it is validated so that a
    malformed array fails here rather than deep inside a SageMaker training job.
    """
    labels = [float(v) for v in labels]
    detection_boxes(labels)  # validation only
    header = IR_HEADER.pack(len(labels), 0.0, record_id, id2)
    return header + _pack_floats(labels) + bytes(image_bytes)


def pack_scalar(record_id: int, label: float, data: bytes, id2: int = 0) -> bytes:
    """Build a payload with a single scalar label (IRHeader flag = 0)."""
    return IR_HEADER.pack(0, float(label), record_id, id2) + bytes(data)


def unpack(payload: bytes) -> tuple[IRHeader, list[float] | float, bytes]:
    """Split a payload into (header, labels, data).

    ``labels`` is a list of floats when the header carries an array label
    (flag > 0), otherwise the scalar ``header.label``.
    """
    if len(payload) < IR_HEADER_SIZE:
        raise ValueError(
            f"payload of {len(payload)} bytes is shorter than the {IR_HEADER_SIZE}-byte IRHeader"
        )
    header = IRHeader(*IR_HEADER.unpack_from(payload, 0))
    if header.flag == 0:
        return header, header.label, bytes(payload[IR_HEADER_SIZE:])
    end = IR_HEADER_SIZE + 4 * header.flag
    if len(payload) < end:
        raise ValueError(
            f"payload of {len(payload)} bytes too short for {header.flag} float32 labels"
        )
    labels = list(struct.unpack_from("<%df" % header.flag, payload, IR_HEADER_SIZE))
    return header, labels, bytes(payload[end:])


def detection_boxes(
    labels: Sequence[float],
) -> list[tuple[float, float, float, float, float]]:
    """Parse an im2rec detection label array into ``(cls, xmin, ymin, xmax, ymax)`` tuples.

    Honors ``header_width`` (labels[0], may exceed 2 for extra header fields) and
    ``label_width`` (labels[1], >= 5; extra per-object fields such as 'difficult'
    are dropped). Coordinates stay normalized; ``cls`` stays a float as stored.
    """
    if isinstance(labels, (int, float)):
        raise ValueError("scalar label has no detection boxes (expected a label array)")
    labels = list(labels)
    if len(labels) < 2:
        raise ValueError(f"detection label array needs >= 2 values, got {len(labels)}")
    header_width, label_width = labels[0], labels[1]
    if header_width != int(header_width) or int(header_width) < 2:
        raise ValueError(f"invalid header_width {header_width!r} (must be an integer >= 2)")
    if label_width != int(label_width) or int(label_width) < 5:
        raise ValueError(f"invalid label_width {label_width!r} (must be an integer >= 5)")
    hw, lw = int(header_width), int(label_width)
    if len(labels) < hw or (len(labels) - hw) % lw:
        raise ValueError(
            f"label array of length {len(labels)} does not fit header_width={hw}, label_width={lw}"
        )
    return [
        (labels[i], labels[i + 1], labels[i + 2], labels[i + 3], labels[i + 4])
        for i in range(hw, len(labels), lw)
    ]


# --------------------------------------------------------------------------- framing


def _encode_lrec(cflag: int, length: int) -> int:
    return (cflag << LREC_LENGTH_BITS) | length


def frame_record(payload: bytes) -> bytes:
    """Return the on-disk bytes for one record, exactly as dmlc's RecordIOWriter writes them."""
    payload = bytes(payload)
    n = len(payload)
    if n > MAX_RECORD_LENGTH:
        raise ValueError(f"RecordIO records must be < 2**29 bytes, got {n}")
    out = bytearray()
    dptr = 0
    lower_align = n & ~3
    # Only aligned hits split: the reader resynchronises on aligned magic words.
    i = payload.find(MAGIC_BYTES, 0, lower_align)
    while i != -1:
        if i % 4 == 0:
            out += _CHUNK_HEADER.pack(
                MAGIC, _encode_lrec(CFLAG_FIRST if dptr == 0 else CFLAG_MIDDLE, i - dptr)
            )
            out += payload[dptr:i]
            dptr = i + 4
            i = payload.find(MAGIC_BYTES, dptr, lower_align)
        else:
            i = payload.find(MAGIC_BYTES, i + 1, lower_align)
    out += _CHUNK_HEADER.pack(
        MAGIC, _encode_lrec(CFLAG_LAST if dptr != 0 else CFLAG_WHOLE, n - dptr)
    )
    out += payload[dptr:]
    out += b"\x00" * (((n + 3) & ~3) - n)  # pad once, from the total payload length
    return bytes(out)


class RecordWriter:
    """Atomic writer for an indexed RecordIO pair (.rec + .idx).

    Writes go to hidden temp files in the target directories; both are moved into
    place only on a clean ``close()``, so a crash or exception never leaves a
    partial dataset that SageMaker would happily train on.
    """

    def __init__(self, rec_path: PathLike, idx_path: PathLike) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path)
        if self.rec_path.resolve() == self.idx_path.resolve():
            raise ValueError("rec_path and idx_path must differ")
        self._keys: set[int] = set()
        self._offset = 0
        self._closed = False
        self._rec_tmp = self._temp_name(self.rec_path)
        self._idx_tmp = self._temp_name(self.idx_path)
        # 'x' mode: never clobber, and honors the umask (unlike mkstemp's 0600).
        self._rec: BinaryIO = open(self._rec_tmp, "xb")
        try:
            self._idx: BinaryIO = open(self._idx_tmp, "xb")
        except BaseException:
            self._rec.close()
            os.unlink(self._rec_tmp)
            raise

    @staticmethod
    def _temp_name(path: Path) -> Path:
        return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")

    def write(self, key: int, payload: bytes) -> int:
        """Append one record under ``key``; returns its byte offset in the .rec."""
        if self._closed:
            raise ValueError("write to a closed RecordWriter")
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"key must be an int, got {type(key).__name__}")
        if key in self._keys:
            raise ValueError(f"duplicate record key {key}")
        data = frame_record(payload)
        offset = self._offset
        self._rec.write(data)
        self._idx.write(b"%d\t%d\n" % (key, offset))
        self._keys.add(key)
        self._offset += len(data)
        return offset

    def close(self) -> None:
        """Flush, fsync and move both files into place (.rec first, then .idx)."""
        if self._closed:
            return
        try:
            for f in (self._rec, self._idx):
                f.flush()
                os.fsync(f.fileno())
                f.close()
            os.replace(self._rec_tmp, self.rec_path)
            os.replace(self._idx_tmp, self.idx_path)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Discard everything written; existing target files are left untouched."""
        self._closed = True
        for f in (self._rec, self._idx):
            try:
                f.close()
            except OSError:
                pass
        for tmp in (self._rec_tmp, self._idx_tmp):
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------- reading


def read_index(idx_path: PathLike) -> list[tuple[int, int]]:
    """Parse a .idx file into ``(key, offset)`` pairs in file order."""
    entries: list[tuple[int, int]] = []
    with open(idx_path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(b"\t")
            try:
                if len(parts) != 2:
                    raise ValueError
                entries.append((int(parts[0]), int(parts[1])))
            except ValueError:
                raise ValueError(f"{idx_path}: line {lineno}: malformed index line {line!r}") from None
    return entries


def _iter_raw(rec_path: PathLike) -> Iterator[tuple[int, bytes]]:
    """Yield ``(record_start_offset, payload)`` for every record, validating the framing."""
    with open(rec_path, "rb") as f:
        pos = 0
        while True:
            start = pos
            parts: list[bytes] = []
            expect_continuation = False
            while True:
                head = f.read(_CHUNK_HEADER.size)
                if not head and not expect_continuation:
                    return
                if len(head) < _CHUNK_HEADER.size:
                    what = "inside a split record" if expect_continuation else "chunk header"
                    raise ValueError(
                        f"{rec_path}: truncated record at byte offset {pos} "
                        f"({what}: got {len(head)} of {_CHUNK_HEADER.size} header bytes)"
                    )
                magic, lrec = _CHUNK_HEADER.unpack(head)
                if magic != MAGIC:
                    raise ValueError(
                        f"{rec_path}: bad magic 0x{magic:08X} at byte offset {pos} "
                        f"(expected 0x{MAGIC:08X}); not a RecordIO file or corrupt"
                    )
                cflag, length = lrec >> LREC_LENGTH_BITS, lrec & MAX_CHUNK_LENGTH
                if expect_continuation != (cflag in (CFLAG_MIDDLE, CFLAG_LAST)):
                    raise ValueError(
                        f"{rec_path}: unexpected chunk flag {cflag} at byte offset {pos}"
                    )
                data = f.read(length)
                if len(data) < length:
                    raise ValueError(
                        f"{rec_path}: truncated record at byte offset {start}: chunk at "
                        f"{pos} declares {length} bytes, only {len(data)} present"
                    )
                parts.append(data)
                pos += _CHUNK_HEADER.size + length
                if cflag in (CFLAG_WHOLE, CFLAG_LAST):
                    break
                if length % 4:
                    raise ValueError(
                        f"{rec_path}: unaligned split chunk of {length} bytes at byte offset "
                        f"{pos - length - _CHUNK_HEADER.size}"
                    )
                expect_continuation = True
            total = sum(len(p) for p in parts) + 4 * (len(parts) - 1)
            pad = ((total + 3) & ~3) - total
            if pad:
                padding = f.read(pad)
                if len(padding) < pad:
                    raise ValueError(
                        f"{rec_path}: truncated record at byte offset {start}: "
                        f"missing {pad - len(padding)} padding byte(s) at {pos + len(padding)}"
                    )
                pos += pad
            yield start, MAGIC_BYTES.join(parts)


def read_records(
    rec_path: PathLike, idx_path: PathLike | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(key, payload)`` for every record in file order.

    With ``idx_path`` the keys come from the index, which must list exactly the
    record start offsets of the .rec (a stale or mismatched index raises
    ValueError). Without it, keys are the 0-based record ordinals.
    """
    if idx_path is None:
        for ordinal, (_, payload) in enumerate(_iter_raw(rec_path)):
            yield ordinal, payload
        return
    entries = read_index(idx_path)
    key_at: dict[int, int] = {}
    for key, offset in entries:
        if offset in key_at:
            raise ValueError(f"{idx_path}: offset {offset} listed twice")
        key_at[offset] = key
    seen = 0
    for offset, payload in _iter_raw(rec_path):
        if offset not in key_at:
            raise ValueError(
                f"{idx_path}: no index entry for the record at byte offset {offset} of {rec_path}"
            )
        seen += 1
        yield key_at[offset], payload
    if seen != len(key_at):
        raise ValueError(
            f"{idx_path}: lists {len(key_at)} records but {rec_path} holds {seen}"
        )
