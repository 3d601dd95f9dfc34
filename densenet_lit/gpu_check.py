"""``python -m densenet_lit.gpu_check`` (``make gpu-check``): a lent GPU's few minutes, used.

One command, one Markdown report (its parts: docs/benchmarks.md, "GPU check"), built from the
GPU tests, the benchmark suite's step measurement, the memory levels' tool and the training
CLI. Each part has a share of a time budget (``--minutes``, 7 by default, so that the command
ends within 8 minutes); a part that fails or runs out of time says so in its section and the
next one runs. With no GPU it says so in one line; ``--dry_run true`` runs every part it can
on the CPU at tiny sizes.
"""

from __future__ import annotations

import io
import itertools
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import torch

from densenet_lit.bench.common import environment, guarded, log
from densenet_lit.bench.config import Settings, model_specs
from densenet_lit.bench.loaders import images_per_s
from densenet_lit.bench.report import section, step_section
from densenet_lit.bench.steps import LIGHTNING, PLAIN, step_row
from densenet_lit.benchmarks import IMAGENET_CLASSES
from densenet_lit.data.synthetic import write_photo_imagenet
from densenet_lit.markdown import table_lines
from densenet_lit.metric_names import IMAGES_PER_SEC

ROOT = Path(__file__).resolve().parents[1]  # the checkout: tests/ and experiments/


def run_pytest(paths: list[str], timeout: float) -> list[str]:
    """``pytest -m gpu`` in a subprocess: its summary line and the failures' lines."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *paths]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    head = f"`{' '.join(cmd[1:])}`: exit {done.returncode}"
    return [head, "", "```", *failed, *lines[-1:], "```"]


def training_step(dry_run: bool, batch: int, steps: int) -> list[str]:
    """DenseNet-121 (a tiny stand-in on a dry run) in Lightning and in a plain torchvision
    loop, one after the other in this process; the table's "Lightning / plain" is the ratio."""
    mode = "bf16-mixed" if dry_run else "fast"  # a CPU compiles for minutes
    device, windows = ("cpu", 1) if dry_run else ("cuda", 3)
    sizes = dict(batch_imagenet=batch, rounds=1, warmup=steps, steps=steps, windows=windows)
    s = Settings(device=device, quick=dry_run, models=["imagenet"], modes=[mode], **sizes)
    torch.backends.cudnn.benchmark = s.cuda  # as the suite and the Trainer (benchmark=True) do
    spec = model_specs(dry_run)["imagenet"]
    row = step_row(spec, mode, s, runners=[PLAIN, LIGHTNING])
    return step_section(spec, [row], s)


def memory_levels(dry_run: bool, batch: int) -> list[str]:
    """GPU memory and step time of each memory level (densenet_lit.models.memory)."""
    from densenet_lit.models.memory import level_table, measure

    kwargs = {"block_config": (1, 1, 1, 1), "growth_rate": 4} if dry_run else {}
    arch, size = ("densenet_imagenet", 32) if dry_run else ("densenet121", 224)
    device, rounds = ("cpu", 1) if dry_run else ("cuda", 3)
    costs = measure(
        arch, batch, size, rounds=rounds, device=device, num_classes=IMAGENET_CLASSES, **kwargs
    )
    return [f"{arch}, batch {batch}, {size}x{size}, {device}:", "", level_table(costs)]


def jpeg_decoding(n_images: int) -> list[str]:
    """Images/s of ``torchvision.io.decode_jpeg`` on the GPU (nvJPEG, one batched call) and of
    PIL (one image after another), on the same synthetic 500x375 photos."""
    import numpy as np
    from PIL import Image
    from torchvision.io import decode_jpeg

    with tempfile.TemporaryDirectory() as tmp:
        write_photo_imagenet(tmp, n_images)
        files = [p.read_bytes() for p in sorted(Path(tmp, "train").rglob("*.JPEG"))]
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in files]

    def pil(files: list[bytes]) -> int:
        return len([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in files])

    def nvjpeg(data: list[torch.Tensor]) -> int:
        return len(decode_jpeg(data, device="cuda"))

    nv, p = (images_per_s(itertools.repeat(x), 5, f) for x, f in ((data, nvjpeg), (files, pil)))
    rows = [["nvJPEG (decode_jpeg on cuda)", f"{nv:,.0f}"], ["PIL", f"{p:,.0f}"]]
    return table_lines(["decoder", "img/s"], rows) + ["", f"nvJPEG / PIL: {nv / p:.1f}x"]


CLI_EPOCH = (
    "fit --config {root}/experiments/imagenet121.yaml --data.init_args.decode device "
    "--data.init_args.data_dir {tmp}/data --data.init_args.batch_size {batch} "
    "--trainer.max_epochs 1 --trainer.limit_val_batches 0 --trainer.default_root_dir {tmp}/runs "
    "--trainer.enable_progress_bar false --run.wandb false --run.test_after_fit false"
)
DRY_RUN_CLI = (
    " --model.arch densenet_imagenet --model.block_config [1,1,1,1] --model.growth_rate 4 "
    "--trainer.accelerator cpu --trainer.precision 32-true"
)


