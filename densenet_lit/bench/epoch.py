"""A CIFAR-10 training epoch end to end: loader plus model, ours against the plain recipe.

Ours: :class:`~densenet_lit.data.CIFAR10DataModule` (uint8 batches from memory, augmented on
the device) and :class:`~densenet_lit.module.DenseNetModule` in a Lightning ``Trainer`` set up
as in :mod:`densenet_lit.bench.steps` (the CLI's default callbacks and CSV logger).
Plain: ``torchvision.datasets.CIFAR10`` with per-image PIL transforms in a ``DataLoader``
with worker processes, and the hand-written loop of :mod:`densenet_lit.bench.steps` on the
same network. Both sides first run ``warmup`` steps on a random batch (compilation, cuDNN
autotuning), then the timed epoch: from the first batch request to the last update, worker
start-up included.

On a GPU, the profiler watches ``busy_window`` batches in the middle of the epoch and
reports the fraction of that wall time in which GPU kernels or copies ran ("GPU busy").
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from densenet_lit.bench.common import Mode, ModelSpec, Settings, now, release
from densenet_lit.bench.loaders import our_cifar10, torchvision_loader
from densenet_lit.bench.steps import (
    PlainTrainer,
    RepeatBatch,
    make_module,
    quiet_lightning,
    random_batch,
    trainer_kwargs,
)

OURS_PIPELINE = "ours: CIFAR10DataModule (on-device augmentation) + DenseNetModule + Trainer"
PLAIN_PIPELINE = "plain: torchvision CIFAR10 + per-image transforms + DataLoader + plain loop"


@dataclass
class EpochResult:
    pipeline: str
    mode: str
    workers: int
    batch: int
    batches: int
    seconds: float
    busy: float | None = None  # GPU busy fraction of the profiled window
    busy_batches: int = 0

    @property
    def images_per_s(self) -> float:
        return self.batch * self.batches / self.seconds


def merged_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping ``(start, end)`` intervals."""
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


class BusyMeter:
    """Fraction of wall time with GPU activity between :meth:`start` and :meth:`stop`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.profiler = None
        self.busy: float | None = None

    def start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.profiler = profile(activities=[ProfilerActivity.CUDA])
        self.profiler.__enter__()
        self.t0 = now(self.device)

    def stop(self) -> None:
        wall_us = (now(self.device) - self.t0) * 1e6
        self.profiler.__exit__(None, None, None)
        intervals = [
            (e.time_range.start, e.time_range.end)
            for e in self.profiler.events()
            if e.device_type == torch.autograd.DeviceType.CUDA
        ]
        self.busy = min(1.0, merged_length(intervals) / wall_us) if wall_us > 0 else None
        self.profiler = None


def busy_range(n_batches: int, window: int) -> tuple[int, int]:
    """The profiled batches ``[first, last)``: ``window`` batches in the middle of the epoch."""
    window = min(window, n_batches)
    first = (n_batches - window) // 2
    return first, first + window


def epoch_batch_count(n_available: int, settings: Settings) -> int:
    return (
        n_available if settings.epoch_batches is None else min(n_available, settings.epoch_batches)
    )


# ---------------------------------------------------------------------------------- ours


def our_epoch(spec: ModelSpec, mode: Mode, settings: Settings, data_root: Path) -> EpochResult:
    from lightning.pytorch import Callback, Trainer

    dev = settings.device
    batch_size = settings.batch[spec.key]
    module = make_module(spec, mode)
    quiet_lightning()
    datamodule = our_cifar10(data_root, batch_size, None, augment=True, val_size=0)
    datamodule.setup("fit")
    n_batches = epoch_batch_count(len(datamodule.train_set) // batch_size, settings)
    first, last = busy_range(n_batches, settings.busy_window if dev.type == "cuda" else 0)
    meter = BusyMeter(dev)
    marks: dict[str, float] = {}

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            marks["start"] = now(dev)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == first and last > first:
                meter.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == last - 1 and last > first:
                meter.stop()

        def on_train_epoch_end(self, trainer, pl_module):
            marks["end"] = now(dev)

    with tempfile.TemporaryDirectory(prefix="densenet-bench-") as root:
        x, y = random_batch(spec, batch_size, dev)
        Trainer(max_steps=settings.warmup, **trainer_kwargs(settings, mode, root)).fit(
            module, train_dataloaders=RepeatBatch(x, y)
        )
        del x, y
        trainer = Trainer(
            max_epochs=1,
            limit_train_batches=n_batches,
            limit_val_batches=0,
            **trainer_kwargs(settings, mode, root, [EpochTimer()]),
        )
        trainer.fit(module, datamodule=datamodule)
    done = trainer.fit_loop.epoch_loop.batch_progress.total.completed
    result = EpochResult(
        pipeline=OURS_PIPELINE,
        mode=mode.name,
        workers=datamodule.resolved_num_workers,
        batch=batch_size,
        batches=done,
        seconds=marks["end"] - marks["start"],
        busy=meter.busy,
        busy_batches=last - first if meter.busy is not None else 0,
    )
    del trainer, module, datamodule
    release(dev)
    return result


# --------------------------------------------------------------------------------- plain


def plain_epoch(spec: ModelSpec, mode: Mode, settings: Settings, data_root: Path) -> EpochResult:
    dev = settings.device
    batch_size = settings.batch[spec.key]
    loader = torchvision_loader(data_root, batch_size, settings.epoch_workers, dev)
    n_batches = epoch_batch_count(len(loader), settings)
    first, last = busy_range(n_batches, settings.busy_window if dev.type == "cuda" else 0)
    meter = BusyMeter(dev)
    trainer = PlainTrainer(spec.ours(False), mode, dev)
    x, y = random_batch(spec, batch_size, dev)
    for _ in range(settings.warmup):
        trainer.step(x, y)
    del x, y
    done = 0
    start = now(dev)
    for i, (x, y) in enumerate(loader):
        if i == first and last > first:
            meter.start()
        trainer.step(x.to(dev, non_blocking=True), y.to(dev, non_blocking=True))
        done += 1
        if i == last - 1 and last > first:
            meter.stop()
        if done == n_batches:
            break
    seconds = now(dev) - start
    result = EpochResult(
        pipeline=PLAIN_PIPELINE,
        mode=mode.name,
        workers=settings.epoch_workers,
        batch=batch_size,
        batches=done,
        seconds=seconds,
        busy=meter.busy,
        busy_batches=last - first if meter.busy is not None else 0,
    )
    del trainer, loader
    release(dev)
    return result
