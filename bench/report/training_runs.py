"""What one training run would take: the face datasets arcface_torch's configs name, and the hours
and cost of a run from a measured (or predicted) samples/sec.

One epoch is every image once, so a run of `epochs` epochs over `images` images at `samples_per_s`
over all GPUs takes images x epochs / samples_per_s seconds, and costs hours x GPUs x the price of
one GPU-hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A training set as arcface_torch's config for it gives it."""

    name: str
    """The name as insightface writes it (WebFace42M)."""
    num_image: int
    """Images in the set: config.num_image."""
    num_classes: int
    """Identities: config.num_classes."""
    num_epoch: int
    """Epochs of the config's training run: config.num_epoch."""
    config: str
    """The arcface_torch config the figures come from (configs/NAME.py)."""


DATASETS: dict[str, Dataset] = {
    dataset.name.lower(): dataset
    for dataset in (
        Dataset(name="MS1MV2", num_image=5_822_653, num_classes=85_742, num_epoch=20, config="ms1mv2_r50"),
        Dataset(name="MS1MV3", num_image=5_179_510, num_classes=93_431, num_epoch=20, config="ms1mv3_r50"),
        Dataset(name="Glint360K", num_image=17_091_657, num_classes=360_232, num_epoch=20, config="glint360k_r50"),
        Dataset(name="WebFace4M", num_image=4_235_242, num_classes=205_990, num_epoch=20, config="wf4m_r50"),
        Dataset(name="WebFace12M", num_image=12_720_066, num_classes=617_970, num_epoch=20, config="wf12m_r50"),
        Dataset(
            name="WebFace42M", num_image=42_474_557, num_classes=2_059_906, num_epoch=20, config="wf42m_pfc02_r100"
        ),
    )
}
"""The datasets of arcface_torch's configs (insightface 7fadd420), keyed by lower-case name."""


def find_dataset(name: str) -> Dataset:
    """The dataset of that name, in any case; ValueError naming the known ones otherwise."""
    dataset = DATASETS.get(name.strip().lower())
    if dataset is None:
        known = ", ".join(d.name for d in DATASETS.values())
        raise ValueError(f"no dataset named {name!r}; the datasets are {known} (or give --images N --epochs E)")
    return dataset


@dataclass(frozen=True, kw_only=True)
class TrainingRun:
    """One training run: so many images, so many times over."""

    images: int
    """Images in one epoch."""
    epochs: int
    """Passes over the images."""

    def __post_init__(self) -> None:
        for name in ("images", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")

    @classmethod
    def of(cls, dataset: Dataset, epochs: int | None = None) -> TrainingRun:
        """A run over the dataset, for its config's epochs unless told otherwise."""
        return cls(images=dataset.num_image, epochs=dataset.num_epoch if epochs is None else epochs)

    @property
    def samples(self) -> int:
        return self.images * self.epochs

    def hours(self, samples_per_s: float) -> float:
        """Hours the run takes at samples_per_s over all GPUs: images x epochs / samples_per_s / 3600."""
        if not (isinstance(samples_per_s, (int, float)) and math.isfinite(samples_per_s) and samples_per_s > 0):
            raise ValueError(f"samples/sec must be a positive number, not {samples_per_s!r}")
        return self.samples / samples_per_s / 3600

    def cost(self, samples_per_s: float, gpus: int, gpu_hour_price: float) -> float:
        """The price of the run: hours x GPUs x the price of one GPU-hour."""
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
            raise ValueError(f"GPUs must be a whole number of at least 1, not {gpus!r}")
        if not (isinstance(gpu_hour_price, (int, float)) and math.isfinite(gpu_hour_price) and gpu_hour_price >= 0):
            raise ValueError(f"the price of a GPU-hour must be a number of at least 0, not {gpu_hour_price!r}")
        return self.hours(samples_per_s) * gpus * gpu_hour_price
