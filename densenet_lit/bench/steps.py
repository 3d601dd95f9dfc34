"""Training-step throughput: a plain PyTorch loop against DenseNetModule in a Lightning Trainer.

Both sides train on one random batch that already sits on the device, so only the step is
timed (forward, loss, backward, SGD-Nesterov update, and on the Lightning side everything
the Trainer and the module do around it: hooks, logging, metrics). The Trainer is the one a
``python -m densenet_lit fit`` run builds, with the CLI's default callbacks and CSV logger, but
without checkpoints, progress bar and W&B. They come from :mod:`densenet_lit.callbacks` and
:mod:`densenet_lit.tracking`, not from the CLI, so the suite runs where ``jsonargparse`` is not
installed (a bare GPU machine).

Timing starts after ``warmup`` steps (compilation and cuDNN autotuning happen there), is
taken in ``windows`` windows of ``steps_per_window`` steps, each closed by a device
synchronisation, and the median window is reported.
"""

from __future__ import annotations

import tempfile
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from densenet_lit.bench.common import Mode, ModelSpec, Settings, median, now, release
from densenet_lit.callbacks import default_callbacks
from densenet_lit.tracking import RunCSVLogger

LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4  # the paper's recipe, on both sides


@dataclass
class StepResult:
    """Images/s of each timed window, the first (compiling) step, and GPU peak memory."""

    window_ips: list[float] = field(default_factory=list)
    first_step_s: float | None = None
    peak_bytes: int | None = None  # torch.cuda.max_memory_allocated over the timed steps

    @property
    def images_per_s(self) -> float | None:
        return median(self.window_ips)


class _Timer:
    """Window boundaries shared by both runners: after warm-up, then every window."""

    def __init__(self, settings: Settings, batch_size: int):
        self.s = settings
        self.batch_size = batch_size
        self.result = StepResult()
        self._marks: list[float] = []
        self._first_start: float | None = None

    @property
    def total_steps(self) -> int:
        return self.s.warmup + self.s.steps_per_window * self.s.windows

    def step_started(self, i: int) -> None:
        if i == 0:
            self._first_start = now(self.s.device)

    def step_ended(self, i: int) -> None:
        dev = self.s.device
        if i == 0:
            self.result.first_step_s = now(dev) - self._first_start
        done = i + 1 - self.s.warmup
        if done < 0 or done % self.s.steps_per_window:
            return
        self._marks.append(now(dev))
        if done == 0 and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        if len(self._marks) > 1:
            images = self.batch_size * self.s.steps_per_window
            self.result.window_ips.append(images / (self._marks[-1] - self._marks[-2]))
        if done == self.s.steps_per_window * self.s.windows and dev.type == "cuda":
            self.result.peak_bytes = torch.cuda.max_memory_allocated(dev)


