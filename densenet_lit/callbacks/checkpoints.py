"""The checkpoints every run keeps, as two stock ``ModelCheckpoint`` callbacks: ``last.ckpt``,
rewritten at the end of every epoch, and the checkpoint with the lowest validation error.

Two callbacks, not one with ``save_last``: Lightning writes ``save_last``'s file only at a
step where it also wrote a top-k checkpoint, so with the best kept by ``val/error`` the last
checkpoint would stay at the best epoch while training goes on.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from densenet_lit.metric_names import VAL, VAL_ERROR
from densenet_lit.rundir import (
    BEST_FILENAME,
    LAST_NAME,
    all_checkpoints,
    resumable_checkpoints,
)

MONITOR = VAL_ERROR


def last_checkpoint_callback() -> ModelCheckpoint:
    """``checkpoints/last.ckpt``, overwritten at the end of every epoch."""
    return ModelCheckpoint(
        filename=LAST_NAME, monitor=None, save_top_k=1, enable_version_counter=False
    )


def best_checkpoint_callback() -> ModelCheckpoint:
    """``checkpoints/best-epoch<e>-val_error<x>.ckpt``: the lowest validation error so far."""
    return ModelCheckpoint(
        filename=BEST_FILENAME,
        monitor=MONITOR,
        mode="min",
        save_top_k=1,
        auto_insert_metric_name=False,
    )


def run_checkpoint_callbacks() -> list[Callback]:
    """What a run without an experiment config keeps: the last and the best checkpoint."""
    return [last_checkpoint_callback(), best_checkpoint_callback()]


def monitors_validation(callback: Callback) -> bool:
    """A checkpoint callback ranking by a validation metric (nothing to rank without one)."""
    monitor = getattr(callback, "monitor", None) if isinstance(callback, ModelCheckpoint) else None
    return bool(monitor) and monitor.startswith(f"{VAL}/")


def checkpoint_files(trainer: Trainer) -> list[Path]:
    """The checkpoint files of this run on disk: those of the checkpoint callbacks (their
    directories) and Lightning's SLURM requeue checkpoints; the ones a run resumes from
    (last, requeue) first, newest first."""
    files = set(all_checkpoints(trainer.default_root_dir))
    for cb in trainer.checkpoint_callbacks:
        dirpath = getattr(cb, "dirpath", None)
        if dirpath:
            files.update(f for f in Path(dirpath).glob("*.ckpt") if f.is_file())
    files = {f for f in files if not f.name.startswith(".")}
    resumable = set(resumable_checkpoints(trainer.default_root_dir))
    return sorted(files, key=lambda f: (f not in resumable, -f.stat().st_mtime))
