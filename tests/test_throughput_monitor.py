"""ThroughputMonitor: images per second of the timed training steps, and their memory peak.

The hooks are driven by hand, as the Trainer calls them, with a clock and a CUDA allocator
that the test controls, so that the logged numbers are known exactly."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from densenet_lit.callbacks import ThroughputMonitor

BATCH = 8
GIB = 2**30


class FakeCuda:
    """The clock and the allocator's peak: each step takes ``step_seconds``, allocates
    ``step_bytes`` at its peak; validation peaks at ``validation_bytes``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        self.peak = 0
        monkeypatch.setattr(time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset)

    def reset(self, device: object = None) -> None:
        self.peak = 0

    def allocate(self, n: int) -> None:
        self.peak = max(self.peak, n)


class Module:
    """What the monitor uses of a LightningModule: its device and ``log``."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.logged: dict[str, float] = {}

    def log(self, name: str, value: float, **kwargs: object) -> None:
        self.logged[name] = value


def run_epoch(
    monitor: ThroughputMonitor,
    module: Module,
    fake: FakeCuda,
    step_seconds: list[float],
    step_bytes: int = GIB,
    validation_bytes: int = 3 * GIB,
) -> dict[str, float]:
    trainer = SimpleNamespace(world_size=2)
    batch = (torch.zeros(BATCH, 1, 2, 2), torch.zeros(BATCH))
    module.logged = {}
    monitor.on_train_epoch_start(trainer, module)
    for i, seconds in enumerate(step_seconds):
        monitor.on_train_batch_start(trainer, module, batch, i)
        fake.now += seconds
        fake.allocate(step_bytes)
        monitor.on_train_batch_end(trainer, module, None, batch, i)
    monitor.on_validation_start(trainer, module)
    fake.now += 100.0  # validation is not timed ...
    fake.allocate(validation_bytes)  # ... and its memory peak is not the training steps'
    monitor.on_train_epoch_end(trainer, module)  # Lightning calls it after validation
    return module.logged


def test_warm_up_steps_are_left_out_of_the_first_epoch(monkeypatch):
    fake = FakeCuda(monkeypatch)
    monitor, module = ThroughputMonitor(warmup_steps=2), Module("cpu")
    # two slow steps (compilation), then three of 0.5 s: 3 x 8 images in 1.5 s, on 2 ranks
    first = run_epoch(monitor, module, fake, [30.0, 10.0, 0.5, 0.5, 0.5])
    assert first == {"perf/images_per_sec": 3 * BATCH * 2 / 1.5}
    second = run_epoch(monitor, module, fake, [0.25, 0.25])  # later epochs: every step
    assert second == {"perf/images_per_sec": 2 * BATCH * 2 / 0.5}


def test_an_epoch_of_warm_up_steps_only_logs_nothing(monkeypatch):
    fake = FakeCuda(monkeypatch)
    monitor, module = ThroughputMonitor(warmup_steps=2), Module("cpu")
    assert run_epoch(monitor, module, fake, [30.0, 10.0]) == {}
    assert run_epoch(monitor, module, fake, [0.5]) == {"perf/images_per_sec": BATCH * 2 / 0.5}


def test_peak_memory_is_the_training_steps_not_the_validations(monkeypatch):
    fake = FakeCuda(monkeypatch)
    monitor, module = ThroughputMonitor(warmup_steps=1), Module("cuda")
    fake.allocate(5 * GIB)  # the warm-up's autotuning (and anything before it)
    logged = run_epoch(monitor, module, fake, [9.0, 1.0, 1.0], step_bytes=GIB)
    assert logged["perf/peak_memory_gib"] == 1.0
    assert logged["perf/images_per_sec"] == 2 * BATCH * 2 / 2.0


def test_warm_up_steps_must_not_be_negative():
    with pytest.raises(ValueError, match=r"warmup_steps=-1\): expected 0 or more"):
        ThroughputMonitor(warmup_steps=-1)
