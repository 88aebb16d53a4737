"""A face dataset in insightface's record layout: open it, check it, read an image by its number.

Torch-free (Pillow and numpy only), so the parent process refuses a bad folder in one line before
anything runs, and the rank's Dataset (bench/workload/data.py) reads through the same object.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from bench.workload.recordio import IDX_NAME, REC_NAME, IRHeader, RecFileError, read_idx, read_rec, unpack


def decode_rgb(jpeg: bytes, where: str) -> np.ndarray:
    """An HxWx3 uint8 RGB array from encoded image bytes (mxnet's imdecode gives RGB too)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise RecFileError(f"{where}: image does not decode ({exc})") from None


def whole_number(value: float) -> bool:
    """True for a finite, whole, non-negative label (float32 on disk): a key, a count or a class."""
    return math.isfinite(value) and value >= 0 and float(value).is_integer()


class FaceRecFile:
    """`train.rec` + `train.idx` with record 0 the header (N + 1, N + 1 + K): images are keys 1..N.

    The `.rec` file is opened lazily and again in each process that reads (a DataLoader worker
    after fork gets a handle of its own, never the parent's file position).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.rec_path = self.root / REC_NAME
        self.idx_path = self.root / IDX_NAME
        self._check_files()
        self.index = read_idx(self.idx_path)
        self.rec_size = self.rec_path.stat().st_size
        self._handle = None
        self._pid = -1
        self._check_offsets()
        header = self._header()
        self.num_images = int(header.label[0]) - 1
        """N, the image records 1..N."""
        self.num_classes = int(header.label[1]) - int(header.label[0])
        """K, the identity records N+1..N+K; labels are 0..K-1."""
        missing = [k for k in (1, self.num_images) if k not in self.index]
        if self.num_images < 1 or missing:
            raise RecFileError(
                f"{self.idx_path}: header record says {self.num_images} images but key {missing[:1] or 1} is missing"
            )
        for key in (1, self.num_images):
            self.image(key - 1)

    def _check_files(self) -> None:
        if not self.root.is_dir():
            raise RecFileError(f"{self.root}: no such folder (want one holding {REC_NAME} + {IDX_NAME})")
        for path in (self.rec_path, self.idx_path):
            if not path.is_file():
                raise RecFileError(f"{path}: missing (a record dataset is {REC_NAME} + {IDX_NAME})")
            if path.stat().st_size == 0:
                raise RecFileError(f"{path}: empty file")

    def _check_offsets(self) -> None:
        if not self.index:
            raise RecFileError(f"{self.idx_path}: no 'key<TAB>offset' lines")
        key, offset = max(self.index.items(), key=lambda item: item[1])
        if offset + 8 > self.rec_size:
            raise RecFileError(
                f"{self.idx_path}: key {key}: offset {offset} is past the end of {self.rec_path} ({self.rec_size} bytes)"
            )
        self.read(key)  # the last record in the file, so a cut-off .rec shows here

    def _header(self) -> IRHeader:
        if 0 not in self.index:
            raise RecFileError(f"{self.idx_path}: no key 0: the header record (N + 1, N + 1 + K) is missing")
        header, _ = self.read(0)
        labels = header.label if header.flag >= 2 and isinstance(header.label, tuple) else ()
        if not labels or not all(whole_number(x) for x in labels[:2]) or labels[1] <= labels[0]:
            raise RecFileError(
                f"{self.rec_path}: key 0 is not a header record "
                f"(want whole-number labels (N + 1, N + 1 + K), got {labels or header.label})"
            )
        return header

    def read(self, key: int) -> tuple[IRHeader, bytes]:
        """The record under `key`, unpacked; RecFileError names the file and the key."""
        if key not in self.index:
            raise RecFileError(f"{self.idx_path}: no key {key}")
        if self._pid != os.getpid():
            self._handle, self._pid = open(self.rec_path, "rb"), os.getpid()  # noqa: SIM115 -- one per process
        data = read_rec(self._handle, self.index[key], f"{self.rec_path}: key {key}")
        return unpack(data, f"{self.rec_path}: key {key}")

    def image(self, i: int) -> tuple[int, np.ndarray]:
        """Image number i (0-based, record i + 1): its label (the first one) and its RGB array."""
        header, jpeg = self.read(i + 1)
        label = header.first_label
        if not (whole_number(label) and label < self.num_classes):
            raise RecFileError(
                f"{self.rec_path}: key {i + 1}: label {label:g} is not a whole number in 0..{self.num_classes - 1} "
                "(the header's classes)"
            )
        return int(label), decode_rgb(jpeg, f"{self.rec_path}: key {i + 1}")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, -1
        return state
