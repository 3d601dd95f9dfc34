"""``python -m densenet_lit.bench``: run the suite, print the Markdown report and write it to a
file. Its command line (:mod:`densenet_lit.toolcli`'s, as every tool's) and jsonargparse are
imported only to parse, so that the measuring modules import without them."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from densenet_lit.bench.common import environment, load_average, log, short_error
from densenet_lit.bench.config import Settings, model_specs
from densenet_lit.bench.epoch import run_epochs
from densenet_lit.bench.loaders import imagenet_loader_images, run_loaders
from densenet_lit.bench.report import render
from densenet_lit.bench.steps import step_row
from densenet_lit.data.synthetic import write_cifar10, write_photo_imagenet, write_svhn

PROG = "python -m densenet_lit.bench"


def parse(argv: list[str]) -> Settings:
    """The command line as Settings; a bad value exits with usage and the reason (status 2)."""
    from densenet_lit.toolcli import old_spellings, tool_parser

    parser = tool_parser(Settings)
    parser.prog = PROG
    options = parser.parse_args(old_spellings(argv, Settings)).as_dict()
    try:
        s = Settings(**{k: v for k, v in options.items() if k != "config"})
        if s.cuda and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device on this machine.")
    except ValueError as err:  # Settings' own checks of the values
        parser.error(str(err))
    return s


def write_json(path: Path, results: dict) -> None:
    """Write ``results`` through a temporary file, so that a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, default=vars, indent=2) + "\n")  # Settings: its fields
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> Path:
    """Run the suite; return the path of the Markdown report. The raw numbers are written
    first (``.json``; ``.partial.json`` after every row while running), the Markdown after."""
    argv = sys.argv[1:] if argv is None else list(argv)
    s = parse(argv)
    path = Path(s.out, f"bench-{s.device}-{time.strftime('%Y%m%d-%H%M%S')}.md")
    json_path, partial = path.with_suffix(".json"), path.with_name(f"{path.stem}.partial.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    results = dict(command=shlex.join([*PROG.split(), *argv]), settings=s, environment={})
    results.update(steps={}, loaders=[], epochs=[], elapsed_s=None, complete=False, error=None)
    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:  # process-wide knobs, restored for whoever called main() in-process (tests)
        torch.backends.cudnn.benchmark = s.cuda or cudnn_benchmark
        torch.set_num_threads(s.threads or threads)
        run(s, results, lambda: write_json(partial, results))
    except BaseException as err:  # also KeyboardInterrupt: keep what was measured
        results["error"] = short_error(err)
        write_json(partial, results)
        log(f"stopped early ({results['error']}); the numbers so far are in {partial}")
        raise
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark
    results["complete"] = True
    write_json(json_path, results)
    partial.unlink(missing_ok=True)
    try:
        markdown = render(results)
    except Exception:
        trace = traceback.format_exc()
        print(trace, file=sys.stderr)
        markdown = "## densenet_lit benchmark\n\nRendering this report failed; the raw numbers "
        markdown += f"are in `{json_path.name}`.\n\n```\n{trace.rstrip()}\n```"
    path.write_text(markdown + "\n")
    print(markdown)
    log(f"wrote {json_path} and {path}")
    return path


def run(s: Settings, results: dict, save) -> None:
    """Run the sections of ``s`` into ``results``, calling ``save()`` after each row."""
    results["environment"] = environment(s.device)
    log(f"device {results['environment']['device']}; sections {','.join(s.sections)}")
    save()
    start, specs = time.perf_counter(), model_specs(s.quick)
    with tempfile.TemporaryDirectory(prefix="densenet-bench-data-") as tmp:
        roots = {name: Path(tmp, name) for name in ("cifar10", "svhn", "imagenet")}
        if {"loaders", "epoch"} & set(s.sections):
            n = s.cifar_train_images
            write_cifar10(roots["cifar10"], n, max(64, n // 5))
        for key in s.models if "steps" in s.sections else []:
            for name in s.modes:
                results["steps"].setdefault(key, []).append(step_row(specs[key], name, s))
                save()
        if "loaders" in s.sections:
            write_svhn(roots["svhn"], s.svhn_train_images, n_extra=None, n_test=64)
            write_photo_imagenet(roots["imagenet"], imagenet_loader_images(s))
            run_loaders(s, roots, results["loaders"], save)
        if "epoch" in s.sections:
            cifar_steps = results["steps"].get("cifar", [])
            run_epochs(s, specs["cifar"], cifar_steps, roots["cifar10"], results["epochs"], save)
    results["elapsed_s"] = time.perf_counter() - start
    results["environment"]["load average (1/5/15 min) at end"] = load_average()
