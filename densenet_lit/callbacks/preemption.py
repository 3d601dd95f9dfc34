"""Save a checkpoint and stop on a preemption signal (SIGTERM, SIGUSR1)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from densenet_lit.collectives import QueuedReduction, is_distributed, reduce_now
from densenet_lit.rundir import (
    LAST_NAME,
    last_checkpoint,
    next_requeue_checkpoint,
    preemption_temp,
)


def cluster_environment(trainer: Trainer) -> Any:
    """The strategy's cluster environment; on a single device (whose strategy has none),
    Lightning's default SLURM environment when this is a SLURM job."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None and SLURMEnvironment.detect():
        return SLURMEnvironment()
    return env


def slurm_requeue_signal(trainer: Trainer) -> int | None:
    """The signal Lightning's SLURM support handles itself (checkpoint + ``scontrol requeue``),
    or None when the run is not a SLURM job with ``auto_requeue``."""
    env = cluster_environment(trainer)
    if isinstance(env, SLURMEnvironment) and env.auto_requeue:
        return int(env.requeue_signal or signal.SIGUSR1)
    return None


class Preempted(SystemExit):
    """Training stopped on a preemption signal after saving a checkpoint.

    A ``SystemExit`` (no traceback when uncaught) whose exit status is ``128 + signal number``
    as for a process ended by that signal (143 for SIGTERM, 138 for SIGUSR1), so that job
    scripts can tell an interrupted run from a finished one.
    """

    def __init__(self, signum: int, ckpt_path: str, global_step: int, epoch: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.ckpt_path = ckpt_path
        self.global_step = global_step
        self.epoch = epoch

    def __str__(self) -> str:
        return (
            f"Stopped by {self.signal_name} at global step {self.global_step} (epoch "
            f"{self.epoch}); checkpoint saved to {self.ckpt_path}."
        )


class PreemptionCheckpoint(Callback):
    """On SIGTERM or SIGUSR1 (preemption, ``scancel``, a cloud instance being reclaimed): save a
    checkpoint at the next batch boundary and stop with :class:`Preempted`.

    The handler only records the signal. After the current training batch the checkpoint is
    written, and the run stops before the next batch starts, once the batch's metrics are
    logged. When the signal comes during the validation at the end of an epoch or at its last
    batch, the epoch finishes first (validation, ``last.ckpt``/best saved as usual, metrics
    logged); the checkpoint is written at the epoch's end, where ``last.ckpt`` is. The
    checkpoint is ``last.ckpt`` in the checkpoint directory, written to a temporary file and
    renamed, so a kill while saving cannot destroy the previous one; ``--ckpt_path last`` or
    the run directory resumes it, exactly where it stopped (see :mod:`densenet_lit.data.resume`).

    Under DDP all ranks stop after the same step, whichever rank received the signal: at the
    end of each step every rank queues the signal it has received (0 if none) in a maximum
    over the ranks (``async_op=True``, no barrier), and reads it at the end of the next step,
    when it has long arrived; so no step waits for the GPU or for another rank, and the run
    stops one step later than on a single process (a signal during step ``n`` stops after
    step ``n + 1``). At an epoch's end the ranks agree at once (the host waits there anyway).
    (Lightning 2.6 itself still broadcasts its own SIGTERM flag from rank 0 before every
    step and reads it, which waits; an option to do so less often is proposed upstream,
    Lightning-AI/pytorch-lightning#21640.)

    Under SLURM it is Lightning's requeue checkpoint ``hpc_ckpt_<n>.ckpt`` in the run directory
    instead, which a requeued job resumes from by itself. SIGUSR1 is left to Lightning there
    when its ``auto_requeue`` is on (checkpoint and ``scontrol requeue``; the SIGTERM that
    follows then stops the job here).

    Lightning alone (2.x) only sets ``trainer.received_sigterm`` and exits without a
    checkpoint; this callback replaces its SIGTERM handler while training runs and puts the
    previous handlers back afterwards.
    """

    def __init__(self, signals: list[str] | None = None) -> None:
        self.signals = ["SIGTERM", "SIGUSR1"] if signals is None else list(signals)
        for name in self.signals:
            if not isinstance(getattr(signal, name, None), signal.Signals):
                raise ValueError(f"PreemptionCheckpoint: unknown signal {name!r}")
        self._previous: dict[int, Any] = {}
        self._reset()

    def _reset(self) -> None:
        self._received: int | None = None
        self._signum = 0  # the signal every rank agreed to stop on
        self._stop_after_epoch = False
        self._pending: Preempted | None = None
        self._vote: QueuedReduction | None = None

    # signal handling --------------------------------------------------------------------
    def _handler(self, signum: int, frame: Any) -> None:
        # only record it: a handler runs between two bytecodes of the main thread, where
        # I/O or collectives could deadlock
        if self._received is None:
            self._received = signum

    def _install(self, trainer: Trainer) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        owned_by_slurm = slurm_requeue_signal(trainer)
        for name in self.signals:
            signum = getattr(signal, name, None)
            if signum is None or int(signum) == owned_by_slurm:
                continue
            self._previous[int(signum)] = signal.signal(signum, self._handler)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._reset()

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning has set up its own handlers (just before the sanity check)
        self._install(trainer)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore()

    # stopping ---------------------------------------------------------------------------
    def _received_here(self, trainer: Trainer) -> torch.Tensor:
        # filled on the device: torch.tensor(..., device=cuda) would wait for the GPU's queue
        signum = float(self._received or 0)
        return torch.full((1,), signum, dtype=torch.float32, device=trainer.strategy.root_device)

    def _read_vote(self) -> int:
        """The signal of the reduction queued at the end of the previous step (0: none)."""
        vote, self._vote = self._vote, None
        return 0 if vote is None else int(vote.result()[0][0])

    def _signal_after_step(self, trainer: Trainer) -> int:
        """The signal to stop on after this step, the same on every rank (0: go on). Under DDP
        the one queued a step ago, and this step's is queued (every rank calls this)."""
        if not is_distributed(trainer):
            return self._received or 0
        signum = self._read_vote()
        if not signum:
            self._vote = QueuedReduction(self._received_here(trainer), op=dist.ReduceOp.MAX)
        return signum

    def _signal_now(self, trainer: Trainer) -> int:
        """The signal any rank has received by now (every rank calls this; the host waits)."""
        if not is_distributed(trainer):
            return self._received or 0
        queued = self._read_vote()
        return max(queued, int(reduce_now(self._received_here(trainer))[0]))

    def _stop_if_saved(self) -> None:
        if self._pending is not None:
            raise self._pending

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._stop_after_epoch or self._pending is not None:
            return
        if not self._signum:  # once every rank has agreed on a signal, it stays
            self._signum = self._signal_after_step(trainer)
        if not self._signum:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            self._stop_after_epoch = True  # finish the epoch: validation, metrics, checkpoints
        elif (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # inside a gradient-accumulation window: its gradients are in no checkpoint
        else:
            # the state Lightning resumes in the middle of an epoch; the run stops when the
            # next batch would start, after this one's metrics have gone to the loggers
            self._pending = self._save(trainer)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._stop_if_saved()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop_if_saved()  # a resumed run repeats this validation

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Trainer(min_epochs=...) can refuse to stop: the checkpoint of the epoch's end is
        # saved, and the run stops before the next batch (on_train_batch_start)
        self._stop_after_epoch = False

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop_if_saved()
        if not self._stop_after_epoch:
            self._signum = self._signal_now(trainer)
        if self._signum:
            self._stop_after_epoch = True
            trainer.should_stop = True
            # saved here, at the point where last.ckpt is saved, not at on_train_end: there
            # an EMA callback (WeightAveraging) has already put the averaged weights into the
            # module, and the checkpoint would lose the trained ones. The run stops at
            # on_train_end, after the epoch's metrics are logged (or, when min_epochs refuses
            # to stop, before the next batch)
            self._pending = self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        try:
            self._stop_if_saved()
            self._read_vote()  # one left by a run that ended within an epoch (max_steps)
        finally:
            self._restore()

    def _checkpoint_path(self, trainer: Trainer) -> Path:
        if isinstance(cluster_environment(trainer), SLURMEnvironment):
            # where a requeued job looks (Trainer.fit without ckpt_path under SLURM)
            return next_requeue_checkpoint(trainer.default_root_dir)
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                return Path(cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST))
        return last_checkpoint(trainer.default_root_dir)

    def _save(self, trainer: Trainer) -> Preempted:
        """Write the checkpoint (every rank calls this) and return the exception to stop with."""
        path = self._checkpoint_path(trainer)
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        for cb in trainer.checkpoint_callbacks:
            # the saved state of ModelCheckpoint names this file as the last checkpoint, so the
            # resumed run keeps writing last.ckpt (not last-v1.ckpt)
            if (
                isinstance(cb, ModelCheckpoint)
                and cb.dirpath
                and Path(cb.dirpath) == path.parent
                and path.name.startswith(cb.CHECKPOINT_NAME_LAST or LAST_NAME)
            ):
                cb.last_model_path = str(path)
        tmp = preemption_temp(path)  # no resumption picks it up if a kill comes while saving
        trainer.save_checkpoint(tmp)  # every rank calls it; rank zero writes
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("PreemptionCheckpoint")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                with contextlib.suppress(Exception):
                    logger.experiment.mark_preempting()
        # the signal number, the same on every rank (whichever got the signal)
        signum = self._signum or int(signal.SIGTERM)
        stop = Preempted(signum, str(path), trainer.global_step, trainer.current_epoch)
        rank_zero_info(f"{stop.signal_name} received: checkpoint saved to {path}; stopping.")
        return stop
