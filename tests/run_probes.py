"""Callbacks the fault-tolerance and DDP tests add to real runs (``--trainer.callbacks+=``).

They are imported by class path, in-process (``tests/`` is on ``sys.path`` under pytest) and
in the training subprocesses (the tests put ``tests/`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import signal
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
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
    (weights and buffers) at the end of fit; after a test (``--run.test_after_fit``), its
    metrics and this rank's test images and batches in ``test_rank<r>.json``."""

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
            "val_batches": len(trainer.val_dataloaders) if trainer.val_dataloaders else 0,
        }
        (out / f"rank{rank}.json").write_text(json.dumps(info, indent=1))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = Path(os.environ["PROBE_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        loader = trainer.test_dataloaders
        info = {
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "test_samples": len(loader.sampler),
            "test_batches": len(loader),
        }
        (out / f"test_rank{trainer.global_rank}.json").write_text(json.dumps(info, indent=1))


class PoisonAt(Callback):
    """Make training go bad at global step ``step``: ``what="data"`` puts a NaN into the batch
    about to be trained on (a corrupt image), ``what="weights"`` makes a weight infinite right
    after that step (a step that overflowed), ``what="norm_stats"`` makes the running variance
    of the first batch norm infinite at the end of the epoch of that step, after validation and
    before the epoch's checkpoint (under DDP, a rank's own statistics: DDP broadcasts rank 0's
    buffers at the next training step)."""

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
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if self.what == "weights" and trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("inf")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if self.what == "norm_stats" and trainer.global_step == self.step:
            norm = next(
                m for m in pl_module.modules() if getattr(m, "running_var", None) is not None
            )
            norm.running_var[0] = float("inf")


class RaiseAt(Callback):
    """Raise a ValueError at global step ``step`` (an error from outside densenet_lit)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            raise ValueError("raised by a test callback")


# the collectives of torch.distributed that code in the training loop could call
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_object",
    "all_gather_into_tensor",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "gather",
    "reduce",
    "reduce_scatter_tensor",
    "scatter",
)


def _origin(stack: traceback.StackSummary) -> str:
    """``densenet_lit`` when our code asked for the collective (directly, or through Lightning's
    ``self.log(sync_dist=True)`` or ``strategy.reduce``), else the library that did: the
    innermost frame of ``lightning`` or ``torchmetrics`` below the Trainer's entry."""
    inside = [f.filename for f in stack if "torch/distributed" not in f.filename]
    inside = [f for f in inside if not f.endswith("run_probes.py")]
    lightning = [i for i, f in enumerate(inside) if "/lightning/" in f]
    if lightning:
        inside = inside[lightning[0] :]  # below the CLI's call of the Trainer
    if any("/densenet_lit/" in f for f in inside):
        return "densenet_lit"
    for library in ("torchmetrics", "lightning"):
        if any(f"/{library}/" in f for f in inside):
            return library
    return "other"


class CollectiveCounter(Callback):
    """Count the torch.distributed collectives of each training step, per DDP rank, into
    ``$PROBE_DIR/collectives_rank<r>.json``: for each step ``{"step", "logged", "calls"}``
    with calls ``[name, async_op, origin]``. A step's window runs from its batch start to the
    next batch start (its own hooks, the logging after it, and Lightning's work before the
    next batch); the last step of an epoch is left out (validation follows it). ``logged``:
    the step's metrics went to the loggers (``global_step % log_every_n_steps == 0``)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._window: list[list[Any]] | None = None
        self._originals: dict[str, Any] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for name in COLLECTIVES:
            original = getattr(dist, name)
            self._originals[name] = original
            setattr(dist, name, self._counting(name, original))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for name, original in self._originals.items():
            setattr(dist, name, original)
        out = Path(os.environ["PROBE_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"collectives_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.steps, indent=1))

    def _counting(self, name: str, original: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._window is not None:
                origin = _origin(traceback.extract_stack())
                self._window.append([name, bool(kwargs.get("async_op", False)), origin])
            return original(*args, **kwargs)

        return counted

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._window is not None:
            every = trainer.log_every_n_steps
            step = trainer.global_step  # the step of the window that ends here
            self.steps.append({"step": step, "logged": step % every == 0, "calls": self._window})
        self._window = []

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._window = None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._window = None


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


class WeightsPerStep(Callback):
    """Keep, in memory, a copy of the module's state (weights and buffers) after every
    training step, keyed by the step's zero-based index (``global_step - 1``), and the
    state after each rank's last step in ``$PROBE_DIR/raw_rank<r>.pt`` when it is set (the
    trained weights, before an EMA callback puts its average into the module at the end)."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self.states[trainer.global_step - 1] = state
        if os.environ.get("PROBE_DIR"):
            out = Path(os.environ["PROBE_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            torch.save(state, out / f"raw_rank{trainer.global_rank}.pt")
