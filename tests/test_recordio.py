"""The record format: what mxnet writes, pfcbench reads back byte for byte, and the reverse."""

from __future__ import annotations

import io
import struct

import pytest

from bench.recfiles.make import make_dataset
from bench.workload.faces import FaceRecFile
from bench.workload.recordio import MAGIC, IRHeader, RecFileError, pack, read_rec, unpack, write_rec


def test_record_round_trip_pads_to_four_bytes():
    out = io.BytesIO()
    payloads = [b"", b"a", b"abcd", b"abcdefg" * 9]
    offsets = []
    for payload in payloads:
        offsets.append(out.tell())
        write_rec(out, payload)
    assert out.tell() % 4 == 0
    assert [read_rec(out, offset) for offset in offsets] == payloads


def test_payload_holding_the_magic_is_split_into_parts_and_read_whole():
    magic = struct.pack("<I", MAGIC)
    payload = b"head" + magic + b"middle!!" + magic + magic + b"tail5"
    out = io.BytesIO()
    write_rec(out, payload)
    raw = out.getvalue()
    flags = []
    at = 0
    while at < len(raw):
        _, word = struct.unpack_from("<II", raw, at)
        flags.append(word >> 29)
        at += 8 + ((word & (2**29 - 1)) + 3) // 4 * 4
    assert flags == [1, 2, 2, 3]  # first part, two middles, last: dmlc-core's split
    assert read_rec(out, 0) == payload


def test_irheader_pack_unpack_as_mxnet():
    header, rest = unpack(pack(IRHeader(0, 7.0, 12, 0), b"JPEG"))
    assert (header.flag, header.label, header.id, rest) == (0, 7.0, 12, b"JPEG")
    header, rest = unpack(pack(IRHeader(0, (3.0, 1.0), 5, 9), b"x"))
    assert (header.flag, header.label, header.first_label, header.id2, rest) == (2, (3.0, 1.0), 3.0, 9, b"x")


def test_made_dataset_has_insightface_layout(tmp_path):
    made = make_dataset(tmp_path / "faces", num_images=30, num_classes=4)
    records = FaceRecFile(made.root)
    assert (records.num_images, records.num_classes) == (30, 4)
    header, _ = records.read(0)
    assert header.label == (31.0, 35.0)
    ranges = [records.read(31 + c)[0].label for c in range(4)]
    labels = [records.image(i)[0] for i in range(30)]
    for c, (start, end) in enumerate(ranges):
        assert labels[int(start) - 1 : int(end) - 1] == [c] * int(end - start)
    assert sorted(set(labels)) == [0, 1, 2, 3]
    assert records.image(0)[1].shape == (112, 112, 3)
    assert 5000 < made.mean_image_bytes < 9000


def test_wrong_magic_names_file_and_offset():
    with pytest.raises(RecFileError, match=r"x.rec: offset 0: wrong magic number 0x12345678"):
        read_rec(io.BytesIO(struct.pack("<II", 0x12345678, 4) + b"abcd"), 0, "x.rec")
