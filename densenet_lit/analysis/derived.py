"""What a run's records say, each a function of a :class:`~densenet_lit.analysis.record.Run`:
final and best error, epochs, wall time, throughput, benchmark, network, the paper's row,
parameters and FLOPs."""

from __future__ import annotations

import math
import re
import statistics
from datetime import datetime
from typing import Any

from densenet_lit import metric_names as names
from densenet_lit.analysis.checkpoint import CheckpointError, network_spec
from densenet_lit.analysis.costs import Cost, network_cost
from densenet_lit.analysis.paper_match import PaperNumber, gap, paper_benchmark, stored_number
from densenet_lit.analysis.paper_match import paper_number as match_number
from densenet_lit.analysis.paper_match import paper_row as match_row
from densenet_lit.analysis.record import Run, finite
from densenet_lit.benchmarks import IMAGENET, find_benchmark
from densenet_lit.models.spec import NetworkSpec
from densenet_lit.paper import PaperModel
from densenet_lit.rundir import CONFIG_NAME as CONFIG_FILE
from densenet_lit.rundir import HPARAMS_FILE, METRICS_FILE

# The data module's declaration of what it is (densenet_lit.data.base.BaseDataModule.benchmark).
BENCHMARK_KEY = "benchmark"
# Column names tried in order for each quantity (the module's first, in %; then other loggers').
VAL_ERROR = (names.VAL_ERROR, "val_error", "valid/error", "val/err")
TEST_ERROR = (names.TEST_ERROR, "test_error", "test/err")
THROUGHPUT_PATTERN = re.compile(r"images_per_s|img_per_s|samples_per_s|throughput", re.I)
# A logged cumulative clock (seconds) or a per-epoch duration (seconds), if a run has one.
ELAPSED_PATTERN = re.compile(r"(^|/|_)(elapsed|wall_?time|time_elapsed)(_s|_sec)?$", re.I)
EPOCH_TIME_PATTERN = re.compile(r"(epoch_time|time/epoch|time_per_epoch|epoch_duration)", re.I)
# Metrics logged while fitting (not "trainer/global_step", W&B's "_step", or test metrics).
FIT_METRIC = re.compile(
    rf"^({names.TRAIN}|{names.VAL}|valid|{names.PERF})[/_]|^{names.LR}($|[-_/])"
)
RUN_ID_TIME = re.compile(r"^(\d{8}-\d{6})")


# ------------------------------------------------------------------------- derived: errors
def final_error(run: Run) -> tuple[float | None, str | None]:
    """``(error %, "test")`` from the last logged test error, else ``(error, "val")`` from the
    last validation error, else ``(None, None)``."""
    for kind, columns in (("test", TEST_ERROR), ("val", VAL_ERROR)):
        col = run.column(columns)
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
        if finite(row.get("epoch", math.nan))
        and any(FIT_METRIC.match(k) and finite(v) for k, v in row.items())
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
def init_args(section: Any) -> dict[str, Any]:
    """A LightningCLI config section as a flat dict (``init_args`` of a class_path form)."""
    if not isinstance(section, dict):
        return {}
    if "class_path" in section:
        args = section.get("init_args")
        return dict(args) if isinstance(args, dict) else {}
    return dict(section)


def data_args(run: Run) -> dict[str, Any]:
    """The data module's arguments: config ``data.init_args`` over any logged in hparams."""
    return {**run.hparams, **init_args(run.config.get("data"))}


def declared_benchmark(run: Run) -> str | None:
    """What the run's data module declared itself to be (its ``benchmark``, logged with the
    hyperparameters): ``cifar10plus``, ``cifar100``, ``svhn``, ``imagenet``, ``digits``, ...;
    None for a run that did not record it."""
    value = run.hparams.get(BENCHMARK_KEY) or run.config.get(BENCHMARK_KEY)
    return str(value) if value else None


