"""``python -m densenet_lit.bench``: run the suite, print the Markdown report, write it to a file.

The command line is jsonargparse's (``--help``, ``--config``); jsonargparse is imported only
when parsing, so the measuring modules import without it.
"""

from __future__ import annotations

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

from densenet_lit.bench.common import environment, load_average, log, short_error
from densenet_lit.bench.config import Settings, model_specs
from densenet_lit.bench.epoch import run_epochs
from densenet_lit.bench.loaders import imagenet_loader_images, run_loaders
from densenet_lit.bench.report import Results, render
from densenet_lit.bench.steps import run_steps
from densenet_lit.data.synthetic import write_cifar10, write_photo_imagenet, write_svhn

PROG = "python -m densenet_lit.bench"
LISTS = ("--models", "--modes", "--sections", "--epoch_modes")


def legacy_argv(argv: list[str], flags: tuple[str, ...] = ("--quick",)) -> list[str]:
    """The spellings of the argparse version, still accepted: dashes in names
    (``--batch-cifar 64``: ``--batch_cifar``), a bare flag (``--quick``: ``--quick true``) and
    comma lists (``--modes fp32,fast``: ``--modes [fp32,fast]``)."""
    out: list[str] = []
    split = [part for arg in argv for part in (arg.split("=", 1) if arg[:2] == "--" else [arg])]
    for arg in split:
        if out and out[-1] in LISTS and not arg.startswith("["):
            arg = f"[{arg}]"
        elif arg.startswith("--"):
            arg = "--" + arg[2:].replace("-", "_")
        if out and out[-1] in flags and arg.lower() not in ("true", "false"):
            out.append("true")
        out.append(arg)
    return out + (["true"] if out and out[-1] in flags else [])


def parse(argv: list[str]) -> Settings:
    """The command line (jsonargparse: ``--help``, ``--config``) as Settings."""
    from jsonargparse import auto_cli

    try:
        s = auto_cli(Settings, args=legacy_argv(argv), prog=PROG, return_instance=True)
        if s.cuda and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device on this machine.")
    except ValueError as err:  # Settings' own checks of the values
        print(f"usage: {PROG} [-h] [--config CONFIG] ...\nerror: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return s


def jsonable(obj):
    if dataclasses.is_dataclass(obj):
        data = {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for derived in ("images_per_s", "vs_step"):  # properties the report shows
            if hasattr(obj, derived):
                data[derived] = getattr(obj, derived)
        return data
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return str(obj) if isinstance(obj, torch.device) else obj


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` through a temporary file, so that a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> Path:
    """Run the suite; return the path of the Markdown report. The raw numbers are written
    first (``.json``; ``.partial.json`` while running), the Markdown after them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    settings = parse(argv)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{settings.device}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    json_path, partial = path.with_suffix(".json"), out / f"{path.stem}.partial.json"
    results = Results(
        command=shlex.join(["python", "-m", "densenet_lit.bench", *argv]), settings=settings
    )

    def save() -> None:
        write_json(partial, jsonable(results))

    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:  # process-wide knobs, restored for whoever called main() in-process (tests)
        torch.backends.cudnn.benchmark = settings.cuda or cudnn_benchmark
        if settings.threads:
            torch.set_num_threads(settings.threads)
        run(settings, results, save)
    except BaseException as err:  # also KeyboardInterrupt: keep what was measured
        results.error = short_error(err)
        save()
        log(f"stopped early ({results.error}); the numbers so far are in {partial}")
        raise
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark
    results.complete = True
    write_json(json_path, jsonable(results))
    partial.unlink(missing_ok=True)
    try:
        markdown = render(results)
    except Exception:
        trace = traceback.format_exc()
        print(trace, file=sys.stderr)
        markdown = (
            f"## densenet_lit benchmark\n\nRendering this report failed; the raw "
            f"numbers are in `{json_path.name}`.\n\n```\n{trace.rstrip()}\n```"
        )
    path.write_text(markdown + "\n")
    print(markdown)
    log(f"wrote {json_path} and {path}")
    return path


def run(s: Settings, results: Results, save: Callable[[], None]) -> None:
    """Run the sections of ``s`` into ``results``, calling ``save()`` after each row."""
    results.environment = environment(s.device)
    log(f"device {results.environment['device']}; sections {','.join(s.sections)}")
    save()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="densenet-bench-data-") as tmp:
        roots = {name: Path(tmp) / name for name in ("cifar10", "svhn", "imagenet")}
        if "loaders" in s.sections or "epoch" in s.sections:
            n_test = max(64, s.cifar_train_images // 5)
            write_cifar10(roots["cifar10"], s.cifar_train_images, n_test)
            write_svhn(roots["svhn"], s.svhn_train_images, n_extra=None, n_test=64)
        if "loaders" in s.sections:
            write_photo_imagenet(roots["imagenet"], imagenet_loader_images(s))
        specs = model_specs(s.quick)
        if "steps" in s.sections:
            run_steps(s, specs, results.steps, save)
        if "loaders" in s.sections:
            run_loaders(s, roots, results.loaders, save)
        if "epoch" in s.sections:
            run_epochs(s, specs, results.steps, roots["cifar10"], results.epochs, save)
    results.elapsed_s = time.perf_counter() - start
    results.environment["load average (1/5/15 min) at end"] = load_average()
