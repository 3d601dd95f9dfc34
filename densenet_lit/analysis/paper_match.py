"""The paper's number for a run, and the names of the fields that carry it beside the run's.

The one owner of two things that the W&B run (:mod:`densenet_lit.tracking.paper`) and the
comparison tools (:mod:`densenet_lit.analysis.derived`, ``compare``) share:

* which number of :mod:`densenet_lit.paper` a run is compared with: the row of its network
  (the key of :mod:`densenet_lit.models.spec`, e.g. ``densenet_bc_100_12``; the cosine
  DenseNet-264s have rows of their own) and the column of its benchmark (what its data module
  declares, ``cifar10plus`` -> the paper's ``c10+``) and, for ImageNet, of how it was tested:
  Table 3's single-crop or 10-crop column (``data.eval_crops``);
* the names of the fields: the network's parameters and FLOPs, the paper's error, where it was
  read, and the gap (ours - paper).

A run the paper has no number for gets ``paper/error: None`` and ``paper/source: "none: <why>"``,
never a number of another configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from densenet_lit.benchmarks import IMAGENET, find_benchmark
from densenet_lit.models.spec import network_spec
from densenet_lit.paper import ALL_MODELS, BENCHMARKS, PaperModel, citation, imagenet_key

# The fields (W&B config and summary keys). FLOPs are multiply-adds of one image at the
# evaluation crop, as in the paper's Figure 3 (one crop: ten-crop testing runs it ten times).
NETWORK = "network/key"
PARAMS = "network/params"
FLOPS = "network/flops"
PAPER_ERROR = "paper/error"
PAPER_SOURCE = "paper/source"
PAPER_MODEL = "paper/model"
PAPER_COLUMN = "paper/column"
OURS = "paper/ours"  # our error that the gap is of ...
OURS_METRIC = "paper/ours_metric"  # ... and which metric it is (test/error, val/error)
GAP = "paper/gap"
NO_NUMBER = "none: "  # how paper/source begins where there is no paper number


def paper_benchmark(declared: str | None) -> str | None:
    """The paper's key of a data module's benchmark (:mod:`densenet_lit.benchmarks`):
    ``cifar10plus`` -> ``c10+``, ...; another declared name (``imagenette``) as it is."""
    known = find_benchmark(declared)
    return known.key if known else declared or None


def paper_column(declared: str | None, eval_crops: int = 1) -> str | None:
    """The column of the paper's tables for a benchmark: ImageNet by its crops (1 or 10)."""
    bench = paper_benchmark(declared)
    return imagenet_key(eval_crops) if bench == IMAGENET.key else bench


@lru_cache(maxsize=1)
def row_keys() -> tuple[tuple[str, PaperModel], ...]:
    """``(network key, row)`` of every DenseNet row of the paper."""
    return tuple((network_spec({"arch": m.arch, **m.model_kwargs}).key, m) for m in ALL_MODELS)


def paper_row(network_key: str, cosine: bool = False) -> PaperModel | None:
    """The paper's row of a network: the one trained with the same schedule (the cosine rows
    are the README's "cosine" models); a cosine run of a network with only a step-schedule row
    is compared with that row, never the reverse."""
    rows = [m for key, m in row_keys() if key == network_key]
    same = [m for m in rows if ("cosine" in m.key) == cosine]
    if same or not cosine:
        return same[0] if same else None
    return rows[0] if rows else None


@dataclass(frozen=True)
class PaperNumber:
    """The paper's error (%) for a run, where it was read (``none: <why>`` without one), the
    row (its key) and the column (benchmark key) it was looked up in."""

    error: float | None
    source: str
    model: str | None = None
    column: str | None = None

    def fields(self) -> dict[str, Any]:
        return {
            PAPER_ERROR: self.error,
            PAPER_SOURCE: self.source,
            PAPER_MODEL: self.model,
            PAPER_COLUMN: self.column,
        }


def paper_number(
    network_key: str | None, benchmark: str | None, eval_crops: int = 1, cosine: bool = False
) -> PaperNumber:
    """The paper's number for a network (``models.spec`` key) on a declared ``benchmark``,
    tested with ``eval_crops`` crops, trained with the cosine schedule or not."""
    column = paper_column(benchmark, eval_crops)
    if column is None:
        return PaperNumber(None, NO_NUMBER + "the run's data module declares no benchmark")
    if network_key is None:
        return PaperNumber(None, NO_NUMBER + "the run's network is unknown", None, column)
    row = paper_row(network_key, cosine)
    if row is None:
        schedule = " with the cosine schedule" if cosine else ""
        why = f"{network_key}{schedule} is not a network of the paper's tables"
        return PaperNumber(None, NO_NUMBER + why, None, column)
    if column not in row.errors:
        has = ", ".join(b for b in row.errors if b in BENCHMARKS)
        why = f"the paper gives {row.label} no {column!r} error (it has {has})"
        return PaperNumber(None, NO_NUMBER + why, row.key, column)
    where = f"{row.label}, {BENCHMARKS[column]}: {citation(row, column)}"
    return PaperNumber(row.errors[column], where, row.key, column)


def stored_number(fields: Mapping[str, Any]) -> PaperNumber | None:
    """The :class:`PaperNumber` a run recorded among ``fields`` (a W&B run's config), if any."""
    source = fields.get(PAPER_SOURCE)
    if not isinstance(source, str):
        return None
    error = fields.get(PAPER_ERROR)
    error = float(error) if isinstance(error, int | float) else None
    return PaperNumber(error, source, fields.get(PAPER_MODEL), fields.get(PAPER_COLUMN))


def gap(paper: float | None, ours: float | None) -> float | None:
    """Ours - paper in percentage points; None without either."""
    return None if paper is None or ours is None else ours - paper


def comparison_fields(number: PaperNumber, ours: float | None, metric: str) -> dict[str, Any]:
    """The summary fields of our error beside the paper's: ours, which metric, the gap."""
    return {OURS: ours, OURS_METRIC: metric, GAP: gap(number.error, ours)}


def cost_fields(params: int, macs: int) -> dict[str, int]:
    """The network's exact parameter and FLOP (multiply-add) counts as fields."""
    return {PARAMS: int(params), FLOPS: int(macs)}


__all__ = [
    "FLOPS",
    "GAP",
    "NETWORK",
    "NO_NUMBER",
    "OURS",
    "OURS_METRIC",
    "PAPER_COLUMN",
    "PAPER_ERROR",
    "PAPER_MODEL",
    "PAPER_SOURCE",
    "PARAMS",
    "PaperNumber",
    "comparison_fields",
    "cost_fields",
    "gap",
    "paper_benchmark",
    "paper_column",
    "paper_number",
    "paper_row",
    "stored_number",
]
