"""The rank's record loader, as arcface_torch read MS1MV3 for the A10, A30 and A100 reports.

`FaceDataset` is MXFaceDataset (insightface c01f3d48, dataset.py): record i + 1, the first label,
the JPEG decoded to RGB, a random horizontal flip, ToTensor, Normalize(0.5, 0.5), here in torch
ops. `RecLoader` is DataLoaderX: a DataLoader over a DistributedSampler (per-GPU batch,
`num_workers` processes, pinned memory on CUDA, drop_last), on CUDA iterated in a background thread
(a queue of 6) that copies each batch to the device on a side stream. It times each wait of the
step for its next batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bench.config import Cell
from bench.workload.device import device_of
from bench.workload.faces import FaceRecFile

PREFETCH_BATCHES = 6
"""DataLoaderX's BackgroundGenerator queue."""
WORKER_TIMEOUT_S = 120.0
"""A DataLoader worker that sends nothing for this long is an error, not a hang."""


class FaceDataset(Dataset):
    """Image i of a record dataset as (3x112x112 float tensor in [-1, 1], int64 label)."""

    def __init__(self, root: Path) -> None:
        self.rec_file = FaceRecFile(root)

    def __len__(self) -> int:
        return self.rec_file.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        label, rgb = self.rec_file.image(int(index))
        if torch.rand(()) < 0.5:
            rgb = rgb[:, ::-1]
        # ToTensor then Normalize(0.5, 0.5): x / 255 * 2 - 1, per sample in numpy, because torch's
        # intra-op threads make these small ops 100x slower when the step's process reads (0 workers).
        image = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
        image *= 2.0 / 255.0
        image -= 1.0
        return torch.from_numpy(image), torch.tensor(label, dtype=torch.long)


@dataclass(frozen=True)
class LoaderOptions:
    """How a rank reads its shard of the records."""

    batch_size: int
    """Samples per rank per step."""
    num_workers: int = 2
    """DataLoader worker processes (arcface_torch: 2); 0 reads in the step's own process."""
    rank: int = 0
    """This rank's shard of the DistributedSampler."""
    world_size: int = 1
    """Number of shards."""
    seed: int = 0
    """Shuffle seed of the sampler (the same on every rank)."""
    timeout_s: float = WORKER_TIMEOUT_S
    """DataLoader's timeout: a stuck worker ends as an error after this long."""


class RecLoader:
    """Endless batches of one rank's shard on `device`, epoch after epoch; `waits_s` times each `next`."""

    def __init__(self, dataset: FaceDataset, options: LoaderOptions, device: torch.device) -> None:
        if len(dataset) < options.batch_size * options.world_size:
            raise ValueError(
                f"{dataset.rec_file.root}: {len(dataset)} images, fewer than one global batch "
                f"({options.batch_size} x {options.world_size} ranks)"
            )
        self.device = device_of(device)
        self.sampler = DistributedSampler(
            dataset, num_replicas=options.world_size, rank=options.rank, shuffle=True, seed=options.seed
        )
        self.loader = DataLoader(
            dataset,
            batch_size=options.batch_size,
            sampler=self.sampler,
            num_workers=options.num_workers,
            pin_memory=self.device.pin_memory,
            drop_last=True,
            timeout=options.timeout_s if options.num_workers > 0 else 0,
        )
        self.waits_s: list[float] = []
        """Seconds each call to next waited for its batch."""
        self._batches = self._epochs()
        self._source = self.device.prefetch(self._batches, PREFETCH_BATCHES)

    def _epochs(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in count():
            self.sampler.set_epoch(epoch)
            yield from self.loader

    def __iter__(self) -> RecLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        batch = next(self._source)
        self.waits_s.append(time.perf_counter() - start)
        return batch

    def take_waits(self) -> list[float]:
        """The waits since the last call (one window's), cleared."""
        waits, self.waits_s = self.waits_s, []
        return waits

    def close(self) -> None:
        """Stop the prefetch thread and the DataLoader's workers."""
        self._source.close()
        with contextlib.suppress(ValueError):  # still running in a prefetch thread that did not stop in time
            self._batches.close()


def rec_loader(root: Path, options: LoaderOptions, device: torch.device) -> RecLoader:
    """The loader a step calls: FaceDataset(root) read as `options` say, batches on `device`."""
    return RecLoader(FaceDataset(root), options, device)


class RecBatch:
    """A step's batches read from the cell's record files (data = "records"), labels from the records."""

    def __init__(self, cell: Cell, device: torch.device, rank: int) -> None:
        self.cell = cell
        options = LoaderOptions(
            batch_size=cell.per_gpu_batch,
            num_workers=cell.num_workers,
            rank=rank,
            world_size=cell.world_size,
            seed=cell.seed,
        )
        self.loader = rec_loader(Path(cell.data_path), options, device)
        self.memory_format = torch.channels_last if cell.channels_last else torch.contiguous_format

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch; a label at or above the cell's classes is a ValueError naming it."""
        images, labels = next(self.loader)
        top = int(labels.max())
        if top >= self.cell.classes:
            raise ValueError(
                f"{self.cell.data_path}: label {top} is not below the cell's classes ({self.cell.classes})"
            )
        return images.contiguous(memory_format=self.memory_format), labels

    def take_wait_s(self) -> float:
        """Seconds the steps since the last call waited for their batches."""
        return sum(self.loader.take_waits())

    def close(self) -> None:
        self.loader.close()
