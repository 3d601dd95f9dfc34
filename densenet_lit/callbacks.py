"""Callbacks every run uses: checkpoints (last + best), throughput and memory, a finite-loss
guard, and a checkpoint on preemption signals."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden

from densenet_lit.collectives import QueuedReduction, is_distributed, reduce_now


def has_validation(trainer: Trainer) -> bool:
    """Whether this fit will run a validation loop (a data module with ``val_size=0`` will not)."""
    if trainer.limit_val_batches == 0:
        return False
    datamodule = trainer.datamodule
    if datamodule is not None:
        if hasattr(datamodule, "val_set"):  # densenet_lit.data modules, after setup
            return datamodule.val_set is not None
        return is_overridden("val_dataloader", datamodule)
    return trainer.lightning_module is not None and is_overridden(
        "val_dataloader", trainer.lightning_module
    )


class RunCheckpoint(ModelCheckpoint):
    """Keep ``last.ckpt`` and the checkpoint with the lowest validation error.

    A :class:`~lightning.pytorch.callbacks.ModelCheckpoint` with the defaults every experiment
    shares. ``last.ckpt`` is rewritten at the end of every epoch, whether or not the validation
    error improved. When the run has no validation set (the paper's final CIFAR runs train on
    all 50,000 images) there is nothing to rank checkpoints by, so only ``last.ckpt`` is kept.
    """

    def __init__(
        self,
        monitor: str | None = "val/error",
        mode: str = "min",
        save_last: bool = True,
        save_top_k: int = 1,
        filename: str | None = "best-epoch{epoch:03d}-val_error{val/error:.2f}",
        auto_insert_metric_name: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            monitor=monitor,
            mode=mode,
            save_last=save_last,
            save_top_k=save_top_k,
            filename=filename,
            auto_insert_metric_name=auto_insert_metric_name,
            **kwargs,
        )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self.monitor is not None and not has_validation(trainer):
            rank_zero_info(
                f"No validation set in this run: keeping only last.ckpt (no best-by-{self.monitor})."
            )
            self.monitor = None
            self.save_top_k = 0
        super().setup(trainer, pl_module, stage)

    # Lightning 2.6 writes last.ckpt only at a step where it also wrote a top-k checkpoint:
    # with the best by val/error kept, last.ckpt would stay at the best epoch while training
    # goes on (and a resumed run would repeat every epoch since). Write it at every save point.
    def _save_last_as_well(self, trainer: Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_as_well(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_as_well(trainer)


class ThroughputMonitor(Callback):
    """Log training images per second (all devices together) and, on GPU, peak memory.

    Logged once per training epoch as ``perf/images_per_sec`` and ``perf/peak_memory_gib``
    (the largest ``torch.cuda.max_memory_allocated`` over the devices). Both describe the
    timed training steps: the clock runs from the start of the first timed batch to the end
    of the epoch's last one and stops during validation, and the memory peak is read when the
    clock stops (a validation's own peak is left out). The first ``warmup_steps`` training
    steps of the process (in the first epoch of a run, or of a resumed run) are not timed:
    ``torch.compile`` compiles and cuDNN autotunes there, which would make the first epoch's
    figures a measure of start-up. An epoch with no timed step logs neither figure.
    """

    def __init__(self, warmup_steps: int = 2) -> None:
        if warmup_steps < 0:
            raise ValueError(
                f"ThroughputMonitor(warmup_steps={warmup_steps}): expected 0 or more steps."
            )
        self.warmup_steps = warmup_steps
        self._steps = 0  # training steps of this process so far
        self._timing = False  # the current batch is timed
        self._images = 0
        self._elapsed = 0.0
        self._started: float | None = None
        self._peak = 0

    def _cuda(self, pl_module: LightningModule) -> bool:
        return pl_module.device.type == "cuda"

    def _stop(self, pl_module: LightningModule) -> None:
        if self._started is not None:
            if self._cuda(pl_module):
                torch.cuda.synchronize(pl_module.device)
                self._peak = max(self._peak, torch.cuda.max_memory_allocated(pl_module.device))
            self._elapsed += time.perf_counter() - self._started
            self._started = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._images, self._elapsed, self._started, self._peak = 0, 0.0, None, 0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._timing = self._steps >= self.warmup_steps
        if self._timing and self._started is None:
            if self._cuda(pl_module):
                torch.cuda.synchronize(pl_module.device)  # once per epoch and validation
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._steps += 1
        if self._timing:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            self._images += int(x.shape[0]) if hasattr(x, "shape") else 0

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(pl_module)
        if self._elapsed > 0 and self._images > 0:
            rate = self._images * trainer.world_size / self._elapsed
            # each rank's rate times the world size, averaged over the ranks
            pl_module.log("perf/images_per_sec", rate, on_epoch=True, sync_dist=True)
        if self._cuda(pl_module) and self._peak > 0:
            pl_module.log(
                "perf/peak_memory_gib",
                self._peak / 2**30,
                on_epoch=True,
                sync_dist=True,
                reduce_fx="max",
            )


def checkpoint_files(trainer: Trainer) -> list[Path]:
    """The checkpoint files of this run on disk, oldest first: those of the checkpoint callbacks
    (their directories) and Lightning's SLURM requeue checkpoints (``hpc_ckpt_*.ckpt``)."""
    dirs = {Path(trainer.default_root_dir)}
    for cb in trainer.checkpoint_callbacks:
        dirpath = getattr(cb, "dirpath", None)
        if dirpath:
            dirs.add(Path(dirpath))
    files = {
        f
        for d in dirs
        for f in d.glob("*.ckpt")  # requeue checkpoints (hpc_ckpt_*) included
        if f.is_file() and not f.name.startswith(".")
    }
    return sorted(files, key=lambda f: f.stat().st_mtime)


def _cluster_environment(trainer: Trainer) -> Any:
    return getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)