def random_batch(spec: ModelSpec, batch_size: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    in_channels = 3
    x = torch.randn(batch_size, in_channels, spec.image_size, spec.image_size, generator=gen)
    y = torch.randint(0, spec.num_classes, (batch_size,), generator=gen)
    return x.to(device), y.to(device)


# ------------------------------------------------------------------------------ plain loop


def autocast(device: torch.device, mode: Mode):
    if not mode.bf16:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class PlainTrainer:
    """The loop a user writes by hand: the network, SGD-Nesterov, autocast for bf16."""

    def __init__(self, model: nn.Module, mode: Mode, device: torch.device):
        self.device, self.mode = device, mode
        model = model.to(device)
        if mode.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        self.model = model
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True
        )
        # dynamic=False: otherwise Dynamo's automatic dynamic shapes carry over from the first
        # network compiled in this process (CIFAR) and give the next one a symbolic-shape graph.
        self.net = torch.compile(model, dynamic=False) if mode.compile else model

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.mode.channels_last:  # as each batch from a loader would be converted
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.mode):
            loss = F.cross_entropy(self.net(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss


def plain_steps(model: nn.Module, spec: ModelSpec, mode: Mode, settings: Settings) -> StepResult:
    dev = settings.device
    batch_size = settings.batch[spec.key]
    x, y = random_batch(spec, batch_size, dev)
    trainer = PlainTrainer(model, mode, dev)
    timer = _Timer(settings, batch_size)
    for i in range(timer.total_steps):
        timer.step_started(i)
        trainer.step(x, y)
        timer.step_ended(i)
    result = timer.result
    del trainer, x, y
    release(dev)
    return result


# ------------------------------------------------------------------------------- Lightning


class RepeatBatch:
    """An endless iterable that serves the same on-device batch (no loader cost)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __iter__(self):
        while True:
            yield self.x, self.y


def _lightning_timer_callback(timer: _Timer):
    from lightning.pytorch import Callback

    class StepTimer(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            timer.step_started(batch_idx)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            timer.step_ended(batch_idx)

    return StepTimer()


def make_module(spec: ModelSpec, mode: Mode, memory_efficient: bool | None = None):
    """DenseNetModule for ``spec`` in ``mode`` (the --quick ImageNet stand-in swapped in)."""
    from densenet_lit.module import DenseNetModule

    eff = mode.memory_efficient if memory_efficient is None else memory_efficient
    module = DenseNetModule(
        **spec.module_kwargs,
        num_classes=spec.num_classes,
        memory_efficient=eff,
        lr=LR,
        momentum=MOMENTUM,
        nesterov=True,
        weight_decay=WEIGHT_DECAY,
        milestones=[30, 60],  # epoch numbers: no trainer.max_epochs needed
        channels_last=mode.channels_last,
        compile=mode.compile,
    )
    if spec.tiny and spec.key == "imagenet":
        tiny = spec.ours(eff)
        if mode.channels_last:
            tiny = tiny.to(memory_format=torch.channels_last)
        module.model = tiny
    return module


def trainer_kwargs(settings: Settings, mode: Mode, root: str, callbacks=()) -> dict:
    """A CLI run's Trainer: its default callbacks after ``callbacks``, its CSV logger in
    ``root``; no checkpoints, progress bar, model summary or sanity validation."""
    cuda = settings.device.type == "cuda"
    return {
        "accelerator": "gpu" if cuda else "cpu",
        "devices": 1,
        "precision": mode.precision,
        "logger": RunCSVLogger(root),
        "callbacks": [*callbacks, *default_callbacks()],  # those of every CLI run
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "benchmark": True if cuda else None,
        "default_root_dir": root,
    }


def quiet_lightning():
    """Silence Lightning's start-up chatter (GPU available, tips) while measuring."""
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def lightning_steps(spec: ModelSpec, mode: Mode, settings: Settings) -> StepResult:
    from lightning.pytorch import Trainer

    dev = settings.device
    batch_size = settings.batch[spec.key]
    x, y = random_batch(spec, batch_size, dev)
    module = make_module(spec, mode)
    timer = _Timer(settings, batch_size)
    quiet_lightning()
    with tempfile.TemporaryDirectory(prefix="densenet-bench-") as root:
        trainer = Trainer(
            max_steps=timer.total_steps,
            **trainer_kwargs(settings, mode, root, [_lightning_timer_callback(timer)]),
        )
        trainer.fit(module, train_dataloaders=RepeatBatch(x, y))
    if len(timer.result.window_ips) != settings.windows:
        raise RuntimeError(
            f"Lightning ran {trainer.global_step} of {timer.total_steps} steps; "
            f"{len(timer.result.window_ips)} windows timed"
        )
    result = timer.result
    del trainer, module, x, y
    release(dev)
    return result


# ----------------------------------------------------------------------------- CPU memory


def activation_mib(model: nn.Module, spec: ModelSpec, mode: Mode, settings: Settings) -> float:
    """Bytes the autograd graph keeps for backward (eager; autocast and layout as the mode).

    Used as the memory column on CPU, where there is no allocator peak to read. For the
    compile modes this is the eager graph's count: Inductor may save fewer tensors.
    """
    from densenet_lit.models.memory import activation_bytes

    dev = settings.device
    x, _ = random_batch(spec, settings.batch[spec.key], dev)
    model = model.to(dev)
    if mode.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(dev, mode):
        n = activation_bytes(model, x)
    return n / 2**20
