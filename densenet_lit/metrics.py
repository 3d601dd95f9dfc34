"""The metrics the module logs: top-k error in percent, and a weighted mean without host syncs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy


class ClassificationError(MulticlassAccuracy):
    """Top-k error in percent: ``100 * (1 - accuracy)``, accuracy over all samples (micro).

    torchmetrics' input validation is off by default: it counts the distinct targets with
    ``torch.unique``, which makes the host wait for the GPU at every update, and the module
    computes ``cross_entropy`` on the same targets first, which rejects out-of-range labels.
    """

    def __init__(
        self, num_classes: int, top_k: int = 1, validate_args: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            top_k=top_k,
            average="micro",
            validate_args=validate_args,
            **kwargs,
        )

    def compute(self) -> Tensor:
        return 100.0 * (1.0 - super().compute())


class WeightedMean(Metric):
    """Mean of batch values weighted by batch size, e.g. the epoch's training loss.

    torchmetrics' ``MeanMetric`` copies an integer weight to the device with a blocking copy
    at every update (and ignores the weight with ``nan_strategy="disable"``); this one adds
    the Python number on the device.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: int) -> None:
        self.total += value.detach().double() * weight
        self.weight += weight

    def compute(self) -> Tensor:
        return (self.total / self.weight).float()
