"""`pfcbench dataset make`: a record dataset in insightface's layout with face-sized JPEGs.

The images are synthetic (a lit oval with eyes and a mouth on a textured background, fine noise
for skin and hair) and tuned so a 112x112 JPEG at quality 95 is about as large as one in MS1MV2/3
(6-8 KB): a loader then does the same decode work as on the real files.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.store.files import FileError, remove
from bench.units import KIB, MIB
from bench.workload.recordio import IDX_NAME, REC_NAME, IRHeader, RecFileError, RecWriter, pack

SIDE = 112
QUALITY = 95
MAX_IMAGES = 10_000_000
"""Most images a make writes: about 70 GiB, twice MS1MV3's 5.2M, hours of encoding on one core."""
BYTES_PER_IMAGE = 7 * KIB
"""A made image's share of train.rec, a little under the measured mean (JPEG, header and padding)."""
MAX_SEED = 2**63 - 1
_YY, _XX = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE


@dataclass(frozen=True)
class MadeDataset:
    """What `make_dataset` wrote."""

    root: Path
    """The folder holding train.rec + train.idx."""
    num_images: int
    """N, records 1..N."""
    num_classes: int
    """K, labels 0..K-1, each with at least one image when N >= K."""
    mean_image_bytes: float
    """Mean JPEG size of one image."""
    rec_bytes: int
    """Size of train.rec."""


