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

import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging, LambdaCallback
from torch import nn
from torch.utils.benchmark import Timer

from densenet_lit.bench.common import guarded, log, now
from densenet_lit.bench.config import MODES, Mode, ModelSpec, Settings
from densenet_lit.callbacks import ThroughputMonitor, default_callbacks
from densenet_lit.metric_names import IMAGES_PER_SEC, PEAK_MEMORY_GIB
from densenet_lit.tracking import RunCSVLogger

SGD = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)  # the paper's, both sides
PLAIN, PLAIN_OURS, LIGHTNING = "plain", "plain_ours", "lightning"
QUIET = dict(enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def random_batch(spec: ModelSpec, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, spec.image_size, spec.image_size, generator=gen)
    return x.to(device), torch.randint(0, spec.num_classes, (batch_size,), generator=gen).to(device)


def layout(mode: Mode) -> torch.memory_format:
    return torch.channels_last if mode.channels_last else torch.contiguous_format


def autocast(device, mode: Mode):
    bf16 = torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return bf16 if mode.bf16 else nullcontext()


def plain_step(model: nn.Module, mode: Mode, device):
    """The loop a user writes by hand, as a function of one batch: the network,
    SGD-Nesterov, autocast for bf16."""
    model = model.to(device, memory_format=layout(mode)).train()
    optimizer = torch.optim.SGD(model.parameters(), **SGD)
    # dynamic=False: else Dynamo's automatic dynamic shapes carry over from the first
    # network compiled in this process and give the next one a symbolic-shape graph.
    net = torch.compile(model, dynamic=False) if mode.compile else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(device, mode):  # each batch converted, as a loader's would be
            loss = F.cross_entropy(net(x.contiguous(memory_format=layout(mode))), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def memory_mib(model: nn.Module, x: torch.Tensor, mode: Mode, device) -> float:
    """The memory column on a CPU, where there is no allocator peak to read: the MiB the graph
    of ``model(x)`` keeps for backward (eager; the mode's autocast and layout)."""
    from densenet_lit.models.memory import activation_bytes  # its command line: jsonargparse

    x = x.contiguous(memory_format=layout(mode))
    with autocast(device, mode):
        return activation_bytes(model.to(device, memory_format=layout(mode)), x) / 2**20


def plain_steps(model: nn.Module, spec: ModelSpec, mode: Mode, s: Settings) -> dict:
    x, y = random_batch(spec, s.batch(spec.key), s.device)
    memory = None if s.cuda else memory_mib(model, x, mode, s.device)
    step = plain_step(model, mode, s.device)
    start = now(s.device)
    step(x, y)
    first = now(s.device) - start
    for _ in range(s.warmup - 1):
        step(x, y)
    if s.cuda:
        torch.cuda.reset_peak_memory_stats(s.device)
    # Timer synchronises CUDA around each window; unless told, it pins torch to 1 thread
    timer = Timer("step(x, y)", globals=locals(), num_threads=torch.get_num_threads())
    window_ips = [x.shape[0] / timer.timeit(s.steps).median for _ in range(s.windows)]
    if s.cuda:
        memory = torch.cuda.max_memory_allocated(s.device) / 2**20
    return {"window_ips": window_ips, "first_step_s": first, "memory_mib": memory}


def make_module(spec: ModelSpec, mode: Mode):
    from densenet_lit.module import DenseNetModule

    kwargs = {**spec.module_kwargs, **SGD, "milestones": [30, 60], **mode.module}
    return DenseNetModule(
        **kwargs, channels_last=mode.channels_last, compile=mode.compile,
        num_classes=spec.num_classes, memory_efficient=mode.memory_efficient,
    )  # fmt: skip


def trainer_kwargs(settings: Settings, mode: Mode, root: str, callbacks=()) -> dict:
    """A CLI run's Trainer: its default callbacks after ``callbacks``, its CSV logger in
    ``root``; no checkpoints, progress bar, model summary or sanity validation."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):  # start-up chatter
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    ema = [EMAWeightAveraging(decay=mode.ema_decay)] if mode.ema_decay else []
    return dict(
        accelerator="gpu" if settings.cuda else "cpu", devices=1, benchmark=settings.cuda or None,
        precision="bf16-mixed" if mode.bf16 else "32-true", num_sanity_val_steps=0,
        logger=RunCSVLogger(root), callbacks=[*callbacks, *ema, *default_callbacks()],
        default_root_dir=root, **QUIET,
    )  # fmt: skip


def lightning_steps(spec: ModelSpec, mode: Mode, s: Settings) -> dict:
    """One epoch per window, after the epochs that hold the warm-up (and the monitor's own);
    images/s and the GPU peak are the ThroughputMonitor's, read back from ``metrics.csv``."""
    batch = random_batch(spec, s.batch(spec.key), s.device)
    memory = (
        None if s.cuda else memory_mib(spec.ours(mode.memory_efficient), batch[0], mode, s.device)
    )
    stamps: list[float] = []  # the first step's start and end (compilation included)

    def stamp(*args) -> None:
        if len(stamps) < 2:
            stamps.append(now(s.device))

    first_step = LambdaCallback(on_train_batch_start=stamp, on_train_batch_end=stamp)
    with tempfile.TemporaryDirectory(prefix="densenet-bench-") as root:
        kwargs = trainer_kwargs(s, mode, root, [first_step])
        (monitor,) = [c for c in kwargs["callbacks"] if isinstance(c, ThroughputMonitor)]
        warm = math.ceil(max(s.warmup, monitor.warmup_steps) / s.steps)
        trainer = Trainer(max_epochs=warm + s.windows, limit_train_batches=s.steps, **kwargs)
        trainer.fit(make_module(spec, mode), train_dataloaders=itertools.repeat(batch))
        with open(kwargs["logger"].metrics_file, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get(IMAGES_PER_SEC)]
    timed = [r for r in rows if float(r["epoch"]) >= warm]
    if len(timed) != s.windows:
        raise RuntimeError(f"Lightning logged {len(timed)} of {s.windows} windows")
    if s.cuda:
        peaks = [float(r[PEAK_MEMORY_GIB]) * 2**10 for r in timed if r.get(PEAK_MEMORY_GIB)]
        memory = max(peaks, default=None)
    window_ips = [float(r[IMAGES_PER_SEC]) for r in timed]
    return {"window_ips": window_ips, "first_step_s": stamps[1] - stamps[0], "memory_mib": memory}


def pooled(rounds: list) -> dict | str:
    """A runner's rounds as one result: the windows pooled (images/s: their median), the
    first round's first step, the highest memory; or the error of its failed (last) round."""
    if isinstance(rounds[-1], str):
        return rounds[-1]
    window_ips = [ips for r in rounds for ips in r["window_ips"]]
    memory = max(r["memory_mib"] for r in rounds)
    ips = statistics.median(window_ips)
    return {**rounds[0], "window_ips": window_ips, "memory_mib": memory, "images_per_s": ips}


def step_row(spec: ModelSpec, name: str, s: Settings, runners: list[str] | None = None) -> dict:
    """The runners of ``spec`` (default all) in mode ``name``, alternating over rounds so that
    drift in the machine's speed affects them alike. A runner that fails is its error's
    "n/a (reason)" cell, and it is not run again."""
    mode, level = MODES[name], MODES[name].memory_efficient
    measure = {
        PLAIN: lambda: plain_steps(spec.plain(level), spec, mode, s),
        PLAIN_OURS: lambda: plain_steps(spec.ours(level), spec, mode, s),
        LIGHTNING: lambda: lightning_steps(spec, mode, s),
    }
    runners = runners or [PLAIN, *[PLAIN_OURS] * (spec.num_classes == 1000), LIGHTNING]
    rounds: dict[str, list] = {runner: [] for runner in runners}
    for r in range(s.rounds):
        for runner in runners[:: -1 if r % 2 else 1]:
            if all(isinstance(done, dict) for done in rounds[runner]):
                what = f"{spec.key} {name} {runner}"
                torch.manual_seed(0)  # each runner's network initialised alike
                res = guarded(measure[runner], what, s.device)
                rounds[runner].append(res)
                log(f"{what} round {r + 1}: {res if isinstance(res, str) else res['window_ips']}")
    runs = {runner: pooled(results) for runner, results in rounds.items()}
    return {"model": spec.key, "mode": name, "batch": s.batch(spec.key), "runs": runs}
