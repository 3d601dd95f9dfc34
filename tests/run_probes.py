"""Callbacks the fault-tolerance and DDP tests add to real runs (``--trainer.callbacks+=``).

They are imported by class path, in-process (``tests/`` is on ``sys.path`` under pytest) and
in the training subprocesses (the tests put ``tests/`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class SignalAt(Callback):
    """Send signals to this process at the end of chosen global steps, ``{step: "SIGTERM"}``
    (a preemption at a chosen point: the handler runs as for a signal from outside)."""

    def __init__(self, signals: dict[int, str]) -> None:
        self.signals = {int(step): getattr(signal, name) for step, name in signals.items()}

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        signum = self.signals.get(trainer.global_step)
        if signum is not None and trainer.is_global_zero:
            os.kill(os.getpid(), signum)


class Heartbeat(Callback):
    """Write the global step to ``$PROBE_DIR/step_rank<r>`` after every training batch, so that
    a test can wait until a training subprocess is well inside training before signalling it,
    and see where each DDP rank stopped."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        out = Path(os.environ["PROBE_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        name = f"step_rank{trainer.global_rank}"
        (out / f"{name}.tmp").write_text(str(trainer.global_step))
        os.replace(out / f"{name}.tmp", out / name)


class RankProbe(Callback):
    """Record, per DDP rank, in ``$PROBE_DIR``: the batch sizes each training step saw, the
    logged metrics, where training started and from which checkpoint, and the whole state
    (weights and buffers) at the end of fit."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.start_step: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start_step = trainer.global_step  # where a resumed run continued

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batch_sizes.append(int(batch[0].shape[0]))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = Path(os.environ["PROBE_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, out / f"state_rank{rank}.pt")
        sync_bn = [type(m).__name__ for m in pl_module.modules() if "BatchNorm" in type(m).__name__]
        info = {
            "rank": rank,
            "world_size": trainer.world_size,
            "batch_sizes": self.batch_sizes,
            "global_step": trainer.global_step,
            "start_step": self.start_step,
            "ckpt_path": trainer.ckpt_path,
            "run_dir": trainer.default_root_dir,
            "torchelastic_restart": os.environ.get("TORCHELASTIC_RESTART_COUNT"),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "norm_layers": sorted(set(sync_bn)),
            "val_samples": len(trainer.val_dataloaders.sampler)
            if trainer.val_dataloaders is not None
            else 0,
        }
        (out / f"rank{rank}.json").write_text(json.dumps(info, indent=1))


class PoisonAt(Callback):
    """Make training go bad at global step ``step``: ``what="data"`` puts a NaN into the batch
    about to be trained on (a corrupt image), ``what="weights"`` makes a weight infinite right
    after that step (a step that overflowed)."""

    def __init__(self, step: int, what: str = "data", rank: int | None = None) -> None:
        self.step = step
        self.what = what
        self.rank = rank  # None: every rank

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if self.what == "data" and trainer.global_step == self.step:
            batch[0][0].fill_(float("nan"))

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.what == "weights" and trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("inf")


class RaiseAt(Callback):
    """Raise a ValueError at global step ``step`` (an error from outside densenet_lit)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            raise ValueError("raised by a test callback")


class CrashOnce(Callback):
    """End the process of global rank ``rank`` at once after global step ``step``, as a crash
    or a kill would (``os._exit(1)``: no cleanup, no checkpoint), the first time only: it
    leaves ``$PROBE_DIR/crashed`` behind, so that the workers a torchrun restart starts (with
    the same command line) train through. (A marker rather than TORCHELASTIC_RESTART_COUNT:
    a node whose own worker did not fail restarts with its count unchanged, and the ranks
    may change nodes.)"""

    def __init__(self, step: int, rank: int = 1) -> None:
        self.step = step
        self.rank = rank

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        marker = Path(os.environ["PROBE_DIR"]) / "crashed"
        chosen = trainer.global_step == self.step and trainer.global_rank == self.rank
        if chosen and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(trainer.global_step))
            os._exit(1)