def slurm_requeue_signal(trainer: Trainer) -> int | None:
    """The signal Lightning's SLURM support handles itself (checkpoint + ``scontrol requeue``),
    or None when the run is not a SLURM job with ``auto_requeue``."""
    env = _cluster_environment(trainer)
    if isinstance(env, SLURMEnvironment) and env.auto_requeue:
        return int(env.requeue_signal or signal.SIGUSR1)
    return None


class FiniteLossGuard(Callback):
    """Stop training with an error at the first NaN or infinite training loss.

    The message names the step and the newest checkpoint of the run, to resume from
    (``--ckpt_path``) after lowering the learning rate or fixing the data. All DDP ranks stop
    at the same step (one rank's bad batch stops every rank, none is left waiting). A
    checkpoint is never written after a bad step, nor with non-finite weights (a step that was
    finite can still overflow the weights): saving one is refused with the same error, so the
    newest checkpoint on disk is always a good one. Under DDP the weights are checked on every
    rank and the verdict is shared (a reduction when a checkpoint is saved), so that every
    rank stops, not only the one whose weights (e.g. batch-norm statistics) went bad.

    When the loss is checked (``check``):
        ``"every_step"``: before the backward pass of the same step, so the optimizer never
            steps on a bad loss. Reading the loss makes the host wait for the step's forward
            pass, which costs nothing on the CPU but stalls the launch queue of a GPU; under
            DDP the host also waits for every rank's verdict (one reduction per step).
        ``"deferred"``: the check of step ``n`` (under DDP: reduced over the ranks, queued
            with ``async_op=True``) is copied to the host without waiting and read when step
            ``n + 1`` reaches the same point (by then it has long arrived), and before
            anything is validated, logged at the epoch end or saved. Step ``n`` has then
            updated the weights in memory, but the run stops before they reach a checkpoint,
            and the error names step ``n``. No step waits for the GPU or for another rank.
        ``"auto"`` (default): ``"deferred"`` on CUDA devices and under DDP, ``"every_step"``
            on a single CPU process.
    """

    def __init__(self, check: str = "auto") -> None:
        if check not in ("auto", "every_step", "deferred"):
            raise ValueError(
                f"FiniteLossGuard(check={check!r}): expected 'auto', 'every_step' or 'deferred'."
            )
        self.check = check
        self._pending: tuple[QueuedReduction, tuple[int, int, int]] | None = None

    def _deferred(self, trainer: Trainer, device: torch.device) -> bool:
        if self.check == "auto":
            return device.type == "cuda" or trainer.world_size > 1
        return self.check == "deferred"

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        loss = loss.detach()
        # 1 where the loss is bad, in float32 (bf16-true makes bfloat16 the default dtype)
        bad = (~torch.isfinite(loss).all()).to(torch.float32).reshape(1)
        if not self._deferred(trainer, loss.device):
            everywhere = reduce_now(bad) if is_distributed(trainer) else bad
            if bool(everywhere):
                self._stop(trainer, self._what(float(loss.float().mean()), not bool(bad)))
            return
        self._check_pending(trainer)  # the previous step's, which has arrived by now
        local = torch.cat([loss.float().mean().reshape(1), bad])
        queued = QueuedReduction(bad, local=local, distributed=is_distributed(trainer))
        self._pending = (queued, self._position(trainer))

    def _check_pending(self, trainer: Trainer) -> None:
        """Read the deferred check of the last step (waiting for it if needed); stop if bad."""
        if self._pending is None:
            return
        queued, position = self._pending
        self._pending = None
        everywhere, local = queued.result()
        if bool(everywhere[0]):
            loss, bad_here = float(local[0]), bool(local[1])
            self._stop(trainer, self._what(loss, not bad_here), position)

    @staticmethod
    def _what(loss: float, finite_here: bool) -> str:
        if finite_here:
            return "The training loss is not finite on another DDP rank "
        return f"The training loss is {loss} "

    # every point after which the last step's loss could reach metrics or a checkpoint
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_pending(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_pending(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_pending(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._pending = None

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check_pending(trainer)
        state = {
            k: v
            for k, v in (checkpoint.get("state_dict") or {}).items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()
        }
        if not state:
            return
        device = trainer.strategy.root_device
        finite = torch.stack([torch.isfinite(v).all().to(device) for v in state.values()])
        bad = (~finite.all()).to(torch.float32).reshape(1)
        # every rank saves (Lightning requires it): all of them raise, or none does
        if not bool(reduce_now(bad) if is_distributed(trainer) else bad):  # one device sync
            return
        names = [k for k, f in zip(state, finite.tolist(), strict=True) if not f]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        where = f"({shown})" if names else "on another DDP rank"
        self._stop(trainer, f"The weights hold NaN or infinite values {where} ")

    @staticmethod
    def _position(trainer: Trainer) -> tuple[int, int, int]:
        """(global step, epoch, batch in the epoch) of the step being trained."""
        batch = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
        return trainer.global_step, trainer.current_epoch, batch

    def _stop(
        self, trainer: Trainer, what: str, position: tuple[int, int, int] | None = None
    ) -> None:
        step, epoch, batch = position or self._position(trainer)
        files = checkpoint_files(trainer)
        last = str(files[-1]) if files else "none saved yet"
        raise FloatingPointError(
            f"{what}at global step {step} (epoch {epoch}, batch {batch}); training stopped, no "
            f"checkpoint was written. Last good checkpoint: {last}. Resume from it with "
            "--ckpt_path after lowering the learning rate or checking the data."
        )


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
    batch, the epoch finishes first (metrics logged, ``last.ckpt``/best saved as usual) and
    the checkpoint is written after it. The checkpoint is ``last.ckpt`` in the checkpoint
    directory, written to a temporary file and renamed, so a kill while saving cannot destroy
    the previous one; ``--ckpt_path last`` or the run directory resumes it, exactly where it
    stopped (see ``DenseNetModule``, "Randomness").

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
        self._signum = self._signal_after_step(trainer)
        if not self._signum:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._stop_after_epoch = True  # finish the epoch: validation, metrics, checkpoints
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
        # Trainer(min_epochs=...) can refuse to stop: then stop after the next batch instead
        self._stop_after_epoch = False

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop_if_saved()
        if not self._stop_after_epoch:
            self._signum = self._signal_now(trainer)
        if self._signum:
            self._stop_after_epoch = True
            trainer.should_stop = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        try:
            self._stop_if_saved()
            self._read_vote()  # one left by a run that ended within an epoch (max_steps)
            if self._stop_after_epoch:
                raise self._save(trainer)
        finally:
            self._restore()

    def _checkpoint_path(self, trainer: Trainer) -> Path:
        if isinstance(_cluster_environment(trainer), SLURMEnvironment):
            # where a requeued job looks (Trainer.fit without ckpt_path under SLURM)
            from lightning.pytorch.trainer.connectors.checkpoint_connector import (
                _CheckpointConnector,
            )

            return Path(_CheckpointConnector.hpc_save_path(trainer.default_root_dir))
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                return Path(cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST))
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

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
                and path.name.startswith(cb.CHECKPOINT_NAME_LAST or "last")
            ):
                cb.last_model_path = str(path)
        # a temporary name that neither `last*.ckpt` nor Lightning's `hpc_ckpt_` scan matches
        tmp = path.with_name(f".preemption-{path.stem}.tmp")
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


class PredictionWriter(BasePredictionWriter):
    """Save what ``predict`` computes: ``predictions.pt`` in the run directory.

    A dict of ``probabilities`` (float ``[N, classes]``, the softmax the module's
    ``predict_step`` returns), ``predictions`` (the top-1 class, ``[N]``), ``targets`` (the
    labels, when the loader yields them), ``indices`` (each image's index in the data set)
    and ``classes`` (the class names, when the data module has them). Under DDP every rank
    writes its own part, ``predictions-rank<r>.pt``; ``indices`` put them back in order.
    """

    def __init__(self, filename: str = "predictions.pt") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self._parts: dict[str, list[torch.Tensor]] = {}

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._parts = {"probabilities": [], "targets": [], "indices": []}

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._parts["probabilities"].append(prediction.detach().float().cpu())
        if isinstance(batch, list | tuple) and len(batch) > 1 and torch.is_tensor(batch[1]):
            self._parts["targets"].append(batch[1].detach().cpu())
        if batch_indices is not None:
            self._parts["indices"].append(torch.as_tensor(list(batch_indices)))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._parts.get("probabilities"):
            return
        out: dict[str, Any] = {k: torch.cat(v) for k, v in self._parts.items() if v}
        out["predictions"] = out["probabilities"].argmax(dim=1)
        classes = getattr(trainer.datamodule, "classes", None)
        if classes:
            out["classes"] = list(classes)
        path = Path(trainer.default_root_dir) / self.filename
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}-rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
        self._parts = {}
        print(f"Predictions of {len(out['predictions'])} images saved to {path}", flush=True)


def default_callbacks() -> list[Callback]:
    """New instances of the callbacks every CLI run gets besides its checkpointing (the
    benchmark suite uses these too, so that it measures what a CLI run does)."""
    return [ThroughputMonitor(), FiniteLossGuard(), PreemptionCheckpoint()]