def face_image(rng: np.random.Generator) -> np.ndarray:
    """One 112x112 RGB uint8 image, face-like in layout and in JPEG entropy."""
    light = rng.uniform(0.6, 1.1) + rng.uniform(-0.4, 0.4) * (_XX - 0.5) + rng.uniform(-0.3, 0.3) * (_YY - 0.5)
    background = rng.uniform(20, 200, 3) * (0.7 + 0.6 * _smooth_noise(rng, 8))[..., None]
    skin = np.array([rng.uniform(150, 240), rng.uniform(100, 190), rng.uniform(80, 160)], np.float32)
    cx, cy, rx, ry = rng.normal(0.5, 0.02), rng.normal(0.55, 0.02), rng.uniform(0.3, 0.36), rng.uniform(0.4, 0.47)
    face = ((_XX - cx) / rx) ** 2 + ((_YY - cy) / ry) ** 2 < 1.0
    image = np.where(face[..., None], skin * (0.85 + 0.3 * _smooth_noise(rng, 4))[..., None], background)
    for ex in (cx - 0.15, cx + 0.15):
        image[((_XX - ex) / 0.06) ** 2 + ((_YY - cy + 0.12) / 0.03) ** 2 < 1.0] = rng.uniform(10, 80, 3)
    image[((_XX - cx) / 0.12) ** 2 + ((_YY - cy - 0.2) / 0.035) ** 2 < 1.0] = skin * 0.55
    image = image * light[..., None] + rng.normal(0.0, 8.0, (SIDE, SIDE, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Noise in [0, 1] that varies over `cells` cells a side (bilinear upsampling of a coarse grid)."""
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    at = np.linspace(0, cells, SIDE, dtype=np.float32)
    i = np.minimum(at.astype(int), cells - 1)
    f = at - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def encode_jpeg(image: np.ndarray, quality: int = QUALITY) -> bytes:
    """JPEG bytes of an RGB array (Pillow; mxnet's pack_img uses OpenCV at quality 95)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image, "RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def make_dataset(root: Path, num_images: int, num_classes: int, seed: int = 0) -> MadeDataset:
    """Write root/train.rec + train.idx: images 1..N (label i mod K), K identity records, header 0.

    The order on disk is insightface's (dataset_merge.py, face2rec2.py): image records, then one
    record per identity whose labels are its [start, end) image keys, then the header record at
    key 0 with labels (N + 1, N + 1 + K). Class c holds a contiguous block of about N / K keys,
    as in the shipped datasets, so every class has images and every identity record a range.

    Everything a user could get wrong is refused (RecFileError) before anything is written. The
    dataset is written in a temporary folder beside `root` (beside the folder it links to, when
    `root` is a symlink to an empty folder) and renamed at the end, so a make that fails or is
    interrupted leaves no half dataset; folders it made above `root` are removed again. A write
    that fails (a full disk) raises OSError.
    """
    target = _check_make(root, num_images, num_classes, seed)
    made_parents = [p for p in reversed(target.parents) if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        _remove_empty(made_parents)
        raise RecFileError(f"{root}: cannot write in {target.parent} ({exc.strerror or exc})") from None
    try:
        total_jpeg = _write_rec_file(scratch, num_images, num_classes, np.random.default_rng(seed))
        rec_bytes = (scratch / REC_NAME).stat().st_size
        scratch.chmod(0o755)
        os.replace(scratch, target)  # a rename takes the place of an empty folder
    except BaseException:
        with contextlib.suppress(FileError):
            remove(scratch, target.parent)
        _remove_empty(made_parents)
        raise
    return MadeDataset(root, num_images, num_classes, total_jpeg / num_images, rec_bytes)


def _check_make(root: Path, num_images: int, num_classes: int, seed: int) -> Path:
    """The folder to write (root, or the empty folder it links to); RecFileError on what cannot be made."""
    if not str(root).isprintable():
        raise RecFileError(f"folder {str(root)!r}: a control character in its name; choose a printable name")
    if not 1 <= num_images <= MAX_IMAGES:
        raise RecFileError(f"{root}: --images {num_images} is not from 1 to {MAX_IMAGES:,}")
    if num_classes < 1:
        raise RecFileError(f"{root}: --classes {num_classes} is below 1")
    if num_classes > num_images:
        raise RecFileError(f"{root}: {num_classes} classes need at least as many images (got {num_images})")
    if not 0 <= seed <= MAX_SEED:
        raise RecFileError(f"{root}: --seed {seed} is not from 0 to {MAX_SEED:,}")
    target = root
    if root.is_symlink():
        target = root.resolve()
        if not target.is_dir():
            raise RecFileError(f"{root}: a symlink to {target}, which is not a folder")
    if target.exists():
        if not target.is_dir():
            raise RecFileError(f"{root}: a file, not a folder")
        if any(target.iterdir()):
            raise RecFileError(f"{root}: folder exists and is not empty")
    above = next(p for p in target.parents if p.exists() or p.is_symlink())
    if not above.is_dir():
        raise RecFileError(f"{root}: {above} is not a folder")
    need = num_images * BYTES_PER_IMAGE
    free = shutil.disk_usage(above).free
    if need > free:
        raise RecFileError(
            f"{root}: {num_images:,} images need about {need / MIB:,.0f} MiB, {free / MIB:,.0f} MiB free in {above}"
        )
    return target


def _write_rec_file(folder: Path, num_images: int, num_classes: int, rng: np.random.Generator) -> int:
    """Write the records of make_dataset into folder; the total bytes of the JPEGs."""
    total_jpeg = 0
    with RecWriter(folder / REC_NAME, folder / IDX_NAME) as writer:
        starts = [1 + c * num_images // num_classes for c in range(num_classes + 1)]
        for label in range(num_classes):
            for key in range(starts[label], starts[label + 1]):
                jpeg = encode_jpeg(face_image(rng))
                total_jpeg += len(jpeg)
                writer.write(key, pack(IRHeader(0, float(label), key, 0), jpeg))
        first_identity = num_images + 1
        for label in range(num_classes):
            key = first_identity + label
            writer.write(key, pack(IRHeader(2, (float(starts[label]), float(starts[label + 1])), key, 0), b""))
        writer.write(0, pack(IRHeader(2, (float(first_identity), float(first_identity + num_classes)), 0, 0), b""))
    return total_jpeg


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed make created above its own, deepest first, if still empty."""
    for folder in reversed(folders):
        with contextlib.suppress(FileError):
            remove(folder, folder.parent, only_if_empty=True)
