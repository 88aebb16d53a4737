"""The parent's check of the record datasets that cells read, before anything runs.

Bounded work whatever the dataset's size: the files, the `.idx` bounds, the header record, the
first, last and last-in-file records (FaceRecFile does those), then a sample of SAMPLED_IMAGES
records spread evenly over the images, each unpacked, its label checked against the cell's
classes and its image decoded. A bad record the sample misses ends the cell `error` with the
same one line, from the rank that reads it.
"""

from __future__ import annotations

from bench.config import Cell, one_line
from bench.workload.faces import FaceRecFile
from bench.workload.recordio import IDX_NAME, REC_NAME, RecFileError

SAMPLED_IMAGES = 64
"""Image records read and decoded by the check, spread evenly from the first to the last."""


def sampled_keys(num_images: int, num_samples: int = SAMPLED_IMAGES) -> list[int]:
    """Image numbers (0-based) spread evenly over 0..num_images-1, at most num_samples of them."""
    if num_images <= num_samples:
        return list(range(num_images))
    step = (num_images - 1) / (num_samples - 1)
    return sorted({round(i * step) for i in range(num_samples)})


def check_rec_file(path: str, classes: int, global_batch: int) -> None:
    """Raise RecFileError (one line) unless `path` holds a dataset that cells of classes and global_batch can read."""
    records = FaceRecFile(path)
    if records.num_images < global_batch:
        raise RecFileError(f"{path}: {records.num_images} images, fewer than one global batch ({global_batch})")
    check_sample(records, classes)


def check_sample(records: FaceRecFile, classes: int) -> None:
    """Raise RecFileError (one line) on the first sampled image that does not decode or whose label is not below classes."""
    for i in sampled_keys(records.num_images):
        label, _ = records.image(i)
        if label >= classes:
            raise RecFileError(
                f"{records.rec_path}: key {i + 1}: label {label} is not below the cell's classes ({classes})"
            )


def data_problem(cells: list[Cell]) -> str | None:
    """The one line refusing the first cell whose record data cannot be read; None when all can.

    Each folder is checked once, against the largest global batch and the fewest classes of the
    cells that read it.
    """
    needs: dict[str, tuple[int, int]] = {}
    for cell in cells:
        if cell.data != "records" and cell.data_path:
            return one_line(
                f'data_path {cell.data_path}: cell {cell.cell_id} has data = "{cell.data}", which reads no files; '
                'set data = "records" to read them, or drop data_path'
            )
        if cell.data != "records":
            continue
        if not cell.data_path:
            return (
                f'data_path: a cell with data = "records" needs a folder holding {REC_NAME} + {IDX_NAME} '
                "(--set data_path=DIR, or pfcbench dataset make DIR to write one)"
            )
        classes, batch = needs.get(cell.data_path, (cell.classes, cell.batch_size))
        needs[cell.data_path] = (min(classes, cell.classes), max(batch, cell.batch_size))
    for path, (classes, batch) in needs.items():
        try:
            check_rec_file(path, classes, batch)
        except (RecFileError, OSError) as exc:
            return one_line(f"data_path {exc}" if isinstance(exc, RecFileError) else f"data_path {path}: {exc}")
    return None
