"""What the suite measures (modes, models, settings) and the helpers every measurement shares."""

from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from densenet_lit.models import DEEPEST_MEMORY_LEVEL, DenseNet, build_model

# ----------------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class Mode:
    """One way of running the same training step."""

    name: str
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    memory_efficient: int = 0  # memory level (densenet_lit.models.memory_efficient)

    @property
    def precision(self) -> str:
        """Lightning's precision string for the mode."""
        return "bf16-mixed" if self.bf16 else "32-true"

    @property
    def label(self) -> str:
        """What the mode runs, in words: precision, layout, execution, memory mode."""
        parts = [
            "bf16-mixed" if self.bf16 else "fp32",
            "channels_last" if self.channels_last else "NCHW",
            "torch.compile" if self.compile else "eager",
        ]
        if self.memory_efficient:
            parts.append(f"memory_efficient={self.memory_efficient}")
        return ", ".join(parts)


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("fp32"),
        Mode("channels_last", channels_last=True),
        Mode("bf16-mixed", bf16=True),
        Mode("compile", compile=True),
        Mode("fast", channels_last=True, bf16=True, compile=True),
        Mode("memory_efficient", memory_efficient=1),
        Mode(f"memory_efficient={DEEPEST_MEMORY_LEVEL}", memory_efficient=DEEPEST_MEMORY_LEVEL),
        Mode("fast+memory_efficient", channels_last=True, bf16=True, compile=True, memory_efficient=1),
    )
}  # fmt: skip
COMPILE_MODES = tuple(name for name, m in MODES.items() if m.compile)

# ---------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """A network of the suite: how the Lightning module, our network and the baseline are built.

    ``module_kwargs`` go to :class:`~densenet_lit.module.DenseNetModule`. ``tiny`` specs
    (``--quick``) build small stand-ins with the same structure; for the ImageNet network
    the module's DenseNet-121 is swapped for the stand-in before training.
    """

    key: str
    title: str
    short: str
    image_size: int
    num_classes: int
    module_kwargs: dict[str, Any]
    baseline_name: str  # what the plain loop trains
    has_torchvision_baseline: bool
    tiny: bool = False

    def ours(self, memory_efficient: int) -> nn.Module:
        """Our network (densenet_lit.models), as the Lightning module holds it."""
        if self.tiny and self.key == "imagenet":
            return DenseNet(
                block_config=(1, 1, 1, 1),
                growth_rate=4,
                stem_channels=8,
                imagenet_stem=True,
                bottleneck=True,
                compression=0.5,
                num_classes=self.num_classes,
                memory_efficient=memory_efficient,
            )
        kwargs = dict(self.module_kwargs)
        arch = kwargs.pop("arch")
        return build_model(
            arch, num_classes=self.num_classes, memory_efficient=memory_efficient, **kwargs
        )

    def torchvision(self, memory_efficient: int) -> nn.Module:
        """torchvision's network (ImageNet only), memory-efficient at any level above 0."""
        import torchvision

        if not self.has_torchvision_baseline:
            raise ValueError(f"torchvision has no counterpart of {self.title}")
        if self.tiny:
            return torchvision.models.DenseNet(
                growth_rate=4,
                block_config=(1, 1, 1, 1),
                num_init_features=8,
                num_classes=self.num_classes,
                memory_efficient=bool(memory_efficient),
            )
        return torchvision.models.densenet121(
            num_classes=self.num_classes, memory_efficient=bool(memory_efficient)
        )


def model_specs(quick: bool) -> dict[str, ModelSpec]:
    if quick:
        return {
            "cifar": ModelSpec(
                "cifar",
                "tiny DenseNet-BC (L=10, k=4), 32x32 [--quick stand-in]",
                "tiny CIFAR net",
                32,
                10,
                {"arch": "densenet_cifar", "depth": 10, "growth_rate": 4},
                "our network",
                False,
                tiny=True,
            ),
            "imagenet": ModelSpec(
                "imagenet",
                "tiny DenseNet (4 blocks of 1 layer, k=4), 64x64 [--quick stand-in]",
                "tiny ImageNet-style net",
                64,
                1000,
                {"arch": "densenet121"},
                "torchvision DenseNet",
                True,
                tiny=True,
            ),
        }
    return {
        "cifar": ModelSpec(
            "cifar",
            "DenseNet-BC (L=100, k=12), 32x32",
            "DenseNet-BC-100",
            32,
            10,
            {"arch": "densenet_cifar", "depth": 100, "growth_rate": 12},
            "our network (torchvision has no CIFAR DenseNet)",
            False,
        ),
        "imagenet": ModelSpec(
            "imagenet",
            "DenseNet-121, 224x224",
            "DenseNet-121",
            224,
            1000,
            {"arch": "densenet121"},
            "torchvision.models.densenet121",
            True,
        ),
    }


