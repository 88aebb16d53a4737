"""What every training step starts from: torch's switches and seed for the cell, and the synthetic batch."""

from __future__ import annotations

import torch

from bench.config import Cell

AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
IMAGE_SIZE = 112


def configure_torch(cell: Cell, rank: int) -> None:
    """TF32 as the cell says, cuDNN autotuning on, and the rank's seed for weights and sampling."""
    torch.backends.cuda.matmul.allow_tf32 = cell.tf32
    torch.backends.cudnn.allow_tf32 = cell.tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(cell.seed + rank)


def memory_format(cell: Cell) -> torch.memory_format:
    return torch.channels_last if cell.channels_last else torch.contiguous_format


class SyntheticBatch:
    """arcface_torch's SyntheticDataset made on the device, with one image per sample instead of one for all.

    arcface_torch repeats one fixed image over the batch. Then the backbone's final BatchNorm1d sees
    no variance over the batch, every embedding comes out about 1e-10 long, and normalising it has
    gradients of order 1e10: whether the step trains a finite loss depends on the last bits of the
    CPU's or GPU's kernels. Here each sample of the rank's batch is its own random image, made once
    before the first step and fed again every step; what a step costs does not depend on the pixels.
    The images and the uniform labels come from a generator of their own, so they leave the global
    random state (weights, Partial FC sampling) as arcface_torch leaves it.
    """

    def __init__(self, cell: Cell, device: torch.device, rank: int) -> None:
        self.cell = cell
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(cell.seed * 1000 + rank)
        shape = (cell.per_gpu_batch, 3, IMAGE_SIZE, IMAGE_SIZE)
        images = torch.empty(shape, device=device, memory_format=memory_format(cell))
        # pixels 0..255 normalised as arcface_torch's Normalize(0.5, 0.5) does, in place: no second copy
        self.images = images.random_(0, 256, generator=self.generator).div_(127.5).sub_(1.0)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's images and labels."""
        return self.images, self.labels()

    def take_wait_s(self) -> float | None:
        """Seconds the steps since the last call waited for their batches: None, nothing is read."""
        return None

    def close(self) -> None:
        """Nothing to stop."""

    def labels(self) -> torch.Tensor:
        """Labels of this rank's batch: uniform over all classes, or arcface_torch's constant 1."""
        if self.cell.label_mode == "constant":
            return torch.ones(self.cell.per_gpu_batch, dtype=torch.long, device=self.device)
        return torch.randint(
            0, self.cell.classes, (self.cell.per_gpu_batch,), generator=self.generator, device=self.device
        )
