"""The W&B logger of a run: Lightning's ``WandbLogger`` made safe (a W&B failure never stops
training), with best-so-far summaries that span a resumed run, and checkpoint uploads whose
``best`` alias names the checkpoint with the lowest validation error.

Why not Lightning's own summaries and uploads:

* W&B computes a ``min`` summary from the values one process logged; a resumed run is a new
  process, so the runs table would show the best of its last part only. The logger keeps the
  minimum of the whole run (seeded from what the earlier parts logged) and writes it as the
  summary after each value. This module owns the summaries: which metrics, how they are
  summarised (:data:`SUMMARIES`), and their values; others write theirs through
  :meth:`SafeWandbLogger.update_summary` (the paper's number: :mod:`densenet_lit.tracking.paper`).
* Lightning's ``log_model`` gives the alias ``best`` to the file each checkpoint callback
  considers best; for the callback keeping ``last.ckpt`` (no monitor) that is ``last.ckpt``,
  so ``best`` ends on whichever callback saved last.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor

from densenet_lit import metric_names as m
from densenet_lit.tracking.csv_logger import logged_minimums

# How the runs table summarises each metric: "min" over the whole run, across resumptions
# (SafeWandbLogger.summarise_minimums writes it), and the last value.
SUMMARIES = {
    m.VAL_ERROR: "min,last",
    m.VAL_ERROR_TOP5: "min,last",
    m.TEST_ERROR: "min,last",
    m.TEST_ERROR_TOP5: "min,last",
    m.TRAIN_LOSS: "last",
    m.TRAIN_ERROR: "last",
}
MINIMUMS = tuple(name for name, summary in SUMMARIES.items() if "min" in summary.split(","))


def define_summaries(run: Any, step_metric: str) -> None:
    """Declare :data:`SUMMARIES` in the W&B run ``run``, plotted against ``step_metric``."""
    for name, summary in SUMMARIES.items():
        run.define_metric(name, summary=summary, step_metric=step_metric)


def minimums_so_far(run_dir: str | os.PathLike) -> dict[str, float | None]:
    """The metrics summarised by their minimum, with the lowest value the run logged so far
    (``metrics.csv``: the parts before a resumption), None where it logged none."""
    logged = logged_minimums(run_dir, list(MINIMUMS))
    return {name: logged.get(name) for name in MINIMUMS}


class SafeWandbLogger(WandbLogger):
    """A WandbLogger whose failures are warnings: W&B must never stop training.

    ``log_model``: upload checkpoints as versions of the artifact ``model-<run id>``: False
    (default) none; True those of the checkpoint callbacks when training ends; ``"all"`` each
    one as it is saved. The checkpoint with the lowest validation error gets the alias
    ``best``; W&B gives ``latest`` to the newest version (at the end of training: last.ckpt).
    ``minimums``: the metrics whose summary is ``{"min": ..., "last": ...}`` over the whole
    run, with the lowest value logged before this process started (empty for a new run).
    """

    broken = False

    def __init__(
        self,
        *args: Any,
        log_model: bool | Literal["all"] = False,
        minimums: dict[str, float | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, log_model=False, **kwargs)  # uploads: upload_checkpoint
        self.upload_mode = log_model
        self.minimums = dict(minimums or {})
        self.pending: list[ModelCheckpoint] = []
        self.uploaded: dict[str, float] = {}  # path -> modification time

    def guard(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # the W&B service died, disk full, ...
            self.broken = True
            rank_zero_warn(f"W&B logging failed and is switched off for this run: {err!r}")
            return None

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.guard(super().log_metrics, metrics, step)
        self.guard(self.summarise_minimums, metrics)

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        self.guard(super().log_hyperparams, *args, **kwargs)

    def add_checkpoint_callbacks(self, callbacks: list) -> None:
        """The trainer's checkpoint callbacks, whose files are uploaded when training ends
        (with ``log_model=True``) even if they saved nothing since a resumption."""
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback not in self.pending:
                self.pending.append(callback)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self.upload_mode == "all":
            self.guard(self.upload_checkpoint, checkpoint_callback)
        else:
            self.add_checkpoint_callbacks([checkpoint_callback])

    def finalize(self, status: str) -> None:
        self.guard(super().finalize, status)
        if status == "success" and self.upload_mode is True:
            # the ranked checkpoint first, so that W&B's `latest` ends on last.ckpt
            for callback in sorted(self.pending, key=lambda cb: not cb.monitor):
                self.guard(self.upload_checkpoint, callback)

    @rank_zero_only
    def update_summary(self, fields: dict[str, Any]) -> None:
        """Write ``fields`` into the run's summary (a failure is a warning, as any W&B call)."""
        self.guard(lambda: self.experiment.summary.update(fields))

    @rank_zero_only
    def summarise_minimums(self, metrics: Any) -> None:
        for name in self.minimums.keys() & metrics.keys():
            value = metrics[name]
            value = float(value.item() if isinstance(value, Tensor) else value)
            before = self.minimums[name]
            self.minimums[name] = value if before is None else min(before, value)
            self.experiment.summary[name] = {"min": self.minimums[name], "last": value}

    @rank_zero_only
    def upload_checkpoint(self, callback: ModelCheckpoint) -> None:
        """Upload the file ``callback`` holds as its best (for the callback keeping last.ckpt,
        the newest), unless it was uploaded unchanged."""
        import wandb

        path = callback.best_model_path
        if not path or not Path(path).is_file():
            return
        modified = Path(path).stat().st_mtime
        if self.uploaded.get(path) == modified:
            return
        score = callback.best_model_score
        metadata = {
            "original_filename": Path(path).name,
            "monitor": callback.monitor,
            "score": float(score) if callback.monitor and score is not None else None,
        }
        artifact = wandb.Artifact(f"model-{self.experiment.id}", type="model", metadata=metadata)
        artifact.add_file(path, name="model.ckpt")
        self.experiment.log_artifact(artifact, aliases=["best"] if callback.monitor else [])
        self.uploaded[path] = modified
