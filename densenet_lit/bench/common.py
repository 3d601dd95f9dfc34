"""What every measurement shares: progress lines, a synchronised clock, errors as table cells,
the environment block of a report."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import lightning
import torch
import torchvision

from densenet_lit.data.base import cpu_count

NA = "n/a"


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


def guarded(fn: Callable[[], Any], what: str, device) -> Any:
    """``fn()``, or its exception as the cell ``"n/a (reason)"`` (traceback printed): a mode
    the device does not support is a result, not a crash. Frees what ``fn`` left behind."""
    try:
        return fn()
    except Exception as err:
        log(f"{what} failed:\n{traceback.format_exc().rstrip()}")
        return f"{NA} ({short_error(err)})"
    finally:
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)


def over(a, b) -> float | None:
    """``a / b`` where both were measured, else None."""
    return a / b if all(isinstance(v, float | int) and v for v in (a, b)) else None


def get(row: dict | None, runner: str, key: str = "images_per_s"):
    """A runner's images/s (or ``key``) in a step row: a number, its error's text, or None."""
    run = (row or {}).get("runs", {}).get(runner)
    return run[key] if isinstance(run, dict) else run


def load_average() -> str:
    """The machine's 1/5/15-minute load averages: other jobs skew CPU timings."""
    return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())


def cpu_name() -> str:
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    return platform.processor() or platform.machine()  # no /proc/cpuinfo (or no model name)


def environment(device) -> dict[str, str]:
    """The header block of a report: when, where, with what (and, on a GPU, what fp32 means)."""
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()}: {platform.platform()}",
        "cpu": f"{cpu_name()}, {cpu_count()} usable cores",
        "python": platform.python_version(),
        **{module.__name__: module.__version__ for module in (torch, torchvision, lightning)},
        "device": f"CPU ({torch.get_num_threads()} torch threads)",
    }
    if torch.device(device).type == "cuda":
        props, cudnn = torch.cuda.get_device_properties(device), torch.backends.cudnn
        env["device"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA "
        env["device"] += f"{torch.version.cuda}, cuDNN {cudnn.version()}"
        math = "in TF32 on Ampere and newer" if cudnn.allow_tf32 else "in full fp32"
        env["fp32 math"] = (
            f"torch.backends.cudnn.allow_tf32={cudnn.allow_tf32} (fp32 convolutions {math}), "
            f"torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} "
            f"(float32_matmul_precision '{torch.get_float32_matmul_precision()}'), "
            f"torch.backends.cudnn.benchmark={cudnn.benchmark}"
        )
    env["load average (1/5/15 min) at start"] = load_average()
    return env
