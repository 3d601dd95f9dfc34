"""A CIFAR-10 epoch end to end, ours (CIFAR10DataModule + DenseNetModule + Trainer) against
the plain recipe (torchvision's CIFAR10 with per-image transforms + the hand-written loop); on a
GPU, torch.profiler's "GPU busy" over a window of batches left out of img/s. See
docs/benchmarks.md."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Callback
from torch.profiler import ProfilerActivity, profile

from densenet_lit.bench.common import guarded, log, now, short_error
from densenet_lit.bench.config import MODES, Mode, ModelSpec, Settings
from densenet_lit.bench.loaders import torchvision_loader
from densenet_lit.bench.steps import (
    LIGHTNING,
    PLAIN,
    PlainTrainer,
    make_module,
    random_batch,
    repeat_batch,
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
    seconds: float  # the whole epoch, profiled window included
    busy: float | None = None  # GPU busy fraction of the profiled window
    busy_batches: int = 0
    busy_error: str | None = None  # why GPU busy is missing on a GPU
    window_batches: int = 0  # batches of the profiled window, left out of images_per_s
    window_s: float = 0.0  # its wall time, profiler start and stop included

    @property
    def images_per_s(self) -> float:
        """Images/s of the epoch outside the profiled window (the whole epoch without one)."""
        batches, seconds = self.batches - self.window_batches, self.seconds - self.window_s
        if batches <= 0 or seconds <= 0:  # the window was the whole epoch
            batches, seconds = self.batches, self.seconds
        return self.batch * batches / seconds


def merged_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping ``(start, end)`` intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        total += max(0.0, e - max(s, end))
        end = max(end, e)
    return total


def busy_range(n_batches: int, window: int) -> tuple[int, int]:
    """The profiled batches ``[first, last)``: ``window`` batches in the middle of the epoch."""
    first = (n_batches - min(window, n_batches)) // 2
    return first, first + min(window, n_batches)


class EpochClock(Callback):
    """An epoch's wall time, and the share of wall time with GPU activity in the window of
    batches ``busy_range(batches, window)``: a callback of our side's Trainer, whose hooks
    the plain loop calls itself.

    :meth:`start`/:meth:`stop` only switch the profiler on and off (inside the timed epoch);
    :meth:`finish` parses the trace (seconds of work) after it. ``window_s`` is the window's
    wall time with the profiler's start and stop. Any failure leaves ``busy`` None, ``error``
    saying why and a warning printed; the epoch goes on.
    """

    warm = False  # CUPTI starts up (up to seconds) once per process, before any timing

    def __init__(self, device, batches: int, window: int):
        self.device, self.batches = device, batches
        self.first, self.last = busy_range(batches, window)
        self.enabled = self.last > self.first and torch.device(device).type == "cuda"
        self.profiler = self.busy = self.error = self._outer = self._wall = None
        self.window_s = 0.0
        if self.enabled and not EpochClock.warm:
            EpochClock.warm = True
            with contextlib.suppress(Exception), profile(activities=[ProfilerActivity.CUDA]):
                torch.ones(8, device=device).mul_(2)

    def on_train_epoch_start(self, *args) -> None:
        self.begin = now(self.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.first:
            self.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.last - 1:
            self.stop()

    def on_train_epoch_end(self, *args) -> None:
        self.seconds = now(self.device) - self.begin

    def _fail(self, step: str, err: BaseException) -> None:
        self.error, self.profiler = f"profiler {step} failed: {short_error(err)}", None
        log(f"warning: {self.error}; the epoch is still timed, GPU busy is n/a")

    def start(self) -> None:
        if not self.enabled:
            return
        self._outer = now(self.device)
        try:
            self.profiler = profile(activities=[ProfilerActivity.CUDA])
            self.profiler.start()
            self._inner = now(self.device)
        except Exception as err:
            self._fail("start", err)

    def stop(self) -> None:
        if self._outer is None:
            return
        if self.profiler is not None:
            self._wall = now(self.device) - self._inner
            try:
                self.profiler.stop()
            except Exception as err:
                self._fail("stop", err)
        self.window_s = now(self.device) - self._outer

    def finish(self) -> float | None:
        """Parse the trace into ``busy`` (after the timed epoch); None if it cannot be had."""
        if self.profiler is None:
            return None
        if not self._wall:  # stop() never came: the epoch ended inside the window
            with contextlib.suppress(Exception):
                self.profiler.stop()
            return self._fail("window", RuntimeError("the epoch ended inside the window"))
        try:
            cuda = torch.autograd.DeviceType.CUDA
            spans = [e.time_range for e in self.profiler.events() if e.device_type == cuda]
        except Exception as err:
            return self._fail("parsing", err)
        self.profiler = None
        if not spans:  # CUPTI not working: no GPU activity recorded at all
            self.error = "profiler recorded no GPU activity"
            log(f"warning: {self.error}; GPU busy is n/a")
            return None
        self.busy = min(1.0, merged_length([(e.start, e.end) for e in spans]) / self._wall / 1e6)
        return self.busy

    def fields(self) -> dict:
        """The EpochResult fields of the profiled window (parses the trace)."""
        if not self.enabled:
            return {}
        window, busy = self.last - self.first, self.finish()
        return {
            "busy": busy,
            "busy_batches": window if busy is not None else 0,
            "busy_error": self.error,
            "window_batches": window if self.window_s > 0 else 0,
            "window_s": self.window_s,
        }

    def result(self, pipeline: str, mode: Mode, workers: int, batch: int, done: int):
        fields = self.fields()
        return EpochResult(pipeline, mode.name, workers, batch, done, self.seconds, **fields)


def epoch_clock(s: Settings, n_available: int) -> EpochClock:
    """The clock of an epoch of ``n_available`` batches, or of its first ``--epoch_batches``."""
    batches = min(n_available, s.epoch_batches or n_available)
    return EpochClock(s.device, batches, s.busy_window if s.cuda else 0)


def our_epoch(spec: ModelSpec, mode: Mode, s: Settings, data_root: Path) -> EpochResult:
    from lightning.pytorch import Trainer

    from densenet_lit.data import CIFAR10DataModule

    b = s.batch(spec.key)
    datamodule = CIFAR10DataModule(str(data_root), b, augment=True, val_size=0)
    datamodule.setup("fit")
    clock = epoch_clock(s, len(datamodule.train_set) // b)
    module = make_module(spec, mode)
    with tempfile.TemporaryDirectory(prefix="densenet-bench-") as root:
        warm = Trainer(max_steps=s.warmup, **trainer_kwargs(s, mode, root))
        warm.fit(module, train_dataloaders=repeat_batch(spec, b, s.device))
        kwargs = trainer_kwargs(s, mode, root, [clock])
        limits = {"limit_train_batches": clock.batches, "limit_val_batches": 0}
        trainer = Trainer(max_epochs=1, **limits, **kwargs)
        trainer.fit(module, datamodule=datamodule)
    workers = datamodule.resolved_num_workers  # one optimizer step per batch (no accumulation)
    return clock.result(OURS_PIPELINE, mode, workers, b, trainer.global_step)


def plain_epoch(spec: ModelSpec, mode: Mode, s: Settings, data_root: Path) -> EpochResult:
    b = s.batch(spec.key)
    loader = torchvision_loader(data_root, b, s.epoch_workers, s.device)
    clock = epoch_clock(s, len(loader))
    trainer = PlainTrainer(spec.ours(0), mode, s.device)
    x, y = random_batch(spec, b, s.device)
    for _ in range(s.warmup):
        trainer.step(x, y)
    done = 0
    clock.on_train_epoch_start()
    for i, (x, y) in zip(range(clock.batches), loader, strict=False):
        clock.on_train_batch_start(None, None, None, i)
        trainer.step(x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True))
        clock.on_train_batch_end(None, None, None, None, i)
        done += 1
    clock.on_train_epoch_end()
    return clock.result(PLAIN_PIPELINE, mode, s.epoch_workers, b, done)


@dataclass
class EpochRow:
    mode: str
    pipeline: str
    result: EpochResult | None
    error: str | None
    step_ips: float | None  # the same side's step-only images/s in this mode and batch

    @property
    def vs_step(self) -> float | None:
        """Epoch images/s over step-alone images/s (1x: the loader costs nothing)."""
        if self.result is None or not self.step_ips:
            return None
        return self.result.images_per_s / self.step_ips


def run_epochs(s: Settings, spec: ModelSpec, step_ips: dict, cifar_root: Path, rows, save):
    """Both sides in each epoch mode, beside the same side's step figure of that mode
    (``step_ips``: ``(mode, runner)`` to images/s)."""
    for name in s.epoch_modes:
        for fn, runner, pipeline in (
            (our_epoch, LIGHTNING, OURS_PIPELINE),
            (plain_epoch, PLAIN, PLAIN_PIPELINE),
        ):
            torch.manual_seed(0)
            run = partial(fn, spec, MODES[name], s, cifar_root)
            result, err = guarded(run, f"epoch {name} {runner}", s.device)
            rows.append(EpochRow(name, pipeline, result, err, step_ips.get((name, runner))))
            log(f"epoch {name} {runner}: {err or f'{result.images_per_s:.1f} img/s'}")
            save()
