"""Stop training at the first non-finite loss, before a bad step reaches a checkpoint."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from densenet_lit.callbacks.checkpoints import checkpoint_files
from densenet_lit.checkpoints import RAW_WEIGHTS_KEY
from densenet_lit.collectives import QueuedReduction, is_distributed, reduce_now


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
        self._batch_idx = 0

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
        state = {}  # the weights, and with an EMA callback also the trained (raw) ones
        for key, suffix in (("state_dict", ""), (RAW_WEIGHTS_KEY, " (trained, not averaged)")):
            for k, v in (checkpoint.get(key) or {}).items():
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    state[k + suffix] = v
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
