"""``python -m densenet_lit.bench``: run the suite, print the Markdown report, write it to a file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from densenet_lit.bench.common import (
    MODES,
    Settings,
    default_settings,
    environment,
    load_average,
    log,
    model_specs,
    short_error,
)
from densenet_lit.bench.loaders import LoaderRow
from densenet_lit.bench.report import (
    EpochRow,
    StepRow,
    render,
)
from densenet_lit.bench.sections import imagenet_loader_images, run_epochs, run_loaders, run_steps
from densenet_lit.data.synthetic import write_cifar10, write_photo_imagenet, write_svhn

SECTIONS = ("steps", "loaders", "epoch")


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items == ["all"]:
            return list(choices)
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a comma-separated subset of {', '.join(choices)} (or all)"
            )
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m densenet_lit.bench",
        description=(
            "Training-step throughput and memory of DenseNet-BC (L=100, k=12) and DenseNet-121 "
            "in several modes, ours in Lightning against a plain PyTorch loop; the data "
            "loaders alone; a CIFAR-10 epoch end to end. Prints a Markdown report and writes "
            "it to --out."
        ),
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--quick", action="store_true", help="tiny models and steps (smoke test)")
    p.add_argument("--models", type=_csv(("cifar", "imagenet")), help="default: cifar,imagenet")
    p.add_argument("--modes", type=_csv(tuple(MODES)), help=f"default: all of {','.join(MODES)}")
    p.add_argument("--sections", type=_csv(SECTIONS), help="default: steps,loaders,epoch")
    p.add_argument(
        "--out", default="bench_results", help="folder of the report (default %(default)s)"
    )
    p.add_argument("--batch-cifar", type=int, help="step/epoch batch of the CIFAR network")
    p.add_argument("--batch-imagenet", type=int, help="step batch of DenseNet-121")
    p.add_argument("--warmup", type=int, help="untimed steps first (>= 1)")
    p.add_argument("--steps", type=int, help="steps per timed window")
    p.add_argument("--windows", type=int, help="timed windows (median reported)")
    p.add_argument("--rounds", type=int, help="plain/Lightning alternations")
    p.add_argument("--epoch-modes", type=_csv(tuple(MODES)), help="modes of the CIFAR epoch")
    p.add_argument("--epoch-batches", type=int, help="batches of the CIFAR epoch (0 = whole epoch)")
    p.add_argument(
        "--loader-batches",
        type=int,
        help="timed batches per loader (default CPU 100, GPU 300; ImageNet CPU 50, GPU 200)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (CPU; default torch's). On a shared machine 1 thread is "
        "steadier: OpenMP threads that spin at barriers slow down badly when other jobs run",
    )
    return p


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device on this machine.")
    return torch.device(name)


def settings_from(args: argparse.Namespace) -> Settings:
    s = default_settings(resolve_device(args.device), args.quick)
    for attr, value in (
        ("models", args.models),
        ("modes", args.modes),
        ("sections", args.sections),
        ("warmup", args.warmup),
        ("steps_per_window", args.steps),
        ("windows", args.windows),
        ("rounds", args.rounds),
        ("epoch_modes", args.epoch_modes),
        ("loader_batches", args.loader_batches),
        ("imagenet_loader_batches", args.loader_batches),
    ):
        if value is not None:
            setattr(s, attr, value)
    if args.batch_cifar:
        s.batch["cifar"] = args.batch_cifar
    if args.batch_imagenet:
        s.batch["imagenet"] = args.batch_imagenet
    if args.epoch_batches is not None:
        s.epoch_batches = args.epoch_batches or None
    if args.threads is not None:
        s.threads = args.threads
    skipped = [m for m in MODES if m not in s.modes]
    if skipped and args.modes is None and s.device.type == "cpu" and not s.quick:
        s.notes.append(
            f"Modes {', '.join(skipped)} are left out by the CPU default (Inductor takes "
            "minutes to compile each network for each runner); `--modes all` includes them."
        )
    if s.epoch_batches is not None and "epoch" in s.sections:
        s.notes.append(
            f"The CIFAR 'epoch' is its first {s.epoch_batches} batches "
            "(`--epoch-batches 0` runs the whole epoch)."
        )
    if s.warmup < 1 or s.steps_per_window < 1 or s.windows < 1 or s.rounds < 1:
        raise SystemExit("--warmup, --steps, --windows and --rounds must be at least 1")
    return s


# ----------------------------------------------------------------------------------- main


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        data = {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for derived in ("images_per_s", "vs_step"):  # properties the report shows
            if hasattr(obj, derived):
                data[derived] = getattr(obj, derived)
        return data
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.device):
        return str(obj)
    return obj


@dataclasses.dataclass
class Results:
    """Everything measured so far. Written as ``<name>.partial.json`` after every row, so that
    a run killed at a time limit leaves its numbers; as ``<name>.json`` at the end."""

    command: str
    settings: Settings
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    steps: dict[str, list[StepRow]] = dataclasses.field(default_factory=dict)
    loaders: list[LoaderRow] = dataclasses.field(default_factory=list)
    epochs: list[EpochRow] = dataclasses.field(default_factory=list)
    elapsed_s: float | None = None
    complete: bool = False  # False in a partial file: the run had not finished
    error: str | None = None  # what stopped the run early, if anything did

    def raw(self) -> dict:
        return _jsonable(self)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> Path:
    """Run the suite; return the path of the Markdown report.

    The raw numbers are written first (``.json``, and ``.partial.json`` while running), the
    Markdown after them: a rendering bug prints its traceback but cannot lose a number.
    """
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "densenet_lit.bench", *given])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"bench-{settings.device.type}-{stamp}.md"
    json_path, partial_path = path.with_suffix(".json"), out / f"{path.stem}.partial.json"
    results = Results(command=command, settings=settings)

    def save() -> None:
        write_json(partial_path, results.raw())

    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:  # process-wide knobs, restored for whoever called main() in-process (tests)
        if settings.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if settings.threads:
            torch.set_num_threads(settings.threads)
        run(settings, results, save)
    except BaseException as err:  # also KeyboardInterrupt: keep what was measured
        results.error = short_error(err)
        save()
        log(f"stopped early ({results.error}); the numbers so far are in {partial_path}")
        raise
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark
    results.complete = True
    write_json(json_path, results.raw())
    partial_path.unlink(missing_ok=True)
    log(f"wrote {json_path}")
    markdown = render_report(results, json_path.name)
    path.write_text(markdown + "\n")
    print(markdown)
    log(f"wrote {path}")
    return path


def render_report(results: Results, json_name: str) -> str:
    """The Markdown report, or, where rendering fails, a short one saying so (traceback
    printed) that points at the JSON file."""
    try:
        return render(
            results.environment,
            results.settings,
            model_specs(results.settings.quick),
            results.steps,
            results.loaders,
            results.epochs,
            results.command,
            results.elapsed_s or 0.0,
        )
    except Exception:
        trace = traceback.format_exc()
        print(trace, file=sys.stderr)
        log(f"rendering the report failed; the numbers are in {json_name}")
        return "\n".join(
            [
                "## densenet_lit benchmark",
                "",
                f"Rendering this report failed; the raw numbers are in `{json_name}`.",
                "",
                "```",
                trace.rstrip(),
                "```",
            ]
        )


def run(settings: Settings, results: Results, save: Callable[[], None]) -> None:
    """Run the sections of ``settings`` into ``results``, calling ``save()`` after each row."""
    specs = model_specs(settings.quick)
    results.environment = environment(settings.device)
    log(f"device {results.environment['device']}; sections {','.join(settings.sections)}")
    save()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="densenet-bench-data-") as tmp:
        cifar_root, svhn_root = Path(tmp) / "cifar10", Path(tmp) / "svhn"
        imagenet_root = Path(tmp) / "imagenet"
        if "loaders" in settings.sections or "epoch" in settings.sections:
            n_test = max(64, settings.cifar_train_images // 5)
            write_cifar10(cifar_root, settings.cifar_train_images, n_test)
            write_svhn(svhn_root, settings.svhn_train_images, n_extra=None, n_test=64)
        if "loaders" in settings.sections:
            write_photo_imagenet(imagenet_root, imagenet_loader_images(settings))
        if "steps" in settings.sections:
            run_steps(settings, specs, results.steps, save)
        if "loaders" in settings.sections:
            run_loaders(settings, cifar_root, svhn_root, imagenet_root, results.loaders, save)
        if "epoch" in settings.sections:
            run_epochs(settings, specs, results.steps, cifar_root, results.epochs, save)
    results.elapsed_s = time.perf_counter() - start
    results.environment["load average (1/5/15 min) at end"] = load_average()
