"""Finished training runs: where they are, what they logged, and what they were.

A run is a directory written by ``python -m densenet_lit fit`` (see :mod:`densenet_lit.cli`),
``<root>/<experiment>/<run-id>/`` with ``config.yaml`` (the resolved LightningCLI config),
``checkpoints/*.ckpt`` and a Lightning CSVLogger ``metrics.csv`` + ``hparams.yaml``. Nothing
here depends on the exact nesting: ``metrics.csv`` files are found recursively and each belongs
to the nearest enclosing directory that holds a ``config.yaml`` or a ``checkpoints/`` folder
(else to its own folder). The experiment is the name of the run directory's parent.

Runs logged to Weights & Biases are read with :func:`collect_wandb_runs` into the same
:class:`Run` record (history rows as metric rows, the run's config as config).

Every derived quantity (final error, epochs, wall time, throughput, benchmark, the paper's row,
parameters and FLOPs) is a function of a :class:`Run` in :mod:`densenet_lit.analysis.derived`,
re-exported here.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from densenet_lit import rundir
from densenet_lit.analysis.derived import *  # noqa: F403 - the quantities of a run
from densenet_lit.analysis.derived import __all__ as DERIVED
from densenet_lit.analysis.derived import init_args
from densenet_lit.analysis.record import Run, finite, to_float
from densenet_lit.metric_names import LR, TRAIN
from densenet_lit.rundir import CONFIG_NAME as CONFIG_FILE
from densenet_lit.rundir import HPARAMS_FILE, METRICS_FILE


class WandbUnavailable(RuntimeError):
    """The W&B API could not be used (not installed, not logged in, offline, unknown project)."""


# ------------------------------------------------------------------------------- local files
class _LenientLoader(yaml.SafeLoader):
    """SafeLoader that reads python/object tags (e.g. in old hparams.yaml files) as None."""


_LenientLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
_LenientLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, or ``{}`` for a missing, empty or unreadable file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_LenientLoader)
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a Lightning CSVLogger ``metrics.csv``: every column as float, NaN when empty."""
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {k: to_float(v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)
        ]


def _run_dir_of(metrics: Path, root: Path) -> Path:
    d = metrics.parent
    while True:
        if rundir.is_run_dir(d):
            return d
        if d == root or d.parent == d:
            return metrics.parent
        d = d.parent


def find_run_dirs(path: str | os.PathLike) -> dict[Path, list[Path]]:
    """Run directories under ``path`` (a root of runs, a run directory or a metrics.csv),
    each with its ``metrics.csv`` files."""
    p = Path(path)
    if p.is_file():
        if p.name != METRICS_FILE:
            raise FileNotFoundError(f"{p}: expected a run directory or a {METRICS_FILE} file.")
        # a metrics.csv in a subfolder (e.g. csv/) still belongs to the run two levels up
        files, root = [p], p.parent.parent.parent
    elif p.is_dir():
        files = sorted(
            q for q in p.rglob(METRICS_FILE) if "wandb" not in q.relative_to(p).parts[:-1]
        )
        root = p
    else:
        raise FileNotFoundError(f"{p}: no such run directory.")
    runs: dict[Path, list[Path]] = {}
    for f in files:
        runs.setdefault(_run_dir_of(f, root), []).append(f)
    return runs


def load_run(run_dir: str | os.PathLike, metrics_files: Sequence[Path] | None = None) -> Run:
    """A local run from its directory (its metrics.csv files found recursively if not given)."""
    run_dir = Path(run_dir)
    if metrics_files is None:
        metrics_files = find_run_dirs(run_dir).get(run_dir) or sorted(run_dir.rglob(METRICS_FILE))
    rows: list[dict[str, float]] = []
    hparams: dict[str, Any] = {}
    for f in sorted(metrics_files, key=lambda q: (q.stat().st_mtime, str(q))):
        rows.extend(read_metrics(f))
        hparams.update(read_yaml(f.parent / HPARAMS_FILE))
    config = read_yaml(run_dir / CONFIG_FILE)
    if not hparams:
        hparams = read_yaml(run_dir / HPARAMS_FILE)
    run_cfg = config.get("run") if isinstance(config.get("run"), dict) else {}
    experiment = run_cfg.get("name") or run_dir.parent.name or run_dir.name
    return Run(experiment, run_dir.name, rows, config, hparams, path=run_dir)


def is_training_run(run: Run) -> bool:
    """A run of ``fit`` (it logged training metrics), not one of ``validate`` or ``test``."""
    return any(c.startswith(f"{TRAIN}/") or c == LR for c in run.columns)


def collect_local_runs(paths: Iterable[str | os.PathLike], training_only: bool = True) -> list[Run]:
    """Every run under each of ``paths`` (roots of runs, run directories or metrics.csv files),
    without duplicates, in path order. Evaluation runs (``validate``/``test`` of a checkpoint,
    which log no training metrics) are left out unless ``training_only`` is False."""
    seen: dict[Path, list[Path]] = {}
    for path in paths:
        for run_dir, files in find_run_dirs(path).items():
            key = run_dir.resolve()
            if key not in seen:
                seen[key] = files
    runs = [load_run(d, files) for d, files in sorted(seen.items())]
    return [r for r in runs if is_training_run(r)] if training_only else runs


# ------------------------------------------------------------------------------------ W&B
def collect_wandb_runs(
    project: str, entity: str | None = None, timeout: int = 20, per_page: int = 50
) -> list[Run]:
    """Runs of a W&B project (``entity/project`` or ``project`` with ``entity``), with their full
    history. Needs network access and a W&B login; every failure becomes one
    :class:`WandbUnavailable` whose message says what to check."""
    path = f"{entity}/{project}" if entity and "/" not in project else project
    try:
        import wandb
    except ImportError as err:
        raise WandbUnavailable(f"W&B project {path!r}: wandb is not installed ({err}).") from err
    try:
        api = wandb.Api(timeout=timeout)
        runs = []
        for r in api.runs(path, per_page=per_page):
            rows = [{k: to_float(v) for k, v in row.items()} for row in r.scan_history()]
            config = {k: v for k, v in dict(r.config).items() if not k.startswith("_")}
            hparams = {k: v for k, v in config.items() if not isinstance(v, dict)}
            model_cfg = init_args(config.get("model"))
            hparams = {**model_cfg, **hparams}
            name = r.name or r.id
            experiment, _, run_id = name.rpartition("/")
            runtime = to_float(dict(r.summary).get("_runtime"))
            runs.append(
                Run(
                    experiment or (r.group or project),
                    run_id or r.id,
                    rows,
                    config,
                    hparams,
                    source="wandb",
                    url=getattr(r, "url", None),
                    wall_time_s=runtime if finite(runtime) else None,
                    wall_time_source="W&B _runtime",
                )
            )
        return runs
    except Exception as err:  # auth, network, unknown project: one clear message
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WandbUnavailable(
            f"Could not read W&B project {path!r}: {first[:300]}. Check that this machine is "
            "online, that you are logged in (`wandb login` or WANDB_API_KEY) and that the "
            "project name is entity/project."
        ) from err


__all__ = [
    *DERIVED,
    "Run",
    "WandbUnavailable",
    "collect_local_runs",
    "collect_wandb_runs",
    "find_run_dirs",
    "is_training_run",
    "load_run",
    "read_metrics",
    "read_yaml",
]
