"""Training-step throughput on one on-device batch: a plain PyTorch loop (timed by
``torch.utils.benchmark.Timer``) against DenseNetModule in a CLI run's Trainer (timed by the
CLI's own ThroughputMonitor, one training "epoch" per window). See docs/benchmarks.md."""

from __future__ import annotations

import csv
import itertools
import logging
import math
import statistics
import tempfile
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Timer

from densenet_lit.bench.common import guarded, log, now
from densenet_lit.bench.config import MODES, Mode, ModelSpec, Settings
from densenet_lit.callbacks import ThroughputMonitor, default_callbacks
from densenet_lit.tracking import RunCSVLogger

LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4  # the paper's recipe, on both sides
# milestones in epochs: no trainer.max_epochs needed
RECIPE = dict(
    lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY, milestones=[30, 60]
)
IMAGES_PER_SEC, PEAK_GIB = "perf/images_per_sec", "perf/peak_memory_gib"  # ThroughputMonitor's
PLAIN, PLAIN_OURS, LIGHTNING = "plain", "plain_ours", "lightning"


@dataclass
class StepResult:
    """Images/s of each timed window, the first (compiling) step, and GPU peak memory."""

    window_ips: list[float] = field(default_factory=list)
    first_step_s: float | None = None
    peak_bytes: int | None = None  # torch.cuda.max_memory_allocated over the timed steps

    @property
    def images_per_s(self) -> float | None:
        return statistics.median(self.window_ips) if self.window_ips else None


def random_batch(spec: ModelSpec, batch_size: int, device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, spec.image_size, spec.image_size, generator=gen)
    y = torch.randint(0, spec.num_classes, (batch_size,), generator=gen)
    return x.to(device), y.to(device)


def repeat_batch(spec: ModelSpec, batch_size: int, device):
    """An endless iterable that serves the same on-device batch (no loader cost)."""
    return itertools.repeat(random_batch(spec, batch_size, device))


def autocast(device, mode: Mode):
    bf16 = torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return bf16 if mode.bf16 else nullcontext()


class PlainTrainer:
    """The loop a user writes by hand: the network, SGD-Nesterov, autocast for bf16."""

    def __init__(self, model: nn.Module, mode: Mode, device):
        self.device, self.mode = device, mode
        model = model.to(device).train()
        if mode.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True
        )
        # dynamic=False: else Dynamo's automatic dynamic shapes carry over from the first
        # network compiled in this process and give the next one a symbolic-shape graph.
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


def plain_steps(model: nn.Module, spec: ModelSpec, mode: Mode, s: Settings) -> StepResult:
    x, y = random_batch(spec, s.batch(spec.key), s.device)
    trainer = PlainTrainer(model, mode, s.device)
    start = now(s.device)
    trainer.step(x, y)
    result = StepResult(first_step_s=now(s.device) - start)
    for _ in range(s.warmup - 1):
        trainer.step(x, y)
    if s.cuda:
        torch.cuda.reset_peak_memory_stats(s.device)
    # Timer synchronises CUDA around each window; unless told, it pins torch to 1 thread
    stmt = partial(trainer.step, x, y)
    timer = Timer("stmt()", globals={"stmt": stmt}, num_threads=torch.get_num_threads())
    result.window_ips = [x.shape[0] / timer.timeit(s.steps).median for _ in range(s.windows)]
    result.peak_bytes = torch.cuda.max_memory_allocated(s.device) if s.cuda else None
    return result


def make_module(spec: ModelSpec, mode: Mode):
    """DenseNetModule for ``spec`` in ``mode``, with the mode's extra module arguments."""
    from densenet_lit.module import DenseNetModule

    layout = {"channels_last": mode.channels_last, "compile": mode.compile}
    kwargs = {**spec.module_kwargs, **RECIPE, **layout, **mode.module}
    return DenseNetModule(
        **kwargs, num_classes=spec.num_classes, memory_efficient=mode.memory_efficient
    )