def dataset_name(run: Run) -> str | None:
    """The data set of the run: its declared benchmark without the augmentation mark
    (``cifar10plus`` -> ``cifar10``); another declared name (``imagenette``) as it is."""
    name = declared_benchmark(run)
    known = find_benchmark(name)
    return known.dataset if known else name


def benchmark(run: Run) -> str | None:
    """The paper's benchmark key of the run: ``c10``/``c10+``/``c100``/``c100+`` (CIFAR with or
    without augmentation), ``svhn``, ``imagenet``; ``digits`` for the demo; None if unknown."""
    return paper_benchmark(declared_benchmark(run))


def network_args(run: Run) -> tuple[str, dict[str, Any]] | None:
    """``(arch, kwargs)`` of the run's network for :func:`densenet_lit.models.build_model`: the
    config's ``model`` section overridden by the logged hyperparameters; ``num_classes`` and
    ``in_channels`` (linked from the data module) from the data set when not logged."""
    merged = {**init_args(run.config.get("model")), **run.hparams}
    known = find_benchmark(declared_benchmark(run))
    defaults = {
        "num_classes": known.num_classes if known else 10,
        "in_channels": known.in_channels if known else 3,
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
    if dataset_name(run) == IMAGENET.dataset or "eval_crop" in args:  # any class-folder set
        side = args.get("eval_crop") or IMAGENET.image_size
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


def network_key(run: Run) -> str | None:
    """The key of the run's network (:mod:`densenet_lit.models.spec`), e.g. ``densenet121``."""
    spec = network_args(run)
    return None if spec is None else NetworkSpec(*spec).key


def is_cosine(run: Run) -> bool:
    """Whether the run was trained with the cosine schedule (the README's cosine models)."""
    return run.hparams.get("schedule") == "cosine"


def paper_row(run: Run) -> PaperModel | None:
    """The paper's model with the run's network and schedule
    (:func:`densenet_lit.analysis.paper_match.paper_row`)."""
    key = network_key(run)
    return None if key is None else match_row(key, is_cosine(run))


def eval_crops(run: Run) -> int:
    """Crops per test image (``data.eval_crops`` of ImageNet runs): 1 or 10."""
    value = data_args(run).get("eval_crops")
    return 10 if isinstance(value, int | float) and int(value) == 10 else 1


def paper_number(run: Run) -> PaperNumber:
    """The paper's number for the run and where it was read: what the run recorded (a W&B
    run's ``paper/*`` fields), else looked up from its network, benchmark and crops by the
    same function the W&B run used (:mod:`densenet_lit.analysis.paper_match`)."""
    stored = stored_number(run.config)
    if stored is not None:
        return stored
    return match_number(network_key(run), declared_benchmark(run), eval_crops(run), is_cosine(run))


def paper_error(run: Run) -> float | None:
    """The paper's error for the run's network on the run's benchmark, if the paper has one;
    for ImageNet, the single-crop or the 10-crop column by how the run was tested."""
    return paper_number(run).error


def paper_gap(run: Run) -> float | None:
    """Our final error (:func:`final_error`: test, else validation) - the paper's."""
    return gap(paper_error(run), final_error(run)[0])


__all__ = [
    "BENCHMARK_KEY",
    "ELAPSED_PATTERN",
    "EPOCH_TIME_PATTERN",
    "FIT_METRIC",
    "RUN_ID_TIME",
    "TEST_ERROR",
    "THROUGHPUT_PATTERN",
    "VAL_ERROR",
    "benchmark",
    "best_validation",
    "data_args",
    "dataset_name",
    "declared_benchmark",
    "epochs_trained",
    "eval_crops",
    "final_error",
    "images_per_second",
    "init_args",
    "input_size",
    "is_cosine",
    "is_finished",
    "max_epochs",
    "network_args",
    "network_key",
    "paper_error",
    "paper_gap",
    "paper_number",
    "paper_row",
    "run_cost",
    "validation_curve",
    "wall_time",
]
