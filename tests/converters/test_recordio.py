"""Tests for converters.recordio against an mxnet-1.9.1-written reference and synthetic edge cases."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odorch.converters import recordio
from odorch.converters.recordio import (
    MAGIC_BYTES,
    RecordWriter,
    detection_boxes,
    pack_detection,
    pack_scalar,
    read_records,
    unpack,
)

FIXTURE_DIR = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "recordio"


@pytest.fixture(scope="module")
def fixture_dir() -> Path:
    if not (FIXTURE_DIR / "tiny_meta.json").is_file():
        pytest.skip(
            f"mxnet RecordIO reference fixture not found at {FIXTURE_DIR} "
            "(it lives outside the repo, in ../shared; absent in a fresh clone)"
        )
    return FIXTURE_DIR


@pytest.fixture(scope="module")
def meta(fixture_dir: Path) -> list[dict]:
    return json.loads((fixture_dir / "tiny_meta.json").read_text())


@pytest.fixture(scope="module")
def rec_bytes(fixture_dir: Path) -> bytes:
    return (fixture_dir / "tiny.rec").read_bytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _slice_payload(rec: bytes, entry: dict) -> bytes:
    """Cut an unsplit record's payload out of the raw .rec without using read_records."""
    pos, n = entry["pos"], entry["payload_len"]
    magic, lrec = struct.unpack_from("<II", rec, pos)
    assert magic == 0xCED7230A
    assert lrec == n, f"key {entry['key']} is expected to be a single cflag=0 chunk"
    payload = rec[pos + 8 : pos + 8 + n]
    assert _sha(payload) == entry["payload_sha256"]
    return payload


def _f32(values) -> list[float]:
    return np.asarray(values, dtype=np.float32).tolist()


# --------------------------------------------------------------------------- byte-identity with mxnet


def test_rebuild_fixture_byte_identical(tmp_path: Path, meta, rec_bytes, fixture_dir: Path):
    out_rec, out_idx = tmp_path / "tiny.rec", tmp_path / "tiny.idx"
    with RecordWriter(out_rec, out_idx) as w:
        for entry in meta:
            if "payload_hex" in entry:
                payload = bytes.fromhex(entry["payload_hex"])
            else:
                original = _slice_payload(rec_bytes, entry)
                header_len = len(bytes.fromhex(entry["header_bytes_hex"]))
                image = original[header_len:]
                payload = pack_detection(entry["key"], entry["label"], image)
                assert payload[:header_len].hex() == entry["header_bytes_hex"]
                assert payload == original
            assert w.write(entry["key"], payload) == entry["pos"]
    assert out_rec.read_bytes() == rec_bytes
    assert out_idx.read_bytes() == (fixture_dir / "tiny.idx").read_bytes()


def test_pack_scalar_reproduces_split_record_payload(meta):
    (entry,) = [e for e in meta if e["key"] == 99]
    expected = bytes.fromhex(entry["payload_hex"])
    data = expected[recordio.IR_HEADER_SIZE :]
    assert MAGIC_BYTES in data
    header, label, body = unpack(expected)
    assert (header.flag, header.id, label) == (0, 99, entry["label"])
    assert body == data
    assert pack_scalar(99, entry["label"], data, id2=header.id2) == expected
    assert _sha(expected) == entry["payload_sha256"]


def test_split_record_framing_matches_fixture(meta, rec_bytes):
    (entry,) = [e for e in meta if e["key"] == 99]
    payload = bytes.fromhex(entry["payload_hex"])
    framed = recordio.frame_record(payload)
    assert framed == rec_bytes[entry["pos"] :]
    # Two chunks: cflag 1 (28 bytes) then cflag 3 (7 bytes), one pad byte at the end.
    assert struct.unpack_from("<I", framed, 4)[0] == (1 << 29) | 28
    assert struct.unpack_from("<I", framed, 8 + 28 + 4)[0] == (3 << 29) | 7
    assert len(framed) == 8 + 28 + 8 + 7 + 1


# --------------------------------------------------------------------------- reading the mxnet fixture


def test_read_fixture(meta, fixture_dir: Path):
    records = list(read_records(fixture_dir / "tiny.rec", fixture_dir / "tiny.idx"))
    assert [k for k, _ in records] == [0, 1, 7, 99]
    by_key = dict(records)
    for entry in meta:
        payload = by_key[entry["key"]]
        assert len(payload) == entry["payload_len"]
        assert _sha(payload) == entry["payload_sha256"]
        header, labels, data = unpack(payload)
        assert header.id == entry["key"]
        if entry["key"] == 99:
            assert header.flag == 0 and labels == entry["label"]
            assert data == bytes.fromhex(entry["payload_hex"])[24:]
            continue
        assert header.flag == len(entry["label"]) and header.label == 0.0
        assert labels == _f32(entry["label"])

        h, w = entry["hw"]
        boxes = detection_boxes(labels)
        got = [[x0 * w, y0 * h, x1 * w, y1 * h, c] for c, x0, y0, x1, y1 in boxes]
        np.testing.assert_allclose(got, entry["gluoncv_label_abs_xyxy_cls"], atol=1e-4, rtol=0)

        img = Image.open(io.BytesIO(data))
        assert img.size == (w, h)
        if entry["fmt"] == ".png":
            ref = Image.open(fixture_dir / f"img_{entry['key']}.png")
            np.testing.assert_array_equal(
                np.asarray(img.convert("RGB")), np.asarray(ref.convert("RGB"))
            )
        else:
            img.load()  # JPEG: lossy, only require that it decodes


