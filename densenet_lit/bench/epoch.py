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
The profiler slows the host while it records, so the epoch's images/s leaves that window
out (its batches and its time, profiler start and stop included); its trace is parsed only
after the epoch's end mark. A profiler that fails makes GPU busy n/a, never the epoch row.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from densenet_lit.bench.common import (
    Mode,
    ModelSpec,
    Settings,
    log,
    now,
    release,
    short_error,
)
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
    seconds: float  # the whole epoch, profiled window included
    busy: float | None = None  # GPU busy fraction of the profiled window
    busy_batches: int = 0
    busy_error: str | None = None  # why GPU busy is missing on a GPU (the profiler failed)
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
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


_profiler_warm = False


def warm_up_profiler(device: torch.device) -> None:
    """Profile one tiny CUDA op, once per process: CUPTI's start-up (up to seconds) then
    happens here instead of inside the first timed epoch. Failures are left to BusyMeter."""
    global _profiler_warm
    if _profiler_warm or device.type != "cuda":
        return
    _profiler_warm = True
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            torch.ones(8, device=device).mul_(2)
            torch.cuda.synchronize(device)
        prof.events()
    except Exception as err:
        log(f"warning: profiler warm-up failed ({short_error(err)})")


class BusyMeter:
    """Fraction of wall time with GPU activity between :meth:`start` and :meth:`stop`.

    ``start`` and ``stop`` run inside the timed epoch and only switch the profiler on and off;
    :meth:`finish` parses the trace (lazy in torch: seconds for a few hundred thousand events)
    and must come after the epoch's end mark. ``window_s`` is the window's wall time with the
    profiler's start and stop, which the epoch's images/s leaves out. Any profiler failure
    leaves ``busy`` None with a warning and ``error`` saying why; the epoch goes on.
    """

    def __init__(self, device: torch.device, enabled: bool = True):
        self.device = device
        self.enabled = enabled and device.type == "cuda"
        self.profiler = None
        self.busy: float | None = None
        self.error: str | None = None
        self.window_s = 0.0
        self._outer_start = self._start = self._wall_s = None
        if self.enabled:
            warm_up_profiler(device)

    def _fail(self, step: str, err: BaseException) -> None:
        self.error = f"profiler {step} failed: {short_error(err)}"
        self.profiler = None
        log(f"warning: {self.error}; the epoch is still timed, GPU busy is n/a")

    def start(self) -> None:
        if not self.enabled:
            return
        from torch.profiler import ProfilerActivity, profile

        self._outer_start = now(self.device)
        try:
            profiler = profile(activities=[ProfilerActivity.CUDA])
            profiler.start()
        except Exception as err:
            self._fail("start", err)
            return
        self.profiler = profiler
        self._start = now(self.device)

    def stop(self) -> None:
        if self._outer_start is None:
            return
        if self.profiler is not None:
            self._wall_s = now(self.device) - self._start
            try:
                self.profiler.stop()
            except Exception as err:
                self._fail("stop", err)
        self.window_s = now(self.device) - self._outer_start

    def finish(self) -> float | None:
        """Parse the trace into ``busy`` (after the timed epoch); None if it cannot be had."""
        if self.profiler is not None and self._wall_s is None:  # the epoch ended too early
            with contextlib.suppress(Exception):
                self.profiler.stop()
            self._fail("window", RuntimeError("the epoch ended inside the profiled window"))
        if self.profiler is None or not self._wall_s:
            return self.busy
        try:
            intervals = [
                (e.time_range.start, e.time_range.end)
                for e in self.profiler.events()
                if e.device_type == torch.autograd.DeviceType.CUDA
            ]
        except Exception as err:
            self._fail("parsing", err)
            return None
        self.profiler = None
        if not intervals:  # CUPTI not working: no GPU activity recorded at all
            self.error = "profiler recorded no GPU activity"
            log(f"warning: {self.error}; GPU busy is n/a")
            return None
        self.busy = min(1.0, merged_length(intervals) / (self._wall_s * 1e6))
        return self.busy


def busy_range(n_batches: int, window: int) -> tuple[int, int]:
    """The profiled batches ``[first, last)``: ``window`` batches in the middle of the epoch."""
    window = min(window, n_batches)
    first = (n_batches - window) // 2
    return first, first + window


def window_fields(meter: BusyMeter, window_batches: int) -> dict:
    """The EpochResult fields of the profiled window; parses the trace (after the epoch)."""
    if not meter.enabled:
        return {}
    busy = meter.finish()
    return {
        "busy": busy,
        "busy_batches": window_batches if busy is not None else 0,
        "busy_error": meter.error,
        "window_batches": window_batches if meter.window_s > 0 else 0,
        "window_s": meter.window_s,
    }


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
    meter = BusyMeter(dev, enabled=last > first)
    marks: dict[str, float] = {}

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            marks["start"] = now(dev)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == first:
                meter.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == last - 1:
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
    done = trainer.global_step  # one optimizer step per batch (no accumulation)
    result = EpochResult(
        pipeline=OURS_PIPELINE,
        mode=mode.name,
        workers=datamodule.resolved_num_workers,
        batch=batch_size,
        batches=done,
        seconds=marks["end"] - marks["start"],
        **window_fields(meter, last - first),
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
    meter = BusyMeter(dev, enabled=last > first)
    trainer = PlainTrainer(spec.ours(False), mode, dev)
    x, y = random_batch(spec, batch_size, dev)
    for _ in range(settings.warmup):
        trainer.step(x, y)
    del x, y
    done = 0
    start = now(dev)
    for i, (x, y) in enumerate(loader):
        if i == first:
            meter.start()
        trainer.step(x.to(dev, non_blocking=True), y.to(dev, non_blocking=True))
        done += 1
        if i == last - 1:
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
        **window_fields(meter, last - first),
    )
    del trainer, loader
    release(dev)
    return result
