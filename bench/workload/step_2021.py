"""One training step of arcface_torch's August 2021 train.py (Partial FC v1), built for a cell on this rank.

This is the program behind the published RTX 3080, RTX 3090 and V100 tables: DDP with default
settings, the backbone's output normalised before the classifier, the classifier's manual
forward and backward (bench.workload.partial_fc_2021), the embeddings' gradient pushed through
the backbone with `features.backward`, two SGD optimizers at lr 0.1 / 512 x global batch, and for
fp16 a MaxClipGradScaler that scales that gradient.
"""

from __future__ import annotations

import torch
from torch.nn.functional import normalize

from bench.workload.base_step import WEIGHT_DECAY, BaseStep
from bench.workload.partial_fc_2021 import PartialFC2021

MOMENTUM = 0.9


def learning_rate(batch_size: int) -> float:
    """The 2021 config's lr 0.1 per 512 samples of global batch."""
    return 0.1 / 512 * batch_size


def classifier_optimizer(partial_fc: PartialFC2021, batch_size: int) -> torch.optim.SGD:
    """The classifier's own SGD; PartialFC2021.prepare swaps its one parameter each step."""
    return torch.optim.SGD(
        params=[{"params": partial_fc.parameters()}],
        lr=learning_rate(batch_size),
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
    )


class MaxClipGradScaler(torch.amp.GradScaler):
    """A GradScaler that starts at init_scale and never grows past max_scale (2021's utils_amp).

    Like the original it reads its scale on the host each time it scales.
    """

    def __init__(
        self, device: str, init_scale: float, max_scale: float, growth_interval: int = 100, enabled: bool = True
    ) -> None:
        super().__init__(device, init_scale=init_scale, growth_interval=growth_interval, enabled=enabled)
        self.max_scale = max_scale

    def scale_clip(self) -> None:
        scale = self.get_scale()
        if scale == self.max_scale:
            self.set_growth_factor(1)
        elif scale < self.max_scale:
            self.set_growth_factor(2)
        else:
            self._scale.fill_(self.max_scale)
            self.set_growth_factor(1)

    def scale(self, outputs: torch.Tensor) -> torch.Tensor:
        if not self._enabled:
            return outputs
        self.scale_clip()
        return super().scale(outputs)


class TrainStep2021(BaseStep):
    """DDP backbone (default settings) + Partial FC v1 + two SGDs on synthetic data."""

    def build_training(self) -> None:
        cell = self.cell
        self.partial_fc = PartialFC2021(
            cell.margin, cell.embedding_size, cell.classes, cell.sample_rate, cell.per_gpu_batch, self.device,
            self.collectives,
        )  # fmt: skip
        self.opt_backbone = torch.optim.SGD(
            [
                {
                    "params": self.backbone.parameters(),
                    "lr": learning_rate(cell.batch_size),
                    "momentum": MOMENTUM,
                    "weight_decay": WEIGHT_DECAY,
                }
            ]
        )
        self.opt_pfc = classifier_optimizer(self.partial_fc, cell.batch_size)

    def make_scaler(self) -> MaxClipGradScaler:
        batch = self.cell.per_gpu_batch
        return MaxClipGradScaler(self.rank_device.type, batch, 128 * batch, growth_interval=100, enabled=self.cell.fp16)

    def __call__(self) -> torch.Tensor:
        """Run one step and return its loss, left on the device."""
        self.phase = "data"
        images, labels = self.batch.next()
        ready = self.rank_device.record_event()  # after the labels and the last update: the side stream waits on it
        self.phase = "forward"
        features = normalize(self.embed(images))
        forward = self.partial_fc.forward(labels, features, self.opt_pfc, ready)
        self.phase = "backward"
        x_grad = self.partial_fc.backward(forward, features)
        loss = forward.loss
        del forward  # the logits and their gradient go before the backbone's backward, as in 2021
        features.backward(self.scaler.scale(x_grad))
        self.step_backbone(self.opt_backbone)
        self.opt_pfc.step()
        self.partial_fc.update()
        self.opt_backbone.zero_grad()
        self.opt_pfc.zero_grad()
        self.phase = "between steps"
        return loss
