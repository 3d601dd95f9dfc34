"""A CIFAR-10 epoch end to end, ours (CIFAR10DataModule + DenseNetModule + Trainer) against
the plain recipe (torchvision's CIFAR10 with per-image transforms + the hand-written loop); on a
GPU, how busy the GPU was over a window of batches. See docs/benchmarks.md."""

from __future__ import annotations

import itertools
import tempfile
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from torch.profiler import ProfilerActivity, profile

from densenet_lit.bench.common import NA, get, guarded, log, now, over
from densenet_lit.bench.config import MODES, Mode, ModelSpec, Settings
from densenet_lit.bench.loaders import torchvision_loader
from densenet_lit.bench.steps import (
    LIGHTNING,
    PLAIN,
    make_module,
    plain_step,
    random_batch,
    trainer_kwargs,
)
from densenet_lit.data import CIFAR10DataModule

OURS_PIPELINE = "ours: CIFAR10DataModule (on-device augmentation) + DenseNetModule + Trainer"
PLAIN_PIPELINE = "plain: torchvision CIFAR10 + per-image transforms + DataLoader + plain loop"


class EpochClock(Callback):
    """The wall time of an epoch of ``batches`` batches (of its first ``limit``, if given) and,
    on a GPU, GPU busy over ``window`` batches in its middle: the CUDA kernel time
    torch.profiler records there over the window's wall time. A callback of our side's Trainer;
    the plain loop calls its hooks itself. The window, the profiler's start and stop included,
    is left out of the epoch's images/s."""

    def __init__(self, device, batches: int, window: int, limit: int = 0):
        self.device, self.batches = device, min(batches, limit or batches)
        window = min(window, self.batches) if torch.device(device).type == "cuda" else 0
        self.first = (self.batches - window) // 2
        self.last = self.first + window
        self.profiler = profile(activities=[ProfilerActivity.CUDA])
        self.window_s = 0.0

    def on_train_epoch_start(self, *args) -> None:
        self.begin = now(self.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.first < self.last:
            self.outer = now(self.device)
            self.profiler.start()
            self.inner = now(self.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.last - 1 >= self.first:
            self.busy_wall = now(self.device) - self.inner
            self.profiler.stop()
            self.window_s = now(self.device) - self.outer

    def on_train_epoch_end(self, *args) -> None:
        self.seconds = now(self.device) - self.begin

    def result(self, pipeline: str, mode: Mode, workers: int, batch: int, done: int) -> dict:
        """The epoch's row of the report (images/s outside the window, if there is more)."""
        window = self.last - self.first if self.window_s else 0
        n, seconds = done - window, self.seconds - self.window_s
        if n <= 0 or seconds <= 0:  # the window was the whole epoch
            n, seconds = done, self.seconds
        busy = f"{NA} (CPU)" if torch.device(self.device).type == "cpu" else f"{NA} (not profiled)"
        if window:  # the trace is read after the epoch: parsing it takes seconds
            cuda = torch.autograd.DeviceType.CUDA
            spans = [e.time_range for e in self.profiler.events() if e.device_type == cuda]
            kernel_s = sum(t.end - t.start for t in spans) / 1e6
            busy = min(1.0, kernel_s / self.busy_wall) if spans else f"{NA} (no GPU activity)"
        row = dict(pipeline=pipeline, mode=mode.name, workers=workers, batch=batch, batches=done)
        ips = batch * n / seconds
        return dict(row, seconds=self.seconds, images_per_s=ips, busy=busy, busy_batches=window)


def our_epoch(spec: ModelSpec, mode: Mode, s: Settings, data_root: Path) -> dict:
    b = s.batch(spec.key)
    datamodule = CIFAR10DataModule(str(data_root), b, augment=True, val_size=0)
    datamodule.setup("fit")
    clock = EpochClock(s.device, len(datamodule.train_set) // b, s.busy_window, s.epoch_batches)
    module = make_module(spec, mode)
    with tempfile.TemporaryDirectory(prefix="densenet-bench-") as root:
        warm = Trainer(max_steps=s.warmup, **trainer_kwargs(s, mode, root))
        warm.fit(module, train_dataloaders=itertools.repeat(random_batch(spec, b, s.device)))
        limits = {"limit_train_batches": clock.batches, "limit_val_batches": 0}
        trainer = Trainer(max_epochs=1, **limits, **trainer_kwargs(s, mode, root, [clock]))
        trainer.fit(module, datamodule=datamodule)
    workers = datamodule.resolved_num_workers  # one optimizer step per batch (no accumulation)
    return clock.result(OURS_PIPELINE, mode, workers, b, trainer.global_step)


def plain_epoch(spec: ModelSpec, mode: Mode, s: Settings, data_root: Path) -> dict:
    b = s.batch(spec.key)
    loader = torchvision_loader(data_root, b, s.epoch_workers, s.device)
    clock = EpochClock(s.device, len(loader), s.busy_window, s.epoch_batches)
    step, batch = plain_step(spec.ours(0), mode, s.device), random_batch(spec, b, s.device)
    for _ in range(s.warmup):
        step(*batch)
    clock.on_train_epoch_start()
    for i, (x, y) in zip(range(clock.batches), loader, strict=False):
        clock.on_train_batch_start(None, None, None, i)
        step(x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True))
        clock.on_train_batch_end(None, None, None, None, i)
    clock.on_train_epoch_end()
    return clock.result(PLAIN_PIPELINE, mode, s.epoch_workers, b, i + 1)


def run_epochs(s: Settings, spec: ModelSpec, step_rows: list[dict], cifar_root: Path, rows, save):
    """Both sides in each epoch mode, beside the same side's step figure of that mode (from
    ``step_rows``, the CIFAR network's step table): "vs step alone"."""
    sides = ((our_epoch, LIGHTNING, OURS_PIPELINE), (plain_epoch, PLAIN, PLAIN_PIPELINE))
    for name, (fn, runner, pipeline) in itertools.product(s.epoch_modes, sides):
        torch.manual_seed(0)
        what = f"epoch {name} {runner}"
        res = guarded(partial(fn, spec, MODES[name], s, cifar_root), what, s.device)
        row = res if isinstance(res, dict) else {"pipeline": pipeline, "mode": name, "error": res}
        step = next((get(r, runner) for r in step_rows if r["mode"] == name), None)
        row["vs_step"] = over(row.get("images_per_s"), step)
        rows.append(row)
        log(f"{what}: {row.get('error', row.get('images_per_s'))}")
        save()
