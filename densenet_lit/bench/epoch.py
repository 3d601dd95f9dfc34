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
from torch.profiler import ProfilerActivity, profile

from densenet_lit.bench.common import guarded, log, short_error
from densenet_lit.bench.config import MODES, Mode, ModelSpec, Settings
from densenet_lit.bench.loaders import torchvision_loader
from densenet_lit.bench.steps import (
    LIGHTNING,
    PLAIN,
    PlainTrainer,
    RepeatBatch,
    StepRow,
    make_module,
    now,
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
    window = min(window, n_batches)
    first = (n_batches - window) // 2
    return first, first + window


class BusyMeter:
    """Share of wall time with GPU activity between :meth:`start` and :meth:`stop`.

    ``start``/``stop`` only switch the profiler on and off (inside the timed epoch);
    :meth:`finish` parses the trace (seconds of work) after it. ``window_s`` is the window's
    wall time with the profiler's start and stop. Any failure leaves ``busy`` None, ``error``
    saying why and a warning printed; the epoch goes on.
    """

    warm = False  # CUPTI starts up (up to seconds) once per process, before any timing

    def __init__(self, device, enabled: bool = True):
        self.device, self.enabled = device, enabled and torch.device(device).type == "cuda"
        self.profiler = self.busy = self.error = self._outer = self._wall = None
        self.window_s = 0.0
        if self.enabled and not BusyMeter.warm:
            BusyMeter.warm = True
            with contextlib.suppress(Exception), profile(activities=[ProfilerActivity.CUDA]):
                torch.ones(8, device=device).mul_(2)

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
            events = [e.time_range for e in self.profiler.events() if e.device_type == cuda]
        except Exception as err:
            return self._fail("parsing", err)
        self.profiler = None
        if not events:  # CUPTI not working: no GPU activity recorded at all
            self.error = "profiler recorded no GPU activity"
            log(f"warning: {self.error}; GPU busy is n/a")
            return None
        spans = [(e.start, e.end) for e in events]
        self.busy = min(1.0, merged_length(spans) / (self._wall * 1e6))
        return self.busy

    def fields(self, window_batches: int) -> dict:
        """The EpochResult fields of the profiled window (parses the trace)."""
        if not self.enabled:
            return {}
        busy = self.finish()
        return {
            "busy": busy,
            "busy_batches": window_batches if busy is not None else 0,
            "busy_error": self.error,
            "window_batches": window_batches if self.window_s > 0 else 0,
            "window_s": self.window_s,
        }


class EpochClock:
    """The epoch's start and end marks and its profiled window, for both sides alike."""

    def __init__(self, s: Settings, n_available: int):
        self.device, self.batches = s.device, min(n_available, s.epoch_batches or n_available)
        self.first, self.last = busy_range(self.batches, s.busy_window if s.cuda else 0)
        self.meter = BusyMeter(s.device, enabled=self.last > self.first)

    def begin(self) -> None:
        self.start = now(self.device)

    def batch_start(self, i: int) -> None:
        if i == self.first:
            self.meter.start()

    def batch_end(self, i: int) -> None:
        if i == self.last - 1:
            self.meter.stop()

    def end(self) -> None:
        self.seconds = now(self.device) - self.start

    def result(self, pipeline: str, mode: Mode, workers: int, batch: int, done: int):
        window = self.meter.fields(self.last - self.first)
        return EpochResult(pipeline, mode.name, workers, batch, done, self.seconds, **window)


def our_epoch(spec: ModelSpec, mode: Mode, s: Settings, data_root: Path) -> EpochResult:
    from lightning.pytorch import Callback, Trainer

    from densenet_lit.data import CIFAR10DataModule

    b = s.batch(spec.key)
    datamodule = CIFAR10DataModule(str(data_root), b, augment=True, val_size=0)
    datamodule.setup("fit")
    clock = EpochClock(s, len(datamodule.train_set) // b)

    class Marks(Callback):
        def on_train_epoch_start(self, *args):
            clock.begin()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.batch_start(batch_idx)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.batch_end(batch_idx)

        def on_train_epoch_end(self, *args):
            clock.end()

    module = make_module(spec, mode)
    with tempfile.TemporaryDirectory(prefix="densenet-bench-") as root:
        warm = Trainer(max_steps=s.warmup, **trainer_kwargs(s, mode, root))
        warm.fit(module, train_dataloaders=RepeatBatch(*random_batch(spec, b, s.device)))
        kwargs = trainer_kwargs(s, mode, root, [Marks()])
        trainer = Trainer(
            max_epochs=1, limit_train_batches=clock.batches, limit_val_batches=0, **kwargs
        )
        trainer.fit(module, datamodule=datamodule)
    workers = datamodule.resolved_num_workers  # one optimizer step per batch (no accumulation)
    return clock.result(OURS_PIPELINE, mode, workers, b, trainer.global_step)


def plain_epoch(spec: ModelSpec, mode: Mode, s: Settings, data_root: Path) -> EpochResult:
    b = s.batch(spec.key)
    loader = torchvision_loader(data_root, b, s.epoch_workers, s.device)
    clock = EpochClock(s, len(loader))
    trainer = PlainTrainer(spec.ours(0), mode, s.device)
    x, y = random_batch(spec, b, s.device)
    for _ in range(s.warmup):
        trainer.step(x, y)
    done = 0
    clock.begin()
    for i, (x, y) in zip(range(clock.batches), loader, strict=False):
        clock.batch_start(i)
        trainer.step(x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True))
        clock.batch_end(i)
        done += 1
    clock.end()
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


def run_epochs(
    s: Settings,
    specs: dict[str, ModelSpec],
    steps: dict[str, list[StepRow]],
    cifar_root: Path,
    rows: list[EpochRow],
    save,
) -> None:
    """Both sides in each epoch mode, beside the same side's step figure of that mode."""
    step_rows = {r.mode: r for r in steps.get("cifar", [])}
    for name in s.epoch_modes:
        ref = step_rows.get(name)
        for fn, runner, pipeline in (
            (our_epoch, LIGHTNING, OURS_PIPELINE),
            (plain_epoch, PLAIN, PLAIN_PIPELINE),
        ):
            torch.manual_seed(0)
            run = partial(fn, specs["cifar"], MODES[name], s, cifar_root)
            result, err = guarded(run, f"epoch {name} {runner}", s.device)
            rows.append(EpochRow(name, pipeline, result, err, ref.ips(runner) if ref else None))
            log(f"epoch {name} {runner}: {err or f'{result.images_per_s:.1f} img/s'}")
            save()
