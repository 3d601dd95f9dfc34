"""Callbacks every run uses, one per file: checkpoints (last + best), throughput and memory,
a finite-loss guard, a checkpoint on preemption signals, and the prediction writer."""

from lightning.pytorch import Callback

from densenet_lit.callbacks.checkpoints import (
    best_checkpoint_callback,
    checkpoint_files,
    last_checkpoint_callback,
    run_checkpoint_callbacks,
)
from densenet_lit.callbacks.finite_loss import FiniteLossGuard
from densenet_lit.callbacks.predictions import PredictionWriter
from densenet_lit.callbacks.preemption import Preempted, PreemptionCheckpoint
from densenet_lit.callbacks.throughput import ThroughputMonitor


def default_callbacks() -> list[Callback]:
    """New instances of the callbacks every CLI run gets besides its checkpointing (the
    benchmark suite uses these too, so that it measures what a CLI run does)."""
    return [ThroughputMonitor(), FiniteLossGuard(), PreemptionCheckpoint()]


__all__ = [
    "FiniteLossGuard",
    "Preempted",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "ThroughputMonitor",
    "best_checkpoint_callback",
    "checkpoint_files",
    "default_callbacks",
    "last_checkpoint_callback",
    "run_checkpoint_callbacks",
]
