"""What the suite measures: the modes (one row of a step table each), the networks, the sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torchvision
from torch import nn

from densenet_lit.benchmarks import IMAGENET_CLASSES
from densenet_lit.data.base import cpu_count
from densenet_lit.models import DEEPEST_MEMORY_LEVEL, build_model


@dataclass(frozen=True)
class Mode:
    """One way of running the same training step: one row of each step table; a new variant is
    one more entry of MODES. ``module`` holds extra ``DenseNetModule`` arguments (a recipe's)
    that the plain loop leaves out, so that "Lightning / plain" shows what the recipe costs."""

    name: str
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    memory_efficient: int = 0  # memory level (densenet_lit.models.memory_efficient)
    module: dict[str, Any] = field(default_factory=dict)
    ema_decay: float | None = None  # Lightning's EMAWeightAveraging on our side, every step

    @property
    def recipe(self) -> bool:
        """Whether our side does training work the plain loop leaves out (a recipe's options)."""
        return bool(self.module or self.ema_decay)

    @property
    def label(self) -> str:
        """What the mode runs, in words: precision, layout, execution, memory level, recipe."""
        parts = [("fp32", "bf16-mixed")[self.bf16], ("NCHW", "channels_last")[self.channels_last]]
        parts.append(("eager", "torch.compile")[self.compile])
        level = {"memory_efficient": self.memory_efficient} if self.memory_efficient else {}
        ema = {"ema_decay": self.ema_decay} if self.ema_decay else {}
        return ", ".join(parts + [f"{k}={v}" for k, v in {**level, **self.module, **ema}.items()])


FAST = {"channels_last": True, "bf16": True, "compile": True}
# The modern recipe's per-step work (experiments/defaults/modern.yaml): smoothed loss, MixUp or
# CutMix of every batch, two parameter groups, and an EMA update after every step (the mode's
# ema_decay); beside the fp32 row, it is what the recipe costs per step.
MODERN = {"label_smoothing": 0.1, "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "norm_weight_decay": 0.0}
DEEPEST = f"memory_efficient={DEEPEST_MEMORY_LEVEL}"
MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("fp32"),
        Mode("channels_last", channels_last=True),
        Mode("bf16-mixed", bf16=True),
        Mode("compile", compile=True),
        Mode("fast", **FAST),
        Mode("memory_efficient", memory_efficient=1),
        Mode(DEEPEST, memory_efficient=DEEPEST_MEMORY_LEVEL),
        Mode("fast+memory_efficient", **FAST, memory_efficient=1),
        Mode("modern", module=MODERN, ema_decay=0.9999),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A network of the suite, as ``build_model`` arguments; ``baseline_name``: what the plain
    loop trains (torchvision's network of the same shape for ImageNet's 1000 classes)."""

    key: str
    title: str
    short: str
    image_size: int
    num_classes: int
    module_kwargs: dict[str, Any]
    baseline_name: str

    def ours(self, level: int) -> nn.Module:
        kwargs = self.module_kwargs
        return build_model(**kwargs, num_classes=self.num_classes, memory_efficient=level)

    def plain(self, level: int) -> nn.Module:
        """torchvision's DenseNet where it has one (its one memory-efficient mode at any level
        above 0), else ours."""
        if self.num_classes != IMAGENET_CLASSES:
            return self.ours(level)
        k = self.module_kwargs.get("growth_rate", 32)
        blocks = tuple(self.module_kwargs.get("block_config", (6, 12, 24, 16)))
        net = torchvision.models.DenseNet
        return net(k, blocks, 2 * k, num_classes=IMAGENET_CLASSES, memory_efficient=level > 0)


SPECS = {
    "cifar": ("DenseNet-BC (L=100, k=12), 32x32", "DenseNet-BC-100", 32, 10,
              {"arch": "densenet_cifar", "depth": 100, "growth_rate": 12},
              "our network (torchvision has no CIFAR DenseNet)"),
    "imagenet": ("DenseNet-121, 224x224", "DenseNet-121", 224, IMAGENET_CLASSES, {"arch": "densenet121"},
                 "torchvision.models.densenet121"),
}  # fmt: skip
QUICK_SPECS = {  # small stand-ins of the same structure
    "cifar": ("tiny DenseNet-BC (L=10, k=4), 32x32 [--quick stand-in]", "tiny CIFAR net", 32, 10,
              {"arch": "densenet_cifar", "depth": 10, "growth_rate": 4}, "our network"),
    "imagenet": ("tiny DenseNet (4 blocks of 1 layer, k=4), 64x64 [--quick stand-in]",
                 "tiny ImageNet-style net", 64, IMAGENET_CLASSES, {"arch": "densenet_imagenet",
                 "block_config": (1, 1, 1, 1), "growth_rate": 4}, "torchvision DenseNet"),
}  # fmt: skip


def model_specs(quick: bool) -> dict[str, ModelSpec]:
    return {key: ModelSpec(key, *spec) for key, spec in (QUICK_SPECS if quick else SPECS).items()}


ModeName = Literal[(*MODES, "all")]
SECTIONS = ("steps", "loaders", "epoch")
# The defaults of what the command line leaves out, by kind of run (the keys that are no
# option are sizes of the loader rows and the epoch). CPU: small batches, few steps, no compile
# modes (the note of Settings says why). GPU: the profiler's window (busy_window batches) is
# short, as the profiler slows the host. Quick: tiny models; 1 thread is steadier when shared.
DEFAULTS = {
    "any": dict(models=list(SPECS), sections=list(SECTIONS), loader_batch=64,
                loader_workers=min(8, cpu_count()), epoch_workers=min(8, cpu_count()),
                cifar_train_images=50_000, imagenet_train_images=320),
    "cpu": dict(modes=[m for m in MODES if not MODES[m].compile], batch_cifar=16,
                batch_imagenet=4, warmup=2, steps=2, windows=3, rounds=2, loader_batches=100,
                imagenet_loader_batches=50, svhn_train_images=20_000, epoch_modes=["fp32"],
                epoch_batches=8, busy_window=0),
    "cuda": dict(modes=list(MODES), batch_cifar=64, batch_imagenet=64, warmup=15, steps=20,
                 windows=5, rounds=2, loader_batches=300, imagenet_loader_batches=200,
                 svhn_train_images=73_257, epoch_modes=["fp32", "fast"], epoch_batches=0,
                 busy_window=20),
    "quick": dict(modes=["fp32", "channels_last", "bf16-mixed", "memory_efficient", "modern"],
                  batch_cifar=4, batch_imagenet=2, warmup=3, steps=2, windows=2, rounds=1,
                  loader_batch=16, loader_batches=4, loader_workers=min(2, cpu_count()),
                  cifar_train_images=256, svhn_train_images=128, imagenet_train_images=32,
                  imagenet_loader_batches=2, epoch_modes=["fp32"], epoch_batches=3,
                  epoch_workers=min(2, cpu_count()), busy_window=1, threads=1),
}  # fmt: skip


@dataclass
class Settings:
    """Training-step throughput and memory of DenseNet-BC (L=100, k=12) and DenseNet-121 in
    several modes, ours in Lightning against a plain PyTorch loop; the data loaders alone; a
    CIFAR-10 epoch end to end. Prints a Markdown report and writes it to --out. Options left
    out take the defaults of the device (CPU, GPU) or of --quick; see docs/benchmarks.md.

    Args:
        device: auto: CUDA when available.
        quick: tiny stand-in models and a few steps (a smoke test).
        models: the networks: cifar (DenseNet-BC-100) and/or imagenet (DenseNet-121).
        modes: the modes of the step tables, or all.
        sections: which parts run: steps, loaders, epoch (default all).
        out: folder of the report.
        batch_cifar: step and epoch batch of the CIFAR network.
        batch_imagenet: step batch of DenseNet-121.
        warmup: untimed steps first (compilation, cuDNN autotuning).
        steps: steps per timed window.
        windows: timed windows (the median is reported).
        rounds: plain/Lightning alternations.
        epoch_modes: modes of the CIFAR epoch.
        epoch_batches: batches of the CIFAR epoch (0: the whole epoch).
        loader_batches: timed batches per loader row (given alone: the ImageNet rows' too).
        imagenet_loader_batches: timed batches per ImageNet loader row.
        threads: torch intra-op threads (CPU); 1 is steadier on a machine other jobs share.
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    quick: bool = False
    models: list[Literal["cifar", "imagenet", "all"]] | None = None
    modes: list[ModeName] | None = None
    sections: list[Literal["steps", "loaders", "epoch", "all"]] | None = None
    out: str = "bench_results"
    batch_cifar: int | None = None
    batch_imagenet: int | None = None
    warmup: int | None = None
    steps: int | None = None
    windows: int | None = None
    rounds: int | None = None
    epoch_modes: list[ModeName] | None = None
    epoch_batches: int | None = None
    loader_batches: int | None = None
    imagenet_loader_batches: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        """Fill what was left out from DEFAULTS; expand ``all``; check the counts."""
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        cpu_default = self.modes is None and self.device == "cpu" and not self.quick
        if self.imagenet_loader_batches is None:
            self.imagenet_loader_batches = self.loader_batches
        quick = DEFAULTS["quick"] if self.quick else {}
        for name, value in {**DEFAULTS["any"], **DEFAULTS[self.device], **quick}.items():
            if getattr(self, name, None) is None:
                setattr(self, name, value)
        choices = {"models": SPECS, "sections": SECTIONS, "modes": MODES, "epoch_modes": MODES}
        for name, values in choices.items():
            if getattr(self, name) == ["all"]:
                setattr(self, name, list(values))
        if min(self.warmup, self.steps, self.windows, self.rounds) < 1:
            raise ValueError(
                f"warmup={self.warmup}, steps={self.steps}, windows={self.windows}, "
                f"rounds={self.rounds}: each must be at least 1."
            )
        left_out = ", ".join(m for m in MODES if m not in self.modes)
        self.notes = [  # the report's notes on what the defaults leave out
            f"Modes {left_out} are left out by the CPU default (Inductor takes minutes to compile "
            "each network for each runner); `--modes [all]` includes them."
        ] * bool(left_out and cpu_default)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def batch(self, model: str) -> int:
        return getattr(self, f"batch_{model}")
