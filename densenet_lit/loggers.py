"""The CSV logger of every run: ``metrics.csv`` and ``hparams.yaml`` in the run directory."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter as CSVExperimentWriter


class _ContinuingWriter(CSVExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; this one continues it (a SLURM
    job that is requeued writes into the same run directory)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


class RunCSVLogger(CSVLogger):
    """CSV logger writing ``metrics.csv`` and ``hparams.yaml`` straight into the run directory."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> CSVExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