# -------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Sizes and step counts of one run of the suite (see :func:`default_settings`)."""

    device: torch.device
    quick: bool
    models: list[str]
    modes: list[str]
    batch: dict[str, int]  # model key -> batch size of the step benchmark
    warmup: int  # steps before timing (compilation, cudnn autotuning, allocator)
    steps_per_window: int
    windows: int
    rounds: int  # plain and Lightning measured alternately this many times
    loader_batch: int
    loader_batches: int
    loader_workers: int  # the "many workers" setting of the loader comparison
    cifar_train_images: int
    svhn_train_images: int
    imagenet_train_images: int  # synthetic JPEGs, reread while timing
    imagenet_loader_batches: int  # JPEG decoding: hundreds of times slower than in-memory
    epoch_modes: list[str]
    epoch_batches: int | None  # None = the whole epoch
    epoch_workers: int  # workers of the torchvision per-image baseline
    busy_window: int  # batches of the epoch the GPU profiler watches (left out of its img/s)
    sections: list[str] = field(default_factory=lambda: ["steps", "loaders", "epoch"])
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    notes: list[str] = field(default_factory=list)


def default_settings(device: torch.device, quick: bool) -> Settings:
    cpus = cpu_count()
    workers = min(8, cpus)
    if quick:
        return Settings(
            device=device,
            quick=True,
            models=["cifar", "imagenet"],
            modes=["fp32", "channels_last", "bf16-mixed", "memory_efficient"],
            batch={"cifar": 4, "imagenet": 2},
            warmup=3,
            steps_per_window=2,
            windows=2,
            rounds=1,
            loader_batch=16,
            loader_batches=4,
            loader_workers=min(2, cpus),
            cifar_train_images=256,
            svhn_train_images=128,
            imagenet_train_images=32,
            imagenet_loader_batches=2,
            epoch_modes=["fp32"],
            epoch_batches=3,
            epoch_workers=min(2, cpus),
            busy_window=1,  # of 3 batches: the two outside it give the epoch's images/s
            threads=1,  # tiny models gain nothing from more, and 1 is steady on busy machines
        )
    if device.type == "cuda":
        return Settings(
            device=device,
            quick=False,
            models=["cifar", "imagenet"],
            modes=list(MODES),
            batch={"cifar": 64, "imagenet": 64},
            warmup=15,
            steps_per_window=20,
            windows=5,
            rounds=2,
            loader_batch=64,
            loader_batches=300,
            loader_workers=workers,
            cifar_train_images=50_000,
            svhn_train_images=73_257,
            imagenet_train_images=320,
            imagenet_loader_batches=200,
            epoch_modes=["fp32", "fast"],
            epoch_batches=None,
            epoch_workers=workers,
            busy_window=20,  # short: the profiler slows the host, and its trace takes long to parse
        )
    # CPU: small batches and few steps so that the default run takes minutes on 2 cores.
    # Compiling a DenseNet with Inductor on CPU takes minutes per network and runner, so the
    # compile modes are left to --modes all.
    return Settings(
        device=device,
        quick=False,
        models=["cifar", "imagenet"],
        modes=[m for m in MODES if not MODES[m].compile],
        batch={"cifar": 16, "imagenet": 4},
        warmup=2,
        steps_per_window=2,
        windows=3,
        rounds=2,
        loader_batch=64,
        loader_batches=100,
        loader_workers=workers,
        cifar_train_images=50_000,
        svhn_train_images=20_000,
        imagenet_train_images=320,
        imagenet_loader_batches=50,
        epoch_modes=["fp32"],
        epoch_batches=8,
        epoch_workers=workers,
        busy_window=0,
    )


# --------------------------------------------------------------------------------- helpers


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """A timestamp taken after the device has finished all queued work."""
    synchronize(device)
    return time.perf_counter()


def release(device: torch.device) -> None:
    """Free what the last measurement left behind so that the next one starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def short_error(err: BaseException) -> str:
    """One line for a table cell: the exception type and the start of its message."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    msg = msg.replace("|", "/")
    if len(msg) > 90:
        msg = msg[:87] + "..."
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def log(msg: str) -> None:
    """A progress line on stderr (stdout is left to the report)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def guarded(fn: Callable[[], Any], what: str, verbose: bool = True) -> tuple[Any, str | None]:
    """Run ``fn``; on failure return ``(None, short error)`` and print the traceback."""
    try:
        return fn(), None
    except Exception as err:  # a mode the device does not support is a result, not a crash
        if verbose:
            log(f"{what} failed:")
            traceback.print_exc()
        return None, short_error(err)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The machine's 1/5/15-minute load averages: other jobs skew CPU timings."""
    try:
        return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def environment(device: torch.device) -> dict[str, str]:
    """The header block of the report: when, where, with what."""
    import lightning
    import torchvision

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
        if torch.backends.cudnn.is_available():
            dev += f", cuDNN {torch.backends.cudnn.version()}"
    else:
        dev = f"CPU ({torch.get_num_threads()} torch threads)"
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}: {platform.platform()}",
        "cpu": f"{cpu_name()}, {cpu_count()} usable cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "device": dev,
    }
    if device.type == "cuda":
        env["fp32 math"] = fp32_math()
    env["load average (1/5/15 min) at start"] = load_average()
    return env


def fp32_math() -> str:
    """What "fp32" means on this GPU: cuDNN convolutions in TF32 (torch's default) or not."""
    return (
        f"torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} (fp32 convolutions "
        f"{'in TF32 on Ampere and newer' if torch.backends.cudnn.allow_tf32 else 'in full fp32'}), "
        f"torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} "
        f"(float32_matmul_precision '{torch.get_float32_matmul_precision()}'), "
        f"torch.backends.cudnn.benchmark={torch.backends.cudnn.benchmark}"
    )