def test_read_without_idx_uses_ordinals(fixture_dir: Path, meta):
    records = list(read_records(fixture_dir / "tiny.rec"))
    assert [k for k, _ in records] == [0, 1, 2, 3]
    assert [_sha(p) for _, p in records] == [e["payload_sha256"] for e in meta]


# --------------------------------------------------------------------------- synthetic round trip


M = MAGIC_BYTES
SYNTHETIC = {
    0: b"",
    1: b"a",
    2: b"abcdef",  # 6 bytes: pad 2
    3: M,  # only a magic: empty first and last chunks
    4: M + M + M,  # consecutive aligned magics: empty middle chunks
    5: b"abcd" + M + b"efghijkl" + M + b"xyz",  # two aligned splits, 3-byte tail
    6: b"ab" + M + b"cd",  # unaligned magic: must not split
    7: b"abcdefgh" + M,  # aligned magic at the very end: zero-length last chunk
    8: b"abc" + M,  # magic at the very end but unaligned
    9: b"a" + M[:3],  # partial magic
    10: bytes(range(256)) * 3 + M + b"\x00\x01",
}


def _chunks(framed: bytes) -> list[tuple[int, int]]:
    """(cflag, length) of each chunk in one framed record, parsed by hand."""
    out, pos = [], 0
    while True:
        magic, lrec = struct.unpack_from("<II", framed, pos)
        assert magic == 0xCED7230A
        cflag, n = lrec >> 29, lrec & ((1 << 29) - 1)
        out.append((cflag, n))
        pos += 8 + n
        if cflag in (0, 3):
            return out


@pytest.mark.parametrize(
    "key, expected_chunks",
    [
        (0, [(0, 0)]),
        (2, [(0, 6)]),
        (3, [(1, 0), (3, 0)]),
        (4, [(1, 0), (2, 0), (2, 0), (3, 0)]),
        (5, [(1, 4), (2, 8), (3, 3)]),
        (6, [(0, 8)]),
        (7, [(1, 8), (3, 0)]),
        (8, [(0, 7)]),
        (10, [(1, 768), (3, 2)]),
    ],
)
def test_frame_record_chunks(key, expected_chunks):
    payload = SYNTHETIC[key]
    framed = recordio.frame_record(payload)
    assert _chunks(framed) == expected_chunks
    n = len(payload)
    assert len(framed) == 8 * len(expected_chunks) + sum(c for _, c in expected_chunks) + (-n) % 4
    assert len(framed) % 4 == 0
    assert framed.endswith(b"\x00" * ((-n) % 4))


def test_synthetic_round_trip(tmp_path: Path):
    rec, idx = tmp_path / "s.rec", tmp_path / "s.idx"
    order = [10, 3, 0, 5, 1, 7, 2, 6, 8, 4, 9]
    with RecordWriter(rec, idx) as w:
        offsets = [w.write(k, SYNTHETIC[k]) for k in order]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert idx.read_text() == "".join(f"{k}\t{o}\n" for k, o in zip(order, offsets))
    assert list(read_records(rec, idx)) == [(k, SYNTHETIC[k]) for k in order]


def test_detection_payload_round_trip_with_magic_in_image(tmp_path: Path):
    # header_width=4 (extra w, h fields), label_width=6 (trailing 'difficult' flag).
    labels = [4.0, 6.0, 640.0, 480.0, 3.0, 0.5, 0.25, 0.75, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5, 1.0]
    image = b"\x89PNG" + M + b"rest-of-image" + M
    payload = pack_detection(12345678901, labels, image, id2=7)
    assert _chunks(recordio.frame_record(payload)) == [(1, 24 + 4 * 16 + 4), (3, 13 + 4)]
    with RecordWriter(tmp_path / "d.rec", tmp_path / "d.idx") as w:
        w.write(3, payload)
    ((key, got),) = read_records(tmp_path / "d.rec", tmp_path / "d.idx")
    header, got_labels, got_image = unpack(got)
    assert key == 3
    assert header == recordio.IRHeader(len(labels), 0.0, 12345678901, 7)
    assert got_labels == _f32(labels)
    assert got_image == image
    assert detection_boxes(got_labels) == [(3.0, 0.5, 0.25, 0.75, 1.0), (1.0, 0.0, 0.0, 0.5, 0.5)]


# --------------------------------------------------------------------------- detection_boxes


