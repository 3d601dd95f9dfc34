"""Training throughput and peak device memory, logged once per epoch."""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from densenet_lit.metric_names import IMAGES_PER_SEC, PEAK_MEMORY_GIB


class ThroughputMonitor(Callback):
    """Log training images per second (all devices together) and, on GPU, peak memory.

    Logged once per training epoch as ``perf/images_per_sec`` and ``perf/peak_memory_gib``
    (the largest ``torch.cuda.max_memory_allocated`` over the devices). Both describe the
    timed training steps: the clock runs from the start of the first timed batch to the end
    of the epoch's last one and stops during validation, and the memory peak is read when the
    clock stops (a validation's own peak is left out). The first ``warmup_steps`` training
    steps of the process (in the first epoch of a run, or of a resumed run) are not timed:
    ``torch.compile`` compiles and cuDNN autotunes there, which would make the first epoch's
    figures a measure of start-up. An epoch with no timed step logs neither figure.
    """

    def __init__(self, warmup_steps: int = 2) -> None:
        if warmup_steps < 0:
            raise ValueError(
                f"ThroughputMonitor(warmup_steps={warmup_steps}): expected 0 or more steps."
            )
        self.warmup_steps = warmup_steps
        self._steps = 0  # training steps of this process so far
        self._timing = False  # the current batch is timed
        self._images = 0
        self._elapsed = 0.0
        self._started: float | None = None
        self._peak = 0

    def _cuda(self, pl_module: LightningModule) -> bool:
        return pl_module.device.type == "cuda"

    def _stop(self, pl_module: LightningModule) -> None:
        if self._started is not None:
            if self._cuda(pl_module):
                torch.cuda.synchronize(pl_module.device)
                self._peak = max(self._peak, torch.cuda.max_memory_allocated(pl_module.device))
            self._elapsed += time.perf_counter() - self._started
            self._started = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._images, self._elapsed, self._started, self._peak = 0, 0.0, None, 0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._timing = self._steps >= self.warmup_steps
        if self._timing and self._started is None:
            if self._cuda(pl_module):
                torch.cuda.synchronize(pl_module.device)  # once per epoch and validation
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._steps += 1
        if self._timing:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            self._images += int(x.shape[0]) if hasattr(x, "shape") else 0

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(pl_module)
        if self._elapsed > 0 and self._images > 0:
            rate = self._images * trainer.world_size / self._elapsed
            # each rank's rate times the world size, averaged over the ranks
            pl_module.log(IMAGES_PER_SEC, rate, on_epoch=True, sync_dist=True)
        if self._cuda(pl_module) and self._peak > 0:
            pl_module.log(
                PEAK_MEMORY_GIB,
                self._peak / 2**30,
                on_epoch=True,
                sync_dist=True,
                reduce_fx="max",
            )
