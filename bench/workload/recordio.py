"""mxnet record files, read and written without mxnet: dmlc-core recordio, the `.idx` and the IRHeader.

A face dataset (MS1MV2/3, Glint360K, WebFace) is `train.rec` + `train.idx`. On disk each record is
the magic 0xced7230a, a uint32 whose low 29 bits are the length and high 3 bits a continuation flag
(0 whole, 1 first part, 2 middle, 3 last), the payload, and zero padding to 4 bytes. A payload that
holds the magic at a 4-byte boundary is split there and the magic is implied between the parts,
as dmlc-core's RecordIOWriter does. `train.idx` is text, `key<TAB>byte offset` a line.

A record's payload is an IRHeader (`<IfQQ`: flag, label, id, id2), then `flag` float32 labels
when flag > 0, then the image bytes: mxnet.recordio.pack/unpack. In insightface's layout record
0 is a header whose labels are (N + 1, N + 1 + K): images are records 1..N, then one record per
identity whose labels are the [start, end) range of that identity's image records.

Torch-free, so the parent process can check a dataset before anything runs.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_BITS = 29
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
_IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(_IR_FORMAT)
REC_NAME, IDX_NAME = "train.rec", "train.idx"
IDX_LINE_BYTES = 64
"""Longest `.idx` line read: two 20-digit numbers and a tab fit with room to spare."""
_IDX_LINE = re.compile(r"([0-9]{1,20})\t([0-9]{1,20})")


class RecFileError(ValueError):
    """Bad record data: the message is one line naming the file and the offset or key."""


@dataclass(frozen=True)
class IRHeader:
    """The header mxnet puts before each record's bytes (mxnet.recordio.IRHeader)."""

    flag: int
    """How many float32 labels follow the header; 0 when `label` is the only one."""
    label: float | tuple[float, ...]
    """One label, or the `flag` labels that follow the header."""
    id: int
    """The record's own number (its key in insightface's layout)."""
    id2: int = 0
    """A second id, 0 in face datasets."""

    @property
    def first_label(self) -> float:
        """The label arcface_torch trains on: the first when there are several."""
        return self.label[0] if isinstance(self.label, tuple) else self.label


def pack(header: IRHeader, payload: bytes) -> bytes:
    """Header + extra labels + payload, as mxnet.recordio.pack (a tuple label sets flag to its length)."""
    if isinstance(header.label, tuple):
        labels = struct.pack(f"<{len(header.label)}f", *header.label)
        head = struct.pack(_IR_FORMAT, len(header.label), 0.0, header.id, header.id2)
        return head + labels + payload
    return struct.pack(_IR_FORMAT, 0, header.label, header.id, header.id2) + payload


def unpack(data: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """Split a record's payload into its IRHeader and the bytes after it, as mxnet.recordio.unpack."""
    if len(data) < IR_SIZE:
        raise RecFileError(f"{where}: {len(data)} bytes, shorter than an IRHeader ({IR_SIZE} bytes)")
    flag, label, id_, id2 = struct.unpack_from(_IR_FORMAT, data)
    end = IR_SIZE + 4 * flag
    if flag > 0:
        if len(data) < end:
            raise RecFileError(f"{where}: header says {flag} labels but the record ends first")
        label = struct.unpack_from(f"<{flag}f", data, IR_SIZE)
    return IRHeader(flag, label, id_, id2), data[end if flag > 0 else IR_SIZE :]


def write_rec(out: BinaryIO, payload: bytes) -> None:
    """Append one record, split where the payload holds the magic at a 4-byte boundary (dmlc-core)."""
    if len(payload) > _LENGTH_MASK:
        raise RecFileError(f"a record of {len(payload)} bytes is over recordio's 2^29-byte limit")
    start = 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            _write_part(out, 1 if start == 0 else 2, payload[start:i])
            start = i + 4
    _write_part(out, 3 if start else 0, payload[start:])


def _write_part(out: BinaryIO, cflag: int, part: bytes) -> None:
    out.write(struct.pack("<II", MAGIC, cflag << _LENGTH_BITS | len(part)))
    out.write(part + b"\0" * (-len(part) % 4))


def read_rec(handle: BinaryIO, offset: int, name: str = REC_NAME) -> bytes:
    """The record that starts at `offset`, its parts joined; RecFileError on a wrong magic or a cut record."""
    handle.seek(offset)
    parts: list[bytes] = []
    at = offset
    while True:
        head = handle.read(8)
        if len(head) < 8:
            raise RecFileError(f"{name}: offset {at}: truncated record (file ends inside its 8-byte head)")
        magic, word = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecFileError(f"{name}: offset {at}: wrong magic number {magic:#010x} (want {MAGIC:#010x})")
        cflag, length = word >> _LENGTH_BITS, word & _LENGTH_MASK
        body = handle.read(length + (-length % 4))
        if len(body) < length:
            raise RecFileError(f"{name}: offset {at}: truncated record ({length} bytes said, {len(body)} there)")
        parts.append(body[:length])
        at += 8 + len(body)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        if cflag not in (1, 2):
            raise RecFileError(f"{name}: offset {at}: continuation flag {cflag} is not one of recordio's 0-3")


def read_idx(path: Path) -> dict[int, int]:
    """The `.idx` file as {key: byte offset}; RecFileError on a line that is not `key<TAB>offset`.

    Read a line at a time, each at most IDX_LINE_BYTES, so a binary file in its place (the two
    files swapped) is refused at once, never read whole.
    """
    index: dict[int, int] = {}
    with open(path, "rb") as handle:
        if handle.read(4) == _MAGIC_BYTES:
            raise RecFileError(f"{path}: line 1: a record file, not an index (are {REC_NAME} and {IDX_NAME} swapped?)")
        handle.seek(0)
        for number, raw in enumerate(iter(lambda: handle.readline(IDX_LINE_BYTES + 1), b""), start=1):
            try:
                line = raw.decode("ascii").strip()
            except UnicodeDecodeError as exc:
                raise RecFileError(
                    f"{path}: line {number}: byte {raw[exc.start]:#04x} is not text; want 'key<TAB>offset' lines"
                ) from None
            if len(line) > IDX_LINE_BYTES:
                raise RecFileError(f"{path}: line {number}: longer than {IDX_LINE_BYTES} bytes, not 'key<TAB>offset'")
            if not line:
                continue
            match = _IDX_LINE.fullmatch(line)
            if not match:
                raise RecFileError(f"{path}: line {number}: {line[:60]!r} is not 'key<TAB>offset'")
            index[int(match[1])] = int(match[2])
    return index


class RecWriter:
    """Writes `train.rec` + `train.idx` record by record (mxnet.recordio.MXIndexedRecordIO in 'w')."""

    def __init__(self, rec_path: Path, idx_path: Path) -> None:
        self._rec = open(rec_path, "wb")  # noqa: SIM115 -- closed in close()
        self._idx = open(idx_path, "w")  # noqa: SIM115
        self.keys: list[int] = []

    def write(self, key: int, payload: bytes) -> None:
        """Append a record under `key`; the `.idx` line gets the offset where it starts."""
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        write_rec(self._rec, payload)
        self.keys.append(key)

    def close(self) -> None:
        """Flush and close both files."""
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
