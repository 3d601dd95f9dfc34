"""The CSV logger of every run: ``metrics.csv`` and ``hparams.yaml`` in the run directory.

Written on Lightning's public ``Logger`` interface rather than as a ``CSVLogger`` subclass:
Lightning's CSV writer deletes an existing ``metrics.csv``, while a resumed or requeued run
must continue it. Each row is appended as it is logged, so a killed run keeps every row it
logged; a row with a metric not seen before rewrites the file with the wider header (the
columns sorted by name, as Lightning's own writer does).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from densenet_lit.rundir import HPARAMS_FILE, METRICS_FILE


class RunCSVLogger(Logger):
    """``metrics.csv`` (one row per logging call, with its ``step``) and ``hparams.yaml``
    straight in ``save_dir`` (the run directory)."""

    def __init__(self, save_dir: str | os.PathLike) -> None:
        super().__init__()
        self._root = Path(save_dir)
        self._hparams: dict[str, Any] = {}
        self._columns: list[str] | None = None

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._root)

    @property
    def root_dir(self) -> str:
        return str(self._root)

    @property
    def log_dir(self) -> str:
        return str(self._root)

    @property
    def metrics_file(self) -> Path:
        return self._root / METRICS_FILE

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | argparse.Namespace, *args: Any) -> None:
        if isinstance(params, argparse.Namespace):
            params = vars(params)
        self._hparams.update(dict(params))
        self._root.mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(str(self._root / HPARAMS_FILE), self._hparams)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, Tensor) else v for k, v in metrics.items()}
        row["step"] = step if step is not None else 0
        columns = self._known_columns()
        if set(row) - set(columns):
            self._rewrite(sorted(set(columns) | set(row)))
        with open(self.metrics_file, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns).writerow(row)

    def _known_columns(self) -> list[str]:
        """The header of ``metrics.csv``: read once from the file a resumed run continues."""
        if self._columns is None:
            self._columns = []
            if self.metrics_file.is_file():
                with open(self.metrics_file, newline="") as f:
                    self._columns = list(next(csv.reader(f), []))
        return self._columns

    def _rewrite(self, columns: list[str]) -> None:
        rows: list[dict[str, str]] = []
        if self.metrics_file.is_file():
            with open(self.metrics_file, newline="") as f:
                rows = list(csv.DictReader(f))
        self._root.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_file, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        self._columns = columns


def logged_minimums(run_dir: str | os.PathLike, names: list[str]) -> dict[str, float]:
    """The lowest value of each metric in ``names`` that ``metrics.csv`` of ``run_dir`` holds
    (what the earlier parts of a resumed run logged); metrics never logged are left out."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return {}
    lowest: dict[str, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for name in names:
                value = row.get(name)
                if value:
                    lowest[name] = min(float(value), lowest.get(name, float("inf")))
    return lowest