def trainer_kwargs(settings: Settings, mode: Mode, root: str, callbacks=()) -> dict:
    """A CLI run's Trainer: its default callbacks after ``callbacks``, its CSV logger in
    ``root``; no checkpoints, progress bar, model summary or sanity validation."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):  # start-up chatter
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    device = {"accelerator": "gpu" if settings.cuda else "cpu", "devices": 1}
    speed = {"precision": mode.precision, "benchmark": True if settings.cuda else None}
    logs = {"logger": RunCSVLogger(root), "callbacks": [*callbacks, *default_callbacks()]}
    off = dict(enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return {**device, **speed, **logs, **off, "num_sanity_val_steps": 0, "default_root_dir": root}


def lightning_steps(spec: ModelSpec, mode: Mode, s: Settings) -> StepResult:
    """One epoch per window, after the epochs that hold the warm-up (and the monitor's own)."""
    from lightning.pytorch import Callback, Trainer

    result = StepResult()

    class FirstStep(Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 0:
                self.start = now(s.device)

        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 1:
                result.first_step_s = now(s.device) - self.start

    with tempfile.TemporaryDirectory(prefix="densenet-bench-") as root:
        kwargs = trainer_kwargs(s, mode, root, [FirstStep()])
        (monitor,) = [c for c in kwargs["callbacks"] if isinstance(c, ThroughputMonitor)]
        warm = math.ceil(max(s.warmup, monitor.warmup_steps) / s.steps)
        trainer = Trainer(max_epochs=warm + s.windows, limit_train_batches=s.steps, **kwargs)
        batches = repeat_batch(spec, s.batch(spec.key), s.device)
        trainer.fit(make_module(spec, mode), train_dataloaders=batches)
        with open(kwargs["logger"].metrics_file, newline="") as f:
            timed = [r for r in csv.DictReader(f) if r.get(IMAGES_PER_SEC)]
    timed = [r for r in timed if float(r["epoch"]) >= warm]
    result.window_ips = [float(r[IMAGES_PER_SEC]) for r in timed]
    peaks = [float(r[PEAK_GIB]) for r in timed if r.get(PEAK_GIB)]
    result.peak_bytes = round(max(peaks) * 2**30) if peaks else None
    if len(result.window_ips) != s.windows:
        raise RuntimeError(f"Lightning logged {len(result.window_ips)} of {s.windows} windows")
    return result


def run_once(runner: str, spec: ModelSpec, mode: Mode, s: Settings) -> StepResult:
    """One runner (a column of the step table) in one mode."""
    if runner == LIGHTNING:
        return lightning_steps(spec, mode, s)
    net = spec.ours if runner == PLAIN_OURS else spec.plain
    return plain_steps(net(mode.memory_efficient), spec, mode, s)


def activation_mib(model: nn.Module, spec: ModelSpec, mode: Mode, s: Settings) -> float:
    """MiB the autograd graph keeps for backward (eager; the mode's autocast and layout): the
    memory column on a CPU, where there is no allocator peak to read."""
    from densenet_lit.models.memory import activation_bytes

    x, _ = random_batch(spec, s.batch(spec.key), s.device)
    layout = torch.channels_last if mode.channels_last else torch.contiguous_format
    model, x = model.to(s.device, memory_format=layout), x.contiguous(memory_format=layout)
    with autocast(s.device, mode):
        return activation_bytes(model, x) / 2**20


@dataclass
class StepRow:
    """One model in one mode: every runner's result, side by side."""

    model: str
    mode: str
    batch: int
    runs: dict[str, StepResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    memory_mib: dict[str, float] = field(default_factory=dict)
    memory_errors: dict[str, str] = field(default_factory=dict)

    def ips(self, runner: str) -> float | None:
        run = self.runs.get(runner)
        return run.images_per_s if run is not None else None

    def ratio(self, runner: str, baseline: str) -> float | None:
        a, b = self.ips(runner), self.ips(baseline)
        return a / b if a and b else None

    def add(self, runner: str, res: StepResult) -> None:
        """A round's result: later rounds' windows are pooled with the first's."""
        prev = self.runs.setdefault(runner, res)
        if prev is not res:
            prev.window_ips += res.window_ips
            prev.peak_bytes = max(prev.peak_bytes or 0, res.peak_bytes or 0) or None


def step_row(spec: ModelSpec, name: str, s: Settings, runners: list[str] | None = None) -> StepRow:
    """The runners of ``spec`` (default all) in mode ``name``, alternating over rounds so that
    drift in the machine's speed affects them alike; then each side's memory."""
    row, mode = StepRow(spec.key, name, s.batch(spec.key)), MODES[name]
    runners = runners or [PLAIN, *[PLAIN_OURS] * spec.has_torchvision_baseline, LIGHTNING]
    for r in range(s.rounds):
        for runner in [ru for ru in runners[:: -1 if r % 2 else 1] if ru not in row.errors]:
            torch.manual_seed(0)
            what = f"{spec.key} {name} {runner}"
            res, err = guarded(partial(run_once, runner, spec, mode, s), what, s.device)
            log(f"{what} round {r + 1}: {err or f'{res.images_per_s:.1f} img/s'}")
            row.errors.update({runner: err} if err else {})
            if res is not None:
                row.add(runner, res)
    for runner, build in ((PLAIN, spec.plain), (LIGHTNING, spec.ours)):
        if s.cuda:  # the allocator peaks of the runs
            peak = row.runs[runner].peak_bytes if runner in row.runs else None
            row.memory_mib.update({runner: peak / 2**20} if peak is not None else {})
            continue
        torch.manual_seed(0)  # CPU: the bytes each side's network saves for backward
        measure = partial(lambda b: activation_mib(b(mode.memory_efficient), spec, mode, s), build)
        value, err = guarded(measure, f"{spec.key} {name} activation memory", s.device)
        row.memory_mib.update({runner: value} if err is None else {})
        row.memory_errors.update({runner: err} if err else {})
    return row