def test_detection_boxes_generic_widths():
    assert detection_boxes([2, 5, 1, 0.1, 0.2, 0.3, 0.4, 0, 0.5, 0.6, 0.7, 0.8]) == [
        (1, 0.1, 0.2, 0.3, 0.4),
        (0, 0.5, 0.6, 0.7, 0.8),
    ]
    # header_width=4 carries (w, h); label_width=6 adds a 'difficult' flag that is dropped.
    assert detection_boxes([4, 6, 640, 480, 2, 0.1, 0.2, 0.3, 0.4, 1, 3, 0.5, 0.6, 0.7, 0.8, 0]) == [
        (2, 0.1, 0.2, 0.3, 0.4),
        (3, 0.5, 0.6, 0.7, 0.8),
    ]
    assert detection_boxes([2, 5]) == []


@pytest.mark.parametrize(
    "bad",
    [[], [2], [2, 5, 1, 0.1, 0.2, 0.3], [1, 5, 0, 0, 0, 0], [2, 4, 0, 0, 0, 0], [2.5, 5], 3.5],
)
def test_detection_boxes_rejects_malformed(bad):
    with pytest.raises(ValueError):
        detection_boxes(bad)


# --------------------------------------------------------------------------- corrupt input


def _write_sample(tmp_path: Path) -> tuple[Path, Path]:
    rec, idx = tmp_path / "c.rec", tmp_path / "c.idx"
    with RecordWriter(rec, idx) as w:
        w.write(0, b"x" * 40)
        w.write(1, b"y" * 10 + M + b"zz")
    return rec, idx


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_rec_raises_with_path(tmp_path: Path, cut: int):
    rec, idx = _write_sample(tmp_path)
    data = rec.read_bytes()
    rec.write_bytes(data[:-cut])
    with pytest.raises(ValueError, match="truncated") as exc:
        list(read_records(rec, idx))
    assert str(rec) in str(exc.value)


def test_truncated_inside_split_record(tmp_path: Path):
    rec = tmp_path / "t.rec"
    framed = recordio.frame_record(b"abcd" + M + b"efgh")
    rec.write_bytes(framed[: 8 + 4])  # first chunk only; the cflag=3 chunk is missing
    with pytest.raises(ValueError, match=r"truncated.*offset 12") as exc:
        list(read_records(rec))
    assert str(rec) in str(exc.value)


def test_bad_magic_reports_offset(tmp_path: Path):
    rec, idx = _write_sample(tmp_path)
    data = bytearray(rec.read_bytes())
    second = 8 + 40
    data[second] ^= 0xFF
    rec.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"bad magic.*offset {second}") as exc:
        list(read_records(rec, idx))
    assert str(rec) in str(exc.value)


def test_orphan_continuation_chunk_rejected(tmp_path: Path):
    rec = tmp_path / "o.rec"
    rec.write_bytes(struct.pack("<II", 0xCED7230A, (3 << 29) | 4) + b"abcd")
    with pytest.raises(ValueError, match="chunk flag 3"):
        list(read_records(rec))


def test_mismatched_idx_rejected(tmp_path: Path):
    rec, idx = _write_sample(tmp_path)
    idx.write_text("0\t0\n1\t44\n")  # second record actually starts at 48
    with pytest.raises(ValueError, match="offset 48"):
        list(read_records(rec, idx))
    idx.write_text("0\t0\n")
    with pytest.raises(ValueError, match="no index entry"):
        list(read_records(rec, idx))
    idx.write_text("0\t0\n1\t48\n2\t60\n")
    with pytest.raises(ValueError, match="lists 3 records"):
        list(read_records(rec, idx))


# --------------------------------------------------------------------------- writer behaviour


def test_exception_inside_writer_leaves_nothing(tmp_path: Path):
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with pytest.raises(RuntimeError, match="boom"):
        with RecordWriter(rec, idx) as w:
            w.write(0, b"payload")
            assert len(list(tmp_path.iterdir())) == 2  # temps exist while writing
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_previous_files_intact(tmp_path: Path):
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with RecordWriter(rec, idx) as w:
        w.write(5, b"old")
    before = (rec.read_bytes(), idx.read_bytes())
    with pytest.raises(KeyError):
        with RecordWriter(rec, idx) as w:
            w.write(6, b"new record")
            raise KeyError("x")
    assert (rec.read_bytes(), idx.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.idx", "a.rec"]


def test_files_appear_only_on_close(tmp_path: Path):
    rec, idx = tmp_path / "b.rec", tmp_path / "b.idx"
    w = RecordWriter(rec, idx)
    w.write(0, b"abc")
    assert not rec.exists() and not idx.exists()
    w.close()
    assert rec.read_bytes() == recordio.frame_record(b"abc")
    assert idx.read_text() == "0\t0\n"
    with pytest.raises(ValueError):
        w.write(1, b"late")


def test_duplicate_key_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="duplicate"):
        with RecordWriter(tmp_path / "d.rec", tmp_path / "d.idx") as w:
            w.write(1, b"a")
            w.write(1, b"b")
    assert list(tmp_path.iterdir()) == []
