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
parameters and FLOPs) is a function of a :class:`Run`, documented where it is computed.
"""

from __future__ import annotations

import csv
import math
import os
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from densenet_lit import rundir
from densenet_lit.analysis.checkpoint import CheckpointError, network_spec
from densenet_lit.analysis.costs import Cost, network_cost
from densenet_lit.paper import CIFAR_MODELS, PaperModel, imagenet_key, paper_model
from densenet_lit.rundir import CONFIG_NAME as CONFIG_FILE
from densenet_lit.rundir import HPARAMS_FILE, METRICS_FILE

# The data module's declaration of what it is (densenet_lit.data.base.BaseDataModule.benchmark).
BENCHMARK_KEY = "benchmark"
# Column names tried in order for each quantity (the module logs "val/error" etc., in %).
VAL_ERROR = ("val/error", "val_error", "valid/error", "val/err")
TEST_ERROR = ("test/error", "test_error", "test/err")
THROUGHPUT_PATTERN = re.compile(r"images_per_s|img_per_s|samples_per_s|throughput", re.I)
# A logged cumulative clock (seconds) or a per-epoch duration (seconds), if a run has one.
ELAPSED_PATTERN = re.compile(r"(^|/|_)(elapsed|wall_?time|time_elapsed)(_s|_sec)?$", re.I)
EPOCH_TIME_PATTERN = re.compile(r"(epoch_time|time/epoch|time_per_epoch|epoch_duration)", re.I)
# Metrics logged while fitting (not "trainer/global_step", W&B's "_step", or test metrics).
FIT_METRIC = re.compile(r"^(train|val|valid|perf)[/_]|^lr($|[-_/])")
RUN_ID_TIME = re.compile(r"^(\d{8}-\d{6})")


class WandbUnavailable(RuntimeError):
    """The W&B API could not be used (not installed, not logged in, offline, unknown project)."""


# ------------------------------------------------------------------------------------ record
@dataclass
class Run:
    """One training run: its metric rows (one dict per logging event, NaN where a metric was
    not logged in that row), its resolved config and its module/data hyperparameters."""

    experiment: str
    run_id: str
    rows: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    source: str = "local"  # "local" or "wandb"
    url: str | None = None
    wall_time_s: float | None = None  # set when the source knows it (W&B's _runtime)
    wall_time_source: str | None = None

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.run_id}"

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                seen.setdefault(key, None)
        return list(seen)

    def column(self, candidates: Sequence[str]) -> str | None:
        """The first of ``candidates`` that this run logged."""
        cols = set(self.columns)
        return next((c for c in candidates if c in cols), None)

    def values(self, metric: str) -> list[float]:
        """Every finite value of ``metric``, in logging order."""
        return [v for row in self.rows if _finite(v := row.get(metric, math.nan))]

    def series(self, metric: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of ``metric``, the last value logged in each epoch, by epoch
        (0-based, as Lightning counts)."""
        by_epoch: dict[int, float] = {}
        for row in self.rows:
            v, e = row.get(metric, math.nan), row.get("epoch", math.nan)
            if _finite(v) and _finite(e):
                by_epoch[int(e)] = v
        return sorted(by_epoch.items())

    def last(self, metric: str) -> float | None:
        vals = self.values(metric)
        return vals[-1] if vals else None


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _to_float(v: Any) -> float:
    if v is None or v == "":
        return math.nan
    if isinstance(v, bool):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


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
            {k: _to_float(v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)
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
    return any(c.startswith("train/") or c == "lr" for c in run.columns)


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
            rows = [{k: _to_float(v) for k, v in row.items()} for row in r.scan_history()]
            config = {k: v for k, v in dict(r.config).items() if not k.startswith("_")}
            hparams = {k: v for k, v in config.items() if not isinstance(v, dict)}
            model_cfg = _init_args(config.get("model"))
            hparams = {**model_cfg, **hparams}
            name = r.name or r.id
            experiment, _, run_id = name.rpartition("/")
            runtime = _to_float(dict(r.summary).get("_runtime"))
            runs.append(
                Run(
                    experiment or (r.group or project),
                    run_id or r.id,
                    rows,
                    config,
                    hparams,
                    source="wandb",
                    url=getattr(r, "url", None),
                    wall_time_s=runtime if _finite(runtime) else None,
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


# ------------------------------------------------------------------------- derived: errors
def final_error(run: Run) -> tuple[float | None, str | None]:
    """``(error %, "test")`` from the last logged test error, else ``(error, "val")`` from the
    last validation error, else ``(None, None)``."""
    for kind, names in (("test", TEST_ERROR), ("val", VAL_ERROR)):
        col = run.column(names)
        if col is not None and (v := run.last(col)) is not None:
            return v, kind
    return None, None


def validation_curve(run: Run) -> list[tuple[int, float]]:
    """Validation error per epoch, ``[(epoch, error %), ...]`` (epochs 0-based)."""
    col = run.column(VAL_ERROR)
    return run.series(col) if col else []


def best_validation(run: Run) -> tuple[float | None, int | None]:
    """Lowest validation error and its (0-based) epoch."""
    curve = validation_curve(run)
    if not curve:
        return None, None
    epoch, value = min(curve, key=lambda ev: (ev[1], ev[0]))
    return value, epoch


def epochs_trained(run: Run) -> int | None:
    """Epochs trained: 1 + the largest epoch of a training or validation metric (test rows
    logged after ``fit`` carry the epoch counter past the end and are not counted)."""
    epochs = [
        row["epoch"]
        for row in run.rows
        if _finite(row.get("epoch", math.nan))
        and any(FIT_METRIC.match(k) and _finite(v) for k, v in row.items())
    ]
    return int(max(epochs)) + 1 if epochs else None


def max_epochs(run: Run) -> int | None:
    """``trainer.max_epochs`` of the run's config, if set."""
    trainer = run.config.get("trainer") if isinstance(run.config.get("trainer"), dict) else {}
    value = trainer.get("max_epochs")
    return int(value) if isinstance(value, int | float) and value > 0 else None


def is_finished(run: Run) -> bool:
    """Logged a test error, or trained ``trainer.max_epochs`` epochs (any error logged when the
    config does not say how long the run should be)."""
    if run.column(TEST_ERROR) and final_error(run)[1] == "test":
        return True
    target, done = max_epochs(run), epochs_trained(run)
    if target is None:
        return final_error(run)[0] is not None
    return done is not None and done >= target


# -------------------------------------------------------------------- derived: time, speed
def images_per_second(run: Run) -> float | None:
    """Median of a logged throughput metric (a column whose name contains ``images_per_sec``,
    ``samples_per_sec`` or ``throughput``; the CLI logs ``perf/images_per_sec`` once per training
    epoch), else None."""
    for col in run.columns:
        if THROUGHPUT_PATTERN.search(col):
            vals = run.values(col)
            if vals:
                return float(statistics.median(vals))
    return None


def _run_start(run: Run) -> float | None:
    match = RUN_ID_TIME.match(run.run_id)
    if match:
        try:
            return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").timestamp()
        except ValueError:
            pass
    if run.path is None:
        return None
    starts = [
        p.stat().st_mtime for p in (run.path / CONFIG_FILE, run.path / HPARAMS_FILE) if p.is_file()
    ]
    return min(starts) if starts else None


def wall_time(run: Run) -> tuple[float | None, str | None]:
    """Seconds the run took and where that number comes from, in this order:

    1. the source's own clock (W&B's ``_runtime``);
    2. a logged cumulative clock (a column named like ``elapsed`` / ``wall_time``: its largest
       value) or per-epoch durations (``epoch_time`` / ``time/epoch``: their sum);
    3. the files: from the start time in the run id (``YYYYmmdd-HHMMSS-...``, the CLI's
       naming) or else the modification time of ``config.yaml``/``hparams.yaml`` (written when
       training starts), to the last modification of a ``metrics.csv`` or checkpoint. This
       includes start-up, validation and testing; a resumed run counts only its own part.
    """
    if run.wall_time_s is not None:
        return run.wall_time_s, run.wall_time_source or run.source
    for col in run.columns:
        if ELAPSED_PATTERN.search(col) and (vals := run.values(col)):
            return max(vals), f"logged {col}"
    for col in run.columns:
        if EPOCH_TIME_PATTERN.search(col) and (series := run.series(col)):
            return sum(v for _, v in series), f"sum of logged {col}"
    if run.path is None:
        return None, None
    start = _run_start(run)
    ends = [p.stat().st_mtime for p in run.path.rglob(METRICS_FILE)]
    ends += [p.stat().st_mtime for p in run.path.rglob("*.ckpt") if "wandb" not in p.parts]
    if start is None or not ends:
        return None, None
    return max(0.0, max(ends) - start), "files"


# ----------------------------------------------------------------- derived: data and model
def _init_args(section: Any) -> dict[str, Any]:
    """A LightningCLI config section as a flat dict (``init_args`` of a class_path form)."""
    if not isinstance(section, dict):
        return {}
    if "class_path" in section:
        args = section.get("init_args")
        return dict(args) if isinstance(args, dict) else {}
    return dict(section)


def data_args(run: Run) -> dict[str, Any]:
    """The data module's arguments: config ``data.init_args`` over any logged in hparams."""
    return {**run.hparams, **_init_args(run.config.get("data"))}


def declared_benchmark(run: Run) -> str | None:
    """What the run's data module declared itself to be (its ``benchmark``, logged with the
    hyperparameters): ``cifar10plus``, ``cifar100``, ``svhn``, ``imagenet``, ``digits``, ...;
    None for a run that did not record it."""
    value = run.hparams.get(BENCHMARK_KEY) or run.config.get(BENCHMARK_KEY)
    return str(value) if value else None


def dataset_name(run: Run) -> str | None:
    """The data set of the run: its declared benchmark without the augmentation mark
    (``cifar10plus`` -> ``cifar10``)."""
    name = declared_benchmark(run)
    return name.removesuffix("plus") if name else None


def benchmark(run: Run) -> str | None:
    """The paper's benchmark key of the run: ``c10``/``c10+``/``c100``/``c100+`` (CIFAR with or
    without augmentation), ``svhn``, ``imagenet``; ``digits`` for the demo; None if unknown."""
    name = declared_benchmark(run)
    if name is None:
        return None
    base = name.removesuffix("plus")
    short = {"cifar10": "c10", "cifar100": "c100"}.get(base)
    if short is None:
        return name
    return short + ("+" if name.endswith("plus") else "")


def network_args(run: Run) -> tuple[str, dict[str, Any]] | None:
    """``(arch, kwargs)`` of the run's network for :func:`densenet_lit.models.build_model`: the
    config's ``model`` section overridden by the logged hyperparameters; ``num_classes`` and
    ``in_channels`` (linked from the data module) from the data set when not logged."""
    merged = {**_init_args(run.config.get("model")), **run.hparams}
    name = dataset_name(run)
    defaults = {
        "num_classes": {"cifar100": 100, "imagenet": 1000}.get(name or "", 10),
        "in_channels": 1 if name == "digits" else 3,
    }
    for key, value in defaults.items():
        if merged.get(key) is None:
            merged[key] = value
    if not merged.get("arch") and not any(k in merged for k in ("depth", "growth_rate")):
        return None
    try:
        return network_spec(merged)
    except CheckpointError:
        return None


def input_size(run: Run) -> tuple[int, int, int]:
    """(C, H, W) the network sees at test time: 224x224 centre crops for ImageNet (``eval_crop``),
    ``image_size`` for the digits, 32x32 otherwise."""
    spec = network_args(run)
    channels = int(spec[1].get("in_channels", 3)) if spec else 3
    args = data_args(run)
    if dataset_name(run) == "imagenet":
        side = args.get("eval_crop") or 224
    else:
        side = args.get("image_size") or 32
    return (channels, int(side), int(side))


def run_cost(run: Run) -> Cost | None:
    """Parameters and FLOPs (multiply-adds, one image at :func:`input_size`) of the run's
    network, counted on a network built from its config (no checkpoint needed)."""
    spec = network_args(run)
    if spec is None:
        return None
    arch, kwargs = spec
    try:
        return network_cost(arch, input_size(run), **kwargs)
    except (TypeError, ValueError, RuntimeError):
        return None


def paper_row(run: Run) -> PaperModel | None:
    """The paper's model with the run's network: same arch (and schedule: the "cosine" 264),
    or for the CIFAR network the same depth, growth rate, bottleneck and compression."""
    spec = network_args(run)
    if spec is None:
        return None
    arch, kwargs = spec
    if arch != "densenet_cifar":
        cosine = run.hparams.get("schedule") == "cosine"
        for key in ([f"{arch}_cosine"] if cosine else []) + [arch]:
            try:
                return paper_model(key)
            except KeyError:
                continue
        return None
    for model in CIFAR_MODELS:
        mk = model.model_kwargs
        if (
            mk["depth"] == kwargs.get("depth")
            and mk["growth_rate"] == kwargs.get("growth_rate")
            and bool(mk["bottleneck"]) == bool(kwargs.get("bottleneck"))
            and math.isclose(float(mk["compression"]), float(kwargs.get("compression", -1)))
        ):
            return model
    return None


def eval_crops(run: Run) -> int:
    """Crops per test image (``data.eval_crops`` of ImageNet runs): 1 or 10."""
    value = data_args(run).get("eval_crops")
    return 10 if isinstance(value, int | float) and int(value) == 10 else 1


def paper_error(run: Run) -> float | None:
    """The paper's error for the run's network on the run's benchmark, if the paper has one;
    for ImageNet, the single-crop or the 10-crop column by how the run was tested."""
    row, bench = paper_row(run), benchmark(run)
    if row is None or bench is None:
        return None
    if bench == "imagenet":
        bench = imagenet_key(eval_crops(run))
    return row.errors.get(bench)


__all__ = [
    "Run",
    "WandbUnavailable",
    "benchmark",
    "best_validation",
    "collect_local_runs",
    "is_training_run",
    "collect_wandb_runs",
    "dataset_name",
    "epochs_trained",
    "eval_crops",
    "final_error",
    "find_run_dirs",
    "images_per_second",
    "input_size",
    "is_finished",
    "load_run",
    "max_epochs",
    "network_args",
    "paper_error",
    "paper_row",
    "read_metrics",
    "run_cost",
    "validation_curve",
    "wall_time",
]
