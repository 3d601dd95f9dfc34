"""Stop training at the first non-finite loss, before a bad step reaches a checkpoint."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer

from densenet_lit.callbacks.checkpoints import checkpoint_files


class FiniteLossGuard(Callback):
    """Stop training with an error at the first NaN or infinite training loss.

    The message names the step and the newest checkpoint of the run, to resume from
    (``--ckpt_path``) after lowering the learning rate or fixing the data. All DDP ranks stop
    at the same step (one rank's bad batch stops every rank, none is left waiting). A
    checkpoint is never written after a bad step, nor with non-finite weights (a step that was
    finite can still overflow the weights): saving one is refused with the same error, so the
    newest checkpoint on disk is always a good one.

    When the loss is checked (``check``):
        ``"every_step"``: before the backward pass of the same step, so the optimizer never
            steps on a bad loss. Reading the loss makes the host wait for the step's forward
            pass, which costs nothing on the CPU but stalls the launch queue of a GPU.
        ``"deferred"``: the check of step ``n`` is copied to the host without waiting and
            read when step ``n + 1`` reaches the same point (by then it has long arrived), and
            before anything is validated, logged at the epoch end or saved. Step ``n`` has
            then updated the weights in memory, but the run stops before they reach a
            checkpoint, and the error names step ``n``.
        ``"auto"`` (default): ``"deferred"`` on CUDA devices, ``"every_step"`` elsewhere.
    """

    def __init__(self, check: str = "auto") -> None:
        if check not in ("auto", "every_step", "deferred"):
            raise ValueError(
                f"FiniteLossGuard(check={check!r}): expected 'auto', 'every_step' or 'deferred'."
            )
        self.check = check
        self._pending: tuple[torch.Tensor, Any, tuple[int, int, int]] | None = None
        self._batch_idx = 0

    def _deferred(self, device: torch.device) -> bool:
        return self.check == "deferred" or (self.check == "auto" and device.type == "cuda")

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        loss = loss.detach()
        if not self._deferred(loss.device):
            finite = bool(torch.isfinite(loss).all())
            if not trainer.strategy.reduce_boolean_decision(finite, all=True):
                self._stop(trainer, self._what(float(loss.float().mean()), finite))
            return
        self._check_pending(trainer)  # the previous step's, which has arrived by now
        local = torch.isfinite(loss).all().float()
        everywhere = local.clone()
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # the minimum over the ranks, queued on the device. Not strategy.reduce: Lightning
            # puts a barrier before it, which makes the host wait under NCCL.
            dist.all_reduce(everywhere, op=dist.ReduceOp.MIN)
        values = torch.stack([loss.float().mean(), local, everywhere])
        event = None
        if values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(values.device))  # the copy's stream
            values = host
        self._pending = (values, event, self._position(trainer))

    def _check_pending(self, trainer: Trainer) -> None:
        """Read the deferred check of the last step (waiting for it if needed); stop if bad."""
        if self._pending is None:
            return
        values, event, position = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        loss, local, everywhere = (float(v) for v in values.cpu())
        if not everywhere:
            self._stop(trainer, self._what(loss, bool(local)), position)

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
        finite = [torch.isfinite(v).all() for v in state.values()]
        device = finite[0].device
        if bool(torch.stack([f.to(device) for f in finite]).all()):  # one device sync
            return
        bad = [k for k, f in zip(state, finite, strict=True) if not f]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            self._stop(trainer, f"The weights hold NaN or infinite values ({shown}) ")

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def _position(self, trainer: Trainer) -> tuple[int, int, int]:
        """(global step, epoch, batch in the epoch) of the step being trained."""
        return trainer.global_step, trainer.current_epoch, self._batch_idx

    def _stop(
        self, trainer: Trainer, what: str, position: tuple[int, int, int] | None = None
    ) -> None:
        step, epoch, batch = position or self._position(trainer)
        files = checkpoint_files(trainer)
        last = str(files[0]) if files else "none saved yet"
        raise FloatingPointError(
            f"{what}at global step {step} (epoch {epoch}, batch {batch}); training stopped, no "
            f"checkpoint was written. Last good checkpoint: {last}. Resume from it with "
            "--ckpt_path after lowering the learning rate or checking the data."
        )
