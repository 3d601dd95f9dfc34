"""Helpers every measurement shares: progress lines, clocks, errors as table cells, the
environment."""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from densenet_lit.data.base import cpu_count


def log(msg: str) -> None:
    """A progress line on stderr (stdout is left to the report)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def now(device: torch.device | str) -> float:
    """A timestamp taken after the device has finished all queued work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def short_error(err: BaseException) -> str:
    """One line for a table cell: the exception type and the start of its message."""
    msg = (str(err).strip().splitlines() or [""])[0].replace("|", "/")
    msg = msg[:87] + "..." if len(msg) > 90 else msg
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def guarded(fn: Callable[[], Any], what: str, device) -> tuple[Any, str | None]:
    """``(fn(), None)``, or ``(None, short error)`` with the traceback printed: a mode the
    device does not support is a result, not a crash. Frees what ``fn`` left behind."""
    try:
        return fn(), None
    except Exception as err:
        log(f"{what} failed:")
        traceback.print_exc()
        return None, short_error(err)
    finally:
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)


def load_average() -> str:
    """The machine's 1/5/15-minute load averages: other jobs skew CPU timings."""
    try:
        return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device) -> dict[str, str]:
    """The header block of a report: when, where, with what."""
    import lightning
    import torchvision

    dev = f"CPU ({torch.get_num_threads()} torch threads)"
    if cuda := torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
        if torch.backends.cudnn.is_available():
            dev += f", cuDNN {torch.backends.cudnn.version()}"
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}: {platform.platform()}",
        "cpu": f"{cpu_name()}, {cpu_count()} usable cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "device": dev,
    }
    if cuda:  # what "fp32" means on this GPU
        tf32 = torch.backends.cudnn.allow_tf32
        env["fp32 math"] = (
            f"torch.backends.cudnn.allow_tf32={tf32} (fp32 convolutions "
            f"{'in TF32 on Ampere and newer' if tf32 else 'in full fp32'}), "
            f"torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} "
            f"(float32_matmul_precision '{torch.get_float32_matmul_precision()}'), "
            f"torch.backends.cudnn.benchmark={torch.backends.cudnn.benchmark}"
        )
    env["load average (1/5/15 min) at start"] = load_average()
    return env
