"""Activation memory and step time of a training step at each memory level, on any device.

``python -m densenet_lit.models.memory`` prints, for each level of ``memory_efficient``
(:mod:`densenet_lit.models.memory_efficient`), how many bytes the autograd graph holds for
the backward pass after one forward pass, and the time of a training step. The byte count
comes from ``torch.autograd.graph.saved_tensors_hooks``: every tensor saved for backward is
seen once per storage, parameters excluded. It is exact and needs no GPU (on a GPU the
command also reports ``torch.cuda.max_memory_allocated`` of a step, weights included).
Step times are the fastest of ``--rounds`` steps per level, the levels taking turns, so
that other jobs on the machine disturb each level alike; on the CPU the process's CPU time
of the step is reported too, which other processes on a busy machine barely change (with
``--threads 1``; with more threads it also counts threads waiting for each other).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from densenet_lit.markdown import table
from densenet_lit.models.memory_efficient import LEVELS
from densenet_lit.models.zoo import build_model
from densenet_lit.toolcli import UsageError, run_tool


def activation_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Bytes of the distinct tensors the graph of ``model(batch)`` keeps for backward."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in param_storages:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
    out.sum().backward()  # keeps the measurement honest: the graph was usable
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


@dataclass(frozen=True)
class LevelCost:
    """What one memory level costs in a training step; the times are None when not timed."""

    level: int
    activation_bytes: int
    step_seconds: float | None = None  # wall clock
    cpu_seconds: float | None = None  # CPU only: this process's CPU time
    peak_bytes: int | None = None  # CUDA only: max_memory_allocated during a step


def measure(
    arch: str,
    batch_size: int,
    image_size: int,
    levels: tuple[int, ...] = tuple(LEVELS),
    rounds: int = 3,
    device: str = "cpu",
    **kwargs,
) -> list[LevelCost]:
    """Activation bytes and step time of ``arch`` at each of ``levels`` (same weights)."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=gen).to(dev)
    models = {}
    for level in levels:
        torch.manual_seed(0)
        models[level] = build_model(arch, memory_efficient=level, **kwargs).to(dev)
    y = torch.randint(0, models[levels[0]].classifier.out_features, (batch_size,), generator=gen)
    y = y.to(dev)
    sizes = {level: activation_bytes(model, x) for level, model in models.items()}
    walls: dict[int, list[float]] = {level: [] for level in levels}
    cpus: dict[int, list[float]] = {level: [] for level in levels}
    peaks: dict[int, int] = {}
    for i in range(rounds + 1 if rounds else 0):  # the first round warms up
        for level, model in models.items():
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            wall, cpu = _train_step(model, x, y)
            if dev.type == "cuda":
                peaks[level] = torch.cuda.max_memory_allocated(dev)
            if i:
                walls[level].append(wall)
                cpus[level].append(cpu)
    return [
        LevelCost(
            level,
            sizes[level],
            min(walls[level]) if rounds else None,
            min(cpus[level]) if rounds and dev.type == "cpu" else None,
            peaks.get(level),
        )
        for level in levels
    ]


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of forward, loss, backward and an SGD update."""
    sync = torch.cuda.synchronize if x.is_cuda else lambda: None
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-1e-3)
    model.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - start, time.process_time() - cpu_start


def level_table(costs: list[LevelCost]) -> str:
    """Markdown, a row per level: activation MiB and the times measured, each also as a
    ratio to level 0 (the first row)."""
    base = costs[0]
    columns = [("activation MiB", "activation_bytes", 2**20, ".1f")]
    columns += [("step s", "step_seconds", 1, ".3f"), ("CPU s", "cpu_seconds", 1, ".3f")]
    columns = [c for c in columns if getattr(base, c[1]) is not None]
    head = ["level", "backward recomputes"]
    for name, *_ in columns:
        head += [name, "vs level 0"]
    peak = base.peak_bytes is not None
    rows = []
    for c in costs:
        row = [str(c.level), LEVELS[c.level]]
        for _, field, unit, fmt in columns:
            value, ref = getattr(c, field), getattr(base, field)
            row += [f"{value / unit:{fmt}}", f"{value / ref:.2f}x"]
        rows.append(row + ([f"{c.peak_bytes / 2**20:.0f}"] if peak else []))
    return table(head + (["peak MiB"] if peak else []), rows)


CASES = {
    "bc100": ("DenseNet-BC (L=100, k=12), 32x32", "densenet_cifar", 32, {"depth": 100, "growth_rate": 12}),
    "bc190": ("DenseNet-BC (L=190, k=40), 32x32", "densenet_cifar", 32, {"depth": 190, "growth_rate": 40}),
    "121": ("DenseNet-121, 224x224", "densenet121", 224, {}),
}  # fmt: skip


@dataclass(frozen=True)
class StepOptions:
    """How the memory levels are measured (shared with
    :mod:`densenet_lit.models.authors_memory`).

    Args:
        batch_size: images per training step
        rounds: timed steps per level (0: no timing)
        device: where the steps run
        threads: torch threads on the CPU (default: torch's choice)
    """

    batch_size: int = 16
    rounds: int = 3
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(
                f"--batch_size {self.batch_size}: expected a positive number of images"
            )
        if self.rounds < 0:
            raise UsageError(f"--rounds {self.rounds}: expected 0 (no timing) or more")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: torch sees no CUDA device; use --device cpu")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: expected a positive number of threads")

    def measure(self, arch: str, image_size: int, **kwargs) -> list[LevelCost]:
        """:func:`measure` with these options (after setting torch's threads, if given)."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return measure(
            arch, self.batch_size, image_size, rounds=self.rounds, device=self.device, **kwargs
        )


@dataclass(frozen=True)
class MemoryOptions(StepOptions):
    """Activation memory and step time of each memory level.

    Args:
        models: comma-separated, of bc100, bc190 and 121
    """

    models: str = "bc100,121"

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [n for n in self.models.split(",") if n not in CASES]
        if unknown:
            raise UsageError(
                f"--models {self.models}: unknown {', '.join(unknown)}; "
                f"expected of {', '.join(CASES)}"
            )


def main(args: list[str] | None = None) -> int:
    opts = run_tool(MemoryOptions, args)
    print(f"Memory levels, batch {opts.batch_size}, {opts.device} (step: fastest of {opts.rounds})")
    for name in opts.models.split(","):
        label, arch, size, kwargs = CASES[name]
        print(f"\n{label}\n\n{level_table(opts.measure(arch, size, **kwargs))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
