"""Callbacks every run uses: checkpoints (last + best), throughput and memory, a finite-loss guard."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden


def has_validation(trainer: Trainer) -> bool:
    """Whether this fit will run a validation loop (a data module with ``val_size=0`` will not)."""
    if trainer.limit_val_batches == 0:
        return False
    datamodule = trainer.datamodule
    if datamodule is not None:
        if hasattr(datamodule, "val_set"):  # densenet_lit.data modules, after setup
            return datamodule.val_set is not None
        return is_overridden("val_dataloader", datamodule)
    return trainer.lightning_module is not None and is_overridden(
        "val_dataloader", trainer.lightning_module
    )


class RunCheckpoint(ModelCheckpoint):
    """Keep ``last.ckpt`` and the checkpoint with the lowest validation error.

    A :class:`~lightning.pytorch.callbacks.ModelCheckpoint` with the defaults every experiment
    shares. When the run has no validation set (the paper's final CIFAR runs train on all
    50,000 images) there is nothing to rank checkpoints by, so only ``last.ckpt`` is kept.
    """

    def __init__(
        self,
        monitor: str | None = "val/error",
        mode: str = "min",
        save_last: bool = True,
        save_top_k: int = 1,
        filename: str | None = "best-epoch{epoch:03d}-val_error{val/error:.2f}",
        auto_insert_metric_name: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            monitor=monitor,
            mode=mode,
            save_last=save_last,
            save_top_k=save_top_k,
            filename=filename,
            auto_insert_metric_name=auto_insert_metric_name,
            **kwargs,
        )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self.monitor is not None and not has_validation(trainer):
            rank_zero_info(
                f"No validation set in this run: keeping only last.ckpt (no best-by-{self.monitor})."
            )
            self.monitor = None
            self.save_top_k = 0
        super().setup(trainer, pl_module, stage)


class ThroughputMonitor(Callback):
    """Log training images per second (all devices together) and, on GPU, peak memory.

    Logged once per training epoch as ``perf/images_per_sec`` and ``perf/peak_memory_gib``
    (the largest ``torch.cuda.max_memory_allocated`` over the devices). The clock runs from the
    start of the first training batch to the end of the last one and stops during validation.
    """

    def __init__(self) -> None:
        self._images = 0
        self._elapsed = 0.0
        self._started: float | None = None

    def _cuda(self, pl_module: LightningModule) -> bool:
        return pl_module.device.type == "cuda"

    def _stop(self, pl_module: LightningModule) -> None:
        if self._started is not None:
            if self._cuda(pl_module):
                torch.cuda.synchronize(pl_module.device)
            self._elapsed += time.perf_counter() - self._started
            self._started = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._images, self._elapsed, self._started = 0, 0.0, None
        if self._cuda(pl_module):
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        self._images += int(x.shape[0]) if hasattr(x, "shape") else 0

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(pl_module)
        if self._elapsed > 0 and self._images > 0:
            rate = self._images * trainer.world_size / self._elapsed
            # each rank's rate times the world size, averaged over the ranks
            pl_module.log("perf/images_per_sec", rate, on_epoch=True, sync_dist=True)
        if self._cuda(pl_module):
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
            pl_module.log(
                "perf/peak_memory_gib", peak, on_epoch=True, sync_dist=True, reduce_fx="max"
            )


class FiniteLossGuard(Callback):
    """Stop training with an error at the first NaN or infinite training loss.

    The message names the step and the last checkpoint saved before it, to resume from
    (``--ckpt_path``) after lowering the learning rate or fixing the data.
    """

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = float(loss.detach())
        if math.isfinite(value):
            return
        last = None
        for cb in trainer.checkpoint_callbacks:
            last = getattr(cb, "last_model_path", None) or getattr(cb, "best_model_path", None)
            if last:
                break
        raise FloatingPointError(
            f"The training loss is {value} at global step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}, batch {batch_idx}); training stopped. Last good checkpoint: "
            f"{last or 'none saved yet'}. Resume from it with --ckpt_path after lowering the "
            "learning rate or checking the data."
        )
