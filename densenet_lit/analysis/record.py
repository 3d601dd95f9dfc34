"""The record of one training run (:class:`Run`): its metric rows, config and hyperparameters,
read from a run directory or from W&B by :mod:`densenet_lit.analysis.runs`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
        return [v for row in self.rows if finite(v := row.get(metric, math.nan))]

    def series(self, metric: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of ``metric``, the last value logged in each epoch, by epoch
        (0-based, as Lightning counts)."""
        by_epoch: dict[int, float] = {}
        for row in self.rows:
            v, e = row.get(metric, math.nan), row.get("epoch", math.nan)
            if finite(v) and finite(e):
                by_epoch[int(e)] = v
        return sorted(by_epoch.items())

    def last(self, metric: str) -> float | None:
        vals = self.values(metric)
        return vals[-1] if vals else None


def finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def to_float(v: Any) -> float:
    if v is None or v == "":
        return math.nan
    if isinstance(v, bool):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