def cli_epoch(dry_run: bool, batch: int, batches: int) -> list[str]:
    """A short epoch of ``python -m densenet_lit fit`` (in this process) on synthetic ImageNet
    folders with ``decode: device``: its wall time and ThroughputMonitor's images/s."""
    from densenet_lit.cli import run

    with tempfile.TemporaryDirectory() as tmp:
        write_photo_imagenet(Path(tmp, "data"), batch * batches, n_classes=min(8, batches))
        command = CLI_EPOCH + (DRY_RUN_CLI if dry_run else "")
        args = shlex.split(command.format(root=shlex.quote(str(ROOT)), tmp=tmp, batch=batch))
        start = time.perf_counter()
        trainer = run(args).trainer
        wall = time.perf_counter() - start
    ips = trainer.callback_metrics.get(IMAGES_PER_SEC)
    shown = "python -m densenet_lit " + command.format(root=".", tmp="$TMP", batch=batch)
    rate = f"{float(ips):,.1f}" if ips is not None else "n/a (no timed step)"
    done = f"- {trainer.global_step} batches of {batch}: wall time {wall:.1f} s (Trainer start-up"
    return [f"`{shown}`", "", f"{done} included); images/s (ThroughputMonitor): {rate}"]


class OutOfTime(BaseException):
    """A part ran past its share of the budget: raised in it by a timer signal, a
    BaseException so that no guard inside the part (``except Exception``) keeps it running."""


def within(seconds: float, part):
    """``part()``, stopped with :class:`OutOfTime` after ``seconds`` (a timer signal, so on
    the main thread only; elsewhere the part runs to its end)."""
    if threading.current_thread() is not threading.main_thread():
        return part()

    def stop(*_):
        raise OutOfTime(f"stopped after its {seconds:.0f} s of the time budget")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        return part()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def gpu_check(
    out: str = "bench_results",
    dry_run: bool = False,
    batch: int = 64,
    steps: int = 10,
    pytest_paths: list[str] | None = None,
    minutes: float = 7.0,
) -> Path | None:
    """The GPU check: one command, one report file (see docs/benchmarks.md, "GPU check").

    Args:
        out: folder of the report (gpu-check-<device>-<time>.md).
        dry_run: run every part the CPU can at tiny sizes (nvJPEG is skipped), even with a GPU.
        batch: batch of the training step and the CLI epoch (the memory levels use half).
        steps: warm-up steps and steps per timed window (3 windows) of the training step.
        pytest_paths: what ``pytest -m gpu`` collects (default: tests).
        minutes: the time budget of all parts; each part gets its share and what the parts
            before it left unused, and is stopped when that is spent.
    """
    from densenet_lit.toolcli import UsageError

    if minutes <= 0 or batch < 1 or steps < 1:
        raise UsageError(
            f"minutes={minutes}, batch={batch}, steps={steps}: the budget must be above 0 "
            "minutes (7 fits one H100), the batch and the steps at least 1."
        )
    cuda = torch.cuda.is_available() and not dry_run
    if not cuda and not dry_run:
        print("gpu_check: torch sees no CUDA device here; nothing to check (exit 0).")
        return None
    if dry_run:
        batch, steps = min(batch, 2), 1
    device = "cuda" if cuda else "cpu"
    path = Path(out) / f"gpu-check-{device}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["## densenet_lit GPU check" + (" (CPU dry run)" if dry_run else ""), ""]
    lines += [f"- {k}: {v}" for k, v in environment(torch.device(device)).items()]
    parts = [  # (title, share of the 7-minute budget in seconds, part(seconds it may take))
        ("pytest -m gpu", 120, lambda limit: run_pytest(pytest_paths or ["tests"], limit)),
        ("Training step: Lightning beside a plain torchvision loop", 180, lambda _: training_step(dry_run, batch, steps)),
        ("Memory levels", 30, lambda _: memory_levels(dry_run, batch // 2 if cuda else batch)),
        ("nvJPEG against PIL", 20, lambda _: jpeg_decoding(256) if cuda else ["skipped: no GPU"]),
        ("ImageNet-layout epoch through the CLI, decode: device", 70, lambda _: cli_epoch(dry_run, batch, 3 if dry_run else 12)),
    ]  # fmt: skip
    shares = [60 * minutes * share / sum(p[1] for p in parts) for _, share, _ in parts]
    lines += [
        f"- time budget: {minutes:g} min, shared by the parts as {[round(t) for t in shares]} s",
        "",
    ]
    deadline = time.monotonic() + 60 * minutes
    for i, (title, _, part) in enumerate(parts):
        start, limit = time.monotonic(), deadline - time.monotonic() - sum(shares[i + 1 :])
        log(f"gpu check: {title} (at most {limit:.0f} s)")
        try:
            body = guarded(partial(within, limit, partial(part, limit)), title, device)
        except OutOfTime as err:
            body = f"out of time, {err}"
        body = body if isinstance(body, list) else [f"failed: {body}"]
        lines += section(title, body, f"_{time.monotonic() - start:.0f} s of at most {limit:.0f}_")
        path.write_text("\n".join(lines) + "\n")  # after each part: a kill keeps the rest
    print("\n".join(lines))
    log(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> Path | None:
    from densenet_lit.toolcli import run_tool

    return run_tool(gpu_check, argv)


if __name__ == "__main__":
    main()
